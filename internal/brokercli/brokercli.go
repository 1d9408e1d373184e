// Package brokercli is the broker binary's command line: 'broker serve'
// runs the server, the other commands are a client of its API.
package brokercli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/internal/version"
)

const usage = `Usage: broker COMMAND [flags]

Tether broker: just-in-time, customer-approved access to BYOC deployments.

Commands:
  serve                          run the broker (--dev, in bin/broker-dev only, for a self-contained dev setup)
  login [--issuer NAME]          sign in with your identity provider (--dev-user EMAIL on a dev broker)
  logout                         remove your login's tokens from the CLI config
  whoami                         show who the broker takes you for: subject, issuer, tenant, roles
  deployment create              create a deployment and print its one-time pairing token
  deployment list                list deployments and their agents
  deployment show ID|T/N         show one deployment
  deployment pairing-token ID|T/N  issue a new pairing token (to re-pair an agent)
  deployment revoke-agent T/N    cut the deployment's agent off at once (--reason TEXT)
  deployment ping ID|T/N         call the deployment's agent over the tailnet
  deployment set T/N             change a deployment's settings: approval mode, labels, freeze and maintenance windows
  network configure|peering|ingress  VPC peering and private ingress, planned and approved (see 'broker network -h')
  ticket check OWNER/REPO#N      verify a GitHub ticket as a request would: exists, an issue, open
  request create|list|show|approve|deny|cancel|revoke   ask for, review and end access (see 'broker request help')
  query --deployment T/N "SQL"   run SQL on the deployment's ClickHouse system tables under your grant
  prom --deployment T/N 'PROMQL' query the deployment's Prometheus under your grant (--range for a range query)
  proxy clickhouse|prometheus    serve the deployment's ClickHouse or Prometheus on a loopback port (for curl, Grafana)
  policy eval --input FILE       evaluate the access policy locally on a policy input
  info                           print what an agent needs to join: control URL, broker name and key
  audit search|show-session|export|public-key|verify   for security reviewers (see 'broker audit -h')
  version                        print the version

Client commands read the CLI config from --config FILE, $TETHER_CONFIG or
~/.config/tether/cli.json (a dev broker writes DATA_DIR/cli.json, holding its
bootstrap admin token; 'broker login' adds your own login to it).`

// Options are what a build of the broker binary plugs into its command
// line.
type Options struct {
	// Dev, when set, enables 'serve --dev': it returns a new dev preset
	// whose tailnet binds to addr (--dev-addr; empty means loopback). Only
	// cmd/broker-dev sets it; the production broker refuses --dev.
	Dev func(addr string) broker.DevEnv
}

// Run runs the production broker's command line.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return RunWith(ctx, args, stdout, stderr, Options{})
}

// RunWith runs the broker command line of a build with opts.
func RunWith(ctx context.Context, args []string, stdout, stderr io.Writer, opts Options) error {
	if len(args) == 0 {
		return cli.Usagef("no command given: want serve, login, whoami, deployment, audit, info or version (run 'broker help')")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr, opts)
	case "deployment", "deployments":
		return deployment(ctx, args[1:], stdout)
	case "info":
		return info(ctx, args[1:], stdout)
	case "login":
		return login(ctx, args[1:], stdout, stderr)
	case "logout":
		return logout(args[1:], stdout)
	case "whoami":
		return whoami(ctx, args[1:], stdout)
	case "ticket":
		return ticket(ctx, args[1:], stdout)
	case "network":
		return network(ctx, args[1:], stdout, stderr)
	case "audit":
		return auditCmd(ctx, args[1:], stdout)
	case "request", "requests":
		return request(ctx, args[1:], stdout, stderr)
	case "query":
		return query(ctx, args[1:], os.Stdin, stdout, stderr)
	case "prom":
		return prom(ctx, args[1:], stdout, stderr)
	case "proxy":
		return proxyCmd(ctx, args[1:], stdout, stderr)
	case "policy":
		return policyCmd(ctx, args[1:], os.Stdin, stdout)
	case "version":
		fmt.Fprintln(stdout, "broker", version.Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return cli.Usagef("unknown command %q: want serve, login, whoami, deployment, audit, info or version (run 'broker help')", args[0])
	}
}

