package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/policy"
)

// memStore keeps requests in memory, with the store's compare-and-swap on
// the version.
type memStore struct {
	mu   sync.Mutex
	reqs map[string]store.AccessRequest
	deps map[string]store.DeploymentStatus
}

func newMemStore() *memStore {
	return &memStore{reqs: map[string]store.AccessRequest{}, deps: map[string]store.DeploymentStatus{
		"dep": {Deployment: store.Deployment{ID: "dep", Tenant: "acme", Name: "prod"}, Agent: &store.Agent{ID: "agent"}},
	}}
}

func (m *memStore) GetRequest(_ context.Context, id string) (store.AccessRequest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ar, ok := m.reqs[id]
	if !ok {
		return ar, fmt.Errorf("request %s: %w", id, store.ErrNotFound)
	}
	ar.Reviews = slices.Clone(ar.Reviews)
	return ar, nil
}

func (m *memStore) CreateRequest(_ context.Context, ar store.AccessRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reqs[ar.ID] = ar
	return nil
}

func (m *memStore) UpdateRequest(_ context.Context, ar store.AccessRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.reqs[ar.ID]; !ok || cur.Version != ar.Version {
		return store.ErrConflict
	}
	ar.Version++
	m.reqs[ar.ID] = ar
	return nil
}

func (m *memStore) ListRequests(_ context.Context, f store.RequestFilter) ([]store.AccessRequest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.AccessRequest
	for _, ar := range m.reqs {
		if due := ar.DueAt(); slices.Contains(f.States, ar.State) && !due.IsZero() && due.Before(f.DueBefore) {
			out = append(out, ar)
		}
	}
	return out, nil
}

func (m *memStore) GetDeployment(_ context.Context, id string) (store.DeploymentStatus, error) {
	d, ok := m.deps[id]
	if !ok {
		return d, store.ErrNotFound
	}
	return d, nil
}

// recorder keeps the events of each commit; while failing, it refuses.
type recorder struct {
	commits  [][]audit.Event
	deferred []audit.Event
	failing  bool
}

func (r *recorder) RecordAll(_ context.Context, es ...audit.Event) error {
	if r.failing {
		return errors.New("disk full")
	}
	r.commits = append(r.commits, es)
	return nil
}

func (r *recorder) Defer(e audit.Event) bool { r.deferred = append(r.deferred, e); return true }

// types lists the types of the events recorded, commit by commit.
func (r *recorder) types() [][]audit.Type {
	var out [][]audit.Type
	for _, c := range r.commits {
		var ts []audit.Type
		for _, e := range c {
			ts = append(ts, e.Type)
		}
		out = append(out, ts)
	}
	return out
}

// fixedPolicy decides every request alike.
type fixedPolicy struct {
	dec policy.Decision
	err error
}

func (p fixedPolicy) Decide(context.Context, policy.Input) (policy.Decision, error) {
	return p.dec, p.err
}
func (p fixedPolicy) Hash() string { return "hash" }

// clock is a fake clock the test moves.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

type fixture struct {
	svc   *Service
	store *memStore
	rec   *recorder
	clk   *clock
}

func newFixture(t *testing.T, dec policy.Decision, policyErr error) *fixture {
	t.Helper()
	f := &fixture{store: newMemStore(), rec: &recorder{}, clk: &clock{t: t0}}
	f.svc = New(Config{
		Store: f.store, Audit: f.rec, Policy: fixedPolicy{dec, policyErr}, Now: f.clk.now,
		PendingTimeout: time.Hour,
		Sign:           func(g grant.Grant) (string, error) { return "signed:" + g.ID, nil },
	})
	return f
}

func (f *fixture) create(t *testing.T, breakGlass bool) (store.AccessRequest, error) {
	t.Helper()
	return f.svc.Create(context.Background(), Create{
		Caller:     Caller{Person: engineer, Actor: audit.Actor{Subject: engineer.Email, Role: "engineer"}},
		Deployment: f.store.deps["dep"], Scopes: []string{"clickhouse:system"}, Duration: 30 * time.Minute,
		Reason: "merges are slow", BreakGlass: breakGlass, Ticket: "vendor/incidents#1",
		Input: policy.Input{Ticket: &policy.Ticket{Ref: "vendor/incidents#1", Verified: true, State: "open", Labels: []string{"sev1"}}},
	})
}

func (f *fixture) review(t *testing.T, ar store.AccessRequest, by store.Person, approve bool) (store.AccessRequest, error) {
	t.Helper()
	rv := Review{Approve: approve, Comment: "ok"}
	if approve && by.Tenant != "" {
		// A customer signs the terms the broker proposes.
		st, err := ProposeTerms(ar, "agent", 0, nil, f.svc.cfg.Now())
		if err != nil {
			return ar, err
		}
		b, err := st.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		rv.Statement, rv.Proof = string(b), "proof of "+by.Subject
	}
	return f.svc.Review(context.Background(), ar, Caller{Person: by}, rv)
}

