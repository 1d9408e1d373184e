// Package agentcli is the agent binary's command line.
package agentcli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/version"
)

// agentCLI is the agent's command line: one struct per command, its
// flags and arguments in kong's tags.
type agentCLI struct {
	Run        runCmd        `cmd:"" help:"pair (first run) and serve the broker"`
	WitnessKey witnessKeyCmd `cmd:"" help:"print the key this agent cosigns audit checkpoints with"`
	Journal    journalCmd    `cmd:"" help:"print the agent's own journal of the calls it served or refused"`
	Guard      guardCmd      `cmd:"" help:"run the SQL or PromQL guard on a query, or on JSON lines from stdin; list its catalog"`
	Health     healthCmd     `cmd:"" help:"ask a running agent's loopback health address how it is (for exec probes)"`
	Version    versionCmd    `cmd:"" help:"print the version"`
	HelpCmd    cli.HelpCmd   `cmd:"" name:"help" help:"show the help of a command, such as 'agent help guard sql'"`
}

// env is what every command runs with.
type env struct {
	ctx            context.Context
	stdin          io.Reader
	stdout, stderr io.Writer
	command        string // the selected command's name, such as "sql"
}

// command is what each command struct of agentCLI implements. The agent
// calls it itself, never kong's Run: see cli.Parse for why.
type command interface {
	run(e *env) error
}

const description = `Tether agent: runs in the customer's VPC, dials out to the broker's tailnet,
and opens no inbound port.`

// Run runs the agent command line.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return run(ctx, args, os.Stdin, stdout, stderr)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	k, err := newParser(stdout, stderr)
	if err != nil {
		return err
	}
	kctx, err := cli.Parse(k, args)
	if err != nil {
		return err
	}
	node := kctx.Selected()
	if node == nil || !node.Target.CanAddr() {
		return fmt.Errorf("agent: no command selected by %q", args)
	}
	cmd, ok := node.Target.Addr().Interface().(command)
	if !ok {
		return fmt.Errorf("agent %s: the command has nothing to run", node.Path())
	}
	return cmd.run(&env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, command: node.Name})
}

// newParser builds the agent's command line.
func newParser(stdout, stderr io.Writer) (*kong.Kong, error) {
	return cli.New("agent", description, &agentCLI{}, stdout, stderr,
		kong.Vars{"max_calls": strconv.Itoa(agent.DefaultMaxCallsPerGrant)})
}

type versionCmd struct{}

func (versionCmd) run(e *env) error {
	fmt.Fprintln(e.stdout, "agent", version.Version)
	return nil
}

type runCmd struct {
	Join             string        `placeholder:"FILE" help:"join file written by the broker (DATA_DIR/join.json in dev mode)"`
	Token            string        `name:"pairing-token" placeholder:"TOKEN" help:"one-time pairing token, as env:NAME or file:PATH to keep it off the command line"`
	StateDir         string        `placeholder:"DIR" help:"directory for the agent's key and state (required)"`
	ControlURL       string        `name:"control-url" placeholder:"URL" help:"tailnet control server URL (instead of --join)"`
	AuthKey          string        `name:"auth-key" placeholder:"KEY" help:"tailnet pre-auth key, as env:NAME or file:PATH (instead of --join)"`
	BrokerName       []string      `sep:"," placeholder:"NAME" help:"the broker's tailnet name (instead of --join); with several brokers, repeat it or separate with commas: the agent uses whichever proves the broker key and fails over between them"`
	BrokerTag        string        `placeholder:"tag:NAME" help:"ACL tag every broker node carries, e.g. tag:tether-broker: any node with it that proves the broker key is a broker (with or instead of --broker-name)"`
	BrokerKey        string        `placeholder:"ed25519:…" help:"the broker's public key (instead of --join)"`
	Hostname         string        `default:"tether-agent" help:"the agent's tailnet hostname"`
	HealthAddr       string        `placeholder:"HOST:PORT" help:"optional loopback address for GET /healthz and GET /metrics (Prometheus), e.g. 127.0.0.1:9090 (off by default; never on the tailnet)"`
	CHURL            string        `name:"clickhouse-url" placeholder:"URL" help:"ClickHouse HTTP interface to guard, e.g. http://clickhouse:8123"`
	CHUser           string        `name:"clickhouse-user" default:"tether" help:"read-only ClickHouse user (deploy/clickhouse/users.d/tether.xml)"`
	CHPassFile       string        `name:"clickhouse-password-file" placeholder:"FILE" help:"file holding that user's password"`
	PromURL          string        `name:"prometheus-url" placeholder:"URL" help:"Prometheus to guard, e.g. http://prometheus:9090"`
	MaxExec          time.Duration `name:"max-execution-time" default:"60s" help:"limit forced on every query"`
	MaxRows          int64         `name:"max-result-rows" default:"10000000" help:"limit forced on every query (ClickHouse throws beyond it)"`
	MaxBytes         int64         `name:"max-result-bytes" default:"2000000000" help:"limit forced on every query"`
	MaxMem           int64         `name:"max-memory-usage" default:"2000000000" help:"limit forced on every query, in bytes"`
	MaxCalls         int           `name:"max-calls-per-grant" default:"${max_calls}" help:"calls one grant may have in flight at once, ClickHouse and Prometheus together; more are answered 429 and audited"`
	MemLimit         int64         `name:"memory-limit" default:"100663296" help:"soft memory limit of the agent process in bytes (Go GC target; 0 = none; GOMEMLIMIT overrides)"`
	ApproverIssuer   string        `name:"approver-issuer" placeholder:"URL" help:"the customer's identity provider (OIDC issuer URL, https) whose signed approvals a grant must carry; unset: approvals are not enforced by the agent"`
	ApproverAudience []string      `name:"approver-audience" sep:"," placeholder:"CLIENT_ID" help:"client ID the approval ceremony uses at that provider (the aud of the approvers' ID tokens): repeat it, or separate with commas, when the web console and the CLI sign in as different clients; required with --approver-issuer"`
	ApproverGroup    string        `name:"approver-group" placeholder:"GROUP" help:"the group claim value that makes someone a customer approver; required with --approver-issuer"`
	GroupsClaim      string        `name:"approver-groups-claim" default:"groups" help:"the ID-token claim holding the approver's groups"`
	Required         int           `name:"approvals-required" default:"1" help:"distinct customer approvers a grant needs"`
	BreakGlass       string        `name:"break-glass" placeholder:"deny|allow" help:"serve break-glass grants without customer approval (allow) or refuse them (deny); default deny with --approver-issuer, allow without"`
	Timeout          time.Duration `default:"60s" help:"how long to try joining the tailnet and pairing"`
	LogLevel         string        `default:"info" placeholder:"LEVEL" help:"debug, info, warn or error"`
}

