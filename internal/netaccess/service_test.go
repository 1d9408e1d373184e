package netaccess

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
	"github.com/tetherhq/tether/internal/store/sqlstore"
)

// testStore is a real SQLite store; deployments and requests, which the
// registrations do not need, are kept beside it in memory.
type testStore struct {
	*sqlstore.Store
	mu   sync.Mutex
	deps map[string]store.DeploymentStatus
	reqs map[string]store.AccessRequest
}

func (s *testStore) GetDeployment(_ context.Context, id string) (store.DeploymentStatus, error) {
	d, ok := s.deps[id]
	if !ok {
		return d, store.ErrNotFound
	}
	return d, nil
}

func (s *testStore) update(_ context.Context, id string, change func(*store.AccessRequest) error) (store.AccessRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ar, ok := s.reqs[id]
	if !ok {
		return ar, store.ErrNotFound
	}
	if ar.NetworkPlan != nil {
		np := *ar.NetworkPlan
		ar.NetworkPlan = &np
	}
	if err := change(&ar); err != nil {
		return ar, err
	}
	ar.Version++
	s.reqs[id] = ar
	return ar, nil
}

// recorder keeps the events written; fail makes every write fail.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	fail   bool
}

var errAuditDown = errors.New("audit log down")

func (r *recorder) Record(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errAuditDown
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) last() audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return audit.Event{}
	}
	return r.events[len(r.events)-1]
}

// fakeManager stands in for netmgr (which the broker's tests run against
// moto): it answers a fixed intent and records what it was asked.
type fakeManager struct {
	netmgr.Manager
	intent  netmgr.Intent
	applied []netmgr.Intent
	peers   []netmgr.Peer
}

func (m *fakeManager) PlanPeering(_ context.Context, _ netmgr.Target, p netmgr.Peer, _ netmgr.Tags) (netmgr.Plan, error) {
	m.peers = append(m.peers, p)
	in := m.intent
	return netmgr.Plan{Steps: []netmgr.Step{{Action: "create", Resource: "peering"}}, Intent: &in}, nil
}

func (m *fakeManager) ApplyApprovedPeering(_ context.Context, _ netmgr.Target, p netmgr.Peer, _ netmgr.Tags, approved netmgr.Intent) (netmgr.Plan, error) {
	m.peers = append(m.peers, p)
	m.applied = append(m.applied, approved)
	return netmgr.Plan{Steps: []netmgr.Step{{Action: "create", Resource: "peering"}}}, nil
}

type fixture struct {
	svc *Service
	st  *testStore
	rec *recorder
	m   *fakeManager
	now time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	aead, err := LoadSealKey("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		st:  &testStore{Store: s, deps: map[string]store.DeploymentStatus{}, reqs: map[string]store.AccessRequest{}},
		rec: &recorder{}, m: &fakeManager{intent: netmgr.Intent{Kind: "peering", BYOC: netmgr.IntentSide{Account: "111111111111", VPC: "vpc-11112222"}}},
		now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
	}
	f.svc = New(Config{
		Store: f.st, Audit: f.rec, Manager: f.m, Seal: aead, UpdateRequest: f.st.update,
		KnownTenant: func(t string) bool { return t == "acme" || t == "globex" },
		Now:         func() time.Time { return f.now },
	})
	return f
}

func caller(p store.Person) Caller {
	return Caller{Person: p, Actor: audit.Actor{Subject: p.Subject}, Source: audit.Source{IP: "192.0.2.1:1234"}}
}

func regIn(account string, cidrs ...string) brokerapi.RegisterNetwork {
	return brokerapi.RegisterNetwork{AccountID: account, RoleARN: "arn:aws:iam::" + account + ":role/T", VPCIDs: []string{"vpc-" + account[:8]}, PeerCIDRs: cidrs}
}

