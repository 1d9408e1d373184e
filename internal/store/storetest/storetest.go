// Package storetest is the conformance suite every [store.Store]
// implementation passes. An implementation's tests call [Run] with a
// function that opens a store on a new, empty database, and [RunReopen] with
// one that opens stores on a shared database.
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// Run runs the conformance suite against the stores open returns. Each call
// of open must return a store on a new, empty database; Run closes it. The
// subtests run in parallel.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		test func(t *testing.T, s store.Store)
	}{
		{"CreateDeployment", testCreateDeployment},
		{"CreateDeploymentConflict", testCreateDeploymentConflict},
		{"CreateDeploymentWrongTokenDeployment", testCreateDeploymentWrongTokenDeployment},
		{"GetDeploymentNotFound", testGetDeploymentNotFound},
		{"ListDeployments", testListDeployments},
		{"AddPairingToken", testAddPairingToken},
		{"AddPairingTokenNotFound", testAddPairingTokenNotFound},
		{"RedeemPairingToken", testRedeemPairingToken},
		{"RedeemPairingTokenErrors", testRedeemPairingTokenErrors},
		{"RedeemPairingTokenAgentIDConflict", testRedeemPairingTokenAgentIDConflict},
		{"RepairRevokesPreviousAgent", testRepairRevokesPreviousAgent},
		{"GetAgentNotFound", testGetAgentNotFound},
		{"AgentSessions", testAgentSessions},
		{"RevocationPushes", testRevocationPushes},
		{"RecordHeartbeats", testRecordHeartbeats},
		{"RevokeAgent", testRevokeAgent},
		{"MoveAgent", testMoveAgent},
		{"RecordHeartbeat", testRecordHeartbeat},
		{"RecordHeartbeatNotFound", testRecordHeartbeatNotFound},
		{"ConcurrentRedemptionOfOneToken", testConcurrentRedemptionOfOneToken},
		{"ConcurrentRedemptionOfOneDeployment", testConcurrentRedemptionOfOneDeployment},
	}
	tests = append(tests, requestTests...)
	tests = append(tests, auditTests...)
	tests = append(tests, netregTests...)
	tests = append(tests, webTests...)
	tests = append(tests, webhookTests...)
	tests = append(tests, challengeTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close() error = %v", err)
				}
			})
			tt.test(t, s)
		})
	}
}

