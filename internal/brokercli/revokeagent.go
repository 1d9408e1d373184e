package brokercli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/tetherhq/tether/internal/cli"
)

const revokeAgentUsage = `Usage: broker deployment revoke-agent TENANT/NAME --reason TEXT [--output table|json]

Cuts the deployment's agent off at once: its sessions with the broker end,
its heartbeats and every further call it makes are refused, the broker
calls it no more (data-plane calls to it in flight are cut off), and the
revocation is audited as agent.revoked with who and why. A new agent
pairs with a new token ('broker deployment pairing-token TENANT/NAME') and
an empty state dir. Vendor admins, and approvers of the deployment's own
tenant, may revoke its agent.`

func revokeAgent(ctx context.Context, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker deployment revoke-agent")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	reason := fs.String("reason", "", "why the agent is cut off (required; recorded in the audit log)")
	pos, err := cli.Parse(fs, args, stdout, revokeAgentUsage)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cli.Usagef("broker deployment revoke-agent: want exactly one deployment, as TENANT/NAME")
	}
	ref, err := parseDeploymentRef("deployment", pos[0])
	if err != nil {
		return err
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return cli.Usagef("broker deployment revoke-agent: --reason is required (it goes to the audit log)")
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	res, err := c.RevokeAgent(ctx, ref, *reason)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "Revoked agent %s of %s: %d session(s) ended, %d call(s) in flight cut off.\n", res.AgentID, ref, res.SessionsEnded, res.CallsCutOff)
	fmt.Fprintf(stdout, "To pair a replacement: broker deployment pairing-token %s\n", ref)
	return nil
}