// serverFile is the broker's server configuration file (JSON).
type serverFile struct {
	DataDir           string           `json:"data_dir,omitempty"`
	Listen            string           `json:"listen,omitempty"`
	TLSCert           string           `json:"tls_cert,omitempty"`
	TLSKey            string           `json:"tls_key,omitempty"`
	StoreDriver       string           `json:"store_driver,omitempty"`
	StoreDSN          string           `json:"store_dsn,omitempty"`
	ControlURL        string           `json:"control_url,omitempty"`
	AuthKey           string           `json:"auth_key,omitempty"`
	Hostname          string           `json:"hostname,omitempty"`
	AdminToken        string           `json:"admin_token,omitempty"` // gone; refused with a pointer to identity
	Identity          *identity.Config `json:"identity,omitempty"`
	PublicURL         string           `json:"public_url,omitempty"`
	GitHub            *githubFile      `json:"github,omitempty"`
	PolicyDir         string           `json:"policy_dir,omitempty"`
	Webhooks          []notify.Webhook `json:"webhooks,omitempty"` // secret as env:/file: reference
	PendingTimeout    string           `json:"pending_timeout,omitempty"`
	AWSEndpointURL    string           `json:"aws_endpoint_url,omitempty"`
	NetworkSealKey    string           `json:"network_seal_key,omitempty"` // file:/env: reference; the same on every broker sharing a database
	Network           *networkFile     `json:"network,omitempty"`
	HeartbeatInterval string           `json:"heartbeat_interval,omitempty"`
}

// networkFile is the broker config's "network" section.
type networkFile struct {
	// PrivateDomain is the vendor's domain for private ingress hostnames;
	// private ingress is refused without it.
	PrivateDomain string `json:"private_domain,omitempty"`
}

// githubFile is the broker config's "github" section.
type githubFile struct {
	BaseURL string `json:"base_url,omitempty"`
	Token   string `json:"token,omitempty"` // env:/file: reference
	App     *struct {
		AppID          int64  `json:"app_id"`
		InstallationID int64  `json:"installation_id"`
		PrivateKey     string `json:"private_key"` // env:/file: reference to the PEM
	} `json:"app,omitempty"`
	Org      string   `json:"org"`
	Teams    []string `json:"teams,omitempty"`
	CacheTTL string   `json:"cache_ttl,omitempty"` // e.g. "30s"
	Comment  bool     `json:"comment,omitempty"`
}

func (g githubFile) config() (ghub.Config, error) {
	c := ghub.Config{BaseURL: g.BaseURL, Token: g.Token, Org: g.Org, Teams: g.Teams, Comment: g.Comment}
	if g.App != nil {
		c.App = &ghub.AppConfig{AppID: g.App.AppID, InstallationID: g.App.InstallationID, PrivateKeyPEM: g.App.PrivateKey}
	}
	if g.CacheTTL != "" {
		d, err := time.ParseDuration(g.CacheTTL)
		if err != nil {
			return c, fmt.Errorf("github.cache_ttl %q: want a duration such as 30s", g.CacheTTL)
		}
		c.CacheTTL = d
	}
	return c, nil
}

func (serverFile) Validate() error { return nil } // broker.Config.Validate checks the merged result

