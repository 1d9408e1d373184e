package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// requestTests are the conformance tests of deployments' settings and of
// access requests, which [Run] runs with the others.
var requestTests = []struct {
	name string
	test func(t *testing.T, s store.Store)
}{
	{"DeploymentSettings", testDeploymentSettings},
	{"SetDeploymentSettingsNotFound", testSetDeploymentSettingsNotFound},
	{"CreateRequest", testCreateRequest},
	{"CreateRequestConflict", testCreateRequestConflict},
	{"CreateRequestUnknownDeployment", testCreateRequestUnknownDeployment},
	{"GetRequestNotFound", testGetRequestNotFound},
	{"ListRequests", testListRequests},
	{"ListRequestsLimit", testListRequestsLimit},
	{"UpdateRequest", testUpdateRequest},
	{"UpdateRequestStale", testUpdateRequestStale},
	{"UpdateRequestNotFound", testUpdateRequestNotFound},
	{"ConcurrentUpdatesOfOneRequest", testConcurrentUpdatesOfOneRequest},
}

// requestLimit is the default and maximum of [store.RequestFilter.Limit].
const requestLimit = 1000

// otherZone is a zone other than UTC for times the suite stores, which
// stores return in UTC.
var otherZone = time.FixedZone("UTC-3", -3*3600)

// sub returns t0 plus d and a fraction of a millisecond, in otherZone: a
// time a store returns truncated to the millisecond, in UTC.
func sub(d time.Duration) time.Time {
	return t0.Add(d + 456*time.Microsecond + 789*time.Nanosecond).In(otherZone)
}

// storedTime returns t as stores return it: truncated to the millisecond,
// in UTC. The zero time stays zero.
func storedTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Truncate(time.Millisecond).UTC()
}

// settingsAsStored returns s as stores return it, without changing s.
func settingsAsStored(s store.DeploymentSettings) store.DeploymentSettings {
	windows := func(ws []store.Window) []store.Window {
		if ws == nil {
			return nil
		}
		out := make([]store.Window, len(ws))
		for i, w := range ws {
			w.Start, w.End = storedTime(w.Start), storedTime(w.End)
			out[i] = w
		}
		return out
	}
	s.FreezeWindows = windows(s.FreezeWindows)
	s.MaintenanceWindows = windows(s.MaintenanceWindows)
	return s
}

// requestAsStored returns r as stores return it, without changing r.
func requestAsStored(r store.AccessRequest) store.AccessRequest {
	r.PendingUntil = storedTime(r.PendingUntil)
	r.CreatedAt = storedTime(r.CreatedAt)
	r.UpdatedAt = storedTime(r.UpdatedAt)
	r.EndedAt = storedTime(r.EndedAt)
	if r.Reviews != nil {
		reviews := make([]store.Review, len(r.Reviews))
		for i, rv := range r.Reviews {
			rv.At = storedTime(rv.At)
			reviews[i] = rv
		}
		r.Reviews = reviews
	}
	if r.Grant != nil {
		g := *r.Grant
		g.NotBefore, g.Expiry, g.IssuedAt = storedTime(g.NotBefore), storedTime(g.Expiry), storedTime(g.IssuedAt)
		r.Grant = &g
	}
	return r
}

// fullSettings returns settings with every field set, times with more
// than millisecond precision and in otherZone.
func fullSettings() store.DeploymentSettings {
	return store.DeploymentSettings{
		Labels: map[string]string{"env": "prod", "team": "payments ✓", "quoted": `"x"`},
		FreezeWindows: []store.Window{
			{Start: sub(24 * time.Hour), End: sub(48 * time.Hour), Reason: "quarter close"},
			{Start: sub(72 * time.Hour), End: sub(73 * time.Hour)},
		},
		MaintenanceWindows: []store.Window{
			{Start: sub(2 * time.Hour), End: sub(4 * time.Hour), Reason: "weekly"},
		},
	}
}

// person returns a person with every field set.
func person(subject string) store.Person {
	return store.Person{
		Subject: subject,
		Email:   subject + "@vendor.test",
		Issuer:  "https://idp.vendor.test",
		Tenant:  "vendor",
		Roles:   []string{"sre", "oncall"},
	}
}

