// Package agent is the Tether agent that runs in a customer's BYOC VPC. It
// joins the tailnet with tsnet — dialling out only, opening no listener on
// any host interface — pairs once with the broker using a one-time token,
// then authenticates by signing broker challenges with its own Ed25519 key
// and reports heartbeats. It answers broker calls only from broker nodes
// that proved the broker's pinned key, signed with that key. Several
// brokers may share the key: the agent fails over between them.
package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"tailscale.com/tailcfg"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// Config configures an agent.
type Config struct {
	// StateDir holds the agent's key, its pairing state and its tailnet
	// node state. Required.
	StateDir string
	// Join says how to reach the broker. Needed to pair; after pairing
	// the state supplies what is missing, and a BrokerKey that differs
	// from the pinned one is refused.
	Join config.Join
	// PairingToken is the one-time token from 'broker deployment create'.
	// Needed only to pair; ignored (with a warning) once paired.
	PairingToken string
	// Hostname is the agent's tailnet hostname; default tether-agent.
	Hostname string
	// Upstreams are what the agent guards; empty URLs disable them.
	Upstreams Upstreams
	// MaxCallsPerGrant bounds the calls one grant may have in flight at
	// once, ClickHouse and Prometheus together; a call beyond it is
	// answered 429 and audited. Zero means DefaultMaxCallsPerGrant;
	// negative is refused.
	MaxCallsPerGrant int
	// HealthAddr, if set, serves GET /healthz and GET /metrics (the
	// agent's Prometheus metrics, see metrics.go) on this loopback
	// address. Off by default: the agent opens no host listener otherwise.
	HealthAddr string
	// StartTimeout bounds joining the tailnet, finding the broker and
	// pairing; default 60s.
	StartTimeout time.Duration
	// Approval is the customer's approval authority: when set, a grant
	// is served only if it carries the customer's approval proofs the
	// authority requires (see package approval), or is a break-glass
	// grant the authority allows (AllowBreakGlass). Nil keeps trusting
	// the broker key alone, and the agent says so at start and in its
	// heartbeats, which 'broker deployment show' reports.
	Approval *approval.Authority
	// DenyBreakGlass refuses break-glass grants when Approval is nil;
	// with an authority, its AllowBreakGlass decides.
	DenyBreakGlass bool
	// WriteTimeout bounds each write of an answer to the broker (a
	// data-plane answer streams past it for as long as its grant and
	// time limit allow); default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Version is reported in heartbeats.
	Version string
	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger
	// Now is the agent's clock; nil means time.Now.
	Now func() time.Time
}

// ErrBrokerKeyMismatch reports that the broker did not prove it holds the
// key the agent pinned at pairing. The agent stops: it never talks to a
// broker it cannot authenticate.
var ErrBrokerKeyMismatch = errors.New("broker key mismatch")

// maxSkew bounds how far a broker call's timestamp may be from our clock
// (a revocation push excepted, see verifyBroker).
const maxSkew = protocol.MaxCallSkew

// Agent is a configured agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	start time.Time

	state  State
	key    ed25519.PrivateKey
	paired bool
	// proven are the broker nodes that proved the broker's key to this
	// agent's node (see prove), and when; only they may call the agent.
	proven    provenNodes
	provingAt atomic.Int64 // unix ms of the last proveCandidates; heartbeatLoop only

	// tl is the agent's current tailnet node, the broker peer on it and
	// the client that reaches it. It is replaced when the agent joins the
	// tailnet again (see heartbeatLoop).
	tl      atomic.Pointer[tailnetLink]
	rejoins int // rejoins since the last heartbeat that got through; heartbeatLoop only

	ready     chan struct{} // closed at the first successful heartbeat
	readyOnce sync.Once
	deliverMu sync.Mutex // one spool delivery at a time
	// finishing writes query.finished events after their call ended; the
	// spool closes after them.
	finishing finisher

	mu             sync.Mutex
	breakGlassSeen map[string]bool      // break-glass grants served already, see announceBreakGlass
	nonces         map[string]time.Time // broker call nonces seen, until expiry
	noncesSwept    time.Time            // when expired nonces were last dropped
	interval       time.Duration
	token          string // session token
	lastOK         time.Time

	data  *dataPlane
	calls callLimiter // calls in flight per grant, see limits.go

	clock          clockWatch   // the agent's clock against the broker's, see clock.go
	checkpointSize uint64       // latest audit checkpoint the broker announced
	witness        witnessGuard // the witness's refusal, see witness.go
	spool          *spool
	journal        *journal // the customer's own record of calls, see journal.go

	metricsOnce sync.Once
	m           *agentMetrics // see metrics(), metrics.go
}

