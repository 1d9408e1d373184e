package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/ghub/ghubtest"
	"github.com/tetherhq/tether/internal/notify"
)

// clock is a broker clock the test moves forward.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

func apiErr(t *testing.T, err error) *brokerapi.Error {
	t.Helper()
	var ae *brokerapi.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an API error", err)
	}
	return ae
}

func wantAPIErr(t *testing.T, what string, err error, status int, substr string) {
	t.Helper()
	var ae *brokerapi.Error
	if !errors.As(err, &ae) || ae.Status != status || !strings.Contains(ae.Message, substr) {
		t.Errorf("%s = %v, want %d mentioning %q", what, err, status, substr)
	}
}

// TestRequestWorkflow walks an access request through its states with
// the embedded default policy and checks every hard rule on the way.
func TestRequestWorkflow(t *testing.T) {
	var clk clock
	b := brokertest.Start(t, func(c *broker.Config) { c.Now = clk.now; c.LifecycleInterval = 20 * time.Millisecond })
	b.Pair(t, "acme", "prod")
	b.Pair(t, "globex", "prod")
	ctx := context.Background()
	eng, lead := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "lead@vendor.test")
	acme, globex, rev := asUser(t, b, "approver@acme.test"), asUser(t, b, "approver@globex.test"), asUser(t, b, "reviewer@vendor.test")

	ask := brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "merges are slow"}
	ar, err := eng.CreateRequest(ctx, ask)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if ar.State != brokerapi.StatePending || len(ar.Waiting) != 1 || !strings.Contains(ar.Waiting[0], "approver of tenant acme") || ar.Decision.PolicyHash == "" {
		t.Fatalf("created request = %+v, want pending, waiting for acme's approver, with the policy hash", ar)
	}

	// Bad asks, each refused with its reason.
	for _, tt := range []struct {
		name   string
		edit   func(*brokerapi.CreateAccessRequest)
		status int
		msg    string
	}{
		{"unknown scope", func(r *brokerapi.CreateAccessRequest) { r.Scopes = []string{"clickhouse:all"} }, 400, `scope "clickhouse:all"`},
		{"too long for policy", func(r *brokerapi.CreateAccessRequest) { r.Duration = "5h" }, 403, "policy"},
		{"over the global cap", func(r *brokerapi.CreateAccessRequest) { r.Duration = "13h" }, 400, "from 1m to 12h"},
		{"no reason", func(r *brokerapi.CreateAccessRequest) { r.Reason = " " }, 400, "reason"},
		{"malformed ticket", func(r *brokerapi.CreateAccessRequest) { r.Ticket = "acme/ops#x" }, 400, "acme/ops#x"},
		{"unknown deployment", func(r *brokerapi.CreateAccessRequest) { r.Deployment = "acme/nope" }, 404, "no deployment acme/nope"},
	} {
		r := ask
		tt.edit(&r)
		_, err := eng.CreateRequest(ctx, r)
		wantAPIErr(t, "create ("+tt.name+")", err, tt.status, tt.msg)
	}
	// Only engineers ask.
	_, err = rev.CreateRequest(ctx, ask)
	wantAPIErr(t, "create as reviewer", err, 403, "needs the role engineer")

	// Another tenant's approver cannot see or approve it.
	_, err = globex.Approve(ctx, ar.ID, "")
	wantAPIErr(t, "approve by globex", err, 403, "may not act on tenant acme")
	if list, _ := globex.ListRequests(ctx, brokerapi.RequestQuery{}); len(list) != 0 {
		t.Errorf("globex's approver lists %d requests, want none of acme's", len(list))
	}
	if list, _ := acme.ListRequests(ctx, brokerapi.RequestQuery{State: "pending"}); len(list) != 1 {
		t.Errorf("acme's approver lists %d pending requests, want 1", len(list))
	}
	// The engineer cannot approve (no reviewer role), and a vendor
	// reviewer's approval does not count for a customer review.
	_, err = eng.Approve(ctx, ar.ID, "")
	wantAPIErr(t, "approve by the engineer", err, 403, "needs the role")
	_, err = rev.Approve(ctx, ar.ID, "")
	wantAPIErr(t, "approve by a vendor reviewer", err, 403, "does not count")

	start := time.Now()
	ar, err = acme.Approve(ctx, ar.ID, "go ahead")
	if err != nil {
		t.Fatalf("approve by acme: %v", err)
	}
	if ar.State != brokerapi.StateActive || ar.Grant == nil || ar.Grant.Expiry.Sub(ar.Grant.NotBefore) != 30*time.Minute || !slices.Equal(ar.Grant.Scopes, []string{"clickhouse:system"}) {
		t.Fatalf("approved request = %+v, want active with a 30m clickhouse grant", ar)
	}
	t.Logf("approval → active grant: %v", time.Since(start))
	_, err = acme.Approve(ctx, ar.ID, "")
	wantAPIErr(t, "approve twice", err, 409, "not pending")

	// Self-review: an on-call lead is engineer and reviewer; a break-glass
	// request needs internal reviewers, but never its own requester.
	// (Break-glass itself is covered by TestBreakGlass; here the lead asks
	// normally and tries to approve as reviewer.)
	lr, err := lead.CreateRequest(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lead.Approve(ctx, lr.ID, "")
	wantAPIErr(t, "self-approval", err, 403, "nobody reviews their own request")
	if _, err := lead.Cancel(ctx, lr.ID); err != nil {
		t.Errorf("cancel own request: %v", err)
	}
	_, err = eng.Cancel(ctx, lr.ID)
	wantAPIErr(t, "cancel another's request", err, 403, "only the requester")

	// Denial needs a comment and ends the request.
	dr, _ := eng.CreateRequest(ctx, ask)
	_, err = acme.Deny(ctx, dr.ID, "")
	wantAPIErr(t, "deny without comment", err, 400, "comment")
	if dr, err = acme.Deny(ctx, dr.ID, "not during the migration"); err != nil || dr.State != brokerapi.StateDenied {
		t.Errorf("deny = %+v, %v", dr, err)
	}

	// Revocation by the customer.
	if ar, err = acme.Revoke(ctx, ar.ID, "done, thanks"); err != nil || ar.State != brokerapi.StateRevoked {
		t.Fatalf("revoke = %+v, %v", ar, err)
	}
	_, err = acme.Revoke(ctx, ar.ID, "again")
	wantAPIErr(t, "revoke twice", err, 409, "only an approved or active request")

	// Expiry and the pending timeout come from the broker's own clock.
	er, _ := eng.CreateRequest(ctx, ask)
	er, _ = acme.Approve(ctx, er.ID, "")
	pr, _ := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "globex/prod", Scopes: []string{"prometheus:read"}, Duration: "1h", Reason: "r"})
	clk.advance(31 * time.Minute)
	eng = asUser(t, b, "engineer@vendor.test") // ID tokens last 15 minutes
	if er = waitState(t, eng, er, brokerapi.StateExpired); er.EndReason == "" {
		t.Errorf("expired request = %+v, want an end reason", er)
	}
	clk.advance(24 * time.Hour)
	eng = asUser(t, b, "engineer@vendor.test")
	waitState(t, eng, pr, brokerapi.StateTimedOut)

	// The whole life is in the audit log.
	types := auditTypes(t, b)
	for _, want := range []string{"request.created", "policy.decided", "review.approved", "grant.issued", "grant.revoked", "review.denied", "request.cancelled", "grant.expired", "request.timed_out", "auth.failed: self_review"} {
		if !slices.ContainsFunc(types, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("audit log lacks %s", want)
		}
	}
}