// fullRequest returns a request for deployment d with every field set,
// times with more than millisecond precision and in otherZone.
func fullRequest(id string, d store.Deployment) store.AccessRequest {
	return store.AccessRequest{
		ID:           id,
		DeploymentID: d.ID,
		Tenant:       d.Tenant,
		Name:         d.Name,
		Requester:    person("alice"),
		Scopes:       []string{"postgres:read", "prometheus:read"},
		Duration:     90*time.Minute + 250*time.Millisecond,
		Reason:       "checkout latency \"p99\" ✗\nsee ticket",
		Ticket:       "https://github.com/acme/ops/issues/42",
		BreakGlass:   true,
		State:        store.StateActive,
		Decision:     []byte(`{"allow":true,"reviews":["customer","internal"],"reasons":["é"]}`),
		Reviews: []store.Review{
			{Reviewer: person("carol"), Role: "approver", Approve: true, Comment: "ok", At: sub(2 * time.Minute)},
			{Reviewer: store.Person{Subject: "dave", Issuer: "https://idp.acme.test"}, Role: "internal", At: sub(3 * time.Minute)},
		},
		Grant: &store.GrantRecord{
			ID:        "grant-" + id,
			Token:     "v1.eyJhbGciOi.signature",
			Scopes:    []string{"postgres:read"},
			AgentID:   "agent-1",
			NotBefore: sub(4 * time.Minute),
			Expiry:    sub(94 * time.Minute),
			IssuedAt:  sub(4 * time.Minute),
		},
		PendingUntil: sub(time.Hour),
		CreatedAt:    sub(0),
		UpdatedAt:    sub(4 * time.Minute),
		EndedAt:      sub(5 * time.Minute),
		EndedBy:      "carol",
		EndReason:    "done early",
		Version:      1,
	}
}

// createRequest creates r, which must succeed.
func createRequest(t *testing.T, s store.Store, r store.AccessRequest) {
	t.Helper()
	if err := s.CreateRequest(t.Context(), r); err != nil {
		t.Fatalf("CreateRequest(%s) error = %v", r.ID, err)
	}
}

// checkRequest checks that GetRequest(want.ID) returns want.
func checkRequest(t *testing.T, s store.Store, want store.AccessRequest) {
	t.Helper()
	got, err := s.GetRequest(t.Context(), want.ID)
	if err != nil {
		t.Errorf("GetRequest(%q) error = %v", want.ID, err)
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetRequest(%q) =\n%s\nwant\n%s", want.ID, formatRequest(got), formatRequest(want))
	}
}

// formatRequest shows a request in failure messages, its grant included.
func formatRequest(r store.AccessRequest) string {
	s := fmt.Sprintf("%+v", r)
	if r.Grant != nil {
		s += fmt.Sprintf(" grant %+v", *r.Grant)
	}
	return s
}

// checkSettings checks that every way of reading deployment id returns
// want as its settings.
func checkSettings(t *testing.T, s store.Store, id string, want store.DeploymentSettings) {
	t.Helper()
	ds := getDeployment(t, s, id)
	if !reflect.DeepEqual(ds.Settings, want) {
		t.Errorf("GetDeployment(%q).Settings = %+v, want %+v", id, ds.Settings, want)
	}
	byName, err := s.GetDeploymentByName(t.Context(), ds.Tenant, ds.Name)
	if err != nil || !reflect.DeepEqual(byName.Settings, want) {
		t.Errorf("GetDeploymentByName(%q, %q).Settings = %+v, %v, want %+v, nil", ds.Tenant, ds.Name, byName.Settings, err, want)
	}
	all, err := s.ListDeployments(t.Context())
	if err != nil {
		t.Fatalf("ListDeployments() error = %v", err)
	}
	for _, d := range all {
		if d.ID == id && !reflect.DeepEqual(d.Settings, want) {
			t.Errorf("ListDeployments()[%q].Settings = %+v, want %+v", id, d.Settings, want)
		}
	}
}