// New checks the configuration and the state directory. It does not touch
// the network.
func New(cfg Config) (*Agent, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("state dir is not set: want --state-dir DIR")
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "tether-agent"
	}
	if !names.IsLabel(cfg.Hostname) {
		return nil, fmt.Errorf("hostname %q: want a DNS label (a-z, 0-9, '-')", cfg.Hostname)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HealthAddr != "" {
		host, _, err := net.SplitHostPort(cfg.HealthAddr)
		ip, perr := netip.ParseAddr(host)
		if err != nil || perr != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("health address %q: want a loopback HOST:PORT such as 127.0.0.1:9090 (the agent never listens on other interfaces)", cfg.HealthAddr)
		}
	}
	if err := cfg.Upstreams.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxCallsPerGrant < 0 {
		return nil, fmt.Errorf("max calls per grant %d: want a positive number, or 0 for the default %d (--max-calls-per-grant)", cfg.MaxCallsPerGrant, DefaultMaxCallsPerGrant)
	}
	if cfg.Approval != nil {
		if err := cfg.Approval.Validate(); err != nil {
			return nil, fmt.Errorf("customer approval authority: %w", err)
		}
		if cfg.Approval.Now == nil {
			cfg.Approval.Now = cfg.Now
		}
	}
	if err := config.PrepareDir("state dir", cfg.StateDir); err != nil {
		return nil, err
	}
	revoked, err := loadRevocations(revocationsPath(cfg.StateDir))
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("component", "agent"), now: cfg.Now, nonces: make(map[string]time.Time), ready: make(chan struct{}), data: newDataPlane(cfg.Upstreams, revoked)}
	a.journal = newJournal(cfg.StateDir, a.log)
	a.state, a.key, a.paired, err = loadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	j := cfg.Join
	if a.paired {
		if j.BrokerKey != "" && j.BrokerKey != a.state.BrokerKey {
			return nil, fmt.Errorf("%w: this agent paired with broker key %s (%s), but was given %s; if the broker's key was replaced on purpose, pair again with a new pairing token and an empty state dir",
				ErrBrokerKeyMismatch, a.state.BrokerKey, filepath.Join(cfg.StateDir, stateFile), j.BrokerKey)
		}
		if cfg.PairingToken != "" {
			a.log.Warn("already paired: ignoring the pairing token", "deployment", a.state.Tenant+"/"+a.state.Name, "agent_id", a.state.AgentID)
		}
		if j.ControlURL == "" {
			a.cfg.Join.ControlURL = a.state.ControlURL
		}
		if err := j.CheckBrokers(); err != nil {
			return nil, fmt.Errorf("the brokers to look for (--broker-name, --broker-tag): %w", err)
		}
		if j.BrokerName == "" && len(j.BrokerNames) == 0 && j.BrokerTag == "" {
			a.cfg.Join.BrokerName, a.cfg.Join.BrokerNames, a.cfg.Join.BrokerTag = a.state.BrokerName, a.state.BrokerNames, a.state.BrokerTag
		}
		a.cfg.Join.BrokerKey = a.state.BrokerKey
		return a, nil
	}
	if cfg.PairingToken == "" {
		return nil, errors.New("not paired yet: give --pairing-token (from 'broker deployment create') with --join FILE or --control-url/--auth-key/--broker-name/--broker-key")
	}
	if _, err := protocol.HashPairingToken(cfg.PairingToken); err != nil {
		return nil, err
	}
	if err := j.Validate(); err != nil {
		return nil, fmt.Errorf("to pair, the agent needs the broker's tailnet details: %w", err)
	}
	if _, err := protocol.ParsePublicKey(j.BrokerKey); err != nil {
		return nil, fmt.Errorf("broker key: %w", err)
	}
	return a, nil
}

// Ready is closed once the agent is paired and its first heartbeat was
// accepted.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// State returns the agent's pairing state (zero before pairing).
func (a *Agent) State() State { return a.state }