// RunReopen checks that several stores opened at once on one new database
// all work (the schema is migrated once, whoever gets there first), and that
// a store opened on a database that is already migrated and holds data opens
// and sees the data. newDatabase returns, for a new, empty database, a
// function that opens a store on it; that function is called several times,
// concurrently.
func RunReopen(t *testing.T, newDatabase func(t *testing.T) (open func(ctx context.Context) (store.Store, error))) {
	ctx := t.Context()
	open := newDatabase(t)

	const brokers = 4
	stores := make([]store.Store, brokers)
	errs := make([]error, brokers)
	var wg sync.WaitGroup
	for i := range brokers {
		wg.Go(func() { stores[i], errs[i] = open(ctx) })
	}
	wg.Wait()
	t.Cleanup(func() {
		for i, s := range stores {
			// A failed open may return a typed nil; a store closed below is
			// set to nil.
			if errs[i] == nil && s != nil {
				s.Close()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open #%d of %d at once on a new database: error = %v", i+1, brokers, err)
		}
	}

	// Each store writes a deployment that all see.
	var want []store.DeploymentStatus
	for i, s := range stores {
		d, _ := createDeployment(t, s, "acme", fmt.Sprintf("web%d", i))
		want = append(want, store.DeploymentStatus{Deployment: d})
	}
	for i, s := range stores {
		got, err := s.ListDeployments(ctx)
		if err != nil {
			t.Fatalf("store #%d: ListDeployments() error = %v", i+1, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("store #%d: ListDeployments() = %+v, want %+v", i+1, got, want)
		}
	}
	// Each appends audit records that all see.
	wantAudit := writeAuditReopen(t, stores)
	for i, s := range stores {
		checkAuditReopened(t, s, wantAudit, fmt.Sprintf("store #%d", i+1))
	}
	for i, s := range stores {
		stores[i] = nil
		if err := s.Close(); err != nil {
			t.Errorf("store #%d: Close() error = %v", i+1, err)
		}
	}

	s, err := open(ctx)
	if err != nil {
		t.Fatalf("open again after closing: error = %v", err)
	}
	defer s.Close()
	got, err := s.ListDeployments(ctx)
	if err != nil {
		t.Fatalf("after reopening: ListDeployments() error = %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after reopening: ListDeployments() = %+v, want %+v", got, want)
	}
	checkAuditReopened(t, s, wantAudit, "after reopening")
}

// t0 is the suite's "now". Times have millisecond precision, the stores'
// precision, and are in UTC, as stores return them, so that stored and
// loaded values compare equal with reflect.DeepEqual.
var t0 = time.Date(2030, time.March, 4, 5, 6, 7, 8_000_000, time.UTC)

// tokenTTL is how long the suite's pairing tokens live.
const tokenTTL = 10 * time.Minute

// hashOf returns a distinct token hash for each seed.
func hashOf(seed string) []byte {
	h := sha256.Sum256([]byte(seed))
	return h[:]
}

// createDeployment creates a deployment tenant/name with a first pairing
// token, issued at t0, and returns it and the token's hash.
func createDeployment(t *testing.T, s store.Store, tenant, name string) (store.Deployment, []byte) {
	t.Helper()
	d := store.Deployment{
		ID:        "dep-" + tenant + "-" + name,
		Tenant:    tenant,
		Name:      name,
		Region:    "eu-central-1",
		CreatedAt: t0,
	}
	tok := store.PairingToken{
		Hash:         hashOf("first token of " + d.ID),
		DeploymentID: d.ID,
		CreatedAt:    t0,
		ExpiresAt:    t0.Add(tokenTTL),
	}
	if err := s.CreateDeployment(t.Context(), d, tok); err != nil {
		t.Fatalf("CreateDeployment(%+v) error = %v", d, err)
	}
	return d, tok.Hash
}

// addToken adds a pairing token for deployment id, issued at now.
func addToken(t *testing.T, s store.Store, id, seed string, now time.Time) []byte {
	t.Helper()
	tok := store.PairingToken{
		Hash:         hashOf(seed),
		DeploymentID: id,
		CreatedAt:    now,
		ExpiresAt:    now.Add(tokenTTL),
	}
	if err := s.AddPairingToken(t.Context(), tok); err != nil {
		t.Fatalf("AddPairingToken(%+v) error = %v", tok, err)
	}
	return tok.Hash
}

// newAgent returns an agent with the given ID, paired at now, as the broker
// would pass it to RedeemPairingToken.
func newAgent(id string, now time.Time) store.Agent {
	return store.Agent{
		ID:        id,
		PublicKey: hashOf("public key of " + id),
		NodeID:    "n" + id,
		NodeName:  id + ".tail1234.ts.net.",
		PairedAt:  now,
	}
}

// pair redeems the token with the given hash for a new agent with the
// given ID at now, and returns the agent as stored.
func pair(t *testing.T, s store.Store, hash []byte, agentID string, now time.Time) store.Agent {
	t.Helper()
	a := newAgent(agentID, now)
	d, err := s.RedeemPairingToken(t.Context(), hash, now, a)
	if err != nil {
		t.Fatalf("RedeemPairingToken(%x, %v, agent %s) error = %v", hash[:4], now, agentID, err)
	}
	a.DeploymentID = d.ID
	return a
}

func getDeployment(t *testing.T, s store.Store, id string) store.DeploymentStatus {
	t.Helper()
	ds, err := s.GetDeployment(t.Context(), id)
	if err != nil {
		t.Fatalf("GetDeployment(%q) error = %v", id, err)
	}
	return ds
}

func getAgent(t *testing.T, s store.Store, id string) store.Agent {
	t.Helper()
	a, err := s.GetAgent(t.Context(), id)
	if err != nil {
		t.Fatalf("GetAgent(%q) error = %v", id, err)
	}
	return a
}

func testCreateDeployment(t *testing.T, s store.Store) {
	d, _ := createDeployment(t, s, "acme", "web")
	want := store.DeploymentStatus{Deployment: d}

	got, err := s.GetDeployment(t.Context(), d.ID)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("GetDeployment(%q) = %+v, %v, want %+v, nil", d.ID, got, err, want)
	}
	got, err = s.GetDeploymentByName(t.Context(), d.Tenant, d.Name)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("GetDeploymentByName(%q, %q) = %+v, %v, want %+v, nil", d.Tenant, d.Name, got, err, want)
	}

	// Region may be empty.
	bare := store.Deployment{ID: "dep-bare", Tenant: "acme", Name: "bare", CreatedAt: t0}
	tok := store.PairingToken{Hash: hashOf("bare"), CreatedAt: t0, ExpiresAt: t0.Add(tokenTTL)}
	if err := s.CreateDeployment(t.Context(), bare, tok); err != nil {
		t.Fatalf("CreateDeployment(%+v) with token without DeploymentID: error = %v", bare, err)
	}
	if got := getDeployment(t, s, bare.ID); !reflect.DeepEqual(got.Deployment, bare) {
		t.Errorf("GetDeployment(%q) = %+v, want %+v", bare.ID, got.Deployment, bare)
	}
	// The first token was stored with the deployment.
	if got, err := s.RedeemPairingToken(t.Context(), tok.Hash, t0, newAgent("a1", t0)); err != nil || !reflect.DeepEqual(got, bare) {
		t.Errorf("RedeemPairingToken(first token) = %+v, %v, want %+v, nil", got, err, bare)
	}
}

func testCreateDeploymentConflict(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, _ := createDeployment(t, s, "acme", "web")

	tests := []struct {
		name string
		d    store.Deployment
		want error
	}{
		{"same tenant and name", store.Deployment{ID: "dep-2", Tenant: "acme", Name: "web", CreatedAt: t0}, store.ErrConflict},
		{"same ID", store.Deployment{ID: d.ID, Tenant: "acme", Name: "api", CreatedAt: t0}, store.ErrConflict},
		{"same name, other tenant", store.Deployment{ID: "dep-3", Tenant: "globex", Name: "web", CreatedAt: t0}, nil},
	}
	for _, tt := range tests {
		tok := store.PairingToken{Hash: hashOf(tt.name), DeploymentID: tt.d.ID, CreatedAt: t0, ExpiresAt: t0.Add(tokenTTL)}
		err := s.CreateDeployment(ctx, tt.d, tok)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: CreateDeployment(%+v) error = %v, want %v", tt.name, tt.d, err, tt.want)
		}
		if err == nil {
			continue
		}
		// A failed creation stores neither the deployment nor its token.
		if _, err := s.RedeemPairingToken(ctx, tok.Hash, t0, newAgent("a-"+tt.name, t0)); !errors.Is(err, store.ErrTokenUnknown) {
			t.Errorf("%s: after failed creation, RedeemPairingToken(its token) error = %v, want %v", tt.name, err, store.ErrTokenUnknown)
		}
	}
	if got := getDeployment(t, s, d.ID); !reflect.DeepEqual(got.Deployment, d) {
		t.Errorf("GetDeployment(%q) = %+v, want the original %+v", d.ID, got.Deployment, d)
	}
	all, err := s.ListDeployments(ctx)
	if err != nil || len(all) != 2 {
		t.Errorf("ListDeployments() = %d deployments, %v, want 2, nil", len(all), err)
	}
}

