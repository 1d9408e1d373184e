package brokercli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
)

const networkUsage = `Usage: broker network COMMAND [flags]

Manages a BYOC deployment's network: VPC peering with a customer's VPC and
the private ingress endpoint, planned, approved and applied like access.
Tether touches only AWS accounts registered to the deployment's tenant.

  register --tenant T --account ID --role-arn ARN --vpc vpc-… [--vpc …]...
           [--route-table rtb-…]... [--peer-cidr CIDR]...
           registers an account, its role and VPCs to a tenant (its approvers;
           an admin's registration waits for an approver's 'confirm'). The
           answer shows the role's external ID once, for its CloudFormation
           stack (ExternalId parameter); the broker never shows it again.
  registrations [--tenant T]                   lists registrations
  confirm ID                                   confirms an admin's registration (approvers)
  unregister ID                                removes a registration
  configure --deployment T/N --account ID --region R --vpc vpc-… --role-arn ARN
            [--route-table rtb-…]... [--lb-tag k=v]... [--private-hostname H]  (admins)
  peering plan    --deployment T/N PEER       what an apply would do (nothing changes)
  peering request --deployment T/N PEER --duration 2h --reason TEXT [--ticket O/R#N]
                  [--outside-maintenance-window] [--wait]
  peering apply|status|teardown --request ID  carry out, check (ok/missing/drifted), remove
  ingress plan|request ...                    as for peering, for the private endpoint
  ingress enable|status|disable --request ID

PEER is --peer-account ID --peer-vpc vpc-… --peer-region R --peer-role-arn ARN
[--peer-route-table rtb-…]..., all registered to the deployment's tenant.`

// noExternalID refuses an external ID given on the command line: the
// broker makes each registered role's, and holds it.
func noExternalID(flagName string) error {
	return cli.Usagef("--%s is no longer accepted: the broker makes each role's external ID when its account is registered ('broker network register'), shows it once for the role's CloudFormation stack, and uses it itself", flagName)
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

type peerFlags struct {
	account, vpc, region, roleARN, externalID string
	routeTables                               multi
}

// externalIDFlag is a refused flag: set at all, it is an error.
type externalIDFlag struct{ set *bool }

func (f externalIDFlag) String() string   { return "" }
func (f externalIDFlag) Set(string) error { *f.set = true; return nil }

func (p *peerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.account, "peer-account", "", "the peer's 12-digit AWS account ID")
	fs.StringVar(&p.vpc, "peer-vpc", "", "the peer VPC, vpc-…")
	fs.StringVar(&p.region, "peer-region", "", "the peer VPC's region, e.g. us-east-1")
	fs.StringVar(&p.roleARN, "peer-role-arn", "", "the role Tether assumes in the peer account (deploy/aws/tether-network-role.yaml)")
	fs.StringVar(&p.externalID, "peer-external-id", "", "no longer accepted: the broker holds the registered role's external ID")
	fs.Var(&p.routeTables, "peer-route-table", "a peer route table that needs ClickHouse (repeat; default all of the VPC's)")
	fs.Func("peer-route-tables", "peer route tables that need ClickHouse, comma-separated", func(v string) error {
		for _, rt := range strings.Split(v, ",") {
			if rt = strings.TrimSpace(rt); rt != "" {
				p.routeTables = append(p.routeTables, rt)
			}
		}
		return nil
	})
}

func (p *peerFlags) spec(kind string) (brokerapi.PeeringSpec, error) {
	if p.externalID != "" {
		return brokerapi.PeeringSpec{}, noExternalID("peer-external-id")
	}
	if p.account == "" || p.vpc == "" || p.region == "" || p.roleARN == "" {
		return brokerapi.PeeringSpec{}, cli.Usagef("--peer-account, --peer-vpc, --peer-region and --peer-role-arn are required (of a VPC registered to the deployment's tenant: 'broker network registrations')")
	}
	return brokerapi.PeeringSpec{Kind: kind, AccountID: p.account, Region: p.region, VPCID: p.vpc, RoleARN: p.roleARN,
		RouteTableIDs: p.routeTables}, nil
}