// Run joins the tailnet, pairs if needed, and then serves the broker and
// sends heartbeats until ctx ends. When the broker stays unreachable (a
// restarted control server, say), it joins the tailnet again by itself.
func (a *Agent) Run(ctx context.Context) error {
	a.start = a.now()
	err := a.join(ctx)
	if err != nil {
		return err
	}
	// Said once the agent is up, after any error that stops it at start.
	a.announceApproval(ctx)
	defer func() { a.link().node.Close() }()
	if a.spool, err = openSpool(filepath.Join(a.cfg.StateDir, "spool.jsonl"), a.now); err != nil {
		return err
	}
	a.metrics().countSpool(a.spool.path)
	defer a.spool.close()
	defer a.finishing.close()
	a.stopOrphans(ctx)

	if a.cfg.HealthAddr != "" {
		var lc net.ListenConfig
		hln, err := lc.Listen(ctx, "tcp", a.cfg.HealthAddr)
		if err != nil {
			return fmt.Errorf("health listener: %w", err)
		}
		hs := &http.Server{Handler: a.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(hln)
		defer hs.Close()
	}
	for {
		err := a.serveTailnet(ctx)
		if !errors.Is(err, errRejoin) {
			return err
		}
		if err := a.rejoin(ctx); err != nil {
			return err
		}
	}
}

// serveTailnet serves the agent API on the current tailnet node and runs
// the heartbeat loop until ctx ends or the loop asks to join again.
func (a *Agent) serveTailnet(ctx context.Context) error {
	ln, err := a.link().node.Listen(protocol.AgentPort)
	if err != nil {
		return fmt.Errorf("listen on the tailnet: %w", err)
	}
	srv := a.newAPIServer(a.handler())
	go srv.Serve(ln)
	defer srv.Close()
	return a.heartbeatLoop(ctx)
}

// callTimeout bounds one call to the broker: twice the heartbeat
// interval, at least 2 s and at most 5 s (bodies are at most
// protocol.MaxBody).
func (a *Agent) callTimeout() time.Duration {
	a.mu.Lock()
	d := a.interval
	a.mu.Unlock()
	if d <= 0 {
		d = 5 * time.Second
	}
	return min(max(2*d, 2*time.Second), 5*time.Second)
}

// rejoinAfter is how long heartbeats may fail before the agent joins the
// tailnet again, after n rejoins that brought no heartbeat through.
func rejoinAfter(n int) time.Duration {
	return min(3*time.Second<<min(n, 7), 5*time.Minute)
}

// maxRejoinRetry bounds the wait between attempts to join the tailnet
// again.
const maxRejoinRetry = 4 * time.Second

// controlProbeEvery is how often an agent whose heartbeats fail asks the
// control server whether it was re-created.
const controlProbeEvery = 2 * time.Second

// errRejoin is heartbeatLoop's way of asking Run to join the tailnet
// again.
var errRejoin = errors.New("rejoin the tailnet")

// rejoin replaces the agent's tailnet node with a new one on the same
// state (same node key, same pairing), retrying until it is up or ctx
// ends. A new node fetches the control server's key and DERP map again,
// which a node that lost its control server does not do by itself.
func (a *Agent) rejoin(ctx context.Context) error {
	old := a.link()
	a.log.Warn("the broker has been unreachable; joining the tailnet again", "node", old.node.IPv4())
	old.node.Close()
	a.metrics().tailnetUp.Store(false)
	retry := time.Second
	var lastWarn time.Time
	failures := 0
	for {
		err := a.join(ctx)
		if err == nil {
			if failures > 0 {
				a.log.Info("joined the tailnet again", "attempts", failures+1)
			}
			a.mu.Lock()
			a.token = "" // a session belongs to the broker process that opened it
			a.mu.Unlock()
			// A re-created control server hands node IDs out again: every
			// broker node proves its key anew.
			a.proven.reset()
			a.provingAt.Store(0)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrBrokerKeyMismatch) {
			return err
		}
		// Said at once, then once a minute while it lasts (a broker down
		// for an hour would otherwise fill the log every few seconds).
		failures++
		if now := a.now(); now.Sub(lastWarn) >= time.Minute {
			a.log.Warn("joining the tailnet again failed; will retry", "err", err, "retry_in", retry, "attempts", failures)
			lastWarn = now
		} else {
			a.log.Debug("joining the tailnet again failed; will retry", "err", err, "retry_in", retry, "attempts", failures)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		// Capped low: an attempt while the control server is down fails
		// at once on its probe and costs one GET, and the agent must be
		// back within seconds of it.
		retry = min(2*retry, maxRejoinRetry)
	}
}

// join brings the tailnet node up, finds the broker and pairs if needed,
// all within StartTimeout.
func (a *Agent) join(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.StartTimeout)
	defer cancel()
	j := a.cfg.Join
	if err := tailnet.ProbeControl(ctx, j.ControlURL); err != nil {
		return err
	}
	// What the control server's key was when the node joined: when the
	// broker is unreachable and this changed, the control server was
	// re-created and the node must join again (heartbeatLoop).
	controlKey, _ := tailnet.ControlKey(ctx, j.ControlURL)
	authKey := ""
	if j.AuthKey != "" {
		var err error
		if authKey, err = config.Secret(j.AuthKey); err != nil {
			return fmt.Errorf("auth key: %w", err)
		}
	}
	node, err := tailnet.New(tailnet.Config{
		Hostname:   a.cfg.Hostname,
		StateDir:   filepath.Join(a.cfg.StateDir, "tsnet"),
		ControlURL: j.ControlURL,
		AuthKey:    authKey,
		Logger:     a.cfg.Logger,
	})
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			node.Close()
		}
	}()
	if _, err := node.Up(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("could not join the tailnet at %s within %v: check the auth key, and that the control server and its DERP relay are reachable from here", j.ControlURL, a.cfg.StartTimeout)
		}
		return err
	}
	// Any broker node will do: the first to answer is asked to prove the
	// broker's key before it is sent anything (see call).
	peer, err := node.WaitAnyPeer(ctx, a.brokerMatch())
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no broker node %s answered on the tailnet within %v: check broker_name (or broker_tag) and that a broker is running", a.brokerMatch(), a.cfg.StartTimeout)
		}
		return err
	}
	// The broker is reached only at the address the netmap gives its
	// node, through a dialer with no fallback to the host network, and no
	// redirect is ever followed.
	tr := node.HTTPTransport()
	tr.MaxIdleConnsPerHost = 2
	tr.IdleConnTimeout = 5 * time.Minute
	a.tl.Store(&tailnetLink{node: node, broker: peer, controlKey: controlKey, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: tailnet.NoRedirects}})
	if !a.paired {
		if err := a.pair(ctx); err != nil {
			return err
		}
	}
	ok = true
	a.metrics().tailnetUp.Store(true)
	return nil
}