func testDeploymentSettings(t *testing.T, s store.Store) {
	ctx := t.Context()
	plain, _ := createDeployment(t, s, "acme", "plain")
	checkSettings(t, s, plain.ID, store.DeploymentSettings{})

	// Created with settings.
	d := store.Deployment{ID: "dep-set", Tenant: "acme", Name: "web", CreatedAt: t0, Settings: fullSettings()}
	tok := store.PairingToken{Hash: hashOf("set"), CreatedAt: t0, ExpiresAt: t0.Add(tokenTTL)}
	if err := s.CreateDeployment(ctx, d, tok); err != nil {
		t.Fatalf("CreateDeployment(%+v) error = %v", d, err)
	}
	want := d
	want.Settings = settingsAsStored(d.Settings)
	checkSettings(t, s, d.ID, want.Settings)
	// Pairing returns them too.
	if got, err := s.RedeemPairingToken(ctx, tok.Hash, t0, newAgent("agent-1", t0)); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("RedeemPairingToken() = %+v, %v, want %+v, nil", got, err, want)
	}

	tests := []struct {
		name     string
		settings store.DeploymentSettings
	}{
		{"labels only", store.DeploymentSettings{Labels: map[string]string{"env": "staging"}}},
		{"maintenance window only", store.DeploymentSettings{
			MaintenanceWindows: []store.Window{{Start: sub(time.Hour), End: sub(2 * time.Hour)}},
		}},
		{"every field", fullSettings()},
		{"cleared", store.DeploymentSettings{}},
	}
	for _, tt := range tests {
		if err := s.SetDeploymentSettings(ctx, d.ID, tt.settings); err != nil {
			t.Fatalf("%s: SetDeploymentSettings(%q, %+v) error = %v", tt.name, d.ID, tt.settings, err)
		}
		checkSettings(t, s, d.ID, settingsAsStored(tt.settings))
		// The rest of the deployment is left alone, and so are the others.
		got := getDeployment(t, s, d.ID)
		if got.ID != d.ID || got.Tenant != d.Tenant || got.Name != d.Name || !got.CreatedAt.Equal(d.CreatedAt) ||
			got.Agent == nil || got.Agent.ID != "agent-1" {
			t.Errorf("%s: GetDeployment(%q) = %+v, want it unchanged but for settings", tt.name, d.ID, got)
		}
		checkSettings(t, s, plain.ID, store.DeploymentSettings{})
	}
}

func testSetDeploymentSettingsNotFound(t *testing.T, s store.Store) {
	createDeployment(t, s, "acme", "web")
	if err := s.SetDeploymentSettings(t.Context(), "dep-nope", fullSettings()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetDeploymentSettings(%q) error = %v, want %v", "dep-nope", err, store.ErrNotFound)
	}
}

func testCreateRequest(t *testing.T, s store.Store) {
	d, _ := createDeployment(t, s, "acme", "web")

	full := fullRequest("req-full", d)
	original := fullRequest("req-full", d)
	createRequest(t, s, full)
	checkRequest(t, s, requestAsStored(full))
	// The store did not change the caller's request in place.
	if !reflect.DeepEqual(full, original) {
		t.Errorf("CreateRequest changed its argument to\n%s\nfrom\n%s", formatRequest(full), formatRequest(original))
	}

	// Nil slices, no grant and zero times come back as they were.
	bare := store.AccessRequest{
		ID:           "req-bare",
		DeploymentID: d.ID,
		Tenant:       d.Tenant,
		Name:         d.Name,
		Requester:    store.Person{Subject: "bob", Issuer: "https://idp.vendor.test"},
		State:        store.StateDenied,
		CreatedAt:    t0,
		UpdatedAt:    t0,
		Version:      1,
	}
	createRequest(t, s, bare)
	checkRequest(t, s, bare)

	// The version is stored as given.
	seven := fullRequest("req-seven", d)
	seven.Version = 7
	createRequest(t, s, seven)
	checkRequest(t, s, requestAsStored(seven))

	got, err := s.ListRequests(t.Context(), store.RequestFilter{})
	if want := []store.AccessRequest{requestAsStored(seven), requestAsStored(full), bare}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ListRequests({}) = %s, %v, want %s, nil", formatRequests(got), err, formatRequests(want))
	}
}

