// Package brokercli is the broker binary's command line: 'broker serve'
// runs the server, the other commands are a client of its API.
package brokercli

import (
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/internal/version"
)

// brokerCLI is the broker's command line: one struct per command, its
// flags and arguments in kong's tags. Aliases are the plurals people type.
type brokerCLI struct {
	Serve      serveCmd      `cmd:"" help:"run the broker (--dev, in bin/broker-dev only, for a self-contained dev setup)"`
	Login      loginCmd      `cmd:"" help:"sign in with your identity provider (--dev-user EMAIL on a dev broker)"`
	Logout     logoutCmd     `cmd:"" help:"remove your login's tokens from the CLI config"`
	Whoami     whoamiCmd     `cmd:"" help:"show who the broker takes you for: subject, issuer, tenant, roles"`
	Deployment deploymentCmd `cmd:"" aliases:"deployments" help:"create, list, show, configure and pair deployments"`
	Network    networkCmd    `cmd:"" help:"VPC peering and private ingress, planned and approved"`
	Ticket     ticketCmd     `cmd:"" help:"verify a GitHub ticket as a request would"`
	Request    requestCmd    `cmd:"" aliases:"requests" help:"ask for, review and end access"`
	Permit     permitCmd     `cmd:"" aliases:"permits" help:"the customer's standing permits: list, create, sign, revoke"`
	Query      queryCmd      `cmd:"" help:"run SQL on the deployment's ClickHouse system tables under your grant"`
	Prom       promCmd       `cmd:"" help:"query the deployment's Prometheus under your grant (--range for a range query)"`
	Proxy      proxyCmd      `cmd:"" help:"serve the deployment's ClickHouse or Prometheus on a loopback port (for curl, Grafana)"`
	Policy     policyCmd     `cmd:"" help:"evaluate the access policy locally"`
	Info       infoCmd       `cmd:"" help:"print what an agent needs to join: control URL, broker name and key"`
	Audit      auditCmd      `cmd:"" help:"search, replay, export and verify the audit log (for security reviewers)"`
	Version    versionCmd    `cmd:"" help:"print the version"`
	HelpCmd    cli.HelpCmd   `cmd:"" name:"help" help:"show the help of a command, such as 'broker help request create'"`
}

const description = `Tether broker: just-in-time, customer-approved access to BYOC deployments.

Client commands read the CLI config from --config FILE, $TETHER_CONFIG or
~/.config/tether/cli.json (a dev broker writes DATA_DIR/cli.json, holding its
bootstrap admin token; 'broker login' adds your own login to it). Commands
that print take --output table|json (-o).`

// env is what every command runs with.
type env struct {
	ctx            context.Context
	stdin          io.Reader
	stdout, stderr io.Writer
	opts           Options
}

// clientFlags is the flag of every command that calls the broker.
type clientFlags struct {
	Config string `placeholder:"FILE" help:"CLI config file (default $TETHER_CONFIG, else ~/.config/tether/cli.json)"`
}

// client returns a client of the broker the CLI config names.
func (f clientFlags) client(ctx context.Context) (*brokerapi.Client, error) {
	return client(ctx, f.Config)
}

// outputFlag is the flag of every command that prints a result.
type outputFlag struct {
	Output string `short:"o" default:"table" placeholder:"FORMAT" help:"output format: table or json"`
}

func (f outputFlag) check() error { return cli.CheckOutput(f.Output, "table", "json") }

func (f outputFlag) json() bool { return f.Output == "json" }

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
	return run(ctx, args, os.Stdin, stdout, stderr, opts)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, opts Options) error {
	k, err := newParser(&brokerCLI{}, stdout, stderr, &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, opts: opts})
	if err != nil {
		return err
	}
	return cli.Run(k, args)
}

// newParser builds the broker's command line, parsing into g; e is bound
// to each command's Run.
func newParser(g *brokerCLI, stdout, stderr io.Writer, e *env) (*kong.Kong, error) {
	return cli.New("broker", description, g, stdout, stderr, kong.Bind(e),
		kong.Vars{"states": strings.Join(knownStates, ", ")})
}

type versionCmd struct{}

func (versionCmd) Run(e *env) error {
	fmt.Fprintln(e.stdout, "broker", version.Version)
	return nil
}

