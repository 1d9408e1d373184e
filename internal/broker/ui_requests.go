package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/access"
	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/weblogin"
)

// The approver's pages of the web console: the inbox, a request's page,
// and its approve (a signing ceremony at the approver's own identity
// provider), deny and revoke forms.

const (
	// inboxPageSize is how many requests an inbox page lists.
	inboxPageSize = 50
	// inboxMax bounds how far the inbox pages (the store's largest list).
	inboxMax = 1000
	// ticketLookupTimeout bounds the request page's wait for the ticket's
	// state.
	ticketLookupTimeout = 3 * time.Second
)

type inboxRow struct {
	ID, Short, Engineer, Deployment, Duration, Reason, Ticket, Waiting, Age string
	Scopes, Reasons                                                         []string
	BreakGlass                                                              bool
	Created                                                                 time.Time
}

// uiInbox lists the pending requests the caller may review, through the
// API's listing ([Broker.visibleRequests]): a customer's approver sees
// their own tenant's only.
func (b *Broker) uiInbox(w http.ResponseWriter, r *http.Request) error {
	ars, data, err := b.uiRequestPage(r, []string{store.StatePending})
	if err != nil {
		return err
	}
	now := b.now()
	rows := make([]inboxRow, 0, len(ars))
	for _, ar := range ars {
		rows = append(rows, inboxRow{
			ID: ar.ID, Short: shortID(ar.ID), Engineer: displayName(ar.Requester), Deployment: ar.Tenant + "/" + ar.Name,
			Duration: ar.Duration.String(), Reason: ar.Reason, Ticket: ar.Ticket, Waiting: access.Waiting(ar),
			Age: age(now, ar.CreatedAt), Scopes: ar.Scopes, Reasons: access.Decision(ar).Reasons,
			BreakGlass: ar.BreakGlass, Created: ar.CreatedAt,
		})
	}
	data["Rows"] = rows
	b.render(w, r, http.StatusOK, "inbox", "Inbox", data)
	return nil
}

// uiRequestPage reads the page ?page= asks for ([inboxPageSize] a page,
// at most [inboxMax] in all) of the requests in states that the caller
// may see, through the API's listing ([Broker.visibleRequests]), and the
// template data of its paging: Page, Tenant, Max, Prev, Next, Truncated.
func (b *Broker) uiRequestPage(r *http.Request, states []string) ([]store.AccessRequest, map[string]any, error) {
	ctx := r.Context()
	p := principalFrom(ctx)
	page := 1
	if s := r.URL.Query().Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > inboxMax/inboxPageSize {
			return nil, nil, errorf(http.StatusBadRequest, "invalid_page", "page %q: want a number from 1 to %d", truncate(s, 20), inboxMax/inboxPageSize)
		}
		page = n
	}
	ars, err := b.visibleRequests(ctx, p, store.RequestFilter{States: states, Limit: min(page*inboxPageSize+1, inboxMax)})
	if err != nil {
		return nil, nil, err
	}
	data := map[string]any{"Page": page, "Tenant": p.Tenant, "Max": inboxMax, "Prev": 0, "Next": 0, "Truncated": false}
	if page > 1 {
		data["Prev"] = page - 1
	}
	if len(ars) > page*inboxPageSize && page < inboxMax/inboxPageSize {
		data["Next"] = page + 1
	} else if len(ars) >= inboxMax {
		data["Truncated"] = true
	}
	from, to := min((page-1)*inboxPageSize, len(ars)), min(page*inboxPageSize, len(ars))
	return ars[from:to], data, nil
}

// shortID is the first group of a request ID, as lists show it.
func shortID(id string) string {
	if i := strings.IndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return id
}

// age says how long ago t was, for people.
func age(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", int(d/time.Hour))
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}

type durationOption struct{ Value, Text string }