func testCreateDeploymentWrongTokenDeployment(t *testing.T, s store.Store) {
	d := store.Deployment{ID: "dep-1", Tenant: "acme", Name: "web", CreatedAt: t0}
	tok := store.PairingToken{Hash: hashOf("x"), DeploymentID: "dep-other", CreatedAt: t0, ExpiresAt: t0.Add(tokenTTL)}
	if err := s.CreateDeployment(t.Context(), d, tok); err == nil {
		t.Errorf("CreateDeployment(%+v, token for %q) error = nil, want an error", d, tok.DeploymentID)
	}
	if _, err := s.GetDeployment(t.Context(), d.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDeployment(%q) error = %v, want %v", d.ID, err, store.ErrNotFound)
	}
}

func testGetDeploymentNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, _ := createDeployment(t, s, "acme", "web")
	if _, err := s.GetDeployment(ctx, "dep-nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDeployment(%q) error = %v, want %v", "dep-nope", err, store.ErrNotFound)
	}
	for _, tn := range [][2]string{{d.Tenant, "api"}, {"globex", d.Name}, {d.Name, d.Tenant}} {
		if _, err := s.GetDeploymentByName(ctx, tn[0], tn[1]); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetDeploymentByName(%q, %q) error = %v, want %v", tn[0], tn[1], err, store.ErrNotFound)
		}
	}
}

func testListDeployments(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.ListDeployments(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("ListDeployments() on an empty store = %+v, %v, want none, nil", got, err)
	}

	// Created out of order. Byte order puts "-" before digits, which
	// locale-aware collations ignore: "web-2" < "web10" < "webb".
	byName := map[string]store.Deployment{}
	hashes := map[string][]byte{}
	for _, tn := range [][2]string{
		{"globex", "web"}, {"acme", "webb"}, {"acme", "web10"}, {"acme", "web-2"},
		{"acme", "web"}, {"acme-eu", "web"}, {"acme0", "web"}, {"a", "z"},
	} {
		d, h := createDeployment(t, s, tn[0], tn[1])
		byName[d.Tenant+"/"+d.Name] = d
		hashes[d.Tenant+"/"+d.Name] = h
	}
	agent := pair(t, s, hashes["acme/web10"], "agent-1", t0)

	got, err = s.ListDeployments(ctx)
	if err != nil {
		t.Fatalf("ListDeployments() error = %v", err)
	}
	var want []store.DeploymentStatus
	for _, tn := range []string{"a/z", "acme/web", "acme/web-2", "acme/web10", "acme/webb", "acme-eu/web", "acme0/web", "globex/web"} {
		ds := store.DeploymentStatus{Deployment: byName[tn]}
		if tn == "acme/web10" {
			ds.Agent = &agent
		}
		want = append(want, ds)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListDeployments() =\n%s\nwant\n%s", formatStatuses(got), formatStatuses(want))
	}
}

func formatStatuses(all []store.DeploymentStatus) string {
	var s string
	for _, ds := range all {
		s += fmt.Sprintf("\t%+v", ds.Deployment)
		if ds.Agent != nil {
			s += fmt.Sprintf(" agent %+v", *ds.Agent)
		}
		s += "\n"
	}
	return s
}

func testAddPairingToken(t *testing.T, s store.Store) {
	d, first := createDeployment(t, s, "acme", "web")
	second := addToken(t, s, d.ID, "second", t0)
	// Either token pairs; the first is still good after the second was added.
	pair(t, s, first, "agent-1", t0)
	pair(t, s, second, "agent-2", t0.Add(time.Second))
}