func testCreateRequestConflict(t *testing.T, s store.Store) {
	d, _ := createDeployment(t, s, "acme", "web")
	other, _ := createDeployment(t, s, "globex", "api")
	r := fullRequest("req-1", d)
	createRequest(t, s, r)

	dup := fullRequest("req-1", other)
	dup.State, dup.Reason = store.StatePending, "another"
	if err := s.CreateRequest(t.Context(), dup); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateRequest(request with a taken ID) error = %v, want %v", err, store.ErrConflict)
	}
	checkRequest(t, s, requestAsStored(r))
	if got, err := s.ListRequests(t.Context(), store.RequestFilter{DeploymentID: other.ID}); err != nil || len(got) != 0 {
		t.Errorf("ListRequests(deployment %q) = %s, %v, want none, nil", other.ID, formatRequests(got), err)
	}
}

func testCreateRequestUnknownDeployment(t *testing.T, s store.Store) {
	d, _ := createDeployment(t, s, "acme", "web")
	r := fullRequest("req-1", d)
	r.DeploymentID = "dep-nope"
	if err := s.CreateRequest(t.Context(), r); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateRequest(request for deployment %q) error = %v, want %v", r.DeploymentID, err, store.ErrNotFound)
	}
	if _, err := s.GetRequest(t.Context(), r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after failed creation, GetRequest(%q) error = %v, want %v", r.ID, err, store.ErrNotFound)
	}
}

func testGetRequestNotFound(t *testing.T, s store.Store) {
	d, _ := createDeployment(t, s, "acme", "web")
	createRequest(t, s, fullRequest("req-1", d))
	for _, id := range []string{"req-nope", "", "REQ-1", "req-1 "} {
		if _, err := s.GetRequest(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetRequest(%q) error = %v, want %v", id, err, store.ErrNotFound)
		}
	}
}

// listStates are the states of the requests [listRequest] returns, in turn.
var listStates = []string{
	store.StatePending, store.StateApproved, store.StateActive, store.StateExpired,
	store.StateRevoked, store.StateDenied, store.StateCancelled, store.StateTimedOut,
}

// listRequest returns request i of testListRequests, for one of deps,
// every field set from i. Requests 2k and 2k+1 are created in the same
// millisecond; the latest created has the highest number. Pending requests
// are due at their PendingUntil, approved ones at it or at their grant's
// expiry, active ones at their grant's expiry.
func listRequest(i int, deps []store.Deployment) store.AccessRequest {
	d := deps[i%len(deps)]
	created := t0.Add(time.Duration(i/2) * time.Second)
	r := store.AccessRequest{
		ID:           fmt.Sprintf("req-%03d", i),
		DeploymentID: d.ID,
		Tenant:       d.Tenant,
		Name:         d.Name,
		Requester:    person([]string{"alice", "bob", "carol", "dave", "erin"}[i%5]),
		Scopes:       []string{"postgres:read"},
		Duration:     time.Hour,
		Reason:       fmt.Sprint("reason ", i),
		State:        listStates[i%len(listStates)],
		Decision:     []byte(`{"allow":true}`),
		PendingUntil: created.Add(time.Duration(i%7) * time.Minute),
		CreatedAt:    created,
		UpdatedAt:    created,
		Version:      1,
	}
	if r.State != store.StatePending && !(r.State == store.StateApproved && i%3 == 0) {
		r.Grant = &store.GrantRecord{
			ID:        fmt.Sprint("grant-", i),
			Scopes:    r.Scopes,
			NotBefore: created,
			Expiry:    created.Add(time.Duration(i%11) * time.Minute),
			IssuedAt:  created,
		}
	}
	return r
}

// matchesRequest is what a RequestFilter means, Limit aside.
func matchesRequest(r store.AccessRequest, f store.RequestFilter) bool {
	switch {
	case f.Tenant != "" && r.Tenant != f.Tenant,
		f.DeploymentID != "" && r.DeploymentID != f.DeploymentID,
		f.Requester != "" && r.Requester.Subject != f.Requester,
		len(f.States) > 0 && !slices.Contains(f.States, r.State),
		!f.DueBefore.IsZero() && (r.DueAt().IsZero() || !r.DueAt().Before(f.DueBefore)):
		return false
	}
	return true
}

// formatRequests shows requests in failure messages by ID.
func formatRequests(rs []store.AccessRequest) string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ID
	}
	return "[" + strings.Join(ids, " ") + "]"
}