// errWrongBrokerNode reports that a node the control server names or
// tags as a broker did not prove the broker's key. The agent keeps
// trying: the real broker may come back, or another broker node answer.
var errWrongBrokerNode = errors.New("wrong broker node")

// brokerMatch says which tailnet nodes may be brokers: those the join
// file or flags name, and those carrying the broker tag. Each must still
// prove the broker's key.
func (a *Agent) brokerMatch() tailnet.PeerMatch {
	j := a.cfg.Join
	m := tailnet.PeerMatch{Tag: j.BrokerTag}
	if j.BrokerName != "" {
		m.Names = append(m.Names, j.BrokerName)
	}
	m.Names = append(m.Names, j.BrokerNames...)
	return m
}

// brokerKey is the broker's key: the pinned one once paired, the join
// file's before.
func (a *Agent) brokerKey() (ed25519.PublicKey, error) {
	if a.paired {
		return protocol.ParsePublicKey(a.state.BrokerKey)
	}
	return protocol.ParsePublicKey(a.cfg.Join.BrokerKey)
}

// tailnetLink is the agent's tailnet node, the broker peer on it, and the
// client that reaches the broker through it.
type tailnetLink struct {
	node       *tailnet.Node
	broker     tailnet.Peer
	controlKey string // the control server's GET /key answer when the node joined; empty if it did not answer
	hc         *http.Client
}

// link returns the agent's current tailnet link.
func (a *Agent) link() *tailnetLink { return a.tl.Load() }

