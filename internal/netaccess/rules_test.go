package netaccess

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/store"
)

// wantCode checks that err is a refusal with code whose message holds
// msg ("" for no error).
func wantCode(t *testing.T, what string, err error, code, msg string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Errorf("%s = %v, want no error", what, err)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("%s = %v, want refusal %s", what, err, code)
		return
	}
	if e.Code != code || !strings.Contains(e.Message, msg) {
		t.Errorf("%s = %s %q, want %s containing %q", what, e.Code, e.Message, code, msg)
	}
}

var (
	approverAcme  = store.Person{Subject: "alice", Issuer: "https://idp.acme", Tenant: "acme", Roles: []string{names.RoleApprover}}
	approverGlob  = store.Person{Subject: "gary", Issuer: "https://idp.globex", Tenant: "globex", Roles: []string{names.RoleApprover}}
	vendorAdmin   = store.Person{Subject: "root", Issuer: "https://idp.vendor", Roles: []string{names.RoleAdmin, names.RoleApprover}}
	engineer      = store.Person{Subject: "eve", Issuer: "https://idp.vendor", Roles: []string{names.RoleEngineer}}
	otherEngineer = store.Person{Subject: "mallory", Issuer: "https://idp.vendor", Roles: []string{names.RoleEngineer}}
)

func TestIsTenantApprover(t *testing.T) {
	for _, tc := range []struct {
		name   string
		p      store.Person
		tenant string
		want   bool
	}{
		{"the tenant's approver", approverAcme, "acme", true},
		{"another tenant's approver", approverGlob, "acme", false},
		{"vendor staff holding the approver role name", vendorAdmin, "acme", false},
		{"vendor staff, tenant empty", vendorAdmin, "", false},
		{"a customer user without the role", store.Person{Subject: "bob", Tenant: "acme"}, "acme", false},
	} {
		if got := IsTenantApprover(tc.p, tc.tenant); got != tc.want {
			t.Errorf("%s: IsTenantApprover(%s, %q) = %v, want %v", tc.name, tc.p.Subject, tc.tenant, got, tc.want)
		}
	}
}

func TestCheckRegistered(t *testing.T) {
	reg := store.NetworkRegistration{ID: "r1", Tenant: "acme", AccountID: "111111111111", RoleARN: "arn:aws:iam::111111111111:role/T",
		VPCIDs: []string{"vpc-11112222"}, State: store.RegistrationActive}
	pending := reg
	pending.State = store.RegistrationPending
	withRTB := reg
	withRTB.RouteTableIDs = []string{"rtb-11112222"}
	globex := reg
	globex.Tenant = "globex"
	const role, vpc = "arn:aws:iam::111111111111:role/T", "vpc-11112222"
	const unregistered = "peer account 111111111111 is not registered to tenant acme: its approvers register it"
	for _, tc := range []struct {
		name       string
		reg        store.NetworkRegistration
		found      bool
		role, vpc  string
		rtbs       []string
		code, want string
	}{
		{"registered and active", reg, true, role, vpc, nil, "", ""},
		{"no registration", store.NetworkRegistration{}, false, role, vpc, nil, "not_registered", unregistered},
		// Another tenant's account reads exactly as an unregistered one.
		{"another tenant's account", globex, true, role, vpc, nil, "not_registered", unregistered},
		{"pending, not confirmed", pending, true, role, vpc, nil, "registration_pending", "waits for an approver of tenant acme to confirm it"},
		{"another role", reg, true, "arn:aws:iam::111111111111:role/Other", vpc, nil, "not_registered", "is not the role registered"},
		{"another VPC", reg, true, role, "vpc-99998888", nil, "not_registered", "peer VPC vpc-99998888 is not registered"},
		{"route tables registered, none named", withRTB, true, role, vpc, nil, "not_registered", "registers only the route tables rtb-11112222"},
		{"an unregistered route table", withRTB, true, role, vpc, []string{"rtb-99998888"}, "not_registered", "route table rtb-99998888 is not registered"},
		{"a registered route table", withRTB, true, role, vpc, []string{"rtb-11112222"}, "", ""},
	} {
		err := CheckRegistered(tc.reg, tc.found, "acme", "peer", "111111111111", tc.role, tc.vpc, tc.rtbs)
		wantCode(t, tc.name, err, tc.code, tc.want)
		if err != nil && strings.Contains(err.Error(), "globex") {
			t.Errorf("%s: %v names the tenant holding the account", tc.name, err)
		}
	}
}

