package brokercli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/alecthomas/kong"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
)

// networkCmd is 'broker network'.
type networkCmd struct {
	Register      networkRegisterCmd      `cmd:"" help:"register an AWS account, its role and VPCs to a tenant"`
	Registrations networkRegistrationsCmd `cmd:"" help:"list registrations"`
	Confirm       networkRegistrationCmd  `cmd:"" help:"confirm an admin's registration (approvers)"`
	Unregister    networkRegistrationCmd  `cmd:"" help:"remove a registration"`
	Configure     networkConfigureCmd     `cmd:"" help:"set a deployment's BYOC network: account, region, VPC, role (admins)"`
	Peering       networkChangeCmd        `cmd:"" help:"VPC peering with a registered VPC: plan, request, apply, status, teardown"`
	Ingress       ingressCmd              `cmd:"" help:"the private ingress endpoint: plan, request, enable, status, disable"`
	HelpCmd       cli.HelpCmd             `cmd:"" name:"help" hidden:""`
}

func (networkCmd) Help() string {
	return `Manages a BYOC deployment's network: VPC peering with a customer's VPC and
the private ingress endpoint, planned, approved and applied like access.
Tether touches only AWS accounts registered to the deployment's tenant.

A peer is given as --peer-account ID --peer-vpc vpc-… --peer-region R
--peer-role-arn ARN [--peer-route-table rtb-…]..., all registered to the
deployment's tenant.`
}

// networkChangeCmd is 'broker network peering'.
type networkChangeCmd struct {
	Plan     networkPlanCmd    `cmd:"" help:"what an apply would do (nothing changes)"`
	Request  networkRequestCmd `cmd:"" help:"ask for the change, to be approved like access"`
	Apply    networkActCmd     `cmd:"" help:"carry out an approved change"`
	Status   networkActCmd     `cmd:"" help:"check an applied change: ok, missing or drifted"`
	Teardown networkActCmd     `cmd:"" help:"remove an applied change"`
	HelpCmd  cli.HelpCmd       `cmd:"" name:"help" hidden:""`
}

// ingressCmd is 'broker network ingress'.
type ingressCmd struct {
	Plan    networkPlanCmd    `cmd:"" help:"what an enable would do (nothing changes)"`
	Request networkRequestCmd `cmd:"" help:"ask for the endpoint, to be approved like access"`
	Enable  networkActCmd     `cmd:"" help:"carry out an approved change"`
	Status  networkActCmd     `cmd:"" help:"check an enabled endpoint: ok, missing or drifted"`
	Disable networkActCmd     `cmd:"" help:"remove an enabled endpoint"`
	HelpCmd cli.HelpCmd       `cmd:"" name:"help" hidden:""`
}

// noExternalID refuses an external ID given on the command line: the
// broker makes each registered role's, and holds it.
func noExternalID(flagName string) error {
	return cli.Usagef("--%s is no longer accepted: the broker makes each role's external ID when its account is registered ('broker network register'), shows it once for the role's CloudFormation stack, and uses it itself", flagName)
}

// peerFlags name the peer VPC of a network change.
type peerFlags struct {
	Account     string   `name:"peer-account" placeholder:"ID" help:"the peer's 12-digit AWS account ID"`
	VPC         string   `name:"peer-vpc" placeholder:"vpc-…" help:"the peer VPC"`
	Region      string   `name:"peer-region" placeholder:"R" help:"the peer VPC's region, e.g. us-east-1"`
	RoleARN     string   `name:"peer-role-arn" placeholder:"ARN" help:"the role Tether assumes in the peer account (deploy/aws/tether-network-role.yaml)"`
	ExternalID  string   `name:"peer-external-id" hidden:"" help:"no longer accepted: the broker holds the registered role's external ID"`
	RouteTable  []string `name:"peer-route-table" sep:"none" placeholder:"rtb-…" help:"a peer route table that needs ClickHouse (repeat; default all of the VPC's)"`
	RouteTables []string `name:"peer-route-tables" placeholder:"rtb-…,…" help:"peer route tables that need ClickHouse, comma-separated"`
}

func (p *peerFlags) spec(kind string) (brokerapi.PeeringSpec, error) {
	if p.ExternalID != "" {
		return brokerapi.PeeringSpec{}, noExternalID("peer-external-id")
	}
	if p.Account == "" || p.VPC == "" || p.Region == "" || p.RoleARN == "" {
		return brokerapi.PeeringSpec{}, cli.Usagef("--peer-account, --peer-vpc, --peer-region and --peer-role-arn are required (of a VPC registered to the deployment's tenant: 'broker network registrations')")
	}
	var rts []string
	for _, rt := range append(p.RouteTable, p.RouteTables...) {
		if rt = strings.TrimSpace(rt); rt != "" {
			rts = append(rts, rt)
		}
	}
	return brokerapi.PeeringSpec{Kind: kind, AccountID: p.Account, Region: p.Region, VPCID: p.VPC, RoleARN: p.RoleARN,
		RouteTableIDs: rts}, nil
}