const serveUsage = `Usage: broker serve [--dev] [--data-dir DIR] [--listen HOST:PORT] [--config FILE]

Runs the broker. --dev is in the dev build only (bin/broker-dev, which
'make build' writes beside bin/broker). With --dev it starts a private
tailnet in-process on loopback and writes DIR/join.json (for agents) and
DIR/cli.json (for the CLI).
With --dev it also serves an OpenID Connect provider with dev users at
/dev/idp ('broker login --dev-user engineer@vendor.test').
Without --dev it joins a real tailnet and trusts real identity providers:
set control_url, auth_key and identity in the config file (control_url and
auth_key also as TETHER_CONTROL_URL and TETHER_AUTH_KEY; secrets as env:NAME
or file:PATH). See deploy/broker.example.json.`

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, opts Options) error {
	fs := cli.NewFlagSet("broker serve")
	var (
		dev         = fs.Bool("dev", false, "dev mode, in bin/broker-dev only: in-process tailnet, SQLite, bootstrap admin token")
		dataDir     = fs.String("data-dir", "", "directory for the broker's key, database and state (env TETHER_DATA_DIR)")
		listen      = fs.String("listen", "", "API address (default 127.0.0.1:8443; env TETHER_LISTEN)")
		cfgFile     = fs.String("config", "", "server configuration file (JSON)")
		tlsCert     = fs.String("tls-cert", "", "TLS certificate (PEM) for the API")
		tlsKey      = fs.String("tls-key", "", "TLS private key (PEM) for the API")
		devAddr     = fs.String("dev-addr", "", "dev mode, in bin/broker-dev only: IPv4 address the dev tailnet binds to (default 127.0.0.1)")
		heartbeat   = fs.Duration("heartbeat-interval", 0, "how often agents report (default 5s)")
		pairTTL     = fs.Duration("pairing-ttl", 0, "pairing token lifetime (default 15m)")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		privDomain  = fs.String("network-private-domain", "", "the vendor's domain for private ingress hostnames, such as aws.example.com; private ingress is refused without it (config network.private_domain; env TETHER_NETWORK_PRIVATE_DOMAIN)")
		awsEndpoint = fs.String("aws-endpoint-url", "", "send network management's AWS calls here (a test endpoint such as moto_server; env TETHER_AWS_ENDPOINT_URL)")
		policyDir   = fs.String("policy-dir", "", "directory of .rego files replacing the embedded access policy; reloaded on change (env TETHER_POLICY_DIR)")
	)
	pos, err := cli.Parse(fs, args, stdout, serveUsage)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("broker serve: unexpected argument %q", pos[0])
	}
	if (*dev || *devAddr != "") && opts.Dev == nil {
		return cli.Usagef("broker serve: --dev is not in this build: the production broker links no dev tailnet or dev identity provider; run bin/broker-dev serve --dev (make build writes it; make run starts it)")
	}
	log, err := cli.NewLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	var f serverFile
	if *cfgFile != "" {
		if err := config.Load(*cfgFile, &f); err != nil {
			return err
		}
	}
	pick := func(flagVal, env, fileVal string) string {
		if flagVal != "" {
			return flagVal
		}
		if v := os.Getenv(env); v != "" {
			return v
		}
		return fileVal
	}
	cfg := broker.Config{
		DataDir:        pick(*dataDir, "TETHER_DATA_DIR", f.DataDir),
		Listen:         pick(*listen, "TETHER_LISTEN", f.Listen),
		TLSCert:        pick(*tlsCert, "TETHER_TLS_CERT", f.TLSCert),
		TLSKey:         pick(*tlsKey, "TETHER_TLS_KEY", f.TLSKey),
		StoreDriver:    pick("", "TETHER_STORE_DRIVER", f.StoreDriver),
		StoreDSN:       pick("", "TETHER_STORE_DSN", f.StoreDSN),
		ControlURL:     pick("", "TETHER_CONTROL_URL", f.ControlURL),
		AuthKey:        pick("", "TETHER_AUTH_KEY", f.AuthKey),
		Hostname:       pick("", "TETHER_HOSTNAME", f.Hostname),
		PublicURL:      pick("", "TETHER_PUBLIC_URL", f.PublicURL),
		PolicyDir:      pick(*policyDir, "TETHER_POLICY_DIR", f.PolicyDir),
		Webhooks:       f.Webhooks,
		AWSEndpointURL: pick(*awsEndpoint, "TETHER_AWS_ENDPOINT_URL", f.AWSEndpointURL),
		NetworkSealKey: pick("", "TETHER_NETWORK_SEAL_KEY", f.NetworkSealKey),
		NetworkPrivateDomain: pick(*privDomain, "TETHER_NETWORK_PRIVATE_DOMAIN", func() string {
			if f.Network == nil {
				return ""
			}
			return f.Network.PrivateDomain
		}()),
		PairingTTL: *pairTTL,
		Version:    version.Version,
		Logger:     log,
	}
	if *dev {
		cfg.Dev = opts.Dev(*devAddr)
	}
	cfg.HeartbeatInterval = *heartbeat
	if cfg.HeartbeatInterval == 0 && f.HeartbeatInterval != "" {
		if cfg.HeartbeatInterval, err = time.ParseDuration(f.HeartbeatInterval); err != nil {
			return fmt.Errorf("%s: heartbeat_interval %q: want a duration such as 5s", *cfgFile, f.HeartbeatInterval)
		}
	}
	if f.AdminToken != "" || os.Getenv("TETHER_ADMIN_TOKEN") != "" {
		return cli.Usagef("broker serve: admin_token (TETHER_ADMIN_TOKEN) is no longer accepted: people sign in with OpenID Connect; name admins by subject in identity.issuers[vendor].admins (see deploy/broker.example.json)")
	}
	if f.Identity != nil {
		cfg.Identity = *f.Identity
	}
	if f.PendingTimeout != "" {
		if cfg.PendingTimeout, err = time.ParseDuration(f.PendingTimeout); err != nil {
			return cli.Usagef("broker serve: %s: pending_timeout %q: want a duration such as 24h", *cfgFile, f.PendingTimeout)
		}
	}
	if f.GitHub != nil {
		gc, err := f.GitHub.config()
		if err != nil {
			return cli.Usagef("broker serve: %s: %v", *cfgFile, err)
		}
		cfg.GitHub = &gc
	}
	if err := cfg.Validate(); err != nil {
		return cli.Usagef("broker serve: %v", err)
	}
	b, err := broker.New(ctx, cfg)
	if err != nil {
		return err
	}
	return b.Run(ctx)
}