func network(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stdout, networkUsage)
		return nil
	}
	switch args[0] {
	case "configure":
		return networkConfigure(ctx, args[1:], stdout)
	case "register":
		return networkRegister(ctx, args[1:], stdout)
	case "registrations":
		return networkRegistrations(ctx, args[1:], stdout)
	case "confirm", "unregister":
		return networkRegistrationAct(ctx, args[0], args[1:], stdout)
	}
	if len(args) < 2 || (args[0] != "peering" && args[0] != "ingress") {
		return cli.Usagef("network: want register, registrations, confirm, unregister, configure, peering or ingress (run 'broker network -h')")
	}
	kind, sub := args[0], args[1]
	switch kind + " " + sub {
	case "peering plan", "ingress plan":
		return networkPlan(ctx, kind, args[2:], stdout)
	case "peering request", "ingress request":
		return networkRequest(ctx, kind, args[2:], stdout, stderr)
	case "peering apply", "ingress enable":
		return networkAct(ctx, "apply", kind+" "+sub, args[2:], stdout)
	case "peering teardown", "ingress disable":
		return networkAct(ctx, "teardown", kind+" "+sub, args[2:], stdout)
	case "peering status", "ingress status":
		return networkAct(ctx, "status", kind+" "+sub, args[2:], stdout)
	}
	return cli.Usagef("unknown command 'network %s %s' (run 'broker network -h')", kind, sub)
}