// serverConfig is the broker server's configuration, declared once: the
// json tag names a setting in the config file (serve --config), env its
// environment variable, and each field kong does not skip is also a flag
// of 'broker serve'. A flag wins over the environment and the
// environment over the file; [serverConfig.overlay] is the one place
// that order is applied. Secrets are in the file or the environment
// only, as env:NAME or file:PATH references, never flags.
type serverConfig struct {
	DataDir           string        `json:"data_dir,omitempty" env:"TETHER_DATA_DIR" placeholder:"DIR" help:"directory for the broker's key, database and state"`
	Listen            string        `json:"listen,omitempty" env:"TETHER_LISTEN" placeholder:"HOST:PORT" help:"API address (default 127.0.0.1:8443)"`
	TLSCert           string        `json:"tls_cert,omitempty" env:"TETHER_TLS_CERT" name:"tls-cert" placeholder:"FILE" help:"TLS certificate (PEM) for the API"`
	TLSKey            string        `json:"tls_key,omitempty" env:"TETHER_TLS_KEY" name:"tls-key" placeholder:"FILE" help:"TLS private key (PEM) for the API"`
	HeartbeatInterval duration      `json:"heartbeat_interval,omitempty" name:"heartbeat-interval" placeholder:"DURATION" help:"how often agents report (default 5s)"`
	PolicyDir         string        `json:"policy_dir,omitempty" env:"TETHER_POLICY_DIR" name:"policy-dir" placeholder:"DIR" help:"directory of .rego files replacing the embedded access policy; reloaded on change"`
	AWSEndpointURL    string        `json:"aws_endpoint_url,omitempty" env:"TETHER_AWS_ENDPOINT_URL" name:"aws-endpoint-url" placeholder:"URL" help:"send network management's AWS calls here (a test endpoint such as moto_server)"`
	Network           networkConfig `json:"network,omitempty" embed:"" prefix:"network-"`

	// The file and the environment only.
	StoreDriver    string           `json:"store_driver,omitempty" env:"TETHER_STORE_DRIVER" kong:"-"`
	StoreDSN       string           `json:"store_dsn,omitempty" env:"TETHER_STORE_DSN" kong:"-"`
	ControlURL     string           `json:"control_url,omitempty" env:"TETHER_CONTROL_URL" kong:"-"`
	AuthKey        string           `json:"auth_key,omitempty" env:"TETHER_AUTH_KEY" kong:"-"`
	Hostname       string           `json:"hostname,omitempty" env:"TETHER_HOSTNAME" kong:"-"`
	TailnetTags    []string         `json:"tailnet_tags,omitempty" kong:"-"`
	SigningKey     string           `json:"signing_key,omitempty" env:"TETHER_SIGNING_KEY" kong:"-"` // env:/file: reference; the same on every broker sharing a database
	PublicURL      string           `json:"public_url,omitempty" env:"TETHER_PUBLIC_URL" kong:"-"`
	NetworkSealKey string           `json:"network_seal_key,omitempty" env:"TETHER_NETWORK_SEAL_KEY" kong:"-"` // the same on every broker sharing a database
	AdminToken     string           `json:"admin_token,omitempty" env:"TETHER_ADMIN_TOKEN" kong:"-"`           // gone; refused with a pointer to identity
	Identity       *identity.Config `json:"identity,omitempty" kong:"-"`
	GitHub         *githubFile      `json:"github,omitempty" kong:"-"`
	Webhooks       []notify.Webhook `json:"webhooks,omitempty" kong:"-"` // secret as env:/file: reference
	Email          *notify.Email    `json:"email,omitempty" kong:"-"`    // password as env:/file: reference
	PendingTimeout duration         `json:"pending_timeout,omitempty" kong:"-"`
}

// networkConfig is the broker config's "network" section.
type networkConfig struct {
	// PrivateDomain is the vendor's domain for private ingress hostnames;
	// private ingress is refused without it.
	PrivateDomain string `json:"private_domain,omitempty" env:"TETHER_NETWORK_PRIVATE_DOMAIN" name:"private-domain" placeholder:"DOMAIN" help:"the vendor's domain for private ingress hostnames, such as aws.example.com; private ingress is refused without it (config network.private_domain)"`
}

func (serverConfig) Validate() error { return nil } // broker.Config.Validate checks the merged result

// duration is a time.Duration written as "30s" in the config file, the
// environment and flags alike.
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q: want a duration such as 30s", b)
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// overlay sets on c, read from the config file, the settings given in
// the environment and then those given as flags (in flags, which kong
// filled): flag > env > file. A setting counts as given when it is not
// empty.
func (c *serverConfig) overlay(flags *serverConfig, getenv func(string) string) error {
	return overlay(reflect.ValueOf(c).Elem(), reflect.ValueOf(flags).Elem(), getenv)
}