func testListRequests(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.ListRequests(ctx, store.RequestFilter{})
	if err != nil || len(got) != 0 {
		t.Fatalf("ListRequests({}) on an empty store = %s, %v, want none, nil", formatRequests(got), err)
	}

	acmeWeb, _ := createDeployment(t, s, "acme", "web")
	acmeAPI, _ := createDeployment(t, s, "acme", "api")
	globexWeb, _ := createDeployment(t, s, "globex", "web")
	deps := []store.Deployment{acmeWeb, acmeAPI, globexWeb}

	// Created out of order; byID holds them as stored.
	const n = 120
	byID := map[string]store.AccessRequest{}
	for _, i := range []int{5, 0, n - 1, 1, 2, n - 2, 3, 4} {
		r := listRequest(i, deps)
		createRequest(t, s, r)
		byID[r.ID] = r
	}
	for i := 6; i < n-2; i++ {
		r := listRequest(i, deps)
		createRequest(t, s, r)
		byID[r.ID] = r
	}
	// newestFirst is every request, newest first, as the list orders them.
	var newestFirst []store.AccessRequest
	for i := n - 1; i >= 0; i-- {
		newestFirst = append(newestFirst, byID[fmt.Sprintf("req-%03d", i)])
	}
	// due is when request i is due.
	due := func(i int) time.Time { return listRequest(i, deps).DueAt() }
	// ids returns the IDs of requests is.
	ids := func(is ...int) []string {
		out := make([]string, len(is))
		for k, i := range is {
			out[k] = fmt.Sprintf("req-%03d", i)
		}
		return out
	}

	tests := []struct {
		name string
		f    store.RequestFilter
		want []string // nil: whatever matchesRequest says
	}{
		{name: "all", f: store.RequestFilter{}},
		{name: "newest first, ties by ID", f: store.RequestFilter{Limit: 5}, want: ids(119, 118, 117, 116, 115)},
		{name: "tenant", f: store.RequestFilter{Tenant: "acme"}},
		{name: "other tenant", f: store.RequestFilter{Tenant: "globex"}},
		{name: "unknown tenant", f: store.RequestFilter{Tenant: "initech"}, want: []string{}},
		{name: "deployment", f: store.RequestFilter{DeploymentID: acmeAPI.ID}},
		{name: "deployment of other tenant", f: store.RequestFilter{Tenant: "acme", DeploymentID: globexWeb.ID}, want: []string{}},
		{name: "requester", f: store.RequestFilter{Requester: "bob"}},
		{name: "requester, not email", f: store.RequestFilter{Requester: "bob@vendor.test"}, want: []string{}},
		{name: "one state", f: store.RequestFilter{States: []string{store.StatePending}}},
		{name: "states", f: store.RequestFilter{States: []string{store.StateActive, store.StateApproved, store.StatePending}}},
		{name: "no such state", f: store.RequestFilter{States: []string{"nope"}}, want: []string{}},
		{name: "empty states", f: store.RequestFilter{States: []string{}}},
		{name: "due before", f: store.RequestFilter{DueBefore: t0.Add(10 * time.Second)}},
		{name: "due before, late", f: store.RequestFilter{DueBefore: t0.Add(time.Hour)}},
		// Request 0 is pending, due at its creation, t0; the next
		// pending request is due minutes later.
		{name: "due at the limit", f: store.RequestFilter{States: []string{store.StatePending}, DueBefore: due(0)}, want: []string{}},
		{name: "due a nanosecond before", f: store.RequestFilter{States: []string{store.StatePending}, DueBefore: due(0).Add(time.Nanosecond)}, want: ids(0)},
		{name: "due a millisecond before", f: store.RequestFilter{States: []string{store.StatePending}, DueBefore: due(0).Add(time.Millisecond)}, want: ids(0)},
		{name: "limit", f: store.RequestFilter{Tenant: "acme", Limit: 3}},
		{name: "limit above matches", f: store.RequestFilter{Requester: "carol", Limit: 40}},
		// Requests 0, 90 and 105 (pending, active, approved) match all
		// but the limit.
		{name: "everything", f: store.RequestFilter{
			Tenant: "acme", DeploymentID: acmeWeb.ID, Requester: "alice",
			States:    []string{store.StateActive, store.StateApproved, store.StatePending},
			DueBefore: t0.Add(time.Hour), Limit: 2,
		}, want: ids(105, 90)},
	}
	for _, tt := range tests {
		var want []store.AccessRequest
		if tt.want != nil {
			for _, id := range tt.want {
				want = append(want, byID[id])
			}
		} else {
			for _, r := range newestFirst {
				if matchesRequest(r, tt.f) {
					want = append(want, r)
				}
			}
			if tt.f.Limit > 0 && len(want) > tt.f.Limit {
				want = want[:tt.f.Limit]
			}
			if len(want) == 0 {
				t.Fatalf("suite error: %s: filter %+v matches %d requests: choose one that tells", tt.name, tt.f, len(want))
			}
		}
		// The expectations written out agree with the filter's meaning.
		for _, r := range want {
			if !matchesRequest(r, tt.f) {
				t.Fatalf("suite error: %s: filter %+v does not match request %s", tt.name, tt.f, r.ID)
			}
		}
		got, err := s.ListRequests(ctx, tt.f)
		if err != nil {
			t.Errorf("%s: ListRequests(%+v) error = %v", tt.name, tt.f, err)
			continue
		}
		if len(got) == 0 && len(want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ListRequests(%+v) = %s, want %s", tt.name, tt.f, formatRequests(got), formatRequests(want))
		}
	}
}