// brokerURL is path at a broker node's current tailnet address, as the
// netmap gives it for that node.
func (a *Agent) brokerURL(ctx context.Context, l *tailnetLink, id tailcfg.StableNodeID, path string) (string, error) {
	ip, err := l.node.NodeAddr(ctx, id)
	if err != nil {
		return "", fmt.Errorf("the broker node %s: %w", id, err)
	}
	return "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(protocol.BrokerPort)) + path, nil
}

// call posts in to the agent API of the broker node the agent uses, and
// decodes the answer into out. A node that has not proved the broker's
// key to this agent is asked to first, and sent nothing else until then.
func (a *Agent) call(ctx context.Context, path, bearer string, in, out any) error {
	// A call over a connection the broker's side has lost would otherwise
	// hang until the client's own timeout; bound it by the heartbeat
	// interval, so that the heartbeat loop notices within seconds.
	ctx, cancel := context.WithTimeout(ctx, a.callTimeout())
	defer cancel()
	l := a.link()
	if !a.proven.has(l.broker.ID, a.now()) {
		if err := a.prove(ctx, l, l.broker); err != nil {
			return err
		}
	}
	return a.callNode(ctx, l, l.broker.ID, path, bearer, in, out)
}

// callNode posts in to the agent API of broker node id, proven or not.
func (a *Agent) callNode(ctx context.Context, l *tailnetLink, id tailcfg.StableNodeID, path, bearer string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	u, err := a.brokerURL(ctx, l, id, path)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := l.hc.Do(req)
	if err != nil {
		l.node.ForgetPeers()
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, protocol.MaxBody))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		var e brokerapi.ErrorEnvelope
		if json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
			e.Error = brokerapi.ErrorBody{Code: "http", Message: res.Status}
		}
		return &brokerError{status: res.StatusCode, code: e.Error.Code, message: e.Error.Message}
	}
	return json.Unmarshal(body, out)
}

// brokerError is an error the broker answered with.
type brokerError struct {
	status        int
	code, message string
}

func (e *brokerError) Error() string { return e.message }

// pair presents the token, checks the broker proves the pinned key, and
// stores the state.
func (a *Agent) pair(ctx context.Context) error {
	key := newKey()
	pub := protocol.EncodePublicKey(key.Public().(ed25519.PublicKey))
	nonce := make([]byte, 32)
	rand.Read(nonce)
	var res protocol.PairResponse
	err := a.call(ctx, protocol.PathPair, "", protocol.PairRequest{
		Token: a.cfg.PairingToken, PublicKey: pub, Nonce: nonce, Version: a.cfg.Version,
	}, &res)
	var be *brokerError
	if errors.As(err, &be) {
		return fmt.Errorf("pairing refused: %s", be.message)
	}
	if err != nil {
		return fmt.Errorf("pair with broker %s: %w", a.link().broker.Name, err)
	}
	brokerKey, _ := a.brokerKey()
	if !ed25519.Verify(brokerKey, protocol.PairTranscript(res, pub, nonce), res.Signature) {
		return fmt.Errorf("%w: the broker at %s did not prove it holds key %s; check broker_key in the join file", ErrBrokerKeyMismatch, a.link().broker.Name, a.cfg.Join.BrokerKey)
	}
	if res.BrokerNodeID != string(a.link().broker.ID) {
		return fmt.Errorf("broker at %s says it is node %s, but the tailnet says %s", a.link().broker.Name, res.BrokerNodeID, a.link().broker.ID)
	}
	a.state = State{
		AgentID: res.AgentID, DeploymentID: res.DeploymentID, Tenant: res.Tenant, Name: res.Name,
		ControlURL: a.cfg.Join.ControlURL, BrokerName: a.link().broker.Name, BrokerNodeID: string(a.link().broker.ID),
		BrokerNames: a.cfg.Join.BrokerNames, BrokerTag: a.cfg.Join.BrokerTag,
		BrokerKey: a.cfg.Join.BrokerKey, PairedAt: a.now().UTC(),
	}
	if a.cfg.Join.BrokerName != "" && a.cfg.Join.BrokerName != a.state.BrokerName {
		// Keep the name the operator gave, not the FQDN of whichever
		// broker node answered first, among the names to look for.
		a.state.BrokerNames = append([]string{a.cfg.Join.BrokerName}, a.state.BrokerNames...)
	}
	if err := saveState(a.cfg.StateDir, a.state, key); err != nil {
		return fmt.Errorf("paired, but could not save the state (pair again with a new token): %w", err)
	}
	a.key, a.paired = key, true
	a.log.Info("agent paired", "deployment", res.Tenant+"/"+res.Name, "agent_id", res.AgentID, "broker", a.link().broker.Name)
	return nil
}

