package netmgr

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Sentinel errors of approval and ownership; test with [errors.Is].
var (
	// ErrPlanChanged reports that what an apply would make now differs
	// from the plan the approvers approved; the error is a
	// [*PlanChangedError] listing each difference.
	ErrPlanChanged = errors.New("the plan changed since approval")
	// ErrConflict reports something Tether did not create in the way: a
	// route to an overlapping CIDR through another target, a peering of
	// the same VPCs made for another request, or another request's
	// private hosted zone for the same name and VPC. Tether changes only
	// what it created, so it refuses.
	ErrConflict = errors.New("conflicts with a resource Tether did not create for this request")
	// ErrPublicCIDR reports a peer VPC CIDR outside private address space
	// (RFC 1918, 100.64.0.0/10) that the customer has not registered.
	ErrPublicCIDR = errors.New("peer cidr is public address space")
)

// Intent is the exact state a network change makes: both sides, the
// routes, the security group rules and, for private ingress, the
// hostname and the load balancer it resolves to. It is what an approver
// approves: a plan returns it, the broker stores it with the request, and
// an apply given the approved intent refuses when the one it observes
// differs (see [PlanChangedError]). It holds no secret (no external ID)
// and no ID AWS has yet to assign (no peering connection ID).
type Intent struct {
	Kind            string        `json:"kind"` // "peering" or "ingress"
	BYOC            IntentSide    `json:"byoc"`
	Peer            IntentSide    `json:"peer"`
	Routes          []IntentRoute `json:"routes,omitempty"`
	SecurityGroup   string        `json:"security_group"`
	Rules           []IntentRule  `json:"rules"`
	PrivateHostname string        `json:"private_hostname,omitempty"`
	LoadBalancer    string        `json:"load_balancer,omitempty"` // the DNS name the private hostname aliases
}

// IntentSide is one VPC of an [Intent].
type IntentSide struct {
	Account     string   `json:"account"`
	Region      string   `json:"region"`
	VPC         string   `json:"vpc"`
	Role        string   `json:"role,omitempty"`
	CIDRs       []string `json:"cidrs"`
	RouteTables []string `json:"route_tables,omitempty"`
}

// IntentRoute is a route an [Intent] makes through its peering
// connection.
type IntentRoute struct {
	Account     string `json:"account"`
	RouteTable  string `json:"route_table"`
	Destination string `json:"destination"`
}

// IntentRule is a security group rule an [Intent] makes: tcp/Port from
// CIDR.
type IntentRule struct {
	CIDR string `json:"cidr"`
	Port int32  `json:"port"`
}

// canonical returns i with every list sorted, so the same state always
// encodes the same way.
func (i Intent) canonical() Intent {
	for _, s := range []*IntentSide{&i.BYOC, &i.Peer} {
		s.CIDRs = sortedCopy(s.CIDRs)
		s.RouteTables = sortedCopy(s.RouteTables)
	}
	i.Routes = slices.Clone(i.Routes)
	slices.SortFunc(i.Routes, func(a, b IntentRoute) int {
		return cmp.Or(cmp.Compare(a.Account, b.Account), cmp.Compare(a.RouteTable, b.RouteTable), cmp.Compare(a.Destination, b.Destination))
	})
	i.Rules = slices.Clone(i.Rules)
	slices.SortFunc(i.Rules, func(a, b IntentRule) int { return cmp.Or(cmp.Compare(a.CIDR, b.CIDR), cmp.Compare(a.Port, b.Port)) })
	return i
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// Canonical is the intent's canonical encoding: JSON with every list
// sorted (encoding/json writes struct fields in declaration order and
// escapes strings one way), so the same state always has the same bytes.
func (i Intent) Canonical() []byte {
	b, err := json.Marshal(i.canonical())
	if err != nil {
		panic(fmt.Sprintf("netmgr: encode intent: %v", err)) // plain strings and ints cannot fail
	}
	return b
}

// Digest is "sha256:" and the hex SHA-256 of [Intent.Canonical].
func (i Intent) Digest() string {
	sum := sha256.Sum256(i.Canonical())
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Diff lists, for people, how now differs from i ("private hostname was
// a.example, is now b.example"); nil when they are the same.
func (i Intent) Diff(now Intent) []string {
	a, b := i.canonical(), now.canonical()
	var out []string
	one := func(what, was, is string) {
		if was != is {
			out = append(out, fmt.Sprintf("%s was %s, is now %s", what, orNone(was), orNone(is)))
		}
	}
	list := func(what string, was, is []string) {
		if !slices.Equal(was, is) {
			out = append(out, fmt.Sprintf("%s were %s, are now %s", what, orNone(strings.Join(was, ", ")), orNone(strings.Join(is, ", "))))
		}
	}
	one("kind", a.Kind, b.Kind)
	for _, s := range []struct {
		name    string
		was, is IntentSide
	}{{"BYOC", a.BYOC, b.BYOC}, {"peer", a.Peer, b.Peer}} {
		one(s.name+" account", s.was.Account, s.is.Account)
		one(s.name+" region", s.was.Region, s.is.Region)
		one(s.name+" VPC", s.was.VPC, s.is.VPC)
		one(s.name+" role", s.was.Role, s.is.Role)
		list(s.name+" CIDRs", s.was.CIDRs, s.is.CIDRs)
		list(s.name+" route tables", s.was.RouteTables, s.is.RouteTables)
	}
	list("routes", routeStrings(a.Routes), routeStrings(b.Routes))
	one("load balancer security group", a.SecurityGroup, b.SecurityGroup)
	list("security group rules", ruleStrings(a.Rules), ruleStrings(b.Rules))
	one("private hostname", a.PrivateHostname, b.PrivateHostname)
	one("load balancer", a.LoadBalancer, b.LoadBalancer)
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func routeStrings(rs []IntentRoute) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s in %s (account %s)", r.Destination, r.RouteTable, r.Account))
	}
	return out
}

func ruleStrings(rs []IntentRule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("tcp/%d from %s", r.Port, r.CIDR))
	}
	return out
}