func networkConfigure(ctx context.Context, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker network configure")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	dep := fs.String("deployment", "", "deployment as TENANT/NAME")
	var n brokerapi.NetworkConfig
	fs.StringVar(&n.AccountID, "account", "", "the BYOC AWS account ID")
	fs.StringVar(&n.Region, "region", "", "the BYOC VPC's region")
	fs.StringVar(&n.VPCID, "vpc", "", "the BYOC VPC, vpc-…")
	fs.StringVar(&n.RoleARN, "role-arn", "", "the role Tether assumes in the BYOC account")
	var externalID bool
	fs.Var(externalIDFlag{&externalID}, "external-id", "no longer accepted: the broker holds the registered role's external ID")
	fs.StringVar(&n.PrivateHostname, "private-hostname", "", "the private endpoint's name, for ingress")
	var rts, tags multi
	fs.Var(&rts, "route-table", "a BYOC route table that gets the route back (repeat; default all of the VPC's)")
	fs.Var(&tags, "lb-tag", "a tag k=v that finds the private load balancer (repeat)")
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker network configure --deployment T/N --account ID --region R --vpc vpc-… --role-arn ARN [--route-table rtb-…]... [--lb-tag k=v]... [--private-hostname H]\n\nThe account, role and VPC must be registered to the deployment's tenant ('broker network register').")
	if err != nil {
		return err
	}
	if externalID {
		return noExternalID("external-id")
	}
	if len(pos) > 0 || *dep == "" {
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
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	d, err := c.GetDeployment(ctx, *dep)
	if err != nil {
		return err
	}
	s := d.Settings
	s.Network = &n
	if _, err := c.SetDeploymentSettings(ctx, *dep, s); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Network of %s: VPC %s in account %s (%s), through %s.\n", *dep, n.VPCID, n.AccountID, n.Region, n.RoleARN)
	return nil
}

func networkPlan(ctx context.Context, kind string, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker network " + kind + " plan")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	dep := fs.String("deployment", "", "deployment as TENANT/NAME")
	var p peerFlags
	p.register(fs)
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker network "+kind+" plan --deployment T/N --peer-account ID --peer-vpc vpc-… --peer-region R --peer-role-arn ARN [--peer-route-table rtb-…]...")
	if err != nil {
		return err
	}
	if len(pos) > 0 || *dep == "" {
		return cli.Usagef("broker network %s plan: want --deployment TENANT/NAME and the peer flags", kind)
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	spec, err := p.spec(kind)
	if err != nil {
		return err
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	plan, err := c.PlanNetwork(ctx, *dep, spec)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(stdout, plan)
	}
	printPlan(stdout, plan)
	fmt.Fprintf(stdout, "\nNothing was changed. To carry it out: broker network %s request --deployment %s … --duration 2h --reason TEXT, then an approver approves, then broker network %s --request ID.\n",
		kind, *dep, map[string]string{"peering": "peering apply", "ingress": "ingress enable"}[kind])
	return nil
}

func networkRequest(ctx context.Context, kind string, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("broker network " + kind + " request")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	dep := fs.String("deployment", "", "deployment as TENANT/NAME")
	duration := fs.String("duration", "2h", "how long the change window lasts")
	reason := fs.String("reason", "", "why; the approvers read it")
	ticket := fs.String("ticket", "", "the GitHub issue the change is for, OWNER/REPO#N")
	wait := fs.Bool("wait", false, "wait for the decision")
	outside := fs.Bool("outside-maintenance-window", false, "ask to make the change outside the deployment's maintenance windows (the approvers see it)")
	var p peerFlags
	p.register(fs)
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker network "+kind+" request --deployment T/N PEER --duration 2h --reason TEXT [--ticket OWNER/REPO#N] [--wait]")
	if err != nil {
		return err
	}
	if len(pos) > 0 || *dep == "" || strings.TrimSpace(*reason) == "" {
		return cli.Usagef("broker network %s request: want --deployment TENANT/NAME, the peer flags and --reason", kind)
	}
	if _, err := time.ParseDuration(*duration); err != nil {
		return cli.Usagef("--duration %q: want a duration such as 2h", *duration)
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	spec, err := p.spec(kind)
	if err != nil {
		return err
	}
	spec.OutsideWindow = *outside
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	r, err := c.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: *dep, Scopes: []string{brokerapi.ScopePeering},
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
	if *output == "json" {
		return printJSON(stdout, r)
	}
	fmt.Fprintf(stdout, "Network change request %s (%s of %s with %s): %s.\n", r.ID, kind, r.Deployment, spec.VPCID, r.State)
	for _, w := range r.Waiting {
		fmt.Fprintf(stdout, "  waiting for %s\n", w)
	}
	return nil
}

func networkAct(ctx context.Context, what, cmd string, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker network " + cmd)
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	id := fs.String("request", "", "the network change request's ID")
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker network "+cmd+" --request ID [--output table|json]")
	if err != nil {
		return err
	}
	if len(pos) > 0 || *id == "" {
		return cli.Usagef("broker network %s: want --request ID (from 'broker network … request')", cmd)
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	if what == "status" {
		st, err := c.NetworkStatus(ctx, *id)
		if err != nil {
			return err
		}
		if *output == "json" {
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
	if *output == "json" {
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

func networkRegister(ctx context.Context, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker network register")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	tenant := fs.String("tenant", "", "the tenant the account belongs to")
	var in brokerapi.RegisterNetwork
	fs.StringVar(&in.AccountID, "account", "", "the 12-digit AWS account ID")
	fs.StringVar(&in.RoleARN, "role-arn", "", "the role Tether assumes there (deploy/aws/tether-network-role.yaml creates it)")
	var vpcs, rts, cidrs multi
	fs.Var(&vpcs, "vpc", "a VPC of the account Tether may peer or reach (repeat)")
	fs.Var(&rts, "route-table", "a route table Tether may change (repeat; none means any of the registered VPCs')")
	fs.Var(&cidrs, "peer-cidr", "an address range of those VPCs the tenant declares its own (repeat)")
	var externalID bool
	fs.Var(externalIDFlag{&externalID}, "external-id", "not accepted: the broker makes the external ID")
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker network register --tenant T --account ID --role-arn ARN --vpc vpc-… [--vpc …]... [--route-table rtb-…]... [--peer-cidr CIDR]...\n\nRegisters an AWS account to a tenant: its approvers' registration is active at\nonce; an admin's waits for an approver to confirm it ('broker network confirm ID').\nThe answer that makes it active shows the role's external ID, once.")
	if err != nil {
		return err
	}
	if externalID {
		return noExternalID("external-id")
	}
	if len(pos) > 0 || *tenant == "" || in.AccountID == "" || in.RoleARN == "" || len(vpcs) == 0 {
		return cli.Usagef("broker network register: want --tenant T, --account ID, --role-arn ARN and at least one --vpc, no arguments")
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	in.VPCIDs, in.RouteTableIDs, in.PeerCIDRs = vpcs, rts, cidrs
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	res, err := c.RegisterNetwork(ctx, *tenant, in)
	if err != nil {
		return err
	}
	if *output == "json" {
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

func networkRegistrations(ctx context.Context, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker network registrations")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	tenant := fs.String("tenant", "", "only this tenant's (default: every tenant you may act on)")
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker network registrations [--tenant T] [--output table|json]")
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("broker network registrations: unexpected argument %q", pos[0])
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	regs, err := c.ListNetworkRegistrations(ctx, *tenant)
	if err != nil {
		return err
	}
	if *output == "json" {
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
func networkRegistrationAct(ctx context.Context, what string, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker network " + what)
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker network "+what+" ID [--output table|json]")
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] == "" {
		return cli.Usagef("broker network %s: want the registration's ID ('broker network registrations' lists them)", what)
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	c, err := client(ctx, *cfgPath)
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
		if *output == "json" {
			return printJSON(stdout, reg)
		}
		fmt.Fprintf(stdout, "Unregistered account %s from tenant %s: network changes may no longer name it, and the broker forgot its role's external ID. Delete the role's stack if nothing else uses it.\n", reg.AccountID, reg.Tenant)
		return nil
	}
	res, err := c.ConfirmNetworkRegistration(ctx, reg.Tenant, reg.ID)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(stdout, res)
	}
	printRegistrationResult(stdout, res)
	return nil
}
