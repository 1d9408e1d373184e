// Package broker is Tether's control-plane server: the HTTP JSON API that
// operators and engineers use, the agent API it serves on its own tailnet
// node, pairing, agent sessions and heartbeats. Dev mode (a private
// tailnet and identity provider in-process) is plugged in through
// [DevEnv] by the dev build only (package devbroker, cmd/broker-dev).
package broker

import (
	"context"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/internal/groupcommit"
	"github.com/tetherhq/tether/internal/names"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/access"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/netaccess"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/pgstore"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
	"github.com/tetherhq/tether/internal/tailnet"
	"github.com/tetherhq/tether/internal/weblogin"
	"github.com/tetherhq/tether/policy"
)

// Config configures a broker. The zero value plus DataDir and Dev is a
// working dev broker.
type Config struct {
	// Dev, when set, runs the dev preset it provides: an in-process
	// tailnet, an embedded OpenID Connect provider with dev users, SQLite
	// in DataDir, a bootstrap admin token written to DataDir/cli.json and
	// a join file for agents in DataDir/join.json. Only the dev build sets
	// it (package devbroker); nil in production.
	Dev DevEnv
	// DataDir holds the broker's key, SQLite database, tailnet state and
	// audit log. Required.
	DataDir string
	// Listen is the API's TCP address; default 127.0.0.1:8443.
	Listen string
	// TLSCert and TLSKey, both or neither, serve the API over TLS.
	TLSCert, TLSKey string
	// StoreDriver is "sqlite" (default) or "postgres".
	StoreDriver string
	// StoreDSN is the PostgreSQL connection string (literal or env:/file:
	// reference); for SQLite it is the database path, default
	// DataDir/tether.db.
	StoreDSN string
	// ControlURL and AuthKey (literal or reference) join a real tailnet
	// (Tailscale or Headscale). Ignored in dev mode.
	ControlURL, AuthKey string
	// Hostname is the broker's tailnet hostname; default tether-broker.
	// Brokers sharing a store each need their own.
	Hostname string
	// TailnetTags are ACL tags the broker's tailnet node asks for, such as
	// tag:tether-broker, for agents to find every broker by (agent run
	// --broker-tag). The control server's policy decides.
	TailnetTags []string
	// SigningKey is an env:NAME or file:PATH reference to the broker's
	// Ed25519 seed (64 hex digits). Brokers sharing a store need the same
	// key: agents pin it, and the audit log is signed with it. Empty means
	// DataDir/broker.key, created (mode 0600) on first start.
	SigningKey string
	// Identity lists the OpenID Connect issuers whose ID tokens the API
	// accepts: the vendor's and one per customer tenant. Required outside
	// dev mode; admins are named there by subject. Ignored in dev mode,
	// which trusts its embedded provider only.
	Identity identity.Config
	// GitHub, when set, verifies the tickets requests cite and looks up
	// engineers' teams. Token and App.PrivateKeyPEM may be env:/file:
	// references.
	GitHub *ghub.Config
	// PolicyDir, when set, holds the access policy (.rego files) instead
	// of the embedded default; it is reloaded when it changes, and a broken
	// policy never replaces a working one.
	PolicyDir string
	// Webhooks notify each customer of its deployments' requests (secrets
	// as env:/file: references).
	Webhooks []notify.Webhook
	// Email, if set, also notifies each customer's recipients by e-mail
	// (its Password is an env:/file: reference).
	Email *notify.Email
	// AWSEndpointURL, when set, sends every AWS call of network
	// management there (a test endpoint such as moto_server). The broker's
	// own AWS credentials come from the environment, as for any AWS SDK
	// program.
	AWSEndpointURL string
	// NetworkPrivateDomain (network.private_domain in the config file) is
	// the vendor's DNS domain: private ingress makes hosted zones in
	// customers' VPCs only for names under it, never under an AWS domain.
	// Empty refuses every private ingress.
	NetworkPrivateDomain string
	// NetworkSealKey is a file:PATH or env:NAME reference to the 32-byte
	// key (hex or base64) that seals the external IDs of registered
	// network roles. Brokers sharing a database need the same one. Empty
	// means DataDir/network-seal.key, created (mode 0600) on first start.
	NetworkSealKey string
	// PendingTimeout is how long a request waits for its reviews; default
	// 24h.
	PendingTimeout time.Duration
	// LifecycleInterval is how often pending requests are timed out and
	// grants expired; default 500ms.
	LifecycleInterval time.Duration
	// PublicURL is the API's address as browsers reach it (behind a proxy,
	// say), for the web login's redirect; default the bound address.
	PublicURL string
	// HeartbeatInterval is how often agents report; default 5s. An agent
	// is offline after three missed beats.
	HeartbeatInterval time.Duration
	// PairingTTL is how long a pairing token is valid; default 15m.
	PairingTTL time.Duration
	// StartTimeout bounds joining the tailnet; default 60s.
	StartTimeout time.Duration
	// MaxAgentAnswer bounds the bytes the broker relays from one agent
	// answer, whatever the agent says its own limits are; default 4 GiB.
	// A longer answer is cut off, reported as incomplete and audited.
	MaxAgentAnswer int64
	// AgentTransport, when set, carries the agent API instead of the
	// broker's tailnet node (see [AgentTransport]). Only the agent load
	// test sets it; nil in every binary.
	AgentTransport AgentTransport
	// Version is reported to clients.
	Version string
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// Now is the broker's clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8443"
	}
	if c.StoreDriver == "" {
		c.StoreDriver = "sqlite"
	}
	if c.Hostname == "" {
		c.Hostname = "tether-broker"
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.PairingTTL == 0 {
		c.PairingTTL = 15 * time.Minute
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 60 * time.Second
	}
	if c.MaxAgentAnswer <= 0 {
		c.MaxAgentAnswer = 4 << 30
	}
	if c.PendingTimeout == 0 {
		c.PendingTimeout = DefaultPendingTimeout
	}
	if c.LifecycleInterval == 0 {
		c.LifecycleInterval = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Version == "" {
		c.Version = "dev"
	}
}

// Validate reports the first problem with c, after defaults are applied.
func (c Config) Validate() error {
	c.setDefaults()
	if c.DataDir == "" {
		return errors.New("data dir is not set: want --data-dir DIR (or TETHER_DATA_DIR)")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen address %q: want HOST:PORT such as 127.0.0.1:8443", c.Listen)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
	}
	if host, _, _ := net.SplitHostPort(c.Listen); c.Dev != nil && !isLoopback(host) {
		return fmt.Errorf("listen address %s is not loopback, and a dev broker's identity provider signs anyone in as any user, admin included: listen on 127.0.0.1 (--listen 127.0.0.1:8443), or run without --dev", c.Listen)
	}
	if host, _, _ := net.SplitHostPort(c.Listen); c.Dev == nil && c.TLSCert == "" && !isLoopback(host) {
		return fmt.Errorf("listen address %s is not loopback and TLS is off: bearer tokens would cross the network in clear; give tls_cert and tls_key, or listen on 127.0.0.1 behind a TLS-terminating proxy", c.Listen)
	}
	switch c.StoreDriver {
	case "sqlite":
	case "postgres":
		if c.StoreDSN == "" {
			return errors.New("store driver postgres needs a DSN (store_dsn or TETHER_STORE_DSN), e.g. env:TETHER_PG_DSN")
		}
	default:
		return fmt.Errorf("store driver %q: want sqlite or postgres", c.StoreDriver)
	}
	for _, t := range c.TailnetTags {
		if err := tailnet.CheckTag(t); err != nil {
			return fmt.Errorf("tailnet_tags: %w", err)
		}
	}
	if c.AWSEndpointURL != "" {
		u, err := url.Parse(c.AWSEndpointURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("AWS endpoint URL %q: want an http:// or https:// URL such as http://127.0.0.1:5000 (moto_server), or leave it unset for AWS itself", c.AWSEndpointURL)
		}
	}
	if c.NetworkPrivateDomain != "" {
		if err := netmgr.ValidatePrivateDomain(c.NetworkPrivateDomain); err != nil {
			return fmt.Errorf("network.private_domain: %w", err)
		}
	}
	if c.GitHub != nil {
		if err := c.GitHub.Validate(); err != nil {
			return err
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname()))) || u.Host == "" || u.RawQuery != "" {
			return fmt.Errorf("public URL %q: want the https:// address browsers reach the broker at, such as https://tether.example.com", c.PublicURL)
		}
	}
	if !names.IsLabel(c.Hostname) {
		return fmt.Errorf("tailnet hostname %q: want a DNS label (a-z, 0-9, '-')", c.Hostname)
	}
	if c.HeartbeatInterval < 100*time.Millisecond || c.HeartbeatInterval > 5*time.Minute {
		return fmt.Errorf("heartbeat interval %v: want between 100ms and 5m", c.HeartbeatInterval)
	}
	if c.PendingTimeout < time.Second || c.PendingTimeout > 7*24*time.Hour {
		return fmt.Errorf("pending timeout %v: want between 1s and 168h", c.PendingTimeout)
	}
	if c.LifecycleInterval < 10*time.Millisecond || c.LifecycleInterval > time.Minute {
		return fmt.Errorf("lifecycle interval %v: want between 10ms and 1m", c.LifecycleInterval)
	}
	if c.PairingTTL < time.Second || c.PairingTTL > 24*time.Hour {
		return fmt.Errorf("pairing token lifetime %v: want between 1s and 24h", c.PairingTTL)
	}
	if c.Dev == nil {
		u, err := url.Parse(c.ControlURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("control URL %q: outside dev mode the broker needs the tailnet's control server (control_url or TETHER_CONTROL_URL), e.g. https://controlplane.tailscale.com or your Headscale URL", c.ControlURL)
		}
		if c.AuthKey == "" {
			return errors.New("auth key is not set: outside dev mode the broker needs a tailnet pre-auth key (auth_key or TETHER_AUTH_KEY, as env:NAME or file:PATH)")
		}
		if len(c.Identity.Issuers) == 0 {
			return errors.New(`identity is not configured: outside dev mode the broker needs "identity": {"issuers": [...]} in its config file, with the vendor's OpenID Connect issuer (its admins named by subject in "admins") and one issuer per customer tenant; see deploy/broker.example.json`)
		}
		if err := c.Identity.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// brokerMetrics are the broker's own metrics (the audit log and the
// policy register theirs).
type brokerMetrics struct {
	grants prometheus.Counter
}

// Broker is a running broker.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	store store.Store
	key   ed25519.PrivateKey
	reg   *prometheus.Registry

	auditLog  *audit.Log
	auditStop context.CancelFunc
	auditDone chan struct{}
	node      *tailnet.Node
	self      tailnet.Identity

	controlURL    string
	authKey       string
	adminHash     [32]byte // SHA-256 of devAdminToken
	devAdminToken string   // dev mode only; written to cli.json

	identity identity.Config
	verifier *identity.Verifier
	devIdP   http.Handler        // dev mode only: the embedded identity provider
	devUsers []brokerapi.DevUser // dev mode only: its users, for the auth config
	web      *weblogin.Manager
	// pageURL is the web console's base, as browsers reach it: links in
	// notifications lead there.
	pageURL  string
	github   *ghub.Client // nil when not configured
	tickets  TicketSource // without GitHub: the dev preset's, if it has one (see ticketSource)
	policy   *policy.Engine
	access   *access.Service    // the request lifecycle
	notifier *notify.Notifier   // nil without webhooks
	netacc   *netaccess.Service // network registrations and changes; see netapi.go
	netSeal  cipher.AEAD        // seals registered roles' external IDs; see netreg.go
	metrics  brokerMetrics

	changeMu  sync.Mutex
	changeCh  chan struct{} // closed and replaced on every request change
	changeGen atomic.Uint64 // counts request changes
	dataMu    sync.Mutex
	dataCache map[string]dataEntry         // recent data-plane lookups; see dataTarget
	unpushed  map[string]pendingRevocation // grant ID → a revocation the agent has not heard of, the store could not record
	// lastPushRetry is when the lifecycle loop last retried the pushes
	// recorded in the store; lifecycle loop only.
	lastPushRetry time.Time
	refusals      refusalLog    // aggregated refusals and failed-authentication limits; see Broker.answer
	backlog       auditBacklog  // events of changes that stand although their audit write failed
	agentCall     agentCalls    // data-plane calls in flight per agent, cut off when it is revoked
	reserve       *storeReserve // space kept beside the store for revocations on a full disk; see storefull.go

	// settingsMu is held while deployment settings are read, checked and
	// written; see settings.go.
	settingsMu sync.Mutex

	apiLn    net.Listener
	agentLn  net.Listener
	apiURL   string
	agentHTC *http.Client // broker → agent calls over the tailnet

	// cosigs and heartbeats group-commit agents' cosignatures of the
	// audit log and their heartbeats: O(1) store writes per batch, not
	// one per agent.
	cosigs     *groupcommit.Committer[audit.Cosignature]
	heartbeats *groupcommit.Committer[store.AgentHeartbeat]

	mu sync.Mutex
}