type networkConfigureCmd struct {
	Deployment      string   `placeholder:"TENANT/NAME" help:"the deployment (required)"`
	Account         string   `placeholder:"ID" help:"the BYOC AWS account ID"`
	Region          string   `placeholder:"R" help:"the BYOC VPC's region"`
	VPC             string   `name:"vpc" placeholder:"vpc-…" help:"the BYOC VPC"`
	RoleARN         string   `name:"role-arn" placeholder:"ARN" help:"the role Tether assumes in the BYOC account"`
	ExternalID      string   `name:"external-id" hidden:"" help:"no longer accepted: the broker holds the registered role's external ID"`
	PrivateHostname string   `name:"private-hostname" placeholder:"H" help:"the private endpoint's name, for ingress"`
	RouteTable      []string `name:"route-table" sep:"none" placeholder:"rtb-…" help:"a BYOC route table that gets the route back (repeat; default all of the VPC's)"`
	LBTag           []string `name:"lb-tag" sep:"none" placeholder:"K=V" help:"a tag k=v that finds the private load balancer (repeat)"`
	clientFlags
}

func (networkConfigureCmd) Help() string {
	return "The account, role and VPC must be registered to the deployment's tenant ('broker network register')."
}

func (cmd *networkConfigureCmd) Run(e *env) error {
	ctx, stdout, dep, rts, tags := e.ctx, e.stdout, &cmd.Deployment, cmd.RouteTable, cmd.LBTag
	n := brokerapi.NetworkConfig{AccountID: cmd.Account, Region: cmd.Region, VPCID: cmd.VPC, RoleARN: cmd.RoleARN, PrivateHostname: cmd.PrivateHostname}
	if cmd.ExternalID != "" {
		return noExternalID("external-id")
	}
	if *dep == "" {
		return cli.Usagef("broker network configure: want --deployment TENANT/NAME and the flags, no arguments")
	}
	n.RouteTableIDs = rts
	for _, kv := range tags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return cli.Usagef("--lb-tag %q: want KEY=VALUE", kv)
		}
		if n.LBTags == nil {
			n.LBTags = map[string]string{}
		}
		n.LBTags[k] = v
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	d, err := c.GetDeployment(ctx, *dep)
	if err != nil {
		return err
	}
	s := d.Settings
	s.Network = &n
	s.FreezeWindows, s.MaintenanceWindows = nil, nil // the customer's: left out, kept as they are
	if _, err := c.SetDeploymentSettings(ctx, *dep, s); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Network of %s: VPC %s in account %s (%s), through %s.\n", *dep, n.VPCID, n.AccountID, n.Region, n.RoleARN)
	return nil
}

type networkPlanCmd struct {
	Deployment string `placeholder:"TENANT/NAME" help:"the deployment (required)"`
	peerFlags
	clientFlags
	outputFlag
}

func (cmd *networkPlanCmd) Run(kctx *kong.Context, e *env) error {
	ctx, stdout, dep, p, kind := e.ctx, e.stdout, &cmd.Deployment, &cmd.peerFlags, kctx.Selected().Parent.Name
	if *dep == "" {
		return cli.Usagef("broker network %s plan: want --deployment TENANT/NAME and the peer flags", kind)
	}
	if err := cmd.check(); err != nil {
		return err
	}
	spec, err := p.spec(kind)
	if err != nil {
		return err
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	plan, err := c.PlanNetwork(ctx, *dep, spec)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(stdout, plan)
	}
	printPlan(stdout, plan)
	fmt.Fprintf(stdout, "\nNothing was changed. To carry it out: broker network %s request --deployment %s … --duration 2h --reason TEXT, then an approver approves, then broker network %s --request ID.\n",
		kind, *dep, map[string]string{"peering": "peering apply", "ingress": "ingress enable"}[kind])
	return nil
}

type networkRequestCmd struct {
	Deployment string `placeholder:"TENANT/NAME" help:"the deployment (required)"`
	peerFlags
	Duration string `default:"2h" placeholder:"DURATION" help:"how long the change window lasts"`
	Reason   string `placeholder:"TEXT" help:"why; the approvers read it (required)"`
	Ticket   string `placeholder:"OWNER/REPO#N" help:"the GitHub issue the change is for"`
	Wait     bool   `help:"wait for the decision"`
	Outside  bool   `name:"outside-maintenance-window" help:"ask to make the change outside the deployment's maintenance windows (the approvers see it)"`
	clientFlags
	outputFlag
}