type requestPage struct {
	R           brokerapi.AccessRequest
	Age         string
	TicketState string
	Review      bool // the caller's review would count: show approve and deny
	Signs       bool // the caller signs an approval (a customer's approver)
	Scopes      []string
	Durations   []durationOption
	Revoke      bool
	PlanDigest  string
	Engineer    engineerActions // what the request's own engineer may do
	Replay      string          // the request's session replay, when the caller may open it
}

// uiRequest shows a request: what was asked, the policy's notes, the
// reviews, the grant, and the forms the caller may use.
func (b *Broker) uiRequest(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	ar, err := b.requestOf(r)
	if err != nil {
		return err
	}
	p := principalFrom(ctx)
	me := person(p)
	pg := requestPage{R: b.requestView(ar), Age: age(b.now(), ar.CreatedAt)}
	if ar.Ticket != "" {
		pg.TicketState = b.ticketState(ctx, ar.Ticket)
	}
	if ar.NetworkPlan != nil {
		pg.PlanDigest = ar.NetworkPlan.Digest
	}
	reviewed := slices.ContainsFunc(ar.Reviews, func(x store.Review) bool { return access.SamePerson(x.Reviewer, me) })
	pg.Review = ar.State == store.StatePending && mayCall(approveRoute, p.HasRole) && !reviewed &&
		!access.SamePerson(me, ar.Requester) && access.ReviewRole(me, ar.Tenant, access.Decision(ar).RequiredReviews) != ""
	if pg.Review && p.Tenant != "" && ar.Network == nil {
		pg.Signs = true
		pg.Scopes = access.Decision(ar).Scopes
		pg.Durations = []durationOption{{"", "as asked: " + ar.Duration.String()}}
		for _, d := range []time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour} {
			if d < ar.Duration {
				pg.Durations = append(pg.Durations, durationOption{d.String(), d.String()})
			}
		}
	}
	pg.Revoke = (ar.State == store.StateActive || ar.State == store.StateApproved) && mayCall(revokeRoute, p.HasRole) &&
		(access.SamePerson(me, ar.Requester) || (me.Tenant == ar.Tenant && slices.Contains(p.Roles, names.RoleApprover)) || access.IsInternal(me))
	pg.Engineer = engineerActionsOf(me, p.HasRole, ar)
	pg.Replay = b.replayPath(r.Context(), p, ar.Tenant, ar.ID)
	b.render(w, r, http.StatusOK, "request", "Request for "+ar.Tenant+"/"+ar.Name, pg)
	return nil
}

// replayRoutes are the console's session replays of a request, the
// vendor's first: a reviewer or admin of the vendor opens the vendor's
// log, a customer's approver their tenant's trail.
var replayRoutes = []string{"GET /ui/audit/sessions/{id}", "GET /ui/tenants/{tenant}/audit/sessions/{id}"}

// replayPath is the path of the session replay of request id, on a
// deployment of tenant, that p may open, or "" when p may open none. It
// asks the replay routes' own authorization ([Broker.permit], by the API
// row each follows), so a page links only to a replay that will not
// answer 403.
func (b *Broker) replayPath(ctx context.Context, p identity.Principal, tenant, id string) string {
	routes := UIRoutes()
	for _, pattern := range replayRoutes {
		i := slices.IndexFunc(routes, func(rt UIRoute) bool { return rt.Pattern == pattern })
		if i < 0 {
			continue
		}
		e, ok := endpointRow(routes[i].Follows)
		if !ok {
			continue
		}
		path := "/ui/audit/sessions/" + url.PathEscape(id)
		if strings.Contains(pattern, "{tenant}") {
			path = tenantAuditPath(tenant) + "/sessions/" + url.PathEscape(id)
		}
		probe, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
		if err != nil {
			continue
		}
		probe.SetPathValue("tenant", tenant)
		probe.SetPathValue("id", id)
		if b.permit(probe, e, p) == nil {
			return path
		}
	}
	return ""
}