// maxCosignBatch and maxHeartbeatBatch bound the cosignatures and the
// heartbeats one transaction stores.
const (
	maxCosignBatch    = 512
	maxHeartbeatBatch = 512
)

type session struct {
	agentID string
	nodeID  string
	expires time.Time
}

// New starts everything the broker needs — store, dev tailnet, tailnet
// node, listeners — and returns once the broker can serve. Run serves.
func New(ctx context.Context, cfg Config) (_ *Broker, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "broker"),
		now:       cfg.Now,
		changeCh:  make(chan struct{}),
		dataCache: make(map[string]dataEntry),
		unpushed:  make(map[string]pendingRevocation),
	}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if err := config.PrepareDir("data dir", cfg.DataDir); err != nil {
		return nil, err
	}
	if cfg.SigningKey != "" {
		if b.key, err = loadSigningKey(cfg.SigningKey); err != nil {
			return nil, err
		}
	} else if b.key, err = loadOrCreateKey(filepath.Join(cfg.DataDir, "broker.key")); err != nil {
		return nil, err
	}
	if b.netSeal, err = loadSealKey(cfg); err != nil {
		return nil, err
	}
	if b.store, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	b.cosigs = groupcommit.New(b.store.AddCosignatures, maxCosignBatch)
	b.heartbeats = groupcommit.New(b.store.RecordHeartbeats, maxHeartbeatBatch)
	if err := b.startAudit(ctx); err != nil {
		return nil, err
	}

	if cfg.Dev != nil {
		if err := b.startDev(ctx); err != nil {
			return nil, err
		}
	} else {
		b.controlURL = cfg.ControlURL
		if b.authKey, err = config.Secret(cfg.AuthKey); err != nil {
			return nil, fmt.Errorf("auth key: %w", err)
		}
		b.identity = cfg.Identity
	}

	upCtx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	if err := tailnet.ProbeControl(upCtx, b.controlURL); err != nil {
		return nil, err
	}
	b.node, err = tailnet.New(tailnet.Config{
		Hostname:   cfg.Hostname,
		StateDir:   filepath.Join(cfg.DataDir, "tsnet"),
		ControlURL: b.controlURL,
		AuthKey:    b.authKey,
		Logger:     cfg.Logger,

		AdvertiseTags: cfg.TailnetTags,
	})
	if err != nil {
		return nil, err
	}
	st, err := b.node.Up(upCtx)
	if err != nil {
		if upCtx.Err() != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("could not join the tailnet at %s within %v: check the control URL and the auth key", b.controlURL, cfg.StartTimeout)
		}
		return nil, err
	}
	b.self = tailnet.Identity{NodeID: st.Self.ID, Name: strings.TrimSuffix(st.Self.DNSName, ".")}
	// No overall timeout: data-plane results stream for as long as their
	// grant allows; callers bound each call with its context.
	// Agents are reached only at the address the netmap gives their
	// node, through a dialer with no fallback to the host network, and
	// no redirect is ever followed.
	tr := b.node.HTTPTransport()
	tr.ResponseHeaderTimeout = 2 * time.Minute
	b.agentHTC = &http.Client{Transport: tr, CheckRedirect: tailnet.NoRedirects}

	if b.agentLn, err = b.listenAgents(); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	if b.apiLn, err = lc.Listen(ctx, "tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	b.apiURL = scheme + "://" + b.apiLn.Addr().String()

	if cfg.Dev != nil {
		if err := b.startDevIdentity(); err != nil {
			return nil, err
		}
	}
	// The verifier discovers each issuer on its first token, so a broker
	// starts while an identity provider is down (and, in dev mode, before
	// its own embedded one serves).
	if b.verifier, err = identity.New(ctx, b.identity, identity.WithClock(b.now)); err != nil {
		return nil, err
	}
	publicURL := strings.TrimSuffix(cfg.PublicURL, "/")
	if publicURL == "" {
		publicURL = loopbackURL(b.apiURL)
	}
	b.pageURL = publicURL
	if err := b.startWebLogin(publicURL); err != nil {
		return nil, err
	}
	if cfg.GitHub != nil {
		if err := b.startGitHub(*cfg.GitHub); err != nil {
			return nil, err
		}
	}
	if err := b.startPolicy(ctx); err != nil {
		return nil, err
	}
	if ts, ok := cfg.Dev.(TicketSource); ok {
		b.tickets = ts
	}
	b.access = b.newAccess()
	b.startReserve()
	if err := b.startNotifier(); err != nil {
		return nil, err
	}
	if err := b.startNetwork(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// startAudit opens the audit log over the store, signing checkpoints with
// the broker key, and starts its writer.
func (b *Broker) startAudit(ctx context.Context) error {
	b.reg = prometheus.NewRegistry()
	b.metrics.grants = prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_grants_issued_total", Help: "Grants issued."})
	b.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), b.metrics.grants,
		newClockCollector(b), newAgentStatusCollector(b))
	signer, err := audit.NewSigner(audit.OriginFor(b.PublicKey()), b.key)
	if err != nil {
		return fmt.Errorf("audit signer: %w", err)
	}
	// The log checks the stored events against the roots its own signed
	// notes hold, at start (the newest events in full: a modified store
	// does not open) and in the background while it runs (see
	// audit.LogConfig.VerifyInterval).
	vkey, err := audit.VerifierKey(signer.Name(), b.PublicKey())
	if err != nil {
		return fmt.Errorf("audit verifier: %w", err)
	}
	verifier, err := audit.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("audit verifier: %w", err)
	}
	l, err := audit.OpenLog(ctx, audit.LogConfig{
		Storage:    b.store,
		Signer:     signer,
		Verifier:   verifier,
		Now:        b.now,
		Logger:     b.cfg.Logger,
		Registerer: b.reg,
	})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	b.auditLog, b.auditStop, b.auditDone = l, cancel, make(chan struct{})
	go func() {
		defer close(b.auditDone)
		l.Run(runCtx)
	}()
	return nil
}