// TestRegistrationLifecycle: the tenant's approver registers an account,
// active at once with its external ID shown once; a vendor admin's
// registration waits for an approver of the tenant, who alone confirms
// it; an account belongs to one tenant; every step, refusals included,
// is audited, and nothing is stored that could not be audited.
func TestRegistrationLifecycle(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)

	reg, ext, err := f.svc.Register(ctx, caller(approverAcme), "acme", regIn("111111111111"))
	if err != nil || reg.State != store.RegistrationActive || ext == "" {
		t.Fatalf("Register(acme approver) = %s, %q, %v; want active with an external ID", reg.State, ext, err)
	}
	if e := f.rec.last(); e.Type != audit.NetworkRegistered || e.Outcome != audit.Success || e.Details["account"] != "111111111111" {
		t.Errorf("event %s %s %v, want network.registered success for the account", e.Type, e.Outcome, e.Details)
	}
	if _, ok := f.rec.last().Details["external_id"]; ok {
		t.Errorf("the audit event carries the external ID")
	}

	// A vendor admin's registration is pending, with no external ID.
	pend, ext, err := f.svc.Register(ctx, caller(vendorAdmin), "acme", regIn("222222222222"))
	if err != nil || pend.State != store.RegistrationPending || ext != "" || pend.SealedExternalID != nil {
		t.Fatalf("Register(vendor admin) = %s, %q, %v; want pending, no external ID", pend.State, ext, err)
	}
	// A pending registration is usable by nothing.
	err = f.svc.CheckConfig(ctx, "acme", &store.NetworkConfig{AccountID: "222222222222", RoleARN: "arn:aws:iam::222222222222:role/T", VPCID: "vpc-22222222"})
	wantCode(t, "a change naming the pending account", err, "registration_pending", "waits for an approver of tenant acme")

	for _, tc := range []struct {
		name       string
		who        store.Person
		tenant     string
		code, want string
	}{
		{"the admin who registered it", vendorAdmin, "acme", "not_tenant_approver", "only an approver of tenant acme"},
		{"another tenant's approver, through its own tenant", approverGlob, "globex", "registration_not_found", "tenant globex has no network registration"},
		{"another tenant's approver, through acme", approverGlob, "acme", "not_tenant_approver", "only an approver of tenant acme"},
		{"the tenant's approver", approverAcme, "acme", "", ""},
		{"the tenant's approver, again", approverAcme, "acme", "already_confirmed", "is active already"},
	} {
		got, ext, err := f.svc.Confirm(ctx, caller(tc.who), tc.tenant, pend.ID)
		wantCode(t, "Confirm by "+tc.name, err, tc.code, tc.want)
		if err == nil && (got.State != store.RegistrationActive || ext == "" || got.ConfirmedBy == nil || got.ConfirmedBy.Subject != tc.who.Subject) {
			t.Errorf("Confirm by %s = %s, %q, confirmed by %v; want active, an external ID, confirmed by %s", tc.name, got.State, ext, got.ConfirmedBy, tc.who.Subject)
		}
	}

	// One tenant per account, told as much as the caller may know.
	n := len(f.rec.events)
	_, _, err = f.svc.Register(ctx, caller(approverGlob), "globex", regIn("111111111111"))
	wantCode(t, "globex registering acme's account", err, "account_registered", "registered to another tenant")
	if e := f.rec.last(); len(f.rec.events) != n+1 || e.Outcome != audit.Failure || e.Reason == "" {
		t.Errorf("refused registration: event %s %q, want a failure event", e.Outcome, e.Reason)
	}
	_, _, err = f.svc.Register(ctx, caller(vendorAdmin), "globex", regIn("111111111111"))
	wantCode(t, "admin registering acme's account to globex", err, "account_registered", "registered to tenant acme")

	_, _, err = f.svc.Register(ctx, caller(vendorAdmin), "initech", regIn("333333333333"))
	wantCode(t, "a tenant without an identity provider", err, "unknown_tenant", "tenant initech has no identity provider")

	// A registration that cannot be audited is not made.
	f.rec.fail = true
	if _, _, err := f.svc.Register(ctx, caller(approverAcme), "acme", regIn("444444444444")); !errors.Is(err, errAuditDown) {
		t.Errorf("Register with the audit log down = %v, want its error", err)
	}
	f.rec.fail = false
	if _, err := f.st.GetNetworkRegistrationByAccount(ctx, "444444444444"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unaudited registration was stored (%v)", err)
	}

	// Unregistered, the account is free again; another tenant cannot
	// unregister it.
	if _, err := f.svc.Unregister(ctx, caller(approverGlob), "globex", reg.ID); err == nil {
		t.Errorf("Unregister through another tenant = nil error, want registration_not_found")
	}
	if _, err := f.svc.Unregister(ctx, caller(approverAcme), "acme", reg.ID); err != nil {
		t.Fatal(err)
	}
	if e := f.rec.last(); e.Type != audit.NetworkUnregistered {
		t.Errorf("event %s, want network.unregistered", e.Type)
	}
	if _, _, err := f.svc.Register(ctx, caller(approverGlob), "globex", regIn("111111111111")); err != nil {
		t.Errorf("Register after unregistering = %v, want success", err)
	}
}

// setupChange registers both sides to acme and stores an active request
// with the plan the service made for it.
func setupChange(t *testing.T, f *fixture, peerCIDRs ...string) (store.AccessRequest, store.DeploymentStatus) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := f.svc.Register(ctx, caller(approverAcme), "acme", regIn("111111111111")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.svc.Register(ctx, caller(approverAcme), "acme", regIn("222222222222", peerCIDRs...)); err != nil {
		t.Fatal(err)
	}
	d := store.DeploymentStatus{Deployment: store.Deployment{ID: "dep", Tenant: "acme", Name: "prod", Settings: store.DeploymentSettings{
		Network: &store.NetworkConfig{AccountID: "111111111111", Region: "us-east-1", VPCID: "vpc-11111111", RoleARN: "arn:aws:iam::111111111111:role/T"}}}}
	f.st.deps[d.ID] = d
	spec := &store.PeeringSpec{Kind: "peering", AccountID: "222222222222", Region: "us-east-1", VPCID: "vpc-22222222", RoleARN: "arn:aws:iam::222222222222:role/T"}
	np, err := f.svc.Plan(ctx, d, spec, "req", "eve")
	if err != nil {
		t.Fatal(err)
	}
	ar := store.AccessRequest{ID: "req", Tenant: "acme", DeploymentID: d.ID, State: store.StateActive, Requester: engineer, CreatedAt: f.now,
		Network: spec, NetworkPlan: np, Grant: &store.GrantRecord{Expiry: f.now.Add(time.Hour)}}
	f.st.reqs[ar.ID] = ar
	return ar, d
}