// waitState long-polls a request until it reaches state.
func waitState(t *testing.T, c *brokerapi.Client, ar brokerapi.AccessRequest, state string) brokerapi.AccessRequest {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for ar.State != state {
		if time.Now().After(deadline) {
			t.Fatalf("request %s is %s, want %s", ar.ID, ar.State, state)
		}
		var err error
		if ar, err = c.WaitRequest(context.Background(), ar.ID, ar.Version, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return ar
}

// TestBreakGlass: a sev1 ticket and two distinct internal reviewers,
// no customer review, at most an hour; the customer is told at once by a
// signed webhook.
func TestBreakGlass(t *testing.T) {
	gh := ghubtest.NewServer(t)
	gh.AddToken("ghp_t")
	gh.AddIssue(ghubtest.Issue{Owner: "vendor", Repo: "incidents", Number: 1, Title: "acme down", Labels: []string{"sev1", "customer:acme"}})
	gh.AddIssue(ghubtest.Issue{Owner: "vendor", Repo: "incidents", Number: 2, Title: "acme slow", Labels: []string{"sev3"}})
	hook := newReceiver(t)
	b := brokertest.Start(t, func(c *broker.Config) {
		c.GitHub = &ghub.Config{BaseURL: gh.URL(), Token: "ghp_t", Org: "vendor", Teams: []string{"sre"}, Comment: true}
		c.Webhooks = []notify.Webhook{{Tenant: "acme", URL: hook.srv.URL, Secret: hookSecret}}
	})
	b.Pair(t, "acme", "prod")
	ctx := context.Background()
	eng, lead := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "lead@vendor.test")
	acme, rev, adm := asUser(t, b, "approver@acme.test"), asUser(t, b, "reviewer@vendor.test"), asUser(t, b, "admin@vendor.test")

	bg := brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "45m", Reason: "outage", Ticket: "vendor/incidents#1", BreakGlass: true}
	_, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: bg.Deployment, Scopes: bg.Scopes, Duration: "45m", Reason: "outage", Ticket: "vendor/incidents#2", BreakGlass: true})
	wantAPIErr(t, "break-glass on a sev3 ticket", err, 403, "sev1")
	_, err = eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: bg.Deployment, Scopes: bg.Scopes, Duration: "2h", Reason: "outage", Ticket: "vendor/incidents#1", BreakGlass: true})
	wantAPIErr(t, "break-glass for 2h", err, 403, "")

	ar, err := eng.CreateRequest(ctx, bg)
	if err != nil {
		t.Fatalf("break-glass: %v", err)
	}
	if ar.State != brokerapi.StatePending || len(ar.Decision.RequiredReviews) != 1 || ar.Decision.RequiredReviews[0].Role != "internal" || ar.Decision.RequiredReviews[0].Count != 2 {
		t.Fatalf("break-glass request = %+v, want two internal reviews", ar)
	}
	msg := hook.wait(t, "breakglass.used")
	if msg.Tenant != "acme" || msg.RequestID != ar.ID || msg.URL != strings.TrimSuffix(b.APIURL(), "/")+"/ui/requests/"+ar.ID {
		t.Errorf("break-glass webhook = %+v, want it to link the request's page", msg)
	}
	_, err = acme.Approve(ctx, ar.ID, "")
	wantAPIErr(t, "customer approval of break-glass", err, 403, "does not count")
	if ar, err = rev.Approve(ctx, ar.ID, "seen the pager"); err != nil || ar.State != brokerapi.StatePending {
		t.Fatalf("first internal approval = %+v, %v; want still pending", ar, err)
	}
	_, err = rev.Approve(ctx, ar.ID, "")
	wantAPIErr(t, "the same reviewer twice", err, 409, "counts once")
	if ar, err = adm.Approve(ctx, ar.ID, ""); err != nil || ar.State != brokerapi.StateActive {
		t.Fatalf("second internal approval = %+v, %v; want active", ar, err)
	}
	hook.wait(t, "request.approved")
	// The lead's own break-glass request: they may not be one of its two.
	lr, err := lead.CreateRequest(ctx, bg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lead.Approve(ctx, lr.ID, "")
	wantAPIErr(t, "self-approval of break-glass", err, 403, "nobody reviews their own request")
	if !slices.ContainsFunc(auditTypes(t, b), func(s string) bool { return strings.HasPrefix(s, "breakglass.used") }) {
		t.Error("audit log lacks breakglass.used")
	}
	// The ticket was told.
	deadline := time.Now().Add(10 * time.Second)
	for !slices.ContainsFunc(gh.Comments(), func(c ghubtest.Comment) bool { return strings.Contains(c.Body, "granted") }) {
		if time.Now().After(deadline) {
			t.Fatalf("no 'granted' comment on the ticket: %+v", gh.Comments())
		}
		time.Sleep(20 * time.Millisecond) // polling the fake's observable state
	}
}