func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	switch cfg.StoreDriver {
	case "postgres":
		dsn, err := config.Secret(cfg.StoreDSN)
		if err != nil {
			return nil, fmt.Errorf("store DSN: %w", err)
		}
		s, err := pgstore.Open(ctx, dsn)
		if err != nil {
			return nil, err
		}
		return s, nil
	default:
		path := cfg.StoreDSN
		if path == "" {
			path = filepath.Join(cfg.DataDir, "tether.db")
		}
		s, err := sqlitestore.Open(ctx, path)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// APIURL is the API's base URL as actually bound.
func (b *Broker) APIURL() string { return b.apiURL }

// TailnetName is the broker's tailnet FQDN.
func (b *Broker) TailnetName() string { return b.self.Name }

// PublicKey is the broker's Ed25519 signing key.
func (b *Broker) PublicKey() ed25519.PublicKey { return b.key.Public().(ed25519.PublicKey) }

// Join describes how an agent joins this broker's tailnet.
func (b *Broker) Join() config.Join {
	return config.Join{
		ControlURL: b.controlURL,
		AuthKey:    b.authKey,
		BrokerName: b.self.Name,
		BrokerKey:  protocol.EncodePublicKey(b.PublicKey()),
	}
}

// Run serves the API and the agent API until ctx ends, then shuts down.
func (b *Broker) Run(ctx context.Context) error {
	defer b.close()
	api := &http.Server{
		Handler:           b.instrumentHTTP(b.apiHandler()),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    128 << 10, // an ID token and a grant with approval proofs
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
	agents := &http.Server{
		Handler:           b.agentHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 2)
	go func() {
		var err error
		if b.cfg.TLSCert != "" {
			err = api.ServeTLS(b.apiLn, b.cfg.TLSCert, b.cfg.TLSKey)
		} else {
			err = api.Serve(b.apiLn)
		}
		errc <- fmt.Errorf("API server: %w", err)
	}()
	go func() { errc <- fmt.Errorf("agent API server: %w", agents.Serve(b.agentLn)) }()
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stopBG()
		wg.Wait()
	}()
	wg.Go(func() { b.runLifecycle(bg) })
	wg.Go(func() { b.runNetworkTeardowns(bg) })
	if b.notifier != nil {
		wg.Go(func() { b.notifier.Run(bg) })
	}
	if b.cfg.PolicyDir != "" {
		wg.Go(func() { b.policy.Watch(bg, 2*time.Second) })
	}

	if b.cfg.Dev != nil {
		if err := b.writeDevFiles(); err != nil {
			return err
		}
	}
	b.log.Info("broker ready", "api", b.apiURL, "tailnet_name", b.self.Name,
		"broker_key", protocol.EncodePublicKey(b.PublicKey()), "dev", b.cfg.Dev != nil)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	api.Shutdown(sctx)
	agents.Shutdown(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (b *Broker) close() {
	if b.apiLn != nil {
		b.apiLn.Close()
	}
	if b.node != nil {
		b.node.Close()
	}
	if b.cfg.Dev != nil {
		if err := b.cfg.Dev.Close(); err != nil {
			b.log.Warn("dev preset did not stop cleanly", "err", err)
		}
	}
	if b.auditStop != nil {
		b.auditStop()
		<-b.auditDone
	}
	if b.cosigs != nil {
		b.cosigs.Close()
		b.heartbeats.Close()
	}
	if b.store != nil {
		b.store.Close()
	}
}

// isLoopback reports whether host (an IP or "localhost") is loopback only.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// loadSigningKey reads the broker's Ed25519 seed (hex) from an env:NAME or
// file:PATH reference; it never creates one.
func loadSigningKey(ref string) (ed25519.PrivateKey, error) {
	if !strings.HasPrefix(ref, "env:") && !strings.HasPrefix(ref, "file:") {
		return nil, errors.New(`signing key: want an env:NAME or file:PATH reference to the broker's key (64 hex digits), never the key itself`)
	}
	v, err := config.Secret(ref)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	key, ok := parseSeed(v)
	if !ok {
		return nil, fmt.Errorf("signing key %s: want %d hex-encoded bytes (the broker.key of the first broker); a new key means re-pairing every agent", ref, ed25519.SeedSize)
	}
	return key, nil
}

// parseSeed reads an Ed25519 seed written as hex, as broker.key holds it.
func parseSeed(s string) (ed25519.PrivateKey, bool) {
	seed, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, false
	}
	return ed25519.NewKeyFromSeed(seed), true
}

// loadOrCreateKey reads the broker's Ed25519 seed (hex) from path, or
// creates one (mode 0600) on first start.
func loadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed := make([]byte, ed25519.SeedSize)
		rand.Read(seed)
		if err := config.WriteFile(path, []byte(hex.EncodeToString(seed)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("broker key: %w", err)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if err != nil {
		return nil, fmt.Errorf("broker key: %w", err)
	}
	key, ok := parseSeed(string(b))
	if !ok {
		return nil, fmt.Errorf("broker key %s is corrupt: want %d hex-encoded bytes; restore it from backup (a new key means re-pairing every agent)", path, ed25519.SeedSize)
	}
	return key, nil
}