func testListRequestsLimit(t *testing.T, s store.Store) {
	d, _ := createDeployment(t, s, "acme", "web")
	// One more than a list returns; the oldest is left out.
	const n = requestLimit + 1
	for i := range n {
		r := store.AccessRequest{
			ID:           fmt.Sprintf("req-%04d", i),
			DeploymentID: d.ID,
			Tenant:       d.Tenant,
			Name:         d.Name,
			Requester:    store.Person{Subject: "alice", Issuer: "https://idp.vendor.test"},
			State:        store.StateExpired,
			CreatedAt:    t0.Add(time.Duration(i) * time.Millisecond),
			UpdatedAt:    t0,
			Version:      1,
		}
		createRequest(t, s, r)
	}
	tests := []struct {
		limit, want int
	}{
		{0, requestLimit},
		{requestLimit, requestLimit},
		{requestLimit + 1, requestLimit},
		{1 << 30, requestLimit},
		{requestLimit - 1, requestLimit - 1},
		{1, 1},
	}
	for _, tt := range tests {
		f := store.RequestFilter{Limit: tt.limit}
		got, err := s.ListRequests(t.Context(), f)
		if err != nil || len(got) != tt.want {
			t.Errorf("ListRequests(%+v) = %d requests, %v, want %d, nil", f, len(got), err, tt.want)
			continue
		}
		if first, last := got[0].ID, got[len(got)-1].ID; first != fmt.Sprintf("req-%04d", n-1) || last != fmt.Sprintf("req-%04d", n-tt.want) {
			t.Errorf("ListRequests(%+v) = [%s … %s], want the newest %d", f, first, last, tt.want)
		}
	}
}