func allowing(reviews ...policy.Review) policy.Decision {
	return policy.Decision{Allow: true, Reasons: []string{"fine"}, RequiredReviews: reviews, MaxDuration: 4 * time.Hour, MaxDurationSeconds: 4 * 3600, Scopes: []string{"clickhouse:system"}, PolicyHash: "hash"}
}

func wantTypes(t *testing.T, r *recorder, want ...[]audit.Type) {
	t.Helper()
	got := r.types()
	if len(got) != len(want) {
		t.Fatalf("commits = %v, want %v", got, want)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("commits = %v, want %v", got, want)
		}
	}
}

func one(ts ...audit.Type) []audit.Type { return ts }

// TestServiceWorkflow: create, two customer approvals, the grant signed in
// the last approval's write and audited with it, then its expiry.
func TestServiceWorkflow(t *testing.T) {
	f := newFixture(t, allowing(customer(2)), nil)
	ctx := context.Background()
	ar, err := f.create(t, false)
	if err != nil || ar.State != store.StatePending {
		t.Fatalf("Create = %s, %v; want pending", ar.State, err)
	}
	if ar, err = f.review(t, ar, acme1, true); err != nil || ar.State != store.StatePending {
		t.Fatalf("first approval = %s, %v; want pending", ar.State, err)
	}
	if ar, err = f.review(t, ar, acme2, true); err != nil || ar.State != store.StateActive {
		t.Fatalf("second approval = %s, %v; want active", ar.State, err)
	}
	if g := ar.Grant; g == nil || g.Token != "signed:"+g.ID || g.AgentID != "agent" || !g.Expiry.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("grant = %+v, want signed, for the agent, for 30m", g)
	}
	wantTypes(t, f.rec,
		one(audit.PolicyDecided), one(audit.RequestCreated),
		one(audit.ReviewApproved),
		one(audit.ReviewApproved, audit.GrantIssued)) // one commit
	f.clk.advance(29 * time.Minute)
	if err := f.svc.ExpireDue(ctx); err != nil {
		t.Fatal(err)
	}
	if cur, _ := f.store.GetRequest(ctx, ar.ID); cur.State != store.StateActive {
		t.Fatalf("at 29m the grant is %s, want active", cur.State)
	}
	f.clk.advance(time.Minute)
	if err := f.svc.ExpireDue(ctx); err != nil {
		t.Fatal(err)
	}
	if cur, _ := f.store.GetRequest(ctx, ar.ID); cur.State != store.StateExpired {
		t.Fatalf("at 30m the grant is %s, want expired", cur.State)
	}
	if last := f.rec.commits[len(f.rec.commits)-1][0]; last.Type != audit.GrantExpired || last.GrantID != ar.Grant.ID {
		t.Errorf("last event = %s of grant %s, want grant.expired of %s", last.Type, last.GrantID, ar.Grant.ID)
	}
}

func TestServiceCreate(t *testing.T) {
	for _, tt := range []struct {
		name       string
		dec        policy.Decision
		policyErr  error
		breakGlass bool
		wantCode   string
		wantState  string
		wantTypes  [][]audit.Type
	}{
		{"auto-approved: active at once", allowing(), nil, false, "", store.StateActive,
			[][]audit.Type{one(audit.PolicyDecided), one(audit.RequestCreated), one(audit.GrantIssued)}},
		{"denied by the policy, audited", policy.Decision{Reasons: []string{"no"}, PolicyHash: "hash"}, nil, false, CodePolicyDenied, "",
			[][]audit.Type{one(audit.PolicyDecided)}},
		{"a policy error refuses, audited", policy.Decision{}, errors.New("boom"), false, CodePolicyError, "",
			[][]audit.Type{one(audit.PolicyDecided)}},
		{"longer than allowed", func() policy.Decision { d := allowing(customer(1)); d.MaxDuration = 10 * time.Minute; return d }(), nil, false, CodeDurationTooLong, "",
			[][]audit.Type{one(audit.PolicyDecided)}},
		{"break-glass: two internal reviews", allowing(), nil, true, "", store.StatePending,
			[][]audit.Type{one(audit.PolicyDecided), one(audit.RequestCreated), one(audit.BreakglassUsed)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.dec, tt.policyErr)
			ar, err := f.create(t, tt.breakGlass)
			if code(err) != tt.wantCode {
				t.Fatalf("Create = %v, want code %q", err, tt.wantCode)
			}
			if err == nil && ar.State != tt.wantState {
				t.Errorf("Create = %s, want %s", ar.State, tt.wantState)
			}
			wantTypes(t, f.rec, tt.wantTypes...)
			if tt.wantCode == CodePolicyDenied || tt.wantCode == CodePolicyError {
				if e := f.rec.commits[0][0]; e.Outcome != audit.Failure {
					t.Errorf("policy.decided outcome = %s, want failure", e.Outcome)
				}
			}
			if tt.breakGlass && (len(Missing(ar)) != 1 || Missing(ar)[0] != internal(BreakGlassReviews)) {
				t.Errorf("break-glass waits for %+v, want two internal reviews", Missing(ar))
			}
		})
	}
}