func testAddPairingTokenNotFound(t *testing.T, s store.Store) {
	tok := store.PairingToken{Hash: hashOf("x"), DeploymentID: "dep-nope", CreatedAt: t0, ExpiresAt: t0.Add(tokenTTL)}
	if err := s.AddPairingToken(t.Context(), tok); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AddPairingToken(token for %q) error = %v, want %v", tok.DeploymentID, err, store.ErrNotFound)
	}
}

func testRedeemPairingToken(t *testing.T, s store.Store) {
	d, hash := createDeployment(t, s, "acme", "web")
	now := t0.Add(tokenTTL - time.Millisecond) // the last moment it is valid
	a := newAgent("agent-1", now)
	a.DeploymentID = "ignored: filled in from the token"

	got, err := s.RedeemPairingToken(t.Context(), hash, now, a)
	if err != nil || !reflect.DeepEqual(got, d) {
		t.Fatalf("RedeemPairingToken(%x, %v, %+v) = %+v, %v, want %+v, nil", hash[:4], now, a, got, err, d)
	}
	a.DeploymentID = d.ID
	if got := getAgent(t, s, a.ID); !reflect.DeepEqual(got, a) {
		t.Errorf("GetAgent(%q) = %+v, want %+v", a.ID, got, a)
	}
	want := store.DeploymentStatus{Deployment: d, Agent: &a}
	if got := getDeployment(t, s, d.ID); !reflect.DeepEqual(got, want) {
		t.Errorf("GetDeployment(%q) = %+v, want %+v", d.ID, got, want)
	}
	got2, err := s.GetDeploymentByName(t.Context(), d.Tenant, d.Name)
	if err != nil || !reflect.DeepEqual(got2, want) {
		t.Errorf("GetDeploymentByName(%q, %q) = %+v, %v, want %+v, nil", d.Tenant, d.Name, got2, err, want)
	}
}

func testRedeemPairingTokenErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, first := createDeployment(t, s, "acme", "web")
	current := pair(t, s, first, "agent-current", t0)
	unused := addToken(t, s, d.ID, "unused", t0) // expires at t0+tokenTTL

	// used takes precedence over expired.
	tests := []struct {
		name string
		hash []byte
		now  time.Time
		want error
	}{
		{"unknown", hashOf("never issued"), t0, store.ErrTokenUnknown},
		{"nil hash", nil, t0, store.ErrTokenUnknown},
		{"expired at expiry", unused, t0.Add(tokenTTL), store.ErrTokenExpired},
		{"expired after expiry", unused, t0.Add(tokenTTL + time.Hour), store.ErrTokenExpired},
		{"used", first, t0.Add(time.Second), store.ErrTokenUsed},
		{"used and expired", first, t0.Add(tokenTTL + time.Hour), store.ErrTokenUsed},
	}
	for i, tt := range tests {
		a := newAgent(fmt.Sprintf("agent-%d", i), tt.now)
		got, err := s.RedeemPairingToken(ctx, tt.hash, tt.now, a)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: RedeemPairingToken(%x, %v, agent %s) error = %v, want %v", tt.name, tt.hash, tt.now, a.ID, err, tt.want)
		}
		if !reflect.DeepEqual(got, store.Deployment{}) {
			t.Errorf("%s: RedeemPairingToken(...) = %+v, want the zero Deployment with the error", tt.name, got)
		}
		// A failed redemption changes nothing.
		if _, err := s.GetAgent(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: after failed redemption, GetAgent(%q) error = %v, want %v", tt.name, a.ID, err, store.ErrNotFound)
		}
		if got := getDeployment(t, s, d.ID); !reflect.DeepEqual(got.Agent, &current) {
			t.Errorf("%s: after failed redemption, GetDeployment(%q).Agent = %+v, want %+v", tt.name, d.ID, got.Agent, current)
		}
	}
	// Failing as expired did not use the token up.
	pair(t, s, unused, "agent-later", t0.Add(time.Minute))
}

func testRedeemPairingTokenAgentIDConflict(t *testing.T, s store.Store) {
	_, h1 := createDeployment(t, s, "acme", "web")
	d2, h2 := createDeployment(t, s, "acme", "api")
	pair(t, s, h1, "agent-1", t0)
	if _, err := s.RedeemPairingToken(t.Context(), h2, t0, newAgent("agent-1", t0)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RedeemPairingToken(agent with a taken ID) error = %v, want %v", err, store.ErrConflict)
	}
	// The token was not used up.
	pair(t, s, h2, "agent-2", t0)
	if got := getDeployment(t, s, d2.ID); got.Agent == nil || got.Agent.ID != "agent-2" {
		t.Errorf("GetDeployment(%q).Agent = %+v, want agent-2", d2.ID, got.Agent)
	}
}