func testUpdateRequest(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, _ := createDeployment(t, s, "acme", "web")
	r := fullRequest("req-1", d)
	r.State, r.Reviews, r.Grant = store.StatePending, nil, nil
	r.EndedAt, r.EndedBy, r.EndReason = time.Time{}, "", ""
	createRequest(t, s, r)
	bystander := fullRequest("req-2", d)
	createRequest(t, s, bystander)

	// Each step updates the request as the broker would, from the
	// request it last read.
	steps := []struct {
		name   string
		change func(r *store.AccessRequest)
	}{
		{"reviewed", func(r *store.AccessRequest) {
			r.Reviews = append(r.Reviews, store.Review{Reviewer: person("carol"), Role: "approver", Approve: true, At: sub(time.Minute)})
			r.UpdatedAt = sub(time.Minute)
		}},
		{"approved", func(r *store.AccessRequest) {
			r.State = store.StateApproved
			r.UpdatedAt = sub(2 * time.Minute)
		}},
		{"active", func(r *store.AccessRequest) {
			r.State = store.StateActive
			r.Grant = &store.GrantRecord{ID: "grant-1", Token: "tok", Scopes: r.Scopes, AgentID: "agent-1",
				NotBefore: sub(2 * time.Minute), Expiry: sub(3 * time.Hour), IssuedAt: sub(2 * time.Minute)}
			r.UpdatedAt = sub(2 * time.Minute)
		}},
		{"revoked", func(r *store.AccessRequest) {
			r.State = store.StateRevoked
			r.EndedAt, r.EndedBy, r.EndReason = sub(10*time.Minute), "carol", "incident over"
			r.UpdatedAt = sub(10 * time.Minute)
		}},
	}
	for k, step := range steps {
		cur, err := s.GetRequest(ctx, r.ID)
		if err != nil {
			t.Fatalf("%s: GetRequest(%q) error = %v", step.name, r.ID, err)
		}
		step.change(&cur)
		if err := s.UpdateRequest(ctx, cur); err != nil {
			t.Fatalf("%s: UpdateRequest(%q at version %d) error = %v", step.name, cur.ID, cur.Version, err)
		}
		want := requestAsStored(cur)
		want.Version = int64(k) + 2
		checkRequest(t, s, want)

		// The list filters on what the update changed.
		for _, f := range []store.RequestFilter{
			{States: []string{want.State}},
			{States: []string{store.StatePending, store.StateApproved, store.StateActive}, DueBefore: t0.Add(24 * time.Hour)},
			{DueBefore: want.DueAt().Add(time.Millisecond)},
		} {
			got, err := s.ListRequests(ctx, f)
			if err != nil {
				t.Fatalf("%s: ListRequests(%+v) error = %v", step.name, f, err)
			}
			listed := slices.ContainsFunc(got, func(g store.AccessRequest) bool { return g.ID == want.ID })
			if listed != matchesRequest(want, f) {
				t.Errorf("%s: ListRequests(%+v) = %s, want %s listed: %t", step.name, f, formatRequests(got), want.ID, !listed)
			}
		}
	}
	checkRequest(t, s, requestAsStored(bystander))
}

func testUpdateRequestStale(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, _ := createDeployment(t, s, "acme", "web")
	r := fullRequest("req-1", d)
	r.State = store.StatePending
	createRequest(t, s, r)

	first := r
	first.State, first.UpdatedAt = store.StateApproved, sub(time.Minute)
	if err := s.UpdateRequest(ctx, first); err != nil {
		t.Fatalf("UpdateRequest(version 1) error = %v", err)
	}
	want := requestAsStored(first)
	want.Version = 2

	for _, v := range []int64{1, 3, 0, -1} {
		stale := r
		stale.Version = v
		stale.State, stale.Reason, stale.UpdatedAt = store.StateCancelled, "changed my mind", sub(2*time.Minute)
		if err := s.UpdateRequest(ctx, stale); !errors.Is(err, store.ErrConflict) {
			t.Errorf("UpdateRequest(version %d, stored 2) error = %v, want %v", v, err, store.ErrConflict)
		}
		checkRequest(t, s, want)
	}
	if got, err := s.ListRequests(ctx, store.RequestFilter{States: []string{store.StateCancelled}}); err != nil || len(got) != 0 {
		t.Errorf("ListRequests(cancelled) after stale updates = %s, %v, want none, nil", formatRequests(got), err)
	}
}

func testUpdateRequestNotFound(t *testing.T, s store.Store) {
	d, _ := createDeployment(t, s, "acme", "web")
	createRequest(t, s, fullRequest("req-1", d))
	r := fullRequest("req-nope", d)
	if err := s.UpdateRequest(t.Context(), r); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateRequest(%q) error = %v, want %v", r.ID, err, store.ErrNotFound)
	}
	if _, err := s.GetRequest(t.Context(), r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after failed update, GetRequest(%q) error = %v, want %v", r.ID, err, store.ErrNotFound)
	}
}