func overlay(dst, flags reflect.Value, getenv func(string) string) error {
	t := dst.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		d, fl := dst.Field(i), flags.Field(i)
		if f.Type.Kind() == reflect.Struct {
			if err := overlay(d, fl, getenv); err != nil {
				return err
			}
			continue
		}
		if name := f.Tag.Get("env"); name != "" {
			if v := getenv(name); v != "" {
				switch {
				case reflect.PointerTo(f.Type).Implements(textUnmarshaler):
					if err := d.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(v)); err != nil {
						return fmt.Errorf("$%s: %w", name, err)
					}
				case f.Type.Kind() == reflect.String:
					d.SetString(v)
				default:
					return fmt.Errorf("$%s: %s is not a setting the environment can hold", name, f.Name)
				}
			}
		}
		if f.Tag.Get("kong") != "-" && !fl.IsZero() {
			d.Set(fl)
		}
	}
	return nil
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

type serveCmd struct {
	Config       string        `placeholder:"FILE" help:"server configuration file (JSON); see deploy/broker.example.json"`
	Dev          bool          `help:"dev mode, in bin/broker-dev only: in-process tailnet, SQLite, bootstrap admin token"`
	DevAddr      string        `name:"dev-addr" placeholder:"IP" help:"dev mode, in bin/broker-dev only: IPv4 address the dev tailnet binds to (default 127.0.0.1)"`
	PairingTTL   time.Duration `name:"pairing-ttl" placeholder:"DURATION" help:"pairing token lifetime (default 15m)"`
	LogLevel     string        `default:"info" placeholder:"LEVEL" help:"debug, info, warn or error"`
	serverConfig `embed:""`
}

func (serveCmd) Help() string {
	return `Runs the broker. --dev is in the dev build only (bin/broker-dev, which
'make build' writes beside bin/broker). With --dev it starts a private
tailnet in-process on loopback and writes DIR/join.json (for agents) and
DIR/cli.json (for the CLI). With --dev it also serves an OpenID Connect
provider with dev users at /dev/idp ('broker login --dev-user
engineer@vendor.test').

Without --dev it joins a real tailnet and trusts real identity providers:
set control_url, auth_key and identity in the config file (control_url and
auth_key also as TETHER_CONTROL_URL and TETHER_AUTH_KEY; secrets as env:NAME
or file:PATH). See deploy/broker.example.json.

Every setting is taken from its flag, else its TETHER_* environment
variable, else the config file (docs/cli.md lists them).`
}

// brokerConfig merges the flags, the environment and the config file
// into the broker's configuration.
func (c *serveCmd) brokerConfig(getenv func(string) string) (broker.Config, error) {
	var f serverConfig
	if c.Config != "" {
		if err := config.Load(c.Config, &f); err != nil {
			return broker.Config{}, err
		}
	}
	if err := f.overlay(&c.serverConfig, getenv); err != nil {
		return broker.Config{}, cli.Usagef("broker serve: %v", err)
	}
	if f.AdminToken != "" {
		return broker.Config{}, cli.Usagef("broker serve: admin_token (TETHER_ADMIN_TOKEN) is no longer accepted: people sign in with OpenID Connect; name admins by subject in identity.issuers[vendor].admins (see deploy/broker.example.json)")
	}
	cfg := broker.Config{
		DataDir:              f.DataDir,
		Listen:               f.Listen,
		TLSCert:              f.TLSCert,
		TLSKey:               f.TLSKey,
		StoreDriver:          f.StoreDriver,
		StoreDSN:             f.StoreDSN,
		ControlURL:           f.ControlURL,
		AuthKey:              f.AuthKey,
		Hostname:             f.Hostname,
		TailnetTags:          f.TailnetTags,
		SigningKey:           f.SigningKey,
		PublicURL:            f.PublicURL,
		PolicyDir:            f.PolicyDir,
		Webhooks:             f.Webhooks,
		Email:                f.Email,
		AWSEndpointURL:       f.AWSEndpointURL,
		NetworkSealKey:       f.NetworkSealKey,
		NetworkPrivateDomain: f.Network.PrivateDomain,
		HeartbeatInterval:    time.Duration(f.HeartbeatInterval),
		PendingTimeout:       time.Duration(f.PendingTimeout),
		PairingTTL:           c.PairingTTL,
		Version:              version.Version,
	}
	if f.Identity != nil {
		cfg.Identity = *f.Identity
	}
	if f.GitHub != nil {
		gc, err := f.GitHub.config()
		if err != nil {
			return cfg, cli.Usagef("broker serve: %s: %v", c.Config, err)
		}
		cfg.GitHub = &gc
	}
	return cfg, nil
}

