// Package agentcli is the agent binary's command line.
package agentcli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/version"
)

const usage = `Usage: agent COMMAND [flags]

Tether agent: runs in the customer's VPC, dials out to the broker's tailnet,
and opens no inbound port.

Commands:
  run           pair (first run) and serve the broker
  witness-key   print the key this agent cosigns audit checkpoints with
  guard sql|prom   run the SQL or PromQL guard on a query, or on JSON lines from stdin
  version       print the version`

const runUsage = `Usage: agent run --state-dir DIR [--join FILE] [--pairing-token TOKEN]
       agent run --state-dir DIR --control-url URL --auth-key KEY --broker-name NAME --broker-key ed25519:… --pairing-token TOKEN

The first run pairs the agent with the broker using a one-time token; later
runs need only --state-dir. Secrets (--pairing-token, --auth-key) may be given
as env:NAME or file:PATH so they stay off the command line.`

// Run runs the agent command line.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.Usagef("no command given: want run, guard, witness-key or version (run 'agent help')")
	}
	switch args[0] {
	case "run":
		return run(ctx, args[1:], stdout, stderr)
	case "witness-key":
		return witnessKey(args[1:], stdout)
	case "guard":
		return guard(args[1:], os.Stdin, stdout)
	case "version":
		fmt.Fprintln(stdout, "agent", version.Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return cli.Usagef("unknown command %q: want run, guard, witness-key or version (run 'agent help')", args[0])
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("agent run")
	var (
		join       = fs.String("join", "", "join file written by the broker (DATA_DIR/join.json in dev mode)")
		token      = fs.String("pairing-token", "", "one-time pairing token (or env:NAME / file:PATH)")
		stateDir   = fs.String("state-dir", "", "directory for the agent's key and state (required)")
		controlURL = fs.String("control-url", "", "tailnet control server URL (instead of --join)")
		authKey    = fs.String("auth-key", "", "tailnet pre-auth key, as env:NAME or file:PATH (instead of --join)")
		brokerName = fs.String("broker-name", "", "the broker's tailnet name (instead of --join)")
		brokerKey  = fs.String("broker-key", "", "the broker's public key, ed25519:… (instead of --join)")
		hostname   = fs.String("hostname", "tether-agent", "the agent's tailnet hostname")
		healthAddr = fs.String("health-addr", "", "optional loopback address for GET /healthz, e.g. 127.0.0.1:9090 (off by default)")
		chURL      = fs.String("clickhouse-url", "", "ClickHouse HTTP interface to guard, e.g. http://clickhouse:8123")
		chUser     = fs.String("clickhouse-user", "tether", "read-only ClickHouse user (deploy/clickhouse/users.d/tether.xml)")
		chPassFile = fs.String("clickhouse-password-file", "", "file holding that user's password")
		promURL    = fs.String("prometheus-url", "", "Prometheus to guard, e.g. http://prometheus:9090")
		maxExec    = fs.Duration("max-execution-time", 60*time.Second, "limit forced on every query")
		maxRows    = fs.Int64("max-result-rows", 10_000_000, "limit forced on every query (ClickHouse throws beyond it)")
		maxBytes   = fs.Int64("max-result-bytes", 2_000_000_000, "limit forced on every query")
		maxMem     = fs.Int64("max-memory-usage", 2_000_000_000, "limit forced on every query, in bytes")
		maxCalls   = fs.Int("max-calls-per-grant", agent.DefaultMaxCallsPerGrant, "calls one grant may have in flight at once, ClickHouse and Prometheus together; more are answered 429 and audited")
		memLimit   = fs.Int64("memory-limit", 96<<20, "soft memory limit of the agent process in bytes (Go GC target; 0 = none; GOMEMLIMIT overrides)")
		timeout    = fs.Duration("timeout", 60*time.Second, "how long to try joining the tailnet and pairing")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
	)
	pos, err := cli.Parse(fs, args, stdout, runUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("agent run: unexpected argument %q", pos[0])
	}
	log, err := cli.NewLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	var j config.Join
	if *join != "" {
		if *controlURL != "" || *authKey != "" || *brokerName != "" || *brokerKey != "" {
			return cli.Usagef("agent run: give either --join FILE or --control-url/--auth-key/--broker-name/--broker-key, not both")
		}
		if err := config.Load(*join, &j); err != nil {
			return err
		}
	} else {
		j = config.Join{ControlURL: *controlURL, AuthKey: *authKey, BrokerName: *brokerName, BrokerKey: *brokerKey}
	}
	tok := *token
	if tok != "" {
		if tok, err = config.Secret(tok); err != nil {
			return fmt.Errorf("pairing token: %w", err)
		}
	}
	if *timeout <= 0 {
		return cli.Usagef("--timeout %v: want a positive duration such as 60s", *timeout)
	}
	if *memLimit < 0 {
		return cli.Usagef("agent run: --memory-limit must be 0 (none) or a positive number of bytes")
	}
	// The agent shares a host in the customer's VPC: keep its memory
	// bounded. Streaming results through the tailnet stack churns short-lived
	// buffers; a soft limit makes the GC collect them before the heap grows.
	if *memLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(*memLimit)
	}
	if *maxExec <= 0 || *maxRows <= 0 || *maxBytes <= 0 || *maxMem <= 0 {
		return cli.Usagef("agent run: --max-execution-time, --max-result-rows, --max-result-bytes and --max-memory-usage must be positive")
	}
	if *maxCalls <= 0 {
		return cli.Usagef("agent run: --max-calls-per-grant %d: want a positive number of calls, such as %d", *maxCalls, agent.DefaultMaxCallsPerGrant)
	}
	up := agent.Upstreams{ClickHouseURL: *chURL, ClickHouseUser: *chUser, PrometheusURL: *promURL,
		Limits: agent.QueryLimits{MaxExecutionTime: *maxExec, MaxResultRows: *maxRows, MaxResultBytes: *maxBytes, MaxMemoryUsage: *maxMem}}
	if *chPassFile != "" {
		if up.ClickHousePassword, err = config.Secret("file:" + *chPassFile); err != nil {
			return fmt.Errorf("--clickhouse-password-file: %w", err)
		}
	}
	a, err := agent.New(agent.Config{
		Upstreams:        up,
		MaxCallsPerGrant: *maxCalls,
		StateDir:         *stateDir,
		Join:             j,
		PairingToken:     tok,
		Hostname:         *hostname,
		HealthAddr:       *healthAddr,
		StartTimeout:     *timeout,
		Version:          version.Version,
		Logger:           log,
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func witnessKey(args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("agent witness-key")
	stateDir := fs.String("state-dir", "", "the agent's state directory (required)")
	out := fs.String("out", "", "write the key to this file (default: print it)")
	pos, err := cli.Parse(fs, args, stdout, "Usage: agent witness-key --state-dir DIR [--out FILE]\n\nPrints the verifier key of this agent's audit-log cosignatures, for 'broker audit verify --witness-key'.")
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("agent witness-key: unexpected argument %q", pos[0])
	}
	k, err := agent.WitnessKeyOf(*stateDir)
	if err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(stdout, k)
		return nil
	}
	return config.WriteFile(*out, []byte(k+"\n"), 0o644)
}
