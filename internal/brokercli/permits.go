package brokercli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/config"
)

// permitCmd manages a deployment's standing permits.
type permitCmd struct {
	List   permitListCmd   `cmd:"" help:"list a deployment's standing permits"`
	Create permitCreateCmd `cmd:"" help:"sign a new standing permit (customer approvers)"`
	Sign   permitSignCmd   `cmd:"" help:"co-sign an existing permit, when the agent requires several approvers (customer approvers)"`
	Revoke permitRevokeCmd `cmd:"" help:"revoke a permit: no new grant is issued under it (customer approvers)"`
}

func (permitCmd) Help() string {
	return `A standing permit is a customer's proactive authorization: within its windows
(at most two, of at most 30 days each), requests for its scopes, no longer
than its maximum grant (and, if it names one, by engineers of its group) are
granted without a per-request approval. A customer approver signs it at their
own identity provider, as they sign an approval, and the agent checks that
signature on every grant issued under it.`
}

type permitListCmd struct {
	deploymentArg
	clientFlags
	outputFlag
}

func (cmd *permitListCmd) Run(e *env) error {
	if err := cmd.check(); err != nil {
		return err
	}
	c, err := cmd.client(e.ctx)
	if err != nil {
		return err
	}
	ps, err := c.Permits(e.ctx, cmd.Deployment)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(e.stdout, ps)
	}
	if len(ps) == 0 {
		fmt.Fprintf(e.stdout, "Deployment %s has no standing permits.\n", cmd.Deployment)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSCOPES\tWINDOWS\tMAX GRANT\tGROUP\tSIGNERS\tSTATE")
	for _, p := range ps {
		var ws []string
		for _, w := range p.Windows {
			ws = append(ws, w.Start.Local().Format(time.RFC3339)+"/"+w.End.Local().Format(time.RFC3339))
		}
		state := "live"
		if p.RevokedAt != nil {
			state = "revoked by " + p.RevokedBy
		}
		group := p.EngineerGroup
		if group == "" {
			group = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, strings.Join(p.Scopes, ","), strings.Join(ws, " "), p.MaxGrant, group, strings.Join(p.Signers, ", "), state)
	}
	return tw.Flush()
}

type permitCreateCmd struct {
	deploymentArg
	Scopes        []string      `placeholder:"S" help:"the scopes it covers, comma-separated (required)"`
	Window        []string      `placeholder:"START/END" help:"a window, two RFC 3339 times; once or twice (required)"`
	MaxGrant      time.Duration `name:"max-grant" default:"1h" placeholder:"D" help:"the longest grant it covers"`
	EngineerGroup string        `name:"engineer-group" placeholder:"G" help:"cover only engineers in this group of the vendor's identity provider"`
	Device        bool          `help:"sign with the device flow instead of a browser on this machine"`
	clientFlags
	outputFlag
}

func (cmd *permitCreateCmd) Run(e *env) error {
	if err := cmd.check(); err != nil {
		return err
	}
	if len(cmd.Scopes) == 0 || len(cmd.Window) == 0 {
		return cli.Usagef("broker permit create: --scopes and --window are required")
	}
	body := brokerapi.PermitStatementBody{Scopes: cmd.Scopes, EngineerGroup: cmd.EngineerGroup, MaxGrant: cmd.MaxGrant.String()}
	for _, w := range cmd.Window {
		s, e, ok := strings.Cut(w, "/")
		start, err1 := time.Parse(time.RFC3339, s)
		end, err2 := time.Parse(time.RFC3339, e)
		if !ok || err1 != nil || err2 != nil {
			return cli.Usagef("--window %q: want START/END, two RFC 3339 times such as 2026-12-20T00:00:00Z/2027-01-05T00:00:00Z", w)
		}
		body.Windows = append(body.Windows, brokerapi.PermitWindow{Start: start, End: end})
	}
	return signPermit(e, cmd.Deployment, body, cmd.Device, cmd.clientFlags, cmd.outputFlag)
}

type permitSignCmd struct {
	deploymentArg
	ID     string `arg:"" name:"id" placeholder:"PERMIT" help:"the permit's ID (see 'broker permit list')"`
	Device bool   `help:"sign with the device flow instead of a browser on this machine"`
	clientFlags
	outputFlag
}

func (cmd *permitSignCmd) Run(e *env) error {
	if err := cmd.check(); err != nil {
		return err
	}
	return signPermit(e, cmd.Deployment, brokerapi.PermitStatementBody{ID: cmd.ID}, cmd.Device, cmd.clientFlags, cmd.outputFlag)
}

// signPermit asks for the permit, shows it, signs it at the approver's
// identity provider and sends the signature.
func signPermit(e *env, ref string, body brokerapi.PermitStatementBody, device bool, cf clientFlags, out outputFlag) error {
	cfg, bc, err := clientConfig(e.ctx, cf.Config)
	if err != nil {
		return err
	}
	if cfg.Login == nil || cfg.Login.Tenant == "" {
		return cli.Usagef("a standing permit is signed by a customer approver at their identity provider: log in as one ('broker login --issuer TENANT')")
	}
	ps, err := bc.PermitStatementFor(e.ctx, ref, body)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "You are signing, at %s, standing permit %s:\n  %s\n  digest: %s\n", ps.Issuer, ps.ID, ps.Permit, ps.Digest)
	proof, err := signDigest(e.ctx, bc, *cfg.Login, ps.Issuer, ps.Digest, device, e.stderr)
	if err != nil {
		return err
	}
	p, err := bc.SignPermit(e.ctx, ref, brokerapi.SignPermitBody{Permit: ps.Permit, Proof: proof})
	if err != nil {
		return err
	}
	if out.json() {
		return printJSON(e.stdout, p)
	}
	fmt.Fprintf(e.stdout, "Signed permit %s of %s; signers: %s.\n", p.ID, ref, strings.Join(p.Signers, ", "))
	return nil
}

// signDigest is the signing ceremony for any signed form whose digest is
// digest, at issuer.
func signDigest(ctx context.Context, bc *brokerapi.Client, l config.Login, issuer, digest string, device bool, stderr io.Writer) (string, error) {
	return signStatement(ctx, bc, l, brokerapi.ApprovalStatement{Issuer: issuer, Digest: digest}, device, stderr)
}

type permitRevokeCmd struct {
	deploymentArg
	ID string `arg:"" name:"id" placeholder:"PERMIT" help:"the permit's ID (see 'broker permit list')"`
	clientFlags
	outputFlag
}

func (cmd *permitRevokeCmd) Run(e *env) error {
	if err := cmd.check(); err != nil {
		return err
	}
	c, err := cmd.client(e.ctx)
	if err != nil {
		return err
	}
	p, err := c.RevokePermit(e.ctx, cmd.Deployment, cmd.ID)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(e.stdout, p)
	}
	fmt.Fprintf(e.stdout, "Revoked permit %s of %s: no new grant is issued under it.\n", p.ID, cmd.Deployment)
	return nil
}