// PlanChangedError is the refusal of an apply whose observed [Intent]
// differs from the approved one.
type PlanChangedError struct {
	Approved, Now string   // the digests
	Differences   []string // as [Intent.Diff] says them
}

func (e *PlanChangedError) Error() string {
	return fmt.Sprintf("the plan changed since approval: %s; ask for a new approval (approved %s, now %s)", strings.Join(e.Differences, "; "), e.Approved, e.Now)
}

// Is makes errors.Is(err, ErrPlanChanged) hold.
func (e *PlanChangedError) Is(target error) bool { return target == ErrPlanChanged }

// checkApproved refuses when got differs from the approved intent.
func checkApproved(approved *Intent, got Intent) error {
	if approved == nil {
		return nil
	}
	if diff := approved.Diff(got); len(diff) > 0 || approved.Digest() != got.Digest() {
		if len(diff) == 0 {
			diff = []string{"the canonical encoding differs"}
		}
		return &PlanChangedError{Approved: approved.Digest(), Now: got.Digest(), Differences: diff}
	}
	return nil
}

// intent describes the state a peering of v makes.
func (v *view) intent(kind string) Intent {
	in := Intent{
		Kind:          kind,
		BYOC:          IntentSide{Account: v.t.AccountID, Region: v.t.Region, VPC: v.t.VPCID, Role: v.t.RoleARN, CIDRs: prefixStrings(v.byocCIDRs)},
		Peer:          IntentSide{Account: v.p.AccountID, Region: v.p.Region, VPC: v.p.VPCID, Role: v.p.RoleARN, CIDRs: prefixStrings(v.peerCIDRs)},
		SecurityGroup: v.sg,
	}
	for _, c := range v.peerCIDRs {
		for _, port := range v.t.ServicePorts {
			in.Rules = append(in.Rules, IntentRule{CIDR: c.String(), Port: port})
		}
	}
	if kind != "peering" {
		return in
	}
	for _, side := range []struct {
		s     *IntentSide
		acct  string
		rts   []string
		cidrs []netip.Prefix
	}{{&in.BYOC, v.t.AccountID, rtIDs(v.byocRTs), v.peerCIDRs}, {&in.Peer, v.p.AccountID, rtIDs(v.peerRTs), v.byocCIDRs}} {
		side.s.RouteTables = side.rts
		for _, rt := range side.rts {
			for _, c := range side.cidrs {
				in.Routes = append(in.Routes, IntentRoute{Account: side.acct, RouteTable: rt, Destination: c.String()})
			}
		}
	}
	return in
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

func rtIDs(rts []ec2types.RouteTable) []string {
	out := make([]string, 0, len(rts))
	for _, rt := range rts {
		out = append(out, aws.ToString(rt.RouteTableId))
	}
	return out
}