func (c *serveCmd) Run(e *env) error {
	if (c.Dev || c.DevAddr != "") && e.opts.Dev == nil {
		return cli.Usagef("broker serve: --dev is not in this build: the production broker links no dev tailnet or dev identity provider; run bin/broker-dev serve --dev (make build writes it; make run starts it)")
	}
	log, err := cli.NewLogger(e.stderr, c.LogLevel)
	if err != nil {
		return err
	}
	cfg, err := c.brokerConfig(os.Getenv)
	if err != nil {
		return err
	}
	cfg.Logger = log
	if c.Dev {
		cfg.Dev = e.opts.Dev(c.DevAddr)
	}
	if err := cfg.Validate(); err != nil {
		return cli.Usagef("broker serve: %v", err)
	}
	b, err := broker.New(e.ctx, cfg)
	if err != nil {
		return err
	}
	return b.Run(e.ctx)
}

// deploymentCmd is 'broker deployment'.
type deploymentCmd struct {
	Create       deploymentCreateCmd `cmd:"" help:"create a deployment and print its one-time pairing token"`
	List         deploymentListCmd   `cmd:"" help:"list deployments and their agents"`
	Show         deploymentShowCmd   `cmd:"" help:"show one deployment"`
	Set          deploymentSetCmd    `cmd:"" help:"change a deployment's vendor settings: labels (admins)"`
	Freeze       windowsCmd          `cmd:"" help:"the customer's change-freeze windows: list, add, remove (approvers change them)"`
	Maintenance  windowsCmd          `cmd:"" help:"the customer's maintenance windows: list, add, remove (approvers change them)"`
	PairingToken deploymentTokenCmd  `cmd:"" help:"issue a new pairing token (to re-pair an agent)"`
	RevokeAgent  revokeAgentCmd      `cmd:"" help:"cut the deployment's agent off at once"`
	Ping         deploymentPingCmd   `cmd:"" help:"call the deployment's agent over the tailnet"`
	HelpCmd      cli.HelpCmd         `cmd:"" name:"help" hidden:""`
}

type deploymentCreateCmd struct {
	Tenant string `placeholder:"T" help:"tenant (customer) the deployment belongs to, a DNS label (required)"`
	Name   string `placeholder:"N" help:"deployment name, a DNS label unique within the tenant (required)"`
	Region string `placeholder:"R" help:"cloud region, e.g. us-east-1 (optional)"`
	clientFlags
	outputFlag
}

func (c *deploymentCreateCmd) Run(e *env) error {
	if err := c.check(); err != nil {
		return err
	}
	if c.Tenant == "" || c.Name == "" {
		return cli.Usagef("broker deployment create: --tenant and --name are required")
	}
	cl, err := c.client(e.ctx)
	if err != nil {
		return err
	}
	res, err := cl.CreateDeployment(e.ctx, brokerapi.CreateDeploymentRequest{Tenant: c.Tenant, Name: c.Name, Region: c.Region})
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "Created deployment %s/%s (id %s).\n", res.Deployment.Tenant, res.Deployment.Name, res.Deployment.ID)
	printToken(e.stdout, res.Pairing)
	return nil
}

type deploymentListCmd struct {
	clientFlags
	outputFlag
}

func (c *deploymentListCmd) Run(e *env) error {
	if err := c.check(); err != nil {
		return err
	}
	cl, err := c.client(e.ctx)
	if err != nil {
		return err
	}
	ds, err := cl.ListDeployments(e.ctx)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(e.stdout, brokerapi.ListDeploymentsResponse{Deployments: ds})
	}
	printTable(e.stdout, ds)
	return nil
}

// deploymentArg is the one deployment a command acts on.
type deploymentArg struct {
	Deployment string `arg:"" name:"deployment" placeholder:"ID|TENANT/NAME" help:"the deployment, as its ID or TENANT/NAME"`
}

func (deploymentArg) ArgsError(cmd string) error {
	return cli.Usagef("%s: want exactly one deployment, as an ID or TENANT/NAME", cmd)
}

type deploymentShowCmd struct {
	deploymentArg
	clientFlags
	outputFlag
}

func (c *deploymentShowCmd) Run(e *env) error {
	if err := c.check(); err != nil {
		return err
	}
	cl, err := c.client(e.ctx)
	if err != nil {
		return err
	}
	d, err := cl.GetDeployment(e.ctx, c.Deployment)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(e.stdout, d)
	}
	printDeployment(e.stdout, d)
	return nil
}

type deploymentTokenCmd struct {
	deploymentArg
	clientFlags
	outputFlag
}