const hookSecret = "whsec_0123456789abcdef0123456789abcdef"

// receiver is a customer's webhook endpoint that checks signatures.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	msgs []notify.Message
	got  chan struct{}
	bad  atomic.Int32
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{got: make(chan struct{}, 100)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify([]byte(hookSecret), r.Header.Get(notify.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
			rc.bad.Add(1)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var m notify.Message
		json.Unmarshal(body, &m)
		rc.mu.Lock()
		rc.msgs = append(rc.msgs, m)
		rc.mu.Unlock()
		rc.got <- struct{}{}
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) wait(t *testing.T, typ string) notify.Message {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		rc.mu.Lock()
		for _, m := range rc.msgs {
			if m.Type == typ {
				rc.mu.Unlock()
				return m
			}
		}
		rc.mu.Unlock()
		select {
		case <-rc.got:
		case <-timeout:
			t.Fatalf("no %s webhook (bad signatures: %d)", typ, rc.bad.Load())
		}
	}
}

// TestPolicyReload: a changed policy directory is picked up; a broken
// one is refused, audited, and the last good policy keeps deciding.
func TestPolicyReload(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../../policy/access.rego")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "access.rego"), src, 0o600)
	b := brokertest.Start(t, func(c *broker.Config) { c.PolicyDir = dir })
	b.Pair(t, "acme", "prod")
	ctx := context.Background()
	eng := asUser(t, b, "engineer@vendor.test")
	ask := brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "r"}
	first := b.PolicyHash()

	// A stricter policy: at most 15 minutes.
	stricter := strings.Replace(string(src), "14400", "900", 1)
	if stricter == string(src) {
		t.Fatal("policy/access.rego no longer spells its maximum as 14400 seconds; update this test")
	}
	os.WriteFile(filepath.Join(dir, "access.rego"), []byte(stricter), 0o600)
	if err := b.ReloadPolicy(ctx); err != nil {
		t.Fatalf("reload a good policy: %v", err)
	}
	second := b.PolicyHash()
	if second == first {
		t.Error("policy hash unchanged after a reload")
	}
	_, err = eng.CreateRequest(ctx, ask)
	wantAPIErr(t, "30m under the stricter policy", err, 403, "policy")

	os.WriteFile(filepath.Join(dir, "access.rego"), []byte(stricter+"\nthis is not rego {"), 0o600)
	if err := b.ReloadPolicy(ctx); err == nil || !strings.Contains(err.Error(), "access.rego") {
		t.Errorf("reload a broken policy = %v, want an error naming the file", err)
	}
	if b.PolicyHash() != second {
		t.Error("a broken policy replaced the last good one")
	}
	ask.Duration = "10m"
	if ar, err := eng.CreateRequest(ctx, ask); err != nil || ar.Decision.PolicyHash != second {
		t.Errorf("request after a broken reload = %+v, %v; want decided by the last good policy", ar.Decision, err)
	}
	var failed bool
	evs, _ := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.PolicyReloaded)})
	for _, ae := range evs {
		var e audit.Event
		json.Unmarshal(ae.Event, &e)
		failed = failed || e.Outcome == audit.Failure
	}
	if !failed {
		t.Error("the broken policy is not in the audit log")
	}
}

var _ = apiErr