func TestRefuseRegistration(t *testing.T) {
	existing := store.NetworkRegistration{ID: "r1", Tenant: "acme", State: store.RegistrationActive}
	for _, tc := range []struct {
		name   string
		p      store.Person
		tenant string
		want   string
		hide   bool // must not name the holding tenant
	}{
		{"the same tenant again", approverAcme, "acme", "registered to tenant acme already (registration r1, active)", false},
		{"a vendor admin, for another tenant", vendorAdmin, "globex", "registered to tenant acme (registration r1): an account belongs to one tenant only", false},
		{"another tenant's approver", approverGlob, "globex", "registered to another tenant", true},
	} {
		e := RefuseRegistration(tc.p, tc.tenant, "111111111111", existing)
		wantCode(t, tc.name, e, "account_registered", tc.want)
		if tc.hide && strings.Contains(e.Message, "acme") {
			t.Errorf("%s: %q names the tenant holding the account", tc.name, e.Message)
		}
		if e.Kind != Conflict {
			t.Errorf("%s: kind %v, want Conflict", tc.name, e.Kind)
		}
	}
}

func TestParseRegistration(t *testing.T) {
	ok := brokerapi.RegisterNetwork{AccountID: "111111111111", RoleARN: "arn:aws:iam::111111111111:role/T", VPCIDs: []string{"vpc-22223333", "vpc-11112222", "vpc-22223333"}, PeerCIDRs: []string{"198.51.100.0/24"}}
	many := make([]string, MaxRegisteredVPCs+1)
	for i := range many {
		many[i] = fmt.Sprintf("vpc-%08x", i)
	}
	for _, tc := range []struct {
		name       string
		mod        func(*brokerapi.RegisterNetwork)
		code, want string
	}{
		{"valid", func(*brokerapi.RegisterNetwork) {}, "", ""},
		{"a bad account", func(in *brokerapi.RegisterNetwork) { in.AccountID = "1234" }, "invalid_account_id", "a 12-digit AWS account ID"},
		{"a role of another account", func(in *brokerapi.RegisterNetwork) { in.RoleARN = "arn:aws:iam::222222222222:role/T" }, "invalid_role_arn", "is a role of account 222222222222, not of account 111111111111"},
		{"no VPC", func(in *brokerapi.RegisterNetwork) { in.VPCIDs = nil }, "invalid_vpc_ids", "want 1 to 50 VPCs"},
		{"too many VPCs", func(in *brokerapi.RegisterNetwork) { in.VPCIDs = many }, "invalid_vpc_ids", "want 1 to 50 VPCs"},
		{"a bad route table", func(in *brokerapi.RegisterNetwork) { in.RouteTableIDs = []string{"rtb-x"} }, "invalid_route_table_ids", "route table IDs"},
		{"a CIDR with host bits", func(in *brokerapi.RegisterNetwork) { in.PeerCIDRs = []string{"10.1.2.3/16"} }, "invalid_peer_cidrs", "no host bits set"},
		{"an IPv6 CIDR", func(in *brokerapi.RegisterNetwork) { in.PeerCIDRs = []string{"2001:db8::/32"} }, "invalid_peer_cidrs", "IPv4 CIDR blocks"},
	} {
		in := ok
		tc.mod(&in)
		reg, err := ParseRegistration("acme", in)
		wantCode(t, tc.name, err, tc.code, tc.want)
		if err == nil && (strings.Join(reg.VPCIDs, ",") != "vpc-11112222,vpc-22223333" || reg.Tenant != "acme") {
			t.Errorf("%s: VPCs %v tenant %q, want sorted without duplicates, acme", tc.name, reg.VPCIDs, reg.Tenant)
		}
	}
}

func TestParsePeering(t *testing.T) {
	ok := brokerapi.PeeringSpec{Kind: "peering", AccountID: "222222222222", Region: "us-east-1", VPCID: "vpc-22223333", RoleARN: "arn:aws:iam::222222222222:role/T"}
	for _, tc := range []struct {
		name       string
		in         *brokerapi.PeeringSpec
		code, want string
	}{
		{"valid", &ok, "", ""},
		{"none", nil, "network_spec_required", "needs the change"},
		{"a bad kind", &brokerapi.PeeringSpec{Kind: "vpn"}, "invalid_kind", `network.kind "vpn"`},
		{"a bad region", func() *brokerapi.PeeringSpec { s := ok; s.Region = "mars"; return &s }(), "invalid_region", `peer region "mars"`},
		{"a bad VPC", func() *brokerapi.PeeringSpec { s := ok; s.VPCID = "vpc-Z"; return &s }(), "invalid_peer vpc_id", "a VPC ID"},
	} {
		_, err := ParsePeering(tc.in)
		wantCode(t, tc.name, err, tc.code, tc.want)
	}
	if _, err := ParseNetworkConfig(&brokerapi.NetworkConfig{AccountID: "111111111111", Region: "us-east-1", VPCID: "vpc-11112222", RoleARN: "arn:aws:iam::111111111111:role/T", PrivateHostname: "-bad-"}); err == nil {
		t.Errorf("ParseNetworkConfig(bad hostname) = nil error, want invalid_private_hostname")
	}
}