func (c *deploymentTokenCmd) Run(e *env) error {
	if err := c.check(); err != nil {
		return err
	}
	cl, err := c.client(e.ctx)
	if err != nil {
		return err
	}
	t, err := cl.NewPairingToken(e.ctx, c.Deployment)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(e.stdout, t)
	}
	printToken(e.stdout, t)
	return nil
}

type deploymentPingCmd struct {
	deploymentArg
	Count int `default:"3" placeholder:"N" help:"number of calls (1-100)"`
	clientFlags
	outputFlag
}

func (c *deploymentPingCmd) Run(e *env) error {
	if err := c.check(); err != nil {
		return err
	}
	cl, err := c.client(e.ctx)
	if err != nil {
		return err
	}
	res, err := cl.Ping(e.ctx, c.Deployment, c.Count)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "agent %s (version %s) answered %d signed calls over the tailnet: %s\n", res.AgentID, res.Version, len(res.RTTs), strings.Join(res.RTTs, " "))
	return nil
}

type infoCmd struct {
	clientFlags
	outputFlag
}

func (c *infoCmd) Run(e *env) error {
	if err := c.check(); err != nil {
		return err
	}
	cl, err := c.client(e.ctx)
	if err != nil {
		return err
	}
	bi, err := cl.Broker(e.ctx)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(e.stdout, bi)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
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
	_, c, err := clientConfig(ctx, flagPath)
	return c, err
}

// clientConfig is [client], also returning the CLI config it used.
func clientConfig(ctx context.Context, flagPath string) (config.CLI, *brokerapi.Client, error) {
	path := configPath(flagPath)
	var c config.CLI
	if err := config.Load(path, &c); err != nil {
		if errors.Is(err, os.ErrNotExist) && flagPath == "" && os.Getenv("TETHER_CONFIG") == "" {
			return c, nil, cli.Usagef("no CLI config at %s: run 'broker login --api-url https://BROKER', or pass --config FILE / set TETHER_CONFIG (a dev broker writes DATA_DIR/cli.json)", path)
		}
		return c, nil, err
	}
	if c.Login == nil && c.Token == "" {
		return c, nil, cli.Usagef("not logged in: run 'broker login' (%s holds no credentials)", path)
	}
	if err := refreshLogin(ctx, path, &c); err != nil {
		return c, nil, err
	}
	bc, err := brokerapi.NewClient(c)
	return c, bc, err
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
		if d.Agent != nil && d.Agent.Clock != nil && d.Agent.Clock.Status != brokerapi.ClockOK {
			status += ", clock skew: " + d.Agent.Clock.Summary
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
		if c := a.Clock; c != nil {
			fmt.Fprintf(tw, "  Clock:\t%s\n", c.Summary)
			if c.Warning != "" {
				fmt.Fprintf(tw, "  Warning:\t%s\n", c.Warning)
			}
		}
		if a.CustomerApproval != "" {
			// Untabbed, the line keeps its exact words.
			fmt.Fprintf(tw, "  %s\n", a.CustomerApproval)
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

// ticketCmd is 'broker ticket'.
type ticketCmd struct {
	Check   ticketCheckCmd `cmd:"" help:"verify a GitHub ticket as a request would: exists, an issue, open"`
	HelpCmd cli.HelpCmd    `cmd:"" name:"help" hidden:""`
}

type ticketCheckCmd struct {
	Ticket string `arg:"" placeholder:"OWNER/REPO#N" help:"the ticket, a GitHub issue"`
	clientFlags
	outputFlag
}

func (ticketCheckCmd) Help() string {
	return `Asks the broker to verify a ticket at GitHub: it must exist, be an issue (not a pull
request) and be open. Prints its labels and assignees, which policy sees.`
}

func (ticketCheckCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want exactly one ticket, as OWNER/REPO#N", cmd)
}

func (c *ticketCheckCmd) Run(e *env) error {
	if _, err := ghub.ParseTicketRef(c.Ticket); err != nil {
		return cli.Usagef("broker ticket check: %v", err)
	}
	if err := c.check(); err != nil {
		return err
	}
	cl, err := c.client(e.ctx)
	if err != nil {
		return err
	}
	t, err := cl.Ticket(e.ctx, c.Ticket)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(e.stdout, t)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Ticket:\t%s (%s)\n", t.Ref, t.State)
	fmt.Fprintf(tw, "Title:\t%s\n", t.Title)
	fmt.Fprintf(tw, "URL:\t%s\n", t.URL)
	fmt.Fprintf(tw, "Labels:\t%s\n", orDash(strings.Join(t.Labels, ", ")))
	fmt.Fprintf(tw, "Assignees:\t%s\n", orDash(strings.Join(t.Assignees, ", ")))
	return tw.Flush()
}