func (cmd *networkRequestCmd) Run(kctx *kong.Context, e *env) error {
	ctx, stdout, stderr, kind := e.ctx, e.stdout, e.stderr, kctx.Selected().Parent.Name
	dep, duration, reason, ticket, wait, outside, p := &cmd.Deployment, &cmd.Duration, &cmd.Reason, &cmd.Ticket, &cmd.Wait, &cmd.Outside, &cmd.peerFlags
	if *dep == "" || strings.TrimSpace(*reason) == "" {
		return cli.Usagef("broker network %s request: want --deployment TENANT/NAME, the peer flags and --reason", kind)
	}
	if _, err := time.ParseDuration(*duration); err != nil {
		return cli.Usagef("--duration %q: want a duration such as 2h", *duration)
	}
	if err := cmd.check(); err != nil {
		return err
	}
	spec, err := p.spec(kind)
	if err != nil {
		return err
	}
	spec.OutsideWindow = *outside
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	r, err := c.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: *dep, Scopes: []string{names.ScopePeering},
		Duration: *duration, Reason: *reason, Ticket: *ticket, Network: &spec})
	if err != nil {
		return err
	}
	if *wait {
		w := &waiter{c: c, out: stderr, tty: isTerminal(stderr), now: time.Now, poll: waitPoll}
		if r, err = w.wait(ctx, r); err != nil {
			return err
		}
	}
	if cmd.json() {
		return printJSON(stdout, r)
	}
	fmt.Fprintf(stdout, "Network change request %s (%s of %s with %s): %s.\n", r.ID, kind, r.Deployment, spec.VPCID, r.State)
	for _, w := range r.Waiting {
		fmt.Fprintf(stdout, "  waiting for %s\n", w)
	}
	return nil
}

type networkActCmd struct {
	Request string `placeholder:"ID" help:"the network change request's ID (required)"`
	clientFlags
	outputFlag
}

func (cmd *networkActCmd) Run(kctx *kong.Context, e *env) error {
	ctx, stdout, id := e.ctx, e.stdout, &cmd.Request
	sub := kctx.Selected().Name
	what := map[string]string{"apply": "apply", "enable": "apply", "teardown": "teardown", "disable": "teardown", "status": "status"}[sub]
	name := kctx.Selected().Parent.Name + " " + sub
	if *id == "" {
		return cli.Usagef("broker network %s: want --request ID (from 'broker network … request')", name)
	}
	if err := cmd.check(); err != nil {
		return err
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	if what == "status" {
		st, err := c.NetworkStatus(ctx, *id)
		if err != nil {
			return err
		}
		if cmd.json() {
			return printJSON(stdout, st)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STATE\tRESOURCE\tID\tDETAIL")
		for _, it := range st.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.State, it.Resource, orDash(it.ID), orDash(it.Detail))
		}
		return tw.Flush()
	}
	var plan brokerapi.NetworkPlan
	if what == "apply" {
		plan, err = c.ApplyNetwork(ctx, *id)
	} else {
		plan, err = c.TeardownNetwork(ctx, *id)
	}
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(stdout, plan)
	}
	printPlan(stdout, plan)
	return nil
}

func printPlan(w io.Writer, p brokerapi.NetworkPlan) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tRESOURCE\tACCOUNT\tID")
	for _, s := range p.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Action, s.Resource, orDash(s.Account), orDash(s.ID))
	}
	tw.Flush()
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

type networkRegisterCmd struct {
	Tenant     string   `placeholder:"T" help:"the tenant the account belongs to (required)"`
	Account    string   `placeholder:"ID" help:"the 12-digit AWS account ID (required)"`
	RoleARN    string   `name:"role-arn" placeholder:"ARN" help:"the role Tether assumes there (deploy/aws/tether-network-role.yaml creates it; required)"`
	VPC        []string `name:"vpc" sep:"none" placeholder:"vpc-…" help:"a VPC of the account Tether may peer or reach (repeat; at least one)"`
	RouteTable []string `name:"route-table" sep:"none" placeholder:"rtb-…" help:"a route table Tether may change (repeat; none means any of the registered VPCs')"`
	PeerCIDR   []string `name:"peer-cidr" sep:"none" placeholder:"CIDR" help:"an address range of those VPCs the tenant declares its own (repeat)"`
	ExternalID string   `name:"external-id" hidden:"" help:"not accepted: the broker makes the external ID"`
	clientFlags
	outputFlag
}

func (networkRegisterCmd) Help() string {
	return `Registers an AWS account to a tenant: its approvers' registration is active at
once; an admin's waits for an approver to confirm it ('broker network confirm ID').
The answer that makes it active shows the role's external ID, once, for the
role's CloudFormation stack (ExternalId parameter); the broker never shows it again.`
}