func deployment(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return cli.Usagef("deployment: want a subcommand: create, list, show, pairing-token or ping")
	}
	sub, args := args[0], args[1:]
	fs := cli.NewFlagSet("broker deployment " + sub)
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	var (
		tenant, name, region *string
		count                *int
	)
	var subUsage string
	switch sub {
	case "set":
		return deploymentSet(ctx, args, stdout)
	case "revoke-agent":
		return revokeAgent(ctx, args, stdout)
	case "create":
		tenant = fs.String("tenant", "", "tenant (customer) the deployment belongs to, a DNS label")
		name = fs.String("name", "", "deployment name, a DNS label unique within the tenant")
		region = fs.String("region", "", "cloud region, e.g. us-east-1 (optional)")
		subUsage = "Usage: broker deployment create --tenant T --name N [--region R] [--output table|json]"
	case "list":
		subUsage = "Usage: broker deployment list [--output table|json]"
	case "show":
		subUsage = "Usage: broker deployment show ID|TENANT/NAME [--output table|json]"
	case "pairing-token":
		subUsage = "Usage: broker deployment pairing-token ID|TENANT/NAME [--output table|json]"
	case "ping":
		count = fs.Int("count", 3, "number of calls (1-100)")
		subUsage = "Usage: broker deployment ping ID|TENANT/NAME [--count N] [--output table|json]"
	default:
		return cli.Usagef("unknown command 'deployment %s': want create, list, show, set, pairing-token, revoke-agent or ping", sub)
	}
	pos, err := cli.Parse(fs, args, stdout, subUsage)
	if err != nil {
		return err
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	wantArgs := 0
	if sub == "show" || sub == "pairing-token" || sub == "ping" {
		wantArgs = 1
	}
	if len(pos) != wantArgs {
		if wantArgs == 0 {
			return cli.Usagef("broker deployment %s: unexpected argument %q", sub, pos[0])
		}
		return cli.Usagef("broker deployment %s: want exactly one deployment, as an ID or TENANT/NAME", sub)
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	asJSON := *output == "json"
	switch sub {
	case "create":
		if *tenant == "" || *name == "" {
			return cli.Usagef("broker deployment create: --tenant and --name are required")
		}
		res, err := c.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: *tenant, Name: *name, Region: *region})
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, res)
		}
		fmt.Fprintf(stdout, "Created deployment %s/%s (id %s).\n", res.Deployment.Tenant, res.Deployment.Name, res.Deployment.ID)
		printToken(stdout, res.Pairing)
		return nil
	case "list":
		ds, err := c.ListDeployments(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, brokerapi.ListDeploymentsResponse{Deployments: ds})
		}
		printTable(stdout, ds)
		return nil
	case "show":
		d, err := c.GetDeployment(ctx, pos[0])
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, d)
		}
		printDeployment(stdout, d)
		return nil
	case "pairing-token":
		t, err := c.NewPairingToken(ctx, pos[0])
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, t)
		}
		printToken(stdout, t)
		return nil
	default: // ping
		res, err := c.Ping(ctx, pos[0], *count)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, res)
		}
		fmt.Fprintf(stdout, "agent %s (version %s) answered %d signed calls over the tailnet: %s\n", res.AgentID, res.Version, len(res.RTTs), strings.Join(res.RTTs, " "))
		return nil
	}
}