func TestRegisteredCIDR(t *testing.T) {
	own := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	for _, tc := range []struct {
		cidr string
		want bool
	}{
		{"198.51.100.0/24", true},
		{"198.51.100.128/25", true},
		{"198.51.0.0/16", false}, // wider than what was registered
		{"203.0.113.0/24", false},
	} {
		if got := RegisteredCIDR(own, netip.MustParsePrefix(tc.cidr)); got != tc.want {
			t.Errorf("RegisteredCIDR(%s) = %v, want %v", tc.cidr, got, tc.want)
		}
	}
	if RegisteredCIDR(nil, netip.MustParsePrefix("198.51.100.0/24")) {
		t.Errorf("RegisteredCIDR(nothing registered) = true, want false")
	}
}

func TestCheckOp(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	base := store.AccessRequest{ID: "req", State: store.StateActive, Requester: engineer, Network: &store.PeeringSpec{Kind: "peering"},
		Grant: &store.GrantRecord{Expiry: now.Add(time.Hour)}}
	with := func(f func(*store.AccessRequest)) store.AccessRequest {
		ar := base
		g := *base.Grant
		ar.Grant = &g
		f(&ar)
		return ar
	}
	applied := &store.NetworkPlan{AppliedAt: now.Add(-time.Hour)}
	for _, tc := range []struct {
		name       string
		op         Op
		ar         store.AccessRequest
		who        store.Person
		code, want string
	}{
		{"the requester applies", OpApply, base, engineer, "", ""},
		{"an admin applies", OpApply, base, vendorAdmin, "", ""},
		{"another engineer applies", OpApply, base, otherEngineer, "not_requester", "only the requester or an admin"},
		{"an access request", OpApply, with(func(ar *store.AccessRequest) { ar.Network = nil }), engineer, "not_a_network_request", "not a network change"},
		{"apply before approval", OpApply, with(func(ar *store.AccessRequest) { ar.State = store.StatePending }), engineer, "not_approved", "request req is pending"},
		{"apply after the window", OpApply, with(func(ar *store.AccessRequest) { ar.Grant.Expiry = now }), engineer, "window_over", "change window ended"},
		{"teardown never applied", OpTeardown, with(func(ar *store.AccessRequest) { ar.State = store.StateRevoked }), engineer, "not_applied", "never applied"},
		{"teardown after revocation, applied", OpTeardown, with(func(ar *store.AccessRequest) { ar.State, ar.NetworkPlan = store.StateRevoked, applied }), engineer, "", ""},
		{"teardown by another engineer", OpTeardown, base, otherEngineer, "not_requester", "only the requester"},
		{"status by anyone", OpStatus, base, otherEngineer, "", ""},
	} {
		wantCode(t, tc.name, CheckOp(tc.op, tc.ar, tc.who, now), tc.code, tc.want)
	}
}

func TestCheckApplyFreezesAndWindows(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	freeze := store.Window{Start: t0, End: t0.Add(48 * time.Hour), Reason: "quarter close"}
	maint := store.Window{Start: t0.Add(72 * time.Hour), End: t0.Add(76 * time.Hour)}
	now := t0.Add(24 * time.Hour)
	dep := func(freezes, windows []store.Window) store.Deployment {
		return store.Deployment{Tenant: "acme", Name: "prod", Settings: store.DeploymentSettings{FreezeWindows: freezes, MaintenanceWindows: windows}}
	}
	req := func(created time.Time, seen []store.Window, outside bool) store.AccessRequest {
		return store.AccessRequest{ID: "req", CreatedAt: created, Network: &store.PeeringSpec{OutsideWindow: outside}, NetworkPlan: &store.NetworkPlan{Freezes: seen}}
	}
	for _, tc := range []struct {
		name       string
		ar         store.AccessRequest
		d          store.Deployment
		code, want string
	}{
		{"no freeze, no windows", req(now, nil, false), dep(nil, nil), "", ""},
		{"a freeze declared after the decision", req(now.Add(-time.Hour), nil, false), dep([]store.Window{freeze}, nil), "frozen", "is frozen (quarter close)"},
		{"a freeze seen and on at the decision", req(now.Add(-time.Hour), []store.Window{freeze}, false), dep([]store.Window{freeze}, nil), "", ""},
		{"a freeze seen but not yet on at the decision", req(t0.Add(-time.Hour), []store.Window{freeze}, false), dep([]store.Window{freeze}, nil), "frozen", "a freeze its approvers did not see"},
		{"outside every maintenance window", req(now, nil, false), dep(nil, []store.Window{maint}), "outside_maintenance_window", "the next maintenance window is 2026-03-04T00:00:00Z"},
		{"approved for outside the windows", req(now, nil, true), dep(nil, []store.Window{maint}), "", ""},
		{"inside a maintenance window", req(now, nil, false), dep(nil, []store.Window{{Start: now.Add(-time.Hour), End: now.Add(time.Hour)}}), "", ""},
		{"no window to come", req(now, nil, false), dep(nil, []store.Window{{Start: t0.Add(-2 * time.Hour), End: t0.Add(-time.Hour)}}), "outside_maintenance_window", "declares no maintenance window to come"},
	} {
		wantCode(t, tc.name, CheckApply(tc.ar, tc.d, now), tc.code, tc.want)
	}
}

