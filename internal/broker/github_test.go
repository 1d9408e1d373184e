package broker_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devbroker"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/ghub/ghubtest"
)

// TestGitHub: the broker looks up an engineer's GitHub teams (by the
// login in their ID token) and verifies tickets against GitHub's REST API
// (a fake speaking the same paths), refusing every bad ticket with its
// reason and never treating a GitHub failure as a valid ticket.
func TestGitHub(t *testing.T) {
	gh := ghubtest.NewServer(t)
	gh.AddToken("ghp_tether_test")
	gh.AddTeam("vendor", "sre")
	gh.AddTeam("vendor", "db-oncall")
	gh.AddMember("vendor", "sre", "dev-engineer")
	gh.AddIssue(ghubtest.Issue{Owner: "vendor", Repo: "incidents", Number: 7, Title: "acme prod slow merges", Labels: []string{"sev2", "customer:acme"}, Assignees: []string{"dev-engineer"}})
	gh.AddIssue(ghubtest.Issue{Owner: "vendor", Repo: "incidents", Number: 8, Title: "old", Closed: true})
	gh.AddIssue(ghubtest.Issue{Owner: "vendor", Repo: "incidents", Number: 9, Title: "a fix", PullRequest: true})
	t.Setenv("TETHER_TEST_GH_TOKEN", "ghp_tether_test")
	b := brokertest.Start(t, func(c *broker.Config) {
		c.GitHub = &ghub.Config{BaseURL: gh.URL(), Token: "env:TETHER_TEST_GH_TOKEN", Org: "vendor", Teams: []string{"sre", "db-oncall"}}
	})
	ctx := context.Background()
	eng := asUser(t, b, "engineer@vendor.test")

	w, err := eng.Whoami(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w.GitHubLogin != "dev-engineer" || !slices.Equal(w.GitHubTeams, []string{"sre"}) {
		t.Errorf("whoami = github %q teams %q, want dev-engineer in [sre]", w.GitHubLogin, w.GitHubTeams)
	}

	tk, err := eng.Ticket(ctx, "vendor/incidents#7")
	if err != nil {
		t.Fatalf("Ticket(open issue) = %v", err)
	}
	if tk.State != "open" || !slices.Equal(tk.Labels, []string{"customer:acme", "sev2"}) || !slices.Equal(tk.Assignees, []string{"dev-engineer"}) {
		t.Errorf("Ticket(open issue) = %+v, want open with labels and assignee", tk)
	}
	for _, tt := range []struct {
		ref        string
		prepare    func()
		wantStatus int
		wantMsg    string
	}{
		{"vendor/incidents#8", nil, http.StatusConflict, "closed"},
		{"vendor/incidents#9", nil, http.StatusUnprocessableEntity, "pull request"},
		{"vendor/incidents#404", nil, http.StatusNotFound, "vendor/incidents#404"},
		{"acme/ops#x", nil, http.StatusBadRequest, "want owner/repo#NUMBER"},
		{"vendor/incidents#11", func() { gh.Fail(http.StatusInternalServerError) }, http.StatusBadGateway, "could not verify ticket"},
		// go-github then holds further calls until the reset, by itself.
		{"vendor/incidents#10", func() { gh.Recover(); gh.RateLimit(time.Now().Add(time.Hour)) }, http.StatusTooManyRequests, "rate limit"},
	} {
		if tt.prepare != nil {
			tt.prepare()
		}
		_, err := eng.Ticket(ctx, tt.ref)
		var ae *brokerapi.Error
		if !errors.As(err, &ae) || ae.Status != tt.wantStatus || !strings.Contains(strings.ToLower(ae.Message), strings.ToLower(tt.wantMsg)) {
			t.Errorf("Ticket(%s) = %v, want %d mentioning %q", tt.ref, err, tt.wantStatus, tt.wantMsg)
		}
	}
	// GitHub down: whoami still answers, saying why teams are unknown.
	w, err = eng.Whoami(ctx)
	if err != nil || w.GitHubError == "" || len(w.GitHubTeams) != 0 {
		t.Errorf("whoami with GitHub failing = %+v, %v; want no teams and the reason", w, err)
	}
}

// asUser returns an API client holding a dev user's ID token, as after
// 'broker login --dev-user'.
func asUser(t testing.TB, b *brokertest.Broker, email string) *brokerapi.Client {
	t.Helper()
	tok, err := b.DevIdP().Token(brokertest.IssuerOf(email), email, devbroker.ClientID, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := brokerapi.NewClient(config.CLI{APIURL: b.APIURL(), Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	if brokertest.IssuerOf(email) != "vendor" {
		// A customer approver signs approvals at their own provider.
		c.SetSigner(func(_ context.Context, st brokerapi.ApprovalStatement) (string, error) {
			return b.DevIdP().Token(brokertest.IssuerOf(email), email, devbroker.ClientID, st.Digest)
		})
	}
	return c
}