func testRepairRevokesPreviousAgent(t *testing.T, s store.Store) {
	d, first := createDeployment(t, s, "acme", "web")
	other, otherHash := createDeployment(t, s, "acme", "api")
	old := pair(t, s, first, "agent-old", t0)
	bystander := pair(t, s, otherHash, "agent-other", t0)

	later := t0.Add(time.Hour)
	second := addToken(t, s, d.ID, "second", later)
	repaired := pair(t, s, second, "agent-new", later)

	old.RevokedAt = later
	if got := getAgent(t, s, old.ID); !reflect.DeepEqual(got, old) {
		t.Errorf("GetAgent(%q) after re-pairing = %+v, want %+v", old.ID, got, old)
	}
	if got := getAgent(t, s, repaired.ID); !reflect.DeepEqual(got, repaired) {
		t.Errorf("GetAgent(%q) = %+v, want %+v", repaired.ID, got, repaired)
	}
	if got := getDeployment(t, s, d.ID); !reflect.DeepEqual(got.Agent, &repaired) {
		t.Errorf("GetDeployment(%q).Agent = %+v, want %+v", d.ID, got.Agent, repaired)
	}
	// Other deployments' agents are left alone.
	if got := getDeployment(t, s, other.ID); !reflect.DeepEqual(got.Agent, &bystander) {
		t.Errorf("GetDeployment(%q).Agent = %+v, want %+v", other.ID, got.Agent, bystander)
	}
}

func testRevokeAgent(t *testing.T, s store.Store) {
	d, first := createDeployment(t, s, "acme", "web")
	other, otherHash := createDeployment(t, s, "acme", "api")
	a := pair(t, s, first, "agent-a", t0)
	bystander := pair(t, s, otherHash, "agent-other", t0)

	at := t0.Add(time.Hour)
	if err := s.RevokeAgent(t.Context(), a.ID, at); err != nil {
		t.Fatalf("RevokeAgent(%q) error = %v", a.ID, err)
	}
	a.RevokedAt = at
	if got := getAgent(t, s, a.ID); !reflect.DeepEqual(got, a) {
		t.Errorf("GetAgent(%q) after RevokeAgent = %+v, want %+v", a.ID, got, a)
	}
	if got := getDeployment(t, s, d.ID); got.Agent != nil {
		t.Errorf("GetDeployment(%q).Agent after RevokeAgent = %+v, want none", d.ID, got.Agent)
	}
	if got := getDeployment(t, s, other.ID); !reflect.DeepEqual(got.Agent, &bystander) {
		t.Errorf("GetDeployment(%q).Agent = %+v, want %+v", other.ID, got.Agent, bystander)
	}
	// A second revocation changes nothing, not even the time.
	if err := s.RevokeAgent(t.Context(), a.ID, at.Add(time.Hour)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RevokeAgent(%q) again error = %v, want %v", a.ID, err, store.ErrConflict)
	}
	if got := getAgent(t, s, a.ID); !got.RevokedAt.Equal(at) {
		t.Errorf("GetAgent(%q).RevokedAt after a second RevokeAgent = %v, want %v", a.ID, got.RevokedAt, at)
	}
	if err := s.RevokeAgent(t.Context(), "agent-nope", at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RevokeAgent(%q) error = %v, want %v", "agent-nope", err, store.ErrNotFound)
	}
	// The deployment pairs again with a new token.
	later := at.Add(time.Minute)
	repaired := pair(t, s, addToken(t, s, d.ID, "after revocation", later), "agent-b", later)
	if got := getDeployment(t, s, d.ID); !reflect.DeepEqual(got.Agent, &repaired) {
		t.Errorf("GetDeployment(%q).Agent after re-pairing = %+v, want %+v", d.ID, got.Agent, repaired)
	}
}

func testMoveAgent(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, hash := createDeployment(t, s, "acme", "web")
	_, otherHash := createDeployment(t, s, "acme", "api")
	a := pair(t, s, hash, "agent-a", t0)
	bystander := pair(t, s, otherHash, "agent-other", t0)
	if err := s.MoveAgent(ctx, a.ID, "node-new", "agent-a-2.tailnet.test"); err != nil {
		t.Fatalf("MoveAgent(%q) error = %v", a.ID, err)
	}
	a.NodeID, a.NodeName = "node-new", "agent-a-2.tailnet.test"
	if got := getAgent(t, s, a.ID); !reflect.DeepEqual(got, a) {
		t.Errorf("GetAgent(%q) after MoveAgent = %+v, want %+v", a.ID, got, a)
	}
	if got := getDeployment(t, s, d.ID); !reflect.DeepEqual(got.Agent, &a) {
		t.Errorf("GetDeployment(%q).Agent after MoveAgent = %+v, want %+v", d.ID, got.Agent, a)
	}
	if got := getAgent(t, s, bystander.ID); !reflect.DeepEqual(got, bystander) {
		t.Errorf("GetAgent(%q) of a bystander after MoveAgent = %+v, want %+v", bystander.ID, got, bystander)
	}
	// The bystander's node ID went to agent a's machine: the bystander
	// is then on no node, until it proves its key from its own.
	if err := s.MoveAgent(ctx, a.ID, bystander.NodeID, "agent-a-3.tailnet.test"); err != nil {
		t.Fatalf("MoveAgent(%q) onto the bystander's node error = %v", a.ID, err)
	}
	if got := getAgent(t, s, a.ID); got.NodeID != bystander.NodeID {
		t.Errorf("GetAgent(%q).NodeID = %q, want %q", a.ID, got.NodeID, bystander.NodeID)
	}
	if got := getAgent(t, s, bystander.ID); got.NodeID != "" {
		t.Errorf("GetAgent(%q).NodeID after another agent moved onto its node = %q, want none", bystander.ID, got.NodeID)
	}
	if err := s.MoveAgent(ctx, a.ID, "node-new", "agent-a-2.tailnet.test"); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveAgent(ctx, "agent-nope", "n", "n"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MoveAgent(unknown) error = %v, want %v", err, store.ErrNotFound)
	}
	// A revoked agent stays where it was.
	if err := s.RevokeAgent(ctx, a.ID, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveAgent(ctx, a.ID, "node-3", "n3"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("MoveAgent(revoked) error = %v, want %v", err, store.ErrConflict)
	}
	if got := getAgent(t, s, a.ID); got.NodeID != "node-new" {
		t.Errorf("GetAgent(%q).NodeID after MoveAgent of a revoked agent = %q, want node-new", a.ID, got.NodeID)
	}
}

func testGetAgentNotFound(t *testing.T, s store.Store) {
	if _, err := s.GetAgent(t.Context(), "agent-nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgent(%q) error = %v, want %v", "agent-nope", err, store.ErrNotFound)
	}
}