func TestApprovedIntent(t *testing.T) {
	in := netmgr.Intent{Kind: "peering", BYOC: netmgr.IntentSide{Account: "111111111111", VPC: "vpc-11112222"}}
	good := &store.NetworkPlan{Intent: in.Canonical(), Digest: in.Digest()}
	forged := &store.NetworkPlan{Intent: in.Canonical(), Digest: netmgr.Intent{Kind: "ingress"}.Digest()}
	edited := &store.NetworkPlan{Intent: []byte(strings.Replace(string(in.Canonical()), "vpc-11112222", "vpc-99998888", 1)), Digest: in.Digest()}
	for _, tc := range []struct {
		name       string
		np         *store.NetworkPlan
		code, want string
	}{
		{"the approved plan", good, "", ""},
		{"no plan", nil, "no_approved_plan", "carries no approved plan"},
		{"another digest", forged, "plan_damaged", "does not match its digest"},
		{"the plan edited after approval", edited, "plan_damaged", "nothing is applied"},
		{"not JSON", &store.NetworkPlan{Intent: []byte("{"), Digest: in.Digest()}, "plan_damaged", "does not match"},
	} {
		got, err := ApprovedIntent(store.AccessRequest{ID: "req", NetworkPlan: tc.np})
		wantCode(t, tc.name, err, tc.code, tc.want)
		if err == nil && got.Digest() != in.Digest() {
			t.Errorf("%s: ApprovedIntent digest %s, want %s", tc.name, got.Digest(), in.Digest())
		}
	}
}

func TestScheduleTeardown(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		np   *store.NetworkPlan
		due  bool
	}{
		{"applied, not torn down", &store.NetworkPlan{AppliedAt: now.Add(-time.Hour)}, true},
		{"torn down since", &store.NetworkPlan{AppliedAt: now.Add(-time.Hour), TornDownAt: now.Add(-time.Minute)}, false},
		{"never applied", &store.NetworkPlan{}, false},
	} {
		ar := store.AccessRequest{Network: &store.PeeringSpec{}, NetworkPlan: tc.np}
		ScheduleTeardown(&ar, now)
		if got := !ar.NetworkPlan.TeardownDue.IsZero(); got != tc.due {
			t.Errorf("%s: teardown due = %v, want %v", tc.name, got, tc.due)
		}
	}
}

func TestNetError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		kind Kind
		code string
	}{
		{fmt.Errorf("x: %w", netmgr.ErrOverlap), Conflict, "cidr_overlap"},
		{fmt.Errorf("x: %w", netmgr.ErrPlanChanged), Conflict, "plan_changed"},
		{fmt.Errorf("x: %w", netmgr.ErrPublicCIDR), Forbidden, "public_cidr"},
		{fmt.Errorf("x: %w", netmgr.ErrPermission), Forbidden, "aws_denied"},
		{fmt.Errorf("x: %w", netmgr.ErrInvalid), Invalid, "invalid_network"},
		{errors.New("connection reset"), Upstream, "aws_error"},
		{refuse(Forbidden, "not_registered", "kept"), Forbidden, "not_registered"},
	} {
		if e := NetError(tc.err); e.Kind != tc.kind || e.Code != tc.code || e.Message != tc.err.Error() {
			t.Errorf("NetError(%v) = %v %s %q, want %v %s", tc.err, e.Kind, e.Code, e.Message, tc.kind, tc.code)
		}
	}
}
