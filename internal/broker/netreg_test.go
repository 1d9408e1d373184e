package broker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/devbroker"
)

// registerNetwork registers account, with its TetherNetwork role and the
// VPCs, to tenant as the tenant's approver, and returns the external ID
// the answer shows.
func registerNetwork(t *testing.T, b *brokertest.Broker, tenant, account string, vpcs ...string) string {
	t.Helper()
	res, err := asUser(t, b, "approver@"+tenant+".test").RegisterNetwork(context.Background(), tenant, brokerapi.RegisterNetwork{
		AccountID: account, RoleARN: "arn:aws:iam::" + account + ":role/TetherNetwork", VPCIDs: vpcs,
	})
	if err != nil {
		t.Fatalf("register account %s to %s: %v", account, tenant, err)
	}
	if res.Registration.State != brokerapi.RegistrationActive || res.ExternalID == "" {
		t.Fatalf("approver's registration = %+v, want active with an external ID", res)
	}
	return res.ExternalID
}

// TestNetworkRegistration: an account is registered to one tenant, by its
// approvers or by an admin with an approver's confirmation; the broker
// makes the external ID and shows it once; an account registered to one
// tenant cannot be registered to another; each step is audited.
func TestNetworkRegistration(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	acme, globex, eng := asUser(t, b, "approver@acme.test"), asUser(t, b, "approver@globex.test"), asUser(t, b, "engineer@vendor.test")
	role := func(acct string) string { return "arn:aws:iam::" + acct + ":role/TetherNetwork" }

	// Input is checked before anything is stored.
	for _, tt := range []struct {
		name string
		in   brokerapi.RegisterNetwork
		msg  string
	}{
		{"bad account", brokerapi.RegisterNetwork{AccountID: "1234", RoleARN: role("111111111111"), VPCIDs: []string{"vpc-11112222"}}, "12-digit"},
		{"role of another account", brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: role("222222222222"), VPCIDs: []string{"vpc-11112222"}}, "is a role of account 222222222222"},
		{"no VPC", brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: role("111111111111")}, "want 1 to 50 VPCs"},
		{"bad VPC", brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: role("111111111111"), VPCIDs: []string{"vpc-XYZ"}}, `vpc_ids "vpc-XYZ"`},
		{"bad CIDR", brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: role("111111111111"), VPCIDs: []string{"vpc-11112222"}, PeerCIDRs: []string{"10.1.0.1/16"}}, "no host bits"},
	} {
		_, err := acme.RegisterNetwork(ctx, "acme", tt.in)
		wantAPIErr(t, "register ("+tt.name+")", err, 400, tt.msg)
	}
	_, err := b.Client.RegisterNetwork(ctx, "initech", brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: role("111111111111"), VPCIDs: []string{"vpc-11112222"}})
	wantAPIErr(t, "register to a tenant without an identity provider", err, 404, "no identity provider")

	// The tenant's approver: active at once, with a random external ID.
	res, err := acme.RegisterNetwork(ctx, "acme", brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: role("111111111111"), VPCIDs: []string{"vpc-11112222"}})
	if err != nil {
		t.Fatal(err)
	}
	ext := res.ExternalID
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(ext, "tether-"))
	if !strings.HasPrefix(ext, "tether-") || err != nil || len(raw) < 16 {
		t.Errorf("external ID %q: want tether- and at least 128 random bits, base64url", ext)
	}
	if res.Registration.State != brokerapi.RegistrationActive || res.Registration.ConfirmedBy != "approver@acme.test" {
		t.Errorf("approver's registration = %+v, want active, confirmed by the approver", res.Registration)
	}
	if other := registerNetwork(t, b, "acme", "333333333333", "vpc-33334444"); other == ext {
		t.Errorf("two registrations got the same external ID %q", ext)
	}

	// An account registered to acme cannot be registered to globex, by
	// globex's approver (who is not told whose it is) or by an admin.
	_, err = globex.RegisterNetwork(ctx, "globex", brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: role("111111111111"), VPCIDs: []string{"vpc-11112222"}})
	wantAPIErr(t, "globex registering acme's account", err, 409, "registered to another tenant")
	if ae := apiErr(t, err); strings.Contains(ae.Message, "acme") {
		t.Errorf("refusal to globex names acme: %s", ae.Message)
	}
	_, err = b.Client.RegisterNetwork(ctx, "globex", brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: role("111111111111"), VPCIDs: []string{"vpc-11112222"}})
	wantAPIErr(t, "admin registering acme's account to globex", err, 409, "registered to tenant acme")
	_, err = acme.RegisterNetwork(ctx, "acme", brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: role("111111111111"), VPCIDs: []string{"vpc-55556666"}})
	wantAPIErr(t, "registering an account twice", err, 409, "unregister it")
	// Nor may an approver register to another tenant, or an engineer at all.
	_, err = acme.RegisterNetwork(ctx, "globex", brokerapi.RegisterNetwork{AccountID: "444444444444", RoleARN: role("444444444444"), VPCIDs: []string{"vpc-44445555"}})
	wantAPIErr(t, "acme registering to globex", err, 403, "may not act on tenant globex")
	_, err = eng.RegisterNetwork(ctx, "acme", brokerapi.RegisterNetwork{AccountID: "444444444444", RoleARN: role("444444444444"), VPCIDs: []string{"vpc-44445555"}})
	wantAPIErr(t, "engineer registering", err, 403, "needs the role")

	// A vendor admin's registration waits for the tenant's approver, who
	// alone sees the external ID.
	pend, err := b.Client.RegisterNetwork(ctx, "globex", brokerapi.RegisterNetwork{AccountID: "222222222222", RoleARN: role("222222222222"), VPCIDs: []string{"vpc-22223333"}})
	if err != nil {
		t.Fatal(err)
	}
	if pend.Registration.State != brokerapi.RegistrationPending || pend.ExternalID != "" {
		t.Fatalf("admin's registration = %+v, want pending without an external ID", pend)
	}
	_, err = acme.ConfirmNetworkRegistration(ctx, "globex", pend.Registration.ID)
	wantAPIErr(t, "acme confirming globex's registration", err, 403, "may not act on tenant globex")
	_, err = acme.ConfirmNetworkRegistration(ctx, "acme", pend.Registration.ID)
	wantAPIErr(t, "confirming under another tenant's path", err, 404, "no network registration")
	_, err = b.Client.ConfirmNetworkRegistration(ctx, "globex", pend.Registration.ID)
	wantAPIErr(t, "admin confirming their own registration", err, 403, "needs the role approver")
	conf, err := globex.ConfirmNetworkRegistration(ctx, "globex", pend.Registration.ID)
	if err != nil || conf.Registration.State != brokerapi.RegistrationActive || !strings.HasPrefix(conf.ExternalID, "tether-") {
		t.Fatalf("globex confirming = %+v, %v; want active with an external ID", conf, err)
	}
	_, err = globex.ConfirmNetworkRegistration(ctx, "globex", pend.Registration.ID)
	wantAPIErr(t, "confirming twice", err, 409, "shown when it became active")

	// Lists: each tenant's approver sees its own, vendor staff all; never
	// an external ID.
	for _, c := range []struct {
		who  *brokerapi.Client
		want []string
	}{{acme, []string{"111111111111", "333333333333"}}, {globex, []string{"222222222222"}}, {eng, []string{"111111111111", "333333333333", "222222222222"}}} {
		regs, err := c.who.ListNetworkRegistrations(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range regs {
			got = append(got, r.AccountID)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("registrations listed = %v, want %v", got, c.want)
		}
		js, _ := json.Marshal(regs)
		if strings.Contains(string(js), ext) || strings.Contains(string(js), conf.ExternalID) || strings.Contains(string(js), "external_id") {
			t.Errorf("registration list shows an external ID: %s", js)
		}
	}
	_, err = acme.ListNetworkRegistrations(ctx, "globex")
	wantAPIErr(t, "acme listing globex's", err, 403, "may not act on tenant globex")

	// Unregistered, the account is free again.
	if err := acme.UnregisterNetwork(ctx, "acme", res.Registration.ID); err != nil {
		t.Fatal(err)
	}
	registerNetwork(t, b, "globex", "111111111111", "vpc-11112222")

	// Every step is audited, the refusals too, never with an external ID.
	evs, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ae := range evs {
		if strings.Contains(string(ae.Event), ext) || strings.Contains(string(ae.Event), conf.ExternalID) {
			t.Errorf("audit event shows an external ID: %s", ae.Event)
		}
		var e audit.Event
		json.Unmarshal(ae.Event, &e)
		types = append(types, string(e.Type)+" "+string(e.Outcome))
	}
	for _, want := range []string{"network.registered success", "network.registered failure", "network.registration_confirmed success", "network.unregistered success"} {
		if !slices.Contains(types, want) {
			t.Errorf("audit log lacks %s (has %v)", want, types)
		}
	}
}