func info(ctx context.Context, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker info")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker info [--output table|json]")
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("broker info: unexpected argument %q", pos[0])
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	bi, err := c.Broker(ctx)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(stdout, bi)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Version:\t%s\n", bi.Version)
	fmt.Fprintf(tw, "Control URL:\t%s\n", bi.ControlURL)
	fmt.Fprintf(tw, "Broker name:\t%s\n", bi.TailnetName)
	fmt.Fprintf(tw, "Broker key:\t%s\n", bi.BrokerKey)
	tw.Flush()
	return nil
}

// client reads the CLI config (--config, $TETHER_CONFIG or the user's
// default), renewing its login first when it is about to expire.
func client(ctx context.Context, flagPath string) (*brokerapi.Client, error) {
	path := configPath(flagPath)
	var c config.CLI
	if err := config.Load(path, &c); err != nil {
		if errors.Is(err, os.ErrNotExist) && flagPath == "" && os.Getenv("TETHER_CONFIG") == "" {
			return nil, cli.Usagef("no CLI config at %s: run 'broker login --api-url https://BROKER', or pass --config FILE / set TETHER_CONFIG (a dev broker writes DATA_DIR/cli.json)", path)
		}
		return nil, err
	}
	if c.Login == nil && c.Token == "" {
		return nil, cli.Usagef("not logged in: run 'broker login' (%s holds no credentials)", path)
	}
	if err := refreshLogin(ctx, path, &c); err != nil {
		return nil, err
	}
	return brokerapi.NewClient(c)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printToken(w io.Writer, t brokerapi.PairingToken) {
	fmt.Fprintf(w, "Pairing token (single use, expires %s):\n\n    %s\n\n", t.ExpiresAt.Local().Format(time.RFC3339), t.Token)
	// The hint keeps the token off the agent's command line, where any
	// local user could read it in ps.
	fmt.Fprint(w, "Pair the agent: put the token in a file only the agent can read (mode 0600), then run\n    agent run --join JOIN.json --pairing-token file:TOKEN_FILE --state-dir DIR\n")
}

func lastSeen(d brokerapi.Deployment) string {
	if d.Agent == nil || d.Agent.LastSeen == nil {
		return "-"
	}
	return time.Since(*d.Agent.LastSeen).Round(time.Second).String() + " ago"
}

func printTable(w io.Writer, ds []brokerapi.Deployment) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tNAME\tREGION\tAGENT\tLAST SEEN\tVERSION\tID")
	for _, d := range ds {
		ver := "-"
		if d.Agent != nil && d.Agent.Version != "" {
			ver = d.Agent.Version
		}
		status := d.AgentStatus
		if d.Agent != nil && d.Agent.WitnessRefusal != "" {
			status += ", " + witnessRefuses(d.Agent.WitnessRefusal)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Tenant, d.Name, orDash(d.Region), status, lastSeen(d), ver, d.ID)
	}
	tw.Flush()
}