// openSession answers a broker challenge, after checking the broker
// signed it with the pinned key.
func (a *Agent) openSession(ctx context.Context) error {
	var ch protocol.ChallengeResponse
	if err := a.call(ctx, protocol.PathChallenge, "", protocol.ChallengeRequest{AgentID: a.state.AgentID}, &ch); err != nil {
		return fmt.Errorf("challenge: %w", err)
	}
	brokerKey, err := a.brokerKey()
	if err != nil {
		return err
	}
	if l := a.link(); !ed25519.Verify(brokerKey, protocol.ChallengeTranscript(a.state.AgentID, ch.Challenge), ch.Signature) {
		// The node proved the key a moment ago (call), so this is a
		// broker that signs with two keys, or a relay: not talked to.
		a.proven.drop(l.broker.ID)
		return fmt.Errorf("%w: node %s (%s) signed its challenge with a key other than the pinned %s", errWrongBrokerNode, l.broker.Name, l.broker.ID, a.state.BrokerKey)
	}
	var s protocol.SessionResponse
	err = a.call(ctx, protocol.PathSession, "", protocol.SessionRequest{
		AgentID: a.state.AgentID, Challenge: ch.Challenge,
		Signature: ed25519.Sign(a.key, protocol.SessionTranscript(a.state.AgentID, ch.Challenge)),
	}, &s)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	a.mu.Lock()
	a.token = s.Token
	a.interval = time.Duration(s.HeartbeatInterval)
	a.mu.Unlock()
	return nil
}