// TestNetworkSealKey: the external IDs are sealed with a key the broker
// makes once (0600) in its data dir, or one the config names.
func TestNetworkSealKey(t *testing.T) {
	b := brokertest.Start(t, nil)
	fi, err := os.Stat(filepath.Join(b.Dir, broker.SealKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seal key file: %v, %v; want mode 0600", fi, err)
	}
	registerNetwork(t, b, "acme", "111111111111", "vpc-11112222")
	// The store holds no external ID in the clear.
	regs, err := b.Store().ListNetworkRegistrations(context.Background(), "acme")
	if err != nil || len(regs) != 1 || len(regs[0].SealedExternalID) < 40 || strings.Contains(string(regs[0].SealedExternalID), "tether-") {
		t.Errorf("stored registration = %+v, %v; want one, sealed", regs, err)
	}

	t.Setenv("TETHER_TEST_SEAL_KEY", "not a key")
	dir := t.TempDir()
	_, err = broker.New(t.Context(), broker.Config{Dev: devbroker.New(devbroker.Config{}), DataDir: dir, Listen: "127.0.0.1:0", NetworkSealKey: "env:TETHER_TEST_SEAL_KEY"})
	if err == nil || !strings.Contains(err.Error(), "want 32 random bytes") {
		t.Errorf("broker.New with a bad seal key: error = %v, want it refused", err)
	}
	_, err = broker.New(t.Context(), broker.Config{Dev: devbroker.New(devbroker.Config{}), DataDir: dir, Listen: "127.0.0.1:0", NetworkSealKey: strings.Repeat("ab", 32)})
	if err == nil || !strings.Contains(err.Error(), "file:PATH or env:NAME") {
		t.Errorf("broker.New with a literal seal key: error = %v, want it refused", err)
	}
}