func printDeployment(w io.Writer, d brokerapi.Deployment) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Deployment:\t%s/%s\n", d.Tenant, d.Name)
	fmt.Fprintf(tw, "ID:\t%s\n", d.ID)
	fmt.Fprintf(tw, "Region:\t%s\n", orDash(d.Region))
	fmt.Fprintf(tw, "Created:\t%s\n", d.CreatedAt.Local().Format(time.RFC3339))
	fmt.Fprintf(tw, "Agent:\t%s\n", d.AgentStatus)
	if a := d.Agent; a != nil {
		fmt.Fprintf(tw, "  ID:\t%s\n", a.ID)
		fmt.Fprintf(tw, "  Tailnet node:\t%s (%s)\n", a.Node, a.NodeID)
		fmt.Fprintf(tw, "  Tailnet IP:\t%s\n", orDash(a.TailnetIP))
		fmt.Fprintf(tw, "  Paired:\t%s\n", a.PairedAt.Local().Format(time.RFC3339))
		fmt.Fprintf(tw, "  Last seen:\t%s\n", lastSeen(d))
		fmt.Fprintf(tw, "  Version:\t%s\n", orDash(a.Version))
		fmt.Fprintf(tw, "  Uptime:\t%s\n", orDash(a.Uptime))
		if a.WitnessRefusal != "" {
			fmt.Fprintf(tw, "  Witness:\t%s: the agent refuses every data-plane call\n", witnessRefuses(a.WitnessRefusal))
			fmt.Fprintf(tw, "  Why:\t%s\n", a.WitnessRefusal)
		}
	}
	tw.Flush()
}

// witnessRefuses is the short form of an agent's witness refusal,
// "witness refuses: log rewritten": the reason up to its first colon.
func witnessRefuses(reason string) string {
	short, _, _ := strings.Cut(reason, ":")
	return "witness refuses: " + short
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ticket(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return cli.Usagef("ticket: want 'broker ticket check OWNER/REPO#N'")
	}
	fs := cli.NewFlagSet("broker ticket check")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG, else ~/.config/tether/cli.json)")
	output := fs.String("output", "table", "output format: table or json")
	pos, err := cli.Parse(fs, args[1:], stdout, "Usage: broker ticket check OWNER/REPO#N [--output table|json]\n\nAsks the broker to verify a ticket at GitHub: it must exist, be an issue (not a pull\nrequest) and be open. Prints its labels and assignees, which policy sees.")
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cli.Usagef("broker ticket check: want exactly one ticket, as OWNER/REPO#N")
	}
	if _, err := ghub.ParseTicketRef(pos[0]); err != nil {
		return cli.Usagef("broker ticket check: %v", err)
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	t, err := c.Ticket(ctx, pos[0])
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(stdout, t)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Ticket:\t%s (%s)\n", t.Ref, t.State)
	fmt.Fprintf(tw, "Title:\t%s\n", t.Title)
	fmt.Fprintf(tw, "URL:\t%s\n", t.URL)
	fmt.Fprintf(tw, "Labels:\t%s\n", orDash(strings.Join(t.Labels, ", ")))
	fmt.Fprintf(tw, "Assignees:\t%s\n", orDash(strings.Join(t.Assignees, ", ")))
	return tw.Flush()
}