func (cmd *networkRegisterCmd) Run(e *env) error {
	ctx, stdout, tenant, vpcs, rts, cidrs := e.ctx, e.stdout, &cmd.Tenant, cmd.VPC, cmd.RouteTable, cmd.PeerCIDR
	in := brokerapi.RegisterNetwork{AccountID: cmd.Account, RoleARN: cmd.RoleARN}
	if cmd.ExternalID != "" {
		return noExternalID("external-id")
	}
	if *tenant == "" || in.AccountID == "" || in.RoleARN == "" || len(vpcs) == 0 {
		return cli.Usagef("broker network register: want --tenant T, --account ID, --role-arn ARN and at least one --vpc, no arguments")
	}
	if err := cmd.check(); err != nil {
		return err
	}
	in.VPCIDs, in.RouteTableIDs, in.PeerCIDRs = vpcs, rts, cidrs
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	res, err := c.RegisterNetwork(ctx, *tenant, in)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(stdout, res)
	}
	printRegistrationResult(stdout, res)
	return nil
}

// printRegistrationResult says what a registration or confirmation did,
// with the external ID when it was made.
func printRegistrationResult(w io.Writer, res brokerapi.RegistrationResult) {
	reg := res.Registration
	fmt.Fprintf(w, "Registration %s: account %s of tenant %s, role %s, VPCs %s: %s.\n", reg.ID, reg.AccountID, reg.Tenant, reg.RoleARN, strings.Join(reg.VPCIDs, ", "), reg.State)
	if res.ExternalID != "" {
		fmt.Fprintf(w, "\nExternal ID (shown this once; the broker keeps it sealed and never shows it again):\n\n  %s\n\n", res.ExternalID)
		fmt.Fprintf(w, "Give it to the role's CloudFormation stack as its ExternalId parameter (NoEcho), e.g.\n  aws cloudformation deploy --template-file deploy/aws/tether-network-role.yaml --stack-name tether-network \\\n    --capabilities CAPABILITY_NAMED_IAM --parameter-overrides ExternalId=<the ID above> …\n")
	} else if reg.State == brokerapi.RegistrationPending {
		fmt.Fprintf(w, "It waits for an approver of tenant %s to confirm it: 'broker network confirm %s', whose answer shows the role's external ID.\n", reg.Tenant, reg.ID)
	}
}

type networkRegistrationsCmd struct {
	Tenant string `placeholder:"T" help:"only this tenant's (default: every tenant you may act on)"`
	clientFlags
	outputFlag
}

func (cmd *networkRegistrationsCmd) Run(e *env) error {
	ctx, stdout, tenant := e.ctx, e.stdout, &cmd.Tenant
	if err := cmd.check(); err != nil {
		return err
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	regs, err := c.ListNetworkRegistrations(ctx, *tenant)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(stdout, regs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tACCOUNT\tSTATE\tROLE\tVPCS\tROUTE TABLES")
	for _, r := range regs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Tenant, r.AccountID, r.State, r.RoleARN, strings.Join(r.VPCIDs, ","), orDash(strings.Join(r.RouteTableIDs, ",")))
	}
	return tw.Flush()
}

// networkRegistrationAct confirms or removes the registration ID, found
// among those the caller may see.
type networkRegistrationCmd struct {
	ID string `arg:"" placeholder:"ID" help:"the registration's ID ('broker network registrations' lists them)"`
	clientFlags
	outputFlag
}

func (networkRegistrationCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want the registration's ID ('broker network registrations' lists them)", cmd)
}

// Run confirms or removes the registration ID, found among those the
// caller may see.
func (cmd *networkRegistrationCmd) Run(kctx *kong.Context, e *env) error {
	ctx, stdout, what, pos := e.ctx, e.stdout, kctx.Selected().Name, []string{cmd.ID}
	if cmd.ID == "" {
		return cmd.ArgsError("broker network " + what)
	}
	if err := cmd.check(); err != nil {
		return err
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	regs, err := c.ListNetworkRegistrations(ctx, "")
	if err != nil {
		return err
	}
	var reg *brokerapi.NetworkRegistration
	for i := range regs {
		if regs[i].ID == pos[0] {
			reg = &regs[i]
		}
	}
	if reg == nil {
		return fmt.Errorf("no network registration %s among those you may act on ('broker network registrations' lists them)", pos[0])
	}
	if what == "unregister" {
		if err := c.UnregisterNetwork(ctx, reg.Tenant, reg.ID); err != nil {
			return err
		}
		if cmd.json() {
			return printJSON(stdout, reg)
		}
		fmt.Fprintf(stdout, "Unregistered account %s from tenant %s: network changes may no longer name it, and the broker forgot its role's external ID. Delete the role's stack if nothing else uses it.\n", reg.AccountID, reg.Tenant)
		return nil
	}
	res, err := c.ConfirmNetworkRegistration(ctx, reg.Tenant, reg.ID)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(stdout, res)
	}
	printRegistrationResult(stdout, res)
	return nil
}