// mayCall reports whether a caller holding roles (hasRole) may call the
// API endpoint pattern, by its row's roles; the tenant check is the
// page's own, made when it was authorized.
func mayCall(pattern string, hasRole func(string) bool) bool {
	e, ok := endpointRow(pattern)
	return ok && slices.ContainsFunc(e.Roles, hasRole)
}

// ticketState is the cited ticket's state when the ticket source knows
// it, or "".
func (b *Broker) ticketState(ctx context.Context, ref string) string {
	src := b.ticketSource()
	if src == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, ticketLookupTimeout)
	defer cancel()
	t, unverified, err := src.Ticket(ctx, ref)
	if err != nil || unverified != "" {
		return ""
	}
	return t.State
}

// uiCeremony is what a pending signing ceremony carries to its callback.
type uiCeremony struct {
	RequestID string
	Statement string // canonical
	Comment   string
}

// formComment reads a form's trimmed, bounded comment field.
func formComment(r *http.Request, field string) (string, error) {
	c := strings.TrimSpace(r.PostForm.Get(field))
	if len(c) > maxCommentLen {
		return "", errorf(http.StatusBadRequest, "invalid_comment", "%s: at most %d characters", field, maxCommentLen)
	}
	return c, nil
}

// uiApprove approves a request. A customer's approver signs: the broker
// states the terms (narrowed by the form's duration and scopes), keeps a
// pending ceremony bound to the session, and shows what is signed with a
// link to the approver's own identity provider, whose ID token, nonce
// the statement's digest, comes back to [Broker.uiCeremonyDone]. (A link,
// not a redirect: form-action 'self' would stop a form's redirect to
// another origin.) Vendor reviewers approve at once, as with the API.
func (b *Broker) uiApprove(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p := principalFrom(ctx)
	comment, err := formComment(r, "comment")
	if err != nil {
		return err
	}
	cur, err := b.requestOf(r)
	if err != nil {
		return err
	}
	if p.Tenant == "" || cur.Network != nil {
		if _, err := b.review(r, cur, access.Review{Approve: true, Comment: comment, PlanDigest: r.PostForm.Get("plan_digest")}); err != nil {
			return err
		}
		http.Redirect(w, r, "/ui/requests/"+url.PathEscape(cur.ID)+"?done=approved", http.StatusSeeOther)
		return nil
	}
	var dur time.Duration
	if s := r.PostForm.Get("duration"); s != "" {
		if dur, err = time.ParseDuration(s); err != nil || dur <= 0 {
			return errorf(http.StatusBadRequest, "invalid_duration", "duration %q: want a duration such as 30m or 1h", truncate(s, 40))
		}
	}
	scopes := r.PostForm["scope"]
	if len(scopes) == 0 {
		return errorf(http.StatusBadRequest, "invalid_scope", "tick at least one scope to approve (or deny the request)")
	}
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	allowed := slices.Sorted(slices.Values(access.Decision(cur).Scopes))
	if slices.Equal(scopes, allowed) {
		scopes = nil // narrowing nothing: the terms others signed, if any
	}
	if dur == cur.Duration {
		dur = 0
	}
	d, err := b.store.GetDeployment(ctx, cur.DeploymentID)
	if err != nil {
		return fmt.Errorf("get deployment: %w", err)
	}
	var agentID string
	if d.Agent != nil {
		agentID = d.Agent.ID
	}
	st, err := access.ProposeTerms(cur, agentID, dur, scopes, b.now())
	if err != nil {
		return accessError(err)
	}
	canon, err := st.Canonical()
	if err != nil {
		return fmt.Errorf("approval statement: %w", err)
	}
	digest := approval.Digest(canon)
	authURL, err := b.web.BeginCeremony(w, r, weblogin.Ceremony{Nonce: digest, Data: uiCeremony{RequestID: cur.ID, Statement: string(canon), Comment: comment}})
	if err != nil {
		if errors.Is(err, weblogin.ErrNoSession) {
			return errorf(http.StatusUnauthorized, "unauthenticated", "your session ended: sign in again, then approve again")
		}
		b.log.Warn("begin approval signing", "request", cur.ID, "err", err)
		return errorf(http.StatusServiceUnavailable, "idp_unavailable", "your identity provider could not be reached to sign the approval: try again in a moment")
	}
	b.render(w, r, http.StatusOK, "sign", "Sign your approval", map[string]any{
		"RequestID": cur.ID, "Engineer": displayName(cur.Requester), "Deployment": cur.Tenant + "/" + cur.Name,
		"Scopes": st.Scopes, "NotBefore": st.NotBefore, "NotAfter": st.NotAfter, "Duration": st.NotAfter.Sub(st.NotBefore).String(),
		"Agent": st.Agent, "Digest": digest, "Issuer": p.IssuerName, "AuthURL": authURL,
	})
	return nil
}