// testAgentSessions: one session per agent, found by its token's hash
// while live, ended by DeleteAgentSessions.
func testAgentSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Millisecond)
	sess := func(tok, agent string, ttl time.Duration) store.AgentSession {
		return store.AgentSession{TokenHash: sha256.Sum256([]byte(tok)), AgentID: agent, NodeID: "node-" + agent, Expires: now.Add(ttl)}
	}
	for _, x := range []store.AgentSession{sess("t1", "a1", time.Hour), sess("t2", "a2", time.Hour), sess("t3", "a1", time.Hour)} {
		if err := s.PutAgentSession(ctx, x, now); err != nil {
			t.Fatalf("PutAgentSession(%s) error = %v", x.AgentID, err)
		}
	}
	// a1's newer session replaced its first.
	if _, err := s.GetAgentSession(ctx, sha256.Sum256([]byte("t1")), now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgentSession(a1's replaced session) error = %v, want %v", err, store.ErrNotFound)
	}
	got, err := s.GetAgentSession(ctx, sha256.Sum256([]byte("t3")), now)
	if want := sess("t3", "a1", time.Hour); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("GetAgentSession(t3) = %+v, %v; want %+v", got, err, want)
	}
	// Expired: not found.
	if _, err := s.GetAgentSession(ctx, sha256.Sum256([]byte("t2")), now.Add(2*time.Hour)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgentSession(expired) error = %v, want %v", err, store.ErrNotFound)
	}
	if n, err := s.DeleteAgentSessions(ctx, "a1"); err != nil || n != 1 {
		t.Errorf("DeleteAgentSessions(a1) = %d, %v; want 1", n, err)
	}
	if _, err := s.GetAgentSession(ctx, sha256.Sum256([]byte("t3")), now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgentSession(t3) after DeleteAgentSessions error = %v, want %v", err, store.ErrNotFound)
	}
	if _, err := s.GetAgentSession(ctx, sha256.Sum256([]byte("t2")), now); err != nil {
		t.Errorf("GetAgentSession(a2's session) after a1's ended: %v", err)
	}
}