func (runCmd) Help() string {
	return `The first run pairs the agent with the broker using a one-time token; later
runs need only --state-dir. Give the broker's tailnet details either as --join
FILE or as --control-url, --auth-key, --broker-name and --broker-key. Secrets
(--pairing-token, --auth-key) may be given as env:NAME or file:PATH so they
stay off the command line.

The customer's approval authority (--approver-issuer, --approver-audience,
--approver-group) makes the agent serve a grant only when it carries approvals
signed by the customer's own identity provider for exactly that grant: the
broker's key alone then opens nothing.`
}

// approvalConfig builds the customer's approval authority from the
// flags: nil when no issuer is given, and whether break-glass grants are
// refused without one.
func (c *runCmd) approvalConfig() (auth *approval.Authority, denyBreakGlass bool, err error) {
	var allow bool
	switch c.BreakGlass {
	case "":
		allow = c.ApproverIssuer == ""
	case protocol.BreakGlassDeny:
	case protocol.BreakGlassAllow:
		allow = true
	default:
		return nil, false, cli.Usagef("--break-glass %q: want deny or allow", c.BreakGlass)
	}
	if c.ApproverIssuer == "" {
		if len(c.ApproverAudience) > 0 || c.ApproverGroup != "" {
			return nil, false, cli.Usagef("--approver-audience and --approver-group need --approver-issuer, the customer's identity provider")
		}
		if c.Required != 1 {
			return nil, false, cli.Usagef("--approvals-required needs --approver-issuer, the customer's identity provider")
		}
		return nil, !allow, nil
	}
	if err := approval.CheckIssuerURL(c.ApproverIssuer); err != nil {
		return nil, false, cli.Usagef("--approver-issuer: %v", err)
	}
	var missing []string
	if len(c.ApproverAudience) == 0 {
		missing = append(missing, "--approver-audience CLIENT_ID (the client ID of the approval ceremony at that provider)")
	}
	if c.ApproverGroup == "" {
		missing = append(missing, "--approver-group GROUP (the group claim value of the customer's approvers)")
	}
	if len(missing) > 0 {
		return nil, false, cli.Usagef("--approver-issuer also needs %s", strings.Join(missing, " and "))
	}
	for _, aud := range c.ApproverAudience {
		if aud == "" || strings.TrimSpace(aud) != aud || strings.ContainsAny(aud, ",\x00") {
			return nil, false, cli.Usagef("--approver-audience %q: want client IDs without spaces, separated by commas", aud)
		}
	}
	if n := len(c.ApproverAudience); n > approval.MaxAudiences {
		return nil, false, cli.Usagef("--approver-audience: %d client IDs, at most %d", n, approval.MaxAudiences)
	}
	if c.GroupsClaim == "" {
		return nil, false, cli.Usagef("--approver-groups-claim: want the name of the claim holding the groups, such as groups")
	}
	if c.Required < 1 || c.Required > grant.MaxProofs {
		return nil, false, cli.Usagef("--approvals-required %d: want 1 to %d distinct approvers", c.Required, grant.MaxProofs)
	}
	keys, err := approval.NewKeySet(c.ApproverIssuer, nil, nil)
	if err != nil {
		return nil, false, cli.Usagef("--approver-issuer: %v", err)
	}
	return &approval.Authority{
		Keys: keys, Audiences: slices.Compact(slices.Sorted(slices.Values(c.ApproverAudience))), Group: c.ApproverGroup, GroupsClaim: c.GroupsClaim,
		Required: c.Required, AllowBreakGlass: allow,
	}, false, nil
}