// TestServiceAuditBeforeAnswer: a change whose event cannot be written
// is undone and refused; a revocation stands, its event kept for later; a
// grant that cannot be audited is revoked.
func TestServiceAuditBeforeAnswer(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, allowing(customer(1)), nil)
	mk := func() store.AccessRequest {
		ar, err := f.create(t, false)
		if err != nil {
			t.Fatal(err)
		}
		return ar
	}
	toDeny, toCancel, toApprove, toExpire, toRevoke := mk(), mk(), mk(), mk(), mk()
	active := func(ar store.AccessRequest) store.AccessRequest {
		ar, err := f.review(t, ar, acme1, true)
		if err != nil {
			t.Fatal(err)
		}
		return ar
	}
	toRevoke, toExpire = active(toRevoke), active(toExpire)
	state := func(ar store.AccessRequest) store.AccessRequest {
		cur, err := f.store.GetRequest(ctx, ar.ID)
		if err != nil {
			t.Fatal(err)
		}
		return cur
	}

	f.rec.failing = true
	if _, err := f.review(t, toDeny, acme1, false); code(err) != CodeAuditUnavailable {
		t.Errorf("deny = %v, want audit_unavailable", err)
	}
	if cur := state(toDeny); cur.State != store.StatePending || len(cur.Reviews) != 0 {
		t.Errorf("unaudited denial left %s with %d reviews, want pending with none", cur.State, len(cur.Reviews))
	}
	if _, err := f.svc.Cancel(ctx, toCancel.ID, Caller{Person: engineer}); code(err) != CodeAuditUnavailable {
		t.Errorf("cancel = %v, want audit_unavailable", err)
	}
	if cur := state(toCancel); cur.State != store.StatePending {
		t.Errorf("unaudited cancellation left %s, want pending", cur.State)
	}
	if _, err := f.review(t, toApprove, acme1, true); code(err) != CodeAuditUnavailable {
		t.Errorf("last approval = %v, want audit_unavailable", err)
	}
	if cur := state(toApprove); cur.State != store.StateRevoked || cur.EndReason != "the grant could not be audited" {
		t.Errorf("unaudited grant left %s (%q), want revoked", cur.State, cur.EndReason)
	}
	if _, err := f.svc.Revoke(ctx, toRevoke.ID, Caller{Person: acme1}, "stop"); code(err) != CodeAuditUnavailable {
		t.Errorf("revoke = %v, want audit_unavailable", err)
	}
	if cur := state(toRevoke); cur.State != store.StateRevoked {
		t.Errorf("revocation without its event left %s, want revoked (fail closed)", cur.State)
	}
	if len(f.rec.deferred) != 1 || f.rec.deferred[0].Type != audit.GrantRevoked || f.rec.deferred[0].ID == "" {
		t.Errorf("deferred = %+v, want the stamped grant.revoked", f.rec.deferred)
	}
	f.clk.advance(time.Hour)
	if err := f.svc.ExpireDue(ctx); err != nil {
		t.Fatal(err)
	}
	if cur := state(toExpire); cur.State != store.StateActive {
		t.Errorf("unaudited expiry left %s, want active until its event is written", cur.State)
	}
	f.rec.failing = false
	if err := f.svc.ExpireDue(ctx); err != nil {
		t.Fatal(err)
	}
	if cur := state(toExpire); cur.State != store.StateExpired {
		t.Errorf("after the log mended the grant is %s, want expired", cur.State)
	}
	// Pending requests past the hour time out, each audited.
	for _, ar := range []store.AccessRequest{toDeny, toCancel} {
		if cur := state(ar); cur.State != store.StateTimedOut {
			t.Errorf("request pending past its timeout is %s, want timed_out", cur.State)
		}
	}
}

// TestServiceUpdateRetries: a change made by another broker between read
// and write is decided again on the fresh copy.
func TestServiceUpdateRetries(t *testing.T) {
	f := newFixture(t, allowing(customer(2)), nil)
	ar, err := f.create(t, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	raced := false
	got, err := f.svc.Update(ctx, ar.ID, func(cur *store.AccessRequest) error {
		if !raced {
			raced = true
			other, _ := f.store.GetRequest(ctx, cur.ID)
			other.Reason = "changed by another broker"
			if err := f.store.UpdateRequest(ctx, other); err != nil {
				t.Fatal(err)
			}
		}
		cur.EndReason = "seen: " + cur.Reason
		return nil
	})
	if err != nil || got.EndReason != "seen: changed by another broker" || got.Version != 3 {
		t.Errorf("Update = %q v%d, %v; want the change applied to the fresh copy, v3", got.EndReason, got.Version, err)
	}
	if _, err := f.svc.Update(ctx, "nope", func(*store.AccessRequest) error { return nil }); code(err) != CodeRequestNotFound {
		t.Errorf("Update(unknown) = %v, want request_not_found", err)
	}
}