// uiCeremonyDone completes a signing ceremony: weblogin verified the ID
// token (the session's own provider, its user, the statement's digest as
// nonce); the broker authorizes the caller for the request again, checks
// the proof as the API does ([Broker.checkProof]) and applies the review
// the API's way ([Broker.review]), with the same audit events.
func (b *Broker) uiCeremonyDone(w http.ResponseWriter, r *http.Request, res weblogin.CeremonyResult) {
	r = withCall(r)
	r = r.WithContext(context.WithValue(r.Context(), loadedKey{}, new(loadedRequest)))
	if pc, ok := res.Data.(permitCeremony); ok {
		b.uiPermitSigned(w, r, res.Principal, res.IDToken, pc)
		return
	}
	c, ok := res.Data.(uiCeremony)
	p := res.Principal
	if !ok {
		b.uiAnswer(w, r, actor(p, ""), errors.New("signing ceremony without its request"))
		return
	}
	r.SetPathValue("id", c.RequestID)
	e, _ := endpointRow(approveRoute)
	if err := b.permit(r, e, p); err != nil {
		b.uiAnswer(w, r, actor(p, ""), err)
		return
	}
	r = withPrincipal(r, p, e)
	cur, err := b.requestOf(r)
	if err == nil {
		if perr := b.checkProof(r.Context(), p, c.Statement, res.IDToken); perr != nil {
			err = b.refuseReview(r.Context(), r, cur, "approval_proof_invalid", perr.Error())
		} else {
			_, err = b.review(r, cur, access.Review{Approve: true, Comment: c.Comment, Statement: c.Statement, Proof: res.IDToken})
		}
	}
	if err != nil {
		b.uiAnswer(w, r, callerOf(r), err)
		return
	}
	http.Redirect(w, r, "/ui/requests/"+url.PathEscape(c.RequestID)+"?done=approved", http.StatusSeeOther)
}

// uiDeny denies a request, with the comment the API requires.
func (b *Broker) uiDeny(w http.ResponseWriter, r *http.Request) error {
	comment, err := formComment(r, "comment")
	if err != nil {
		return err
	}
	if comment == "" {
		return errorf(http.StatusBadRequest, "comment_required", "a denial needs a comment saying why")
	}
	cur, err := b.requestOf(r)
	if err != nil {
		return err
	}
	if _, err := b.review(r, cur, access.Review{Approve: false, Comment: comment}); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/requests/"+url.PathEscape(cur.ID)+"?done=denied", http.StatusSeeOther)
	return nil
}

// uiRevoke revokes an active request at once, with a reason.
func (b *Broker) uiRevoke(w http.ResponseWriter, r *http.Request) error {
	reason, err := formComment(r, "reason")
	if err != nil {
		return err
	}
	if reason == "" {
		return errorf(http.StatusBadRequest, "reason_required", "a revocation needs a reason")
	}
	cur, err := b.requestOf(r)
	if err != nil {
		return err
	}
	if _, err := b.access.Revoke(r.Context(), cur.ID, caller(r), reason); err != nil {
		return accessError(err)
	}
	http.Redirect(w, r, "/ui/requests/"+url.PathEscape(cur.ID)+"?done=revoked", http.StatusSeeOther)
	return nil
}