func (c *runCmd) run(e *env) error {
	log, err := cli.NewLogger(e.stderr, c.LogLevel)
	if err != nil {
		return err
	}
	var j config.Join
	if c.Join != "" {
		if c.ControlURL != "" || c.AuthKey != "" || len(c.BrokerName) > 0 || c.BrokerTag != "" || c.BrokerKey != "" {
			return cli.Usagef("agent run: give either --join FILE or --control-url/--auth-key/--broker-name/--broker-tag/--broker-key, not both")
		}
		if err := config.LoadWith(c.Join, &j, (*config.Join).Validate); err != nil {
			return err
		}
	} else {
		j = config.Join{ControlURL: c.ControlURL, AuthKey: c.AuthKey, BrokerTag: c.BrokerTag, BrokerKey: c.BrokerKey}
		if len(c.BrokerName) > 0 {
			j.BrokerName, j.BrokerNames = c.BrokerName[0], c.BrokerName[1:]
		}
		if len(j.BrokerNames) > config.MaxBrokerNames {
			return cli.Usagef("agent run: --broker-name lists %d names: at most %d", len(c.BrokerName), config.MaxBrokerNames+1)
		}
	}
	tok := c.Token
	if tok != "" {
		if tok, err = config.Secret(tok); err != nil {
			return fmt.Errorf("pairing token: %w", err)
		}
	}
	if c.Timeout <= 0 {
		return cli.Usagef("--timeout %v: want a positive duration such as 60s", c.Timeout)
	}
	if c.MemLimit < 0 {
		return cli.Usagef("agent run: --memory-limit must be 0 (none) or a positive number of bytes")
	}
	// The agent shares a host in the customer's VPC: keep its memory
	// bounded. Streaming results through the tailnet stack churns short-lived
	// buffers; a soft limit makes the GC collect them before the heap grows.
	if c.MemLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(c.MemLimit)
	}
	if c.MaxExec <= 0 || c.MaxRows <= 0 || c.MaxBytes <= 0 || c.MaxMem <= 0 {
		return cli.Usagef("agent run: --max-execution-time, --max-result-rows, --max-result-bytes and --max-memory-usage must be positive")
	}
	if c.MaxCalls <= 0 {
		return cli.Usagef("agent run: --max-calls-per-grant %d: want a positive number of calls, such as %d", c.MaxCalls, agent.DefaultMaxCallsPerGrant)
	}
	auth, denyBreakGlass, err := c.approvalConfig()
	if err != nil {
		return err
	}
	up := agent.Upstreams{ClickHouseURL: c.CHURL, ClickHouseUser: c.CHUser, PrometheusURL: c.PromURL,
		Limits: agent.QueryLimits{MaxExecutionTime: c.MaxExec, MaxResultRows: c.MaxRows, MaxResultBytes: c.MaxBytes, MaxMemoryUsage: c.MaxMem}}
	if c.CHPassFile != "" {
		if up.ClickHousePassword, err = config.Secret("file:" + c.CHPassFile); err != nil {
			return fmt.Errorf("--clickhouse-password-file: %w", err)
		}
	}
	a, err := agent.New(agent.Config{
		Upstreams:        up,
		MaxCallsPerGrant: c.MaxCalls,
		StateDir:         c.StateDir,
		Join:             j,
		PairingToken:     tok,
		Hostname:         c.Hostname,
		HealthAddr:       c.HealthAddr,
		StartTimeout:     c.Timeout,
		Approval:         auth,
		DenyBreakGlass:   denyBreakGlass,
		Version:          version.Version,
		Logger:           log,
	})
	if err != nil {
		return err
	}
	return a.Run(e.ctx)
}

type witnessKeyCmd struct {
	StateDir string `placeholder:"DIR" help:"the agent's state directory (required)"`
	Out      string `placeholder:"FILE" help:"write the key to this file (default: print it)"`
}

func (witnessKeyCmd) Help() string {
	return "Prints the verifier key of this agent's audit-log cosignatures, for 'broker audit verify --witness-key'."
}

func (c *witnessKeyCmd) run(e *env) error {
	k, err := agent.WitnessKeyOf(c.StateDir)
	if err != nil {
		return err
	}
	if c.Out == "" {
		fmt.Fprintln(e.stdout, k)
		return nil
	}
	return config.WriteFile(c.Out, []byte(k+"\n"), 0o644)
}
