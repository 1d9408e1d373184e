package brokercli

import (
	"fmt"
	"strings"

	"github.com/tetherhq/tether/internal/cli"
)

type revokeAgentCmd struct {
	Deployment string `arg:"" placeholder:"TENANT/NAME" help:"the deployment"`
	Reason     string `placeholder:"TEXT" help:"why the agent is cut off (required; recorded in the audit log)"`
	clientFlags
	outputFlag
}

func (revokeAgentCmd) Help() string {
	return `Cuts the deployment's agent off at once: its sessions with the broker end,
its heartbeats and every further call it makes are refused, the broker
calls it no more (data-plane calls to it in flight are cut off), and the
revocation is audited as agent.revoked with who and why. A new agent
pairs with a new token ('broker deployment pairing-token TENANT/NAME') and
an empty state dir. Vendor admins, and approvers of the deployment's own
tenant, may revoke its agent.`
}

func (revokeAgentCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want exactly one deployment, as TENANT/NAME", cmd)
}

func (cmd *revokeAgentCmd) Run(e *env) error {
	ctx, stdout, reason := e.ctx, e.stdout, &cmd.Reason
	ref, err := parseDeploymentRef("deployment", cmd.Deployment)

	if err != nil {
		return err
	}
	if err := cmd.check(); err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return cli.Usagef("broker deployment revoke-agent: --reason is required (it goes to the audit log)")
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	res, err := c.RevokeAgent(ctx, ref, *reason)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "Revoked agent %s of %s: %d session(s) ended, %d call(s) in flight cut off.\n", res.AgentID, ref, res.SessionsEnded, res.CallsCutOff)
	fmt.Fprintf(stdout, "To pair a replacement: broker deployment pairing-token %s\n", ref)
	return nil
}