// TestChangeAppliesOnlyTheApprovedPlan: apply hands netmgr the intent
// the approvers saw; a stored plan whose digest does not match is
// refused, audited, and changes nothing.
func TestChangeAppliesOnlyTheApprovedPlan(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ar, d := setupChange(t, f)
	if ar.NetworkPlan.Digest != f.m.intent.Digest() || !slices.Equal(ar.NetworkPlan.Intent, f.m.intent.Canonical()) {
		t.Fatalf("Plan stored digest %s, want netmgr's intent %s", ar.NetworkPlan.Digest, f.m.intent.Digest())
	}

	// The digest changed after approval: nothing is applied.
	tampered := ar
	np := *ar.NetworkPlan
	np.Digest = netmgr.Intent{Kind: "peering"}.Digest()
	tampered.NetworkPlan = &np
	if _, err := f.svc.Prepare(ctx, caller(engineer), OpApply, tampered); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Change(ctx, caller(engineer), tampered, d, false)
	wantCode(t, "apply with a digest that does not match", err, "plan_damaged", "nothing is applied")
	if len(f.m.applied) != 0 {
		t.Errorf("netmgr applied %d intents, want none", len(f.m.applied))
	}
	if e := f.rec.last(); e.Type != audit.NetworkApplied || e.Outcome != audit.Failure || e.Details["plan_digest"] != np.Digest {
		t.Errorf("event %s %s %v, want network.applied failure naming the digest", e.Type, e.Outcome, e.Details)
	}
	if !f.st.reqs[ar.ID].NetworkPlan.AppliedAt.IsZero() {
		t.Errorf("a refused apply was recorded as begun")
	}

	// Another engineer may not apply it.
	_, err = f.svc.Prepare(ctx, caller(otherEngineer), OpApply, ar)
	wantCode(t, "apply by another engineer", err, "not_requester", "only the requester or an admin")

	// The approved plan is applied as approved, and the apply recorded.
	if _, err := f.svc.Change(ctx, caller(engineer), ar, d, false); err != nil {
		t.Fatal(err)
	}
	if len(f.m.applied) != 1 || f.m.applied[0].Digest() != ar.NetworkPlan.Digest {
		t.Errorf("netmgr applied %v, want the approved intent", f.m.applied)
	}
	if f.st.reqs[ar.ID].NetworkPlan.AppliedAt.IsZero() {
		t.Errorf("the apply was not recorded on the request")
	}
	if e := f.rec.last(); e.Type != audit.NetworkApplied || e.Outcome != audit.Success || e.Details["changed"] != 1 {
		t.Errorf("event %s %s %v, want network.applied success with 1 change", e.Type, e.Outcome, e.Details)
	}
}

// TestPublicCIDROnlyIfRegistered: netmgr is told a public peer CIDR is
// allowed only when it lies inside one the tenant registered for that
// account.
func TestPublicCIDROnlyIfRegistered(t *testing.T) {
	for _, tc := range []struct {
		name       string
		registered []string
		cidr       string
		want       bool
	}{
		{"registered", []string{"198.51.100.0/24"}, "198.51.100.0/24", true},
		{"inside a registered range", []string{"198.51.100.0/24"}, "198.51.100.64/26", true},
		{"another range", []string{"198.51.100.0/24"}, "203.0.113.0/24", false},
		{"none registered", nil, "198.51.100.0/24", false},
	} {
		f := newFixture(t)
		setupChange(t, f, tc.registered...)
		p := f.m.peers[len(f.m.peers)-1]
		if p.PublicCIDROK == nil {
			t.Fatalf("%s: netmgr got no PublicCIDROK", tc.name)
		}
		if got := p.PublicCIDROK(netip.MustParsePrefix(tc.cidr)); got != tc.want {
			t.Errorf("%s: PublicCIDROK(%s) = %v, want %v", tc.name, tc.cidr, got, tc.want)
		}
		if p.ExternalID == "" {
			t.Errorf("%s: netmgr got the peer without its role's external ID", tc.name)
		}
	}
}

// TestNotConfigured: without a manager or a seal key every change is
// refused as not configured.
func TestNotConfigured(t *testing.T) {
	s := New(Config{})
	wantCode(t, "Configured()", s.Configured(), "network_not_configured", "manages no networks")
	wantCode(t, "Sealing()", s.Sealing(), "network_not_configured", "no key to seal external IDs")
	_, _, err := s.Register(context.Background(), caller(approverAcme), "acme", regIn("111111111111"))
	wantCode(t, "Register", err, "network_not_configured", "no key to seal")
}