// testRevocationPushes: pushes recorded survive until taken or expired,
// oldest first, each once.
func testRevocationPushes(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := func(id string, created, expiry time.Duration) store.RevocationPush {
		return store.RevocationPush{GrantID: id, DeploymentID: "dep-" + id, CreatedAt: t0.Add(created).UTC(), Expiry: t0.Add(expiry).UTC()}
	}
	for _, x := range []store.RevocationPush{p("g2", 2*time.Second, time.Hour), p("g1", time.Second, time.Hour), p("g3", 3*time.Second, time.Minute)} {
		if err := s.AddRevocationPush(ctx, x); err != nil {
			t.Fatalf("AddRevocationPush(%s) error = %v", x.GrantID, err)
		}
	}
	// Again: the first stands.
	if err := s.AddRevocationPush(ctx, p("g1", 9*time.Second, 2*time.Hour)); err != nil {
		t.Fatalf("AddRevocationPush(g1) again error = %v", err)
	}
	got, err := s.RevocationPushes(ctx, t0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := []store.RevocationPush{p("g1", time.Second, time.Hour), p("g2", 2*time.Second, time.Hour), p("g3", 3*time.Second, time.Minute)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("RevocationPushes = %+v, want %+v", got, want)
	}
	if got, _ := s.RevocationPushes(ctx, t0, 1); len(got) != 1 || got[0].GrantID != "g1" {
		t.Errorf("RevocationPushes(limit 1) = %+v, want g1", got)
	}
	if err := s.DeleteRevocationPush(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	// At t0+2m g3's grant has expired: it is forgotten.
	got, err = s.RevocationPushes(ctx, t0.Add(2*time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := []store.RevocationPush{p("g2", 2*time.Second, time.Hour)}; !reflect.DeepEqual(got, want) {
		t.Errorf("RevocationPushes after a take and an expiry = %+v, want %+v", got, want)
	}
}

// testRecordHeartbeats: several agents' heartbeats in one call, each
// stored as RecordHeartbeat stores it; an unknown agent is skipped.
func testRecordHeartbeats(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, h1 := createDeployment(t, s, "acme", "web")
	_, h2 := createDeployment(t, s, "acme", "api")
	a1, a2 := pair(t, s, h1, "agent-1", t0), pair(t, s, h2, "agent-2", t0)
	hb := func(n int) store.Heartbeat {
		return store.Heartbeat{At: t0.Add(time.Duration(n) * time.Second), Version: fmt.Sprintf("v1.%d", n), Uptime: time.Duration(n) * time.Minute,
			TailnetIP: fmt.Sprintf("100.64.0.%d", n), Upstreams: map[string]string{"clickhouse": "ok"}}
	}
	err := s.RecordHeartbeats(ctx, []store.AgentHeartbeat{{AgentID: a1.ID, Heartbeat: hb(1)}, {AgentID: "agent-nope", Heartbeat: hb(9)}, {AgentID: a2.ID, Heartbeat: hb(2)}})
	if err != nil {
		t.Fatalf("RecordHeartbeats error = %v", err)
	}
	for _, c := range []struct {
		id string
		n  int
	}{{a1.ID, 1}, {a2.ID, 2}} {
		want := hb(c.n)
		want.At = want.At.UTC()
		if got := getAgent(t, s, c.id).Last; !reflect.DeepEqual(got, want) {
			t.Errorf("GetAgent(%q).Last after RecordHeartbeats = %+v, want %+v", c.id, got, want)
		}
	}
}

func testRecordHeartbeat(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, hash := createDeployment(t, s, "acme", "web")
	a := pair(t, s, hash, "agent-1", t0)
	if got := getAgent(t, s, a.ID); !reflect.DeepEqual(got.Last, store.Heartbeat{}) {
		t.Errorf("GetAgent(%q).Last before any heartbeat = %+v, want the zero Heartbeat", a.ID, got.Last)
	}

	tests := []struct {
		name string
		hb   store.Heartbeat
	}{
		{"with upstreams", store.Heartbeat{
			At:        t0.Add(5 * time.Second),
			Version:   "v1.2.3",
			Uptime:    90*time.Minute + 250*time.Millisecond,
			TailnetIP: "100.64.0.7",
			Upstreams: map[string]string{"postgres": "ok", "clickhouse": `dial tcp 10.0.0.9:9000: connect: connection refused "quoted" ✗`},
		}},
		{"nil upstreams", store.Heartbeat{
			At:        t0.Add(10 * time.Second),
			Version:   "v1.2.4",
			Uptime:    time.Second,
			TailnetIP: "100.64.0.8",
		}},
		{"upstreams again", store.Heartbeat{
			At:        t0.Add(15 * time.Second),
			Version:   "v1.2.4",
			Uptime:    6 * time.Second,
			TailnetIP: "100.64.0.8",
			Upstreams: map[string]string{"postgres": "ok"},
		}},
		{"witness refuses", store.Heartbeat{
			At:             t0.Add(16 * time.Second),
			Version:        "v1.2.4",
			TailnetIP:      "100.64.0.8",
			WitnessRefusal: `log rewritten: checkpoint size 5 is smaller than 12, cosigned before "quoted" ✗`,
		}},
		{"witness refuses no more", store.Heartbeat{
			At:        t0.Add(17 * time.Second),
			Version:   "v1.2.4",
			TailnetIP: "100.64.0.8",
		}},
		{"customer approval enforced", store.Heartbeat{
			At:        t0.Add(18 * time.Second),
			Version:   "v1.2.4",
			TailnetIP: "100.64.0.8",
			Approval: &store.AgentApproval{Issuer: "https://idp.acme.example/", Audience: "tether", Group: "acme-approvers",
				Required: 2, BreakGlassAllowed: true},
		}},
		{"only break-glass refused", store.Heartbeat{
			At:        t0.Add(19 * time.Second),
			Version:   "v1.2.4",
			TailnetIP: "100.64.0.8",
			Approval:  &store.AgentApproval{},
		}},
		{"clock ahead, measured", store.Heartbeat{
			At:        t0.Add(20 * time.Second),
			Version:   "v1.2.4",
			TailnetIP: "100.64.0.8",
			Clock:     &store.ClockSkew{Offset: 2400*time.Millisecond + 17*time.Microsecond, RTT: 3*time.Millisecond + time.Microsecond},
		}},
		{"clock behind, one way", store.Heartbeat{
			At:        t0.Add(21 * time.Second),
			Version:   "v1.2.4",
			TailnetIP: "100.64.0.8",
			Clock:     &store.ClockSkew{Offset: -55 * 365 * 24 * time.Hour, OneWay: true},
		}},
		{"clock unmeasured", store.Heartbeat{
			At:        t0.Add(22 * time.Second),
			Version:   "v1.2.4",
			TailnetIP: "100.64.0.8",
		}},
	}
	for _, tt := range tests {
		if err := s.RecordHeartbeat(ctx, a.ID, tt.hb); err != nil {
			t.Fatalf("%s: RecordHeartbeat(%q, %+v) error = %v", tt.name, a.ID, tt.hb, err)
		}
		if got := getAgent(t, s, a.ID); !reflect.DeepEqual(got.Last, tt.hb) {
			t.Errorf("%s: GetAgent(%q).Last = %+v, want %+v", tt.name, a.ID, got.Last, tt.hb)
		}
		if got := getDeployment(t, s, d.ID); got.Agent == nil || !reflect.DeepEqual(got.Agent.Last, tt.hb) {
			t.Errorf("%s: GetDeployment(%q).Agent = %+v, want one with Last %+v", tt.name, d.ID, got.Agent, tt.hb)
		}
		want := 0
		if tt.hb.Approval.Enforced() {
			want = tt.hb.Approval.Required
		}
		if got := getAgent(t, s, a.ID).ApprovalsRequired(); got != want {
			t.Errorf("%s: ApprovalsRequired() = %d, want %d", tt.name, got, want)
		}
	}

	// An empty map may come back nil, but not with entries.
	hb := store.Heartbeat{At: t0.Add(20 * time.Second), Upstreams: map[string]string{}}
	if err := s.RecordHeartbeat(ctx, a.ID, hb); err != nil {
		t.Fatalf("RecordHeartbeat(%q, %+v) error = %v", a.ID, hb, err)
	}
	if got := getAgent(t, s, a.ID); len(got.Last.Upstreams) != 0 {
		t.Errorf("GetAgent(%q).Last.Upstreams = %v, want it empty", a.ID, got.Last.Upstreams)
	}

	// A heartbeat leaves the rest of the agent alone.
	a.Last = hb
	got := getAgent(t, s, a.ID)
	got.Last.Upstreams = map[string]string{}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("GetAgent(%q) = %+v, want %+v", a.ID, got, a)
	}
}

func testRecordHeartbeatNotFound(t *testing.T, s store.Store) {
	hb := store.Heartbeat{At: t0, Version: "v1"}
	if err := s.RecordHeartbeat(t.Context(), "agent-nope", hb); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RecordHeartbeat(%q, ...) error = %v, want %v", "agent-nope", err, store.ErrNotFound)
	}
}

// racers is how many goroutines race in the concurrency tests.
const racers = 8

func testConcurrentRedemptionOfOneToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, hash := createDeployment(t, s, "acme", "web")

	errs := make([]error, racers)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range racers {
		wg.Go(func() {
			start.Wait()
			a := newAgent(fmt.Sprintf("agent-%d", i), t0)
			_, errs[i] = s.RedeemPairingToken(ctx, hash, t0, a)
		})
	}
	start.Done()
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("RedeemPairingToken(same token) succeeded for both agent-%d and agent-%d, want exactly one success", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrTokenUsed):
			t.Errorf("RedeemPairingToken(same token) for agent-%d error = %v, want %v or success", i, err, store.ErrTokenUsed)
		}
	}
	if winner < 0 {
		t.Fatalf("RedeemPairingToken(same token) by %d goroutines: no success, want exactly one", racers)
	}
	ds := getDeployment(t, s, d.ID)
	if want := fmt.Sprintf("agent-%d", winner); ds.Agent == nil || ds.Agent.ID != want {
		t.Errorf("GetDeployment(%q).Agent = %+v, want %s", d.ID, ds.Agent, want)
	}
	for i := range racers {
		if i == winner {
			continue
		}
		id := fmt.Sprintf("agent-%d", i)
		if _, err := s.GetAgent(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetAgent(%q) of a loser error = %v, want %v", id, err, store.ErrNotFound)
		}
	}
}

