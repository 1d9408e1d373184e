package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// netregTests are the conformance tests of network registrations, which
// [Run] runs with the others.
var netregTests = []struct {
	name string
	test func(t *testing.T, s store.Store)
}{
	{"NetworkRegistration", testNetworkRegistration},
	{"NetworkRegistrationOneTenantPerAccount", testNetworkRegistrationOneTenantPerAccount},
	{"ListNetworkRegistrations", testListNetworkRegistrations},
	{"UpdateNetworkRegistration", testUpdateNetworkRegistration},
	{"DeleteNetworkRegistration", testDeleteNetworkRegistration},
	{"ConcurrentRegistrationsOfOneAccount", testConcurrentRegistrationsOfOneAccount},
}

// fullRegistration returns a registration with every field set, times
// with more than millisecond precision and in otherZone.
func fullRegistration(id, tenant, account string) store.NetworkRegistration {
	confirmer := person("approver")
	confirmer.Tenant = tenant
	return store.NetworkRegistration{
		ID:               id,
		Tenant:           tenant,
		AccountID:        account,
		RoleARN:          "arn:aws:iam::" + account + ":role/TetherNetwork",
		VPCIDs:           []string{"vpc-0a1b2c3d4e5f67890", "vpc-11112222"},
		RouteTableIDs:    []string{"rtb-0a1b2c3d4e5f67890"},
		PeerCIDRs:        []string{"10.1.0.0/16", "52.94.0.0/24"},
		State:            store.RegistrationActive,
		RegisteredBy:     person("admin"),
		CreatedAt:        sub(time.Minute),
		ConfirmedBy:      &confirmer,
		ConfirmedAt:      sub(2 * time.Minute),
		SealedExternalID: []byte("\x00sealed\xffexternal-id"),
		Version:          1,
	}
}

// registrationAsStored returns reg as stores return it.
func registrationAsStored(reg store.NetworkRegistration) store.NetworkRegistration {
	reg.CreatedAt = storedTime(reg.CreatedAt)
	reg.ConfirmedAt = storedTime(reg.ConfirmedAt)
	return reg
}

