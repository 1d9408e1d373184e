package broker

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/ghub"
)

// startGitHub connects the GitHub client, resolving the token or the
// App's private key from their env:/file: references.
func (b *Broker) startGitHub(cfg ghub.Config) error {
	var err error
	if cfg.Token != "" {
		if cfg.Token, err = config.Secret(cfg.Token); err != nil {
			return fmt.Errorf("github token: %w", err)
		}
	}
	if cfg.App != nil {
		app := *cfg.App
		if app.PrivateKeyPEM, err = config.Secret(app.PrivateKeyPEM); err != nil {
			return fmt.Errorf("github app private key: %w", err)
		}
		cfg.App = &app
	}
	if b.github, err = ghub.New(cfg, ghub.WithClock(b.now)); err != nil {
		return fmt.Errorf("github: %w", err)
	}
	return nil
}

// ticketError maps a ticket verification failure to an API error; none
// of them is ever taken as a valid ticket.
func ticketError(ref string, err error) error {
	switch {
	case errors.Is(err, ghub.ErrInvalidRef):
		return errorf(http.StatusBadRequest, "invalid_ticket", "%v", err)
	case errors.Is(err, ghub.ErrTicketNotFound):
		return errorf(http.StatusNotFound, "ticket_not_found", "%v", err)
	case errors.Is(err, ghub.ErrNotAnIssue):
		return errorf(http.StatusUnprocessableEntity, "ticket_not_issue", "%v", err)
	case errors.Is(err, ghub.ErrTicketClosed):
		return errorf(http.StatusConflict, "ticket_closed", "%v", err)
	case errors.Is(err, ghub.ErrRateLimited):
		return errorf(http.StatusTooManyRequests, "github_rate_limited", "%v", err)
	case errors.Is(err, ghub.ErrUnauthorized):
		return errorf(http.StatusBadGateway, "github_unauthorized", "GitHub refused the broker's credentials while checking %s: an operator must fix the broker's github token or app", ref)
	default:
		return errorf(http.StatusBadGateway, "github_unavailable", "could not verify ticket %s: %v", ref, err)
	}
}

func (b *Broker) handleTicket(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("owner") + "/" + r.PathValue("repo") + "#" + r.PathValue("number")
	if _, err := strconv.Atoi(r.PathValue("number")); err != nil {
		return errorf(http.StatusBadRequest, "invalid_ticket", "ticket %q: want owner/repo#NUMBER, such as acme/incidents#42", ref)
	}
	if b.github == nil {
		return errorf(http.StatusNotImplemented, "github_not_configured", "this broker has no GitHub configuration, so tickets cannot be verified (an operator sets \"github\" in the broker config)")
	}
	t, err := b.github.Ticket(r.Context(), ref)
	if err != nil {
		return ticketError(ref, err)
	}
	writeJSON(w, http.StatusOK, brokerapi.Ticket{
		Ref: t.Ref, Title: t.Title, State: t.State, URL: t.URL, Labels: t.Labels,
		Assignees: t.Assignees, Author: t.Author, CreatedAt: t.CreatedAt.UTC(),
	})
	return nil
}