// Heartbeat sends one heartbeat, opening a session first if needed.
func (a *Agent) Heartbeat(ctx context.Context) error {
	a.mu.Lock()
	tok := a.token
	a.mu.Unlock()
	if tok == "" {
		if err := a.openSession(ctx); err != nil {
			return err
		}
		a.mu.Lock()
		tok = a.token
		a.mu.Unlock()
	}
	hb := protocol.Heartbeat{
		Version:   a.cfg.Version,
		UptimeMS:  a.now().Sub(a.start).Milliseconds(),
		TailnetIP: a.link().node.IPv4().String(),
		// Every heartbeat says why the witness refuses, if it does.
		WitnessRefusal: a.WitnessRefusal(),
		Approval:       a.approvalStance(),
		// The previous exchange's estimate: only the agent knows all
		// four times of one.
		Clock: a.clock.latest(),
	}
	var res protocol.HeartbeatResponse
	hb.SentAt = a.now()
	err := a.call(ctx, protocol.PathHeartbeat, tok, hb, &res)
	received := a.now()
	var be *brokerError
	if errors.As(err, &be) && (be.status == http.StatusUnauthorized || be.code == "wrong_node") {
		// No session, or one bound to the node this agent had before its
		// node was re-created (sessions live in the broker's store): open
		// a new one, proving the key again.
		a.mu.Lock()
		a.token = ""
		a.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	a.mu.Lock()
	a.interval = time.Duration(res.HeartbeatInterval)
	a.lastOK = a.now()
	a.checkpointSize = res.CheckpointSize
	a.mu.Unlock()
	if o, ok := protocol.EstimateClock(hb.SentAt, res.ReceivedAt, res.AnsweredAt, received); ok {
		a.clock.observe(a.log, o, received)
	}
	return nil
}

// RecordEvent records e in the agent's audit spool, as this agent, for
// delivery to the broker. It returns once the event is on disk.
func (a *Agent) RecordEvent(ctx context.Context, e audit.Event) error {
	return a.recordEvent(e, true)
}

// recordEvent is RecordEvent; without sync it returns before e is on
// disk, which it is within soonSync (see [spool.record]).
func (a *Agent) recordEvent(e audit.Event, sync bool) error {
	if a.spool == nil {
		return errors.New("audit spool is not open: the agent is not running")
	}
	e.AgentID = a.state.AgentID
	e.Deployment = a.state.DeploymentID
	e.Actor.Tenant = a.state.Tenant
	if e.Actor.Subject == "" {
		e.Actor.Subject = "agent:" + a.state.AgentID
		e.Actor.Role = "agent"
	}
	a.journal.append(a.now(), e)
	if err := a.spool.record(e, sync); err != nil {
		return err
	}
	a.metrics().spooled.Add(1)
	return nil
}

// Deliver sends spooled events to the broker until the spool is empty or
// a delivery fails, and returns how many were delivered.
func (a *Agent) Deliver(ctx context.Context) (int, error) {
	a.deliverMu.Lock()
	defer a.deliverMu.Unlock()
	total := 0
	for {
		a.mu.Lock()
		tok := a.token
		a.mu.Unlock()
		if tok == "" {
			return total, errors.New("deliver spooled events: no session")
		}
		evs, err := a.spool.pending(protocol.MaxEventsPerDelivery, maxDeliveryBytes)
		if err != nil || len(evs) == 0 {
			return total, err
		}
		var res protocol.EventsResponse
		if err := a.call(ctx, protocol.PathEvents, tok, protocol.EventsRequest{Events: evs}, &res); err != nil {
			return total, fmt.Errorf("deliver spooled events: %w", err)
		}
		if res.Refused > 0 {
			a.log.Warn("the broker refused spooled audit events; dropped (the broker recorded why)", "refused", res.Refused, "delivered", len(evs))
		}
		if err := a.spool.ack(len(evs)); err != nil {
			return total, err
		}
		a.metrics().spooled.Add(-int64(len(evs)))
		total += len(evs)
	}
}

// maxDeliveryBytes bounds the spooled events of one delivery, so that it
// stays under the broker's request body limit (brokerapi.MaxBody, 1 MiB)
// with room for the envelope.
const maxDeliveryBytes = 960 << 10

// heartbeatLoop sends heartbeats, delivers spooled events and witnesses
// the audit log until ctx ends. While heartbeats fail it retries every
// second, and it returns errRejoin when none got through for
// rejoinAfter: the tailnet node may have lost its control server (a
// restarted dev broker brings a new one), and only a new node finds it
// again. Each rejoin that brings no heartbeat doubles the wait before the
// next one, so a broker that is simply down causes no churn.
func (a *Agent) heartbeatLoop(ctx context.Context) error {
	online := false
	lastOK := a.now()
	var lastProbe, lastFailover time.Time
	for {
		err := a.Heartbeat(ctx)
		if err != nil && ctx.Err() == nil && brokerNodeDown(err) && a.now().Sub(lastFailover) >= failoverEvery && a.failover(ctx) {
			lastFailover = a.now()
			continue // at once, to the other broker node
		}
		if err == nil {
			lastOK = a.now()
			a.rejoins = 0
		} else if ctx.Err() == nil && a.now().Sub(lastOK) >= rejoinAfter(a.rejoins) {
			a.log.Warn("heartbeat failed", "err", err)
			a.rejoins++
			return errRejoin
		} else if ctx.Err() == nil && a.now().Sub(lastProbe) >= controlProbeEvery {
			// A re-created control server (a restarted dev broker) is
			// noticed within seconds, however long the broker was gone,
			// while a broker that is merely down costs one small GET per
			// probe and no new node.
			lastProbe = a.now()
			if l := a.link(); l.controlKey != "" {
				if k, perr := tailnet.ControlKey(ctx, a.cfg.Join.ControlURL); perr == nil && k != l.controlKey {
					a.log.Warn("the tailnet's control server was re-created (its key changed): joining the tailnet again", "err", err)
					a.rejoins = 0
					return errRejoin
				}
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil && !online:
			online = true
			a.log.Info("agent online", "deployment", a.state.Tenant+"/"+a.state.Name, "agent_id", a.state.AgentID, "tailnet_ip", a.link().node.IPv4())
		}
		if err == nil {
			if n, err := a.Deliver(ctx); err != nil {
				a.log.Warn("audit spool delivery failed; will retry", "err", err)
			} else if n > 0 {
				a.log.Debug("delivered spooled audit events", "events", n)
			}
			if err := a.Witness(ctx); err != nil && !errors.Is(err, ErrHistoryRewritten) {
				a.log.Warn("witnessing the audit log failed; will retry", "err", err)
			}
			a.proveCandidates(ctx)
			a.readyOnce.Do(func() { close(a.ready) })
		}
		switch {
		case err == nil:
		case errors.Is(err, ErrBrokerKeyMismatch):
			return err
		case err != nil:
			var be *brokerError
			if errors.As(err, &be) && be.status == http.StatusForbidden && agentRefused(be.code) {
				// The broker will not change its mind: a revoked or
				// replaced agent must be paired again.
				return fmt.Errorf("the broker refused this agent (%s): pair it again with a new pairing token and an empty state dir", be.message)
			}
			a.log.Warn("heartbeat failed; will retry", "err", err)
			online = false
		}
		a.mu.Lock()
		d := a.interval
		a.mu.Unlock()
		if d <= 0 {
			d = 5 * time.Second
		}
		if err != nil {
			d = min(d, time.Second)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// agentRefused reports whether a broker's refusal code means it will not
// take this agent again (revoked, unknown, or paired with another key),
// as opposed to a refusal that may pass: a broker whose netmap does not
// list the agent's node yet (not_a_peer), a challenge that expired, a
// session bound to the node the agent had before.
func agentRefused(code string) bool {
	return code == "agent_refused" || code == "bad_signature"
}

// failoverEvery bounds how often the agent moves to another broker node,
// so that two broker nodes that both fail are not tried in a tight loop.
const failoverEvery = 5 * time.Second

// brokerNodeDown reports whether a failed call says more about the broker
// node than about this agent: it did not answer, failed, or did not prove
// the broker's key. Another broker node may do better.
func brokerNodeDown(err error) bool {
	var be *brokerError
	if errors.As(err, &be) {
		return be.status >= 500
	}
	return !errors.Is(err, ErrBrokerKeyMismatch)
}

// finisher runs work that must end before the agent stops: once closed,
// it runs new work at once in the caller instead.
type finisher struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (f *finisher) do(fn func()) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		fn()
		return
	}
	f.wg.Add(1)
	f.mu.Unlock()
	go func() {
		defer f.wg.Done()
		fn()
	}()
}

func (f *finisher) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}

// announceApproval says at start whether the agent enforces the
// customer's approval, and with an authority fetches its identity
// provider's keys in the background: a provider that cannot be reached
// is logged loudly, and the agent starts all the same (the keys are
// fetched again when a grant needs them, so the provider may come back).
func (a *Agent) announceApproval(ctx context.Context) {
	ap := a.cfg.Approval
	if ap == nil {
		msg := "customer approval not enforced by the agent: it serves any grant the broker key signed; set --approver-issuer, --approver-audience and --approver-group to require approvals signed by the customer's identity provider"
		if a.cfg.DenyBreakGlass {
			a.log.Warn(msg, "break_glass", "deny")
		} else {
			a.log.Warn(msg, "break_glass", "allow")
		}
		return
	}
	a.log.Info("customer approval enforced by the agent", "issuer", ap.Keys.Issuer(), "audiences", ap.Audiences,
		"group", ap.Group, "approvals_required", max(ap.Required, 1), "break_glass", breakGlassWord(ap.AllowBreakGlass))
	go func() {
		if err := ap.Keys.Prefetch(ctx); err != nil {
			if ctx.Err() == nil {
				a.log.Error("could not fetch the keys of the customer's identity provider: grants cannot be checked, and are refused, until it answers (the agent keeps trying at each grant)",
					"issuer", ap.Keys.Issuer(), "err", err)
			}
			return
		}
		a.log.Info("fetched the keys of the customer's identity provider", "issuer", ap.Keys.Issuer())
	}()
}

// approvalStance is the summary of the customer's approval authority the
// heartbeat reports; nil when none is configured and break-glass grants
// are served.
func (a *Agent) approvalStance() *protocol.ApprovalAuthority {
	ap := a.cfg.Approval
	if ap == nil {
		if a.cfg.DenyBreakGlass {
			return &protocol.ApprovalAuthority{BreakGlass: breakGlassWord(false)}
		}
		return nil
	}
	return &protocol.ApprovalAuthority{
		Issuer: ap.Keys.Issuer(), Audience: strings.Join(ap.Audiences, ","), Group: ap.Group,
		Required: max(ap.Required, 1), BreakGlass: breakGlassWord(ap.AllowBreakGlass),
	}
}

func breakGlassWord(allow bool) string {
	if allow {
		return protocol.BreakGlassAllow
	}
	return protocol.BreakGlassDeny
}