func checkRegistration(t *testing.T, s store.Store, want store.NetworkRegistration) {
	t.Helper()
	want = registrationAsStored(want)
	got, err := s.GetNetworkRegistration(t.Context(), want.ID)
	if err != nil {
		t.Fatalf("GetNetworkRegistration(%q) error = %v", want.ID, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetNetworkRegistration(%q) = %+v, want %+v", want.ID, got, want)
	}
	got, err = s.GetNetworkRegistrationByAccount(t.Context(), want.AccountID)
	if err != nil {
		t.Fatalf("GetNetworkRegistrationByAccount(%q) error = %v", want.AccountID, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetNetworkRegistrationByAccount(%q) = %+v, want %+v", want.AccountID, got, want)
	}
}

func createRegistration(t *testing.T, s store.Store, reg store.NetworkRegistration) {
	t.Helper()
	if err := s.CreateNetworkRegistration(t.Context(), reg); err != nil {
		t.Fatalf("CreateNetworkRegistration(%s, account %s) error = %v", reg.Tenant, reg.AccountID, err)
	}
}

func testNetworkRegistration(t *testing.T, s store.Store) {
	ctx := t.Context()
	full := fullRegistration("reg-1", "acme", "111111111111")
	createRegistration(t, s, full)
	checkRegistration(t, s, full)

	// A pending registration: no confirmation, no sealed external ID.
	pending := store.NetworkRegistration{
		ID: "reg-2", Tenant: "acme", AccountID: "222222222222", RoleARN: "arn:aws:iam::222222222222:role/T",
		VPCIDs: []string{"vpc-22223333"}, State: store.RegistrationPending, RegisteredBy: person("admin"),
		CreatedAt: sub(0), Version: 1,
	}
	createRegistration(t, s, pending)
	checkRegistration(t, s, pending)

	for _, id := range []string{"reg-3", ""} {
		if _, err := s.GetNetworkRegistration(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetNetworkRegistration(%q) error = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := s.GetNetworkRegistrationByAccount(ctx, "333333333333"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetNetworkRegistrationByAccount(unregistered) error = %v, want ErrNotFound", err)
	}
	// The same ID again is a conflict.
	again := fullRegistration("reg-1", "acme", "444444444444")
	if err := s.CreateNetworkRegistration(ctx, again); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateNetworkRegistration(existing ID) error = %v, want ErrConflict", err)
	}
}

// testNetworkRegistrationOneTenantPerAccount: an account registered to one
// tenant cannot be registered to another, nor again to the same one.
func testNetworkRegistrationOneTenantPerAccount(t *testing.T, s store.Store) {
	ctx := t.Context()
	createRegistration(t, s, fullRegistration("reg-globex", "globex", "222222222222"))
	for _, tenant := range []string{"acme", "globex"} {
		reg := fullRegistration("reg-"+tenant+"-2", tenant, "222222222222")
		if err := s.CreateNetworkRegistration(ctx, reg); !errors.Is(err, store.ErrConflict) {
			t.Errorf("CreateNetworkRegistration(%s, account of globex) error = %v, want ErrConflict", tenant, err)
		}
	}
	checkRegistration(t, s, fullRegistration("reg-globex", "globex", "222222222222"))
}

func testListNetworkRegistrations(t *testing.T, s store.Store) {
	ctx := t.Context()
	regs := []store.NetworkRegistration{
		fullRegistration("r1", "globex", "300000000000"),
		fullRegistration("r2", "acme", "200000000000"),
		fullRegistration("r3", "acme", "100000000000"),
	}
	for _, reg := range regs {
		createRegistration(t, s, reg)
	}
	for _, tt := range []struct {
		tenant string
		want   []store.NetworkRegistration
	}{
		{"", []store.NetworkRegistration{regs[2], regs[1], regs[0]}},
		{"acme", []store.NetworkRegistration{regs[2], regs[1]}},
		{"globex", []store.NetworkRegistration{regs[0]}},
		{"initech", nil},
	} {
		got, err := s.ListNetworkRegistrations(ctx, tt.tenant)
		if err != nil {
			t.Fatalf("ListNetworkRegistrations(%q) error = %v", tt.tenant, err)
		}
		var want []store.NetworkRegistration
		for _, reg := range tt.want {
			want = append(want, registrationAsStored(reg))
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ListNetworkRegistrations(%q) = %+v, want %+v", tt.tenant, got, want)
		}
	}
}

func testUpdateNetworkRegistration(t *testing.T, s store.Store) {
	ctx := t.Context()
	reg := fullRegistration("reg-1", "acme", "111111111111")
	reg.State, reg.ConfirmedBy, reg.ConfirmedAt, reg.SealedExternalID = store.RegistrationPending, nil, time.Time{}, nil
	createRegistration(t, s, reg)

	confirmed := reg
	approver := person("approver")
	confirmed.State, confirmed.ConfirmedBy, confirmed.ConfirmedAt = store.RegistrationActive, &approver, sub(time.Hour)
	confirmed.SealedExternalID = []byte("sealed")
	if err := s.UpdateNetworkRegistration(ctx, confirmed); err != nil {
		t.Fatalf("UpdateNetworkRegistration(confirm) error = %v", err)
	}
	confirmed.Version = 2
	checkRegistration(t, s, confirmed)

	// A second confirmation from the same version loses.
	if err := s.UpdateNetworkRegistration(ctx, reg); !errors.Is(err, store.ErrConflict) {
		t.Errorf("UpdateNetworkRegistration(stale version) error = %v, want ErrConflict", err)
	}
	checkRegistration(t, s, confirmed)
	// Tenant and account never change.
	moved := confirmed
	moved.Tenant = "globex"
	if err := s.UpdateNetworkRegistration(ctx, moved); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateNetworkRegistration(another tenant) error = %v, want a refusal", err)
	}
	checkRegistration(t, s, confirmed)
	unknown := fullRegistration("reg-9", "acme", "999999999999")
	if err := s.UpdateNetworkRegistration(ctx, unknown); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateNetworkRegistration(unknown) error = %v, want ErrNotFound", err)
	}
}

func testDeleteNetworkRegistration(t *testing.T, s store.Store) {
	ctx := t.Context()
	createRegistration(t, s, fullRegistration("reg-1", "acme", "111111111111"))
	if err := s.DeleteNetworkRegistration(ctx, "reg-1"); err != nil {
		t.Fatalf("DeleteNetworkRegistration error = %v", err)
	}
	if _, err := s.GetNetworkRegistration(ctx, "reg-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetNetworkRegistration(deleted) error = %v, want ErrNotFound", err)
	}
	if err := s.DeleteNetworkRegistration(ctx, "reg-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteNetworkRegistration(deleted) error = %v, want ErrNotFound", err)
	}
	// Once unregistered, the account may be registered again, to anyone.
	createRegistration(t, s, fullRegistration("reg-2", "globex", "111111111111"))
	checkRegistration(t, s, fullRegistration("reg-2", "globex", "111111111111"))
}

// testConcurrentRegistrationsOfOneAccount: of several tenants registering
// one account at once, exactly one succeeds.
func testConcurrentRegistrationsOfOneAccount(t *testing.T, s store.Store) {
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.CreateNetworkRegistration(t.Context(), fullRegistration(fmt.Sprintf("reg-%d", i), fmt.Sprintf("tenant%d", i), "555555555555"))
		})
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("registration #%d error = %v, want nil or ErrConflict", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent registrations of one account succeeded, want 1", won, n)
	}
}