func testConcurrentRedemptionOfOneDeployment(t *testing.T, s store.Store) {
	d, _ := createDeployment(t, s, "acme", "web")
	hashes := make([][]byte, racers)
	for i := range hashes {
		hashes[i] = addToken(t, s, d.ID, fmt.Sprint("token ", i), t0)
	}
	ctx := t.Context()

	errs := make([]error, racers)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range racers {
		wg.Go(func() {
			start.Wait()
			a := newAgent(fmt.Sprintf("agent-%d", i), t0)
			_, errs[i] = s.RedeemPairingToken(ctx, hashes[i], t0, a)
		})
	}
	start.Done()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("RedeemPairingToken(token %d of %d of one deployment, at once) error = %v, want nil", i, racers, err)
		}
	}

	// Whichever came last is current; all others were revoked.
	ds := getDeployment(t, s, d.ID)
	if ds.Agent == nil {
		t.Fatalf("GetDeployment(%q).Agent = nil, want the last agent paired", d.ID)
	}
	for i := range racers {
		id := fmt.Sprintf("agent-%d", i)
		a := getAgent(t, s, id)
		if revoked := !a.RevokedAt.IsZero(); revoked != (id != ds.Agent.ID) {
			t.Errorf("GetAgent(%q).RevokedAt = %v with %s current, want it set for all but the current agent", id, a.RevokedAt, ds.Agent.ID)
		}
	}
}