func testConcurrentUpdatesOfOneRequest(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, _ := createDeployment(t, s, "acme", "web")
	r := fullRequest("req-1", d)
	r.Reviews = nil
	createRequest(t, s, r)

	// Racers all update version 1 at once: one wins.
	errs := make([]error, racers)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range racers {
		wg.Go(func() {
			start.Wait()
			mine := r
			mine.Reason = fmt.Sprint("racer ", i)
			errs[i] = s.UpdateRequest(ctx, mine)
		})
	}
	start.Done()
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("UpdateRequest(version 1) succeeded for both racer %d and racer %d, want exactly one success", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("UpdateRequest(version 1) by racer %d error = %v, want %v or success", i, err, store.ErrConflict)
		}
	}
	if winner < 0 {
		t.Fatalf("UpdateRequest(version 1) by %d goroutines: no success, want exactly one", racers)
	}
	want := requestAsStored(r)
	want.Reason, want.Version = fmt.Sprint("racer ", winner), 2
	checkRequest(t, s, want)

	// Racers each add reviews, reading the request again after every
	// conflict: no review is lost, and every version is updated once.
	const rounds = 5
	wonFrom := make([][]int64, racers) // the versions each racer updated
	start.Add(1)
	for i := range racers {
		wg.Go(func() {
			start.Wait()
			for round, tries := 0, 0; round < rounds; tries++ {
				if tries == 100*racers*rounds {
					t.Errorf("racer %d: %d updates failed, with %d of %d made", i, tries-round, round, rounds)
					return
				}
				cur, err := s.GetRequest(ctx, r.ID)
				if err != nil {
					t.Errorf("racer %d: GetRequest(%q) error = %v", i, r.ID, err)
					return
				}
				cur.Reviews = append(cur.Reviews, store.Review{
					Reviewer: store.Person{Subject: fmt.Sprintf("racer-%d-%d", i, round), Issuer: "https://idp.vendor.test"},
					Role:     "approver",
					At:       t0,
				})
				err = s.UpdateRequest(ctx, cur)
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				if err != nil {
					t.Errorf("racer %d: UpdateRequest(version %d) error = %v, want nil or %v", i, cur.Version, err, store.ErrConflict)
					return
				}
				wonFrom[i] = append(wonFrom[i], cur.Version)
				round++
			}
		})
	}
	start.Done()
	wg.Wait()
	if t.Failed() {
		return
	}

	var versions []int64
	for _, vs := range wonFrom {
		versions = append(versions, vs...)
	}
	slices.Sort(versions)
	for k, v := range versions {
		if want := int64(k) + 2; v != want {
			t.Fatalf("versions updated = %v, want each of 2 to %d once", versions, 1+racers*rounds)
		}
	}
	got, err := s.GetRequest(ctx, r.ID)
	if err != nil {
		t.Fatalf("GetRequest(%q) error = %v", r.ID, err)
	}
	if want := int64(2 + racers*rounds); got.Version != want {
		t.Errorf("GetRequest(%q).Version = %d, want %d", r.ID, got.Version, want)
	}
	seen := map[string]bool{}
	for _, rv := range got.Reviews {
		seen[rv.Reviewer.Subject] = true
	}
	for i := range racers {
		for round := range rounds {
			if who := fmt.Sprintf("racer-%d-%d", i, round); !seen[who] {
				t.Errorf("GetRequest(%q).Reviews has none by %s: an update was lost", r.ID, who)
			}
		}
	}
	if len(got.Reviews) != racers*rounds {
		t.Errorf("GetRequest(%q) has %d reviews, want %d", r.ID, len(got.Reviews), racers*rounds)
	}
}

// CheckUpgraded checks s, a store on a database that held the deployment
// with the given ID before its schema had deployments' settings and access
// requests: the deployment has the zero settings and takes new ones, and
// access requests to it can be stored.
func CheckUpgraded(t *testing.T, s store.Store, id string) {
	t.Helper()
	ctx := t.Context()
	checkSettings(t, s, id, store.DeploymentSettings{})
	settings := fullSettings()
	if err := s.SetDeploymentSettings(ctx, id, settings); err != nil {
		t.Fatalf("SetDeploymentSettings(%q) error = %v", id, err)
	}
	checkSettings(t, s, id, settingsAsStored(settings))

	d := getDeployment(t, s, id).Deployment
	r := fullRequest("req-1", d)
	createRequest(t, s, r)
	checkRequest(t, s, requestAsStored(r))
	r.Version = 2
	if err := s.UpdateRequest(ctx, r); !errors.Is(err, store.ErrConflict) {
		t.Errorf("UpdateRequest(version 2, stored 1) error = %v, want %v", err, store.ErrConflict)
	}
}
