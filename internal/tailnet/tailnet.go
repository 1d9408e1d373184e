// Package tailnet is Tether's small wrapper over [tsnet.Server]: one
// userspace tailnet node per broker or agent, with a readiness-aware Up,
// dialing, listening on the tailnet address only, and WhoIs of a caller.
//
// A node opens no TCP listener on any host interface: everything it serves
// lives in the node's userspace network stack. Logs go through slog.
package tailnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"tailscale.com/client/local"
	"tailscale.com/envknob"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/net/tsaddr"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
)

// Config describes one tailnet node.
type Config struct {
	// Hostname is the node's name on the tailnet (a DNS label).
	Hostname string
	// StateDir holds the node's keys and state. Empty keeps state in
	// memory, so that the node is new at every start.
	StateDir string
	// ControlURL is the coordination server: Tailscale, Headscale, or the
	// broker's dev control server.
	ControlURL string
	// AuthKey is a pre-auth key used when the node must log in. It is
	// never logged.
	AuthKey string
	// AdvertiseTags are ACL tags the node asks the control server for
	// (e.g. tag:tether-broker); the control server's policy decides
	// whether it gets them. An auth key may carry tags of its own.
	AdvertiseTags []string
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
}

// Validate reports the first problem with c, in words a person can act on.
func (c Config) Validate() error {
	if !names.IsLabel(c.Hostname) {
		return fmt.Errorf("hostname %q: want a DNS label (1-63 of a-z, 0-9, '-', not starting or ending with '-')", c.Hostname)
	}
	u, err := url.Parse(c.ControlURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("control URL %q: want an absolute http:// or https:// URL", c.ControlURL)
	}
	for _, t := range c.AdvertiseTags {
		if err := CheckTag(t); err != nil {
			return err
		}
	}
	return nil
}

// CheckTag reports whether t is an ACL tag: "tag:" and a DNS label.
func CheckTag(t string) error {
	name, ok := strings.CutPrefix(t, "tag:")
	if !ok || !names.IsLabel(name) {
		return fmt.Errorf("tag %q: want tag:NAME, NAME a DNS label (a-z, 0-9, '-')", t)
	}
	return nil
}

// Node is a running tailnet node.
type Node struct {
	srv    *tsnet.Server
	lc     *local.Client
	log    *slog.Logger
	tmpDir string               // removed on Close when state is in memory
	self   tailcfg.StableNodeID // set by Up
	// started is set once tsnet started; tsnet's Close must not run
	// before that.
	started bool

	peersMu sync.Mutex
	peers   map[tailcfg.StableNodeID]netip.Addr // from the netmap, by NodeAddr
	peersAt time.Time
}

// New configures a node. It does not start it: call [Node.Up].
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Nothing phones home: no log uploads, no support data.
	envknob.SetNoLogsNoSupport()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "tailnet")
	srv := &tsnet.Server{
		Hostname:   cfg.Hostname,
		ControlURL: cfg.ControlURL,
		AuthKey:    cfg.AuthKey,
		Logf:       logf(log, slog.LevelDebug),
		UserLogf:   logf(log, slog.LevelInfo),

		AdvertiseTags: cfg.AdvertiseTags,
	}
	n := &Node{srv: srv, log: log}
	if cfg.StateDir == "" {
		st, err := mem.New(nil, "")
		if err != nil {
			return nil, fmt.Errorf("tailnet state: %w", err)
		}
		srv.Store = st
		srv.Ephemeral = true // tsnet keeps in-memory nodes only as ephemeral ones
		// tsnet still wants a directory for its log cache and sockets.
		dir, err := os.MkdirTemp("", "tether-tsnet-")
		if err != nil {
			return nil, fmt.Errorf("tailnet state: %w", err)
		}
		srv.Dir = dir
		n.tmpDir = dir
	} else {
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("tailnet state dir: %w", err)
		}
		srv.Dir = cfg.StateDir
	}
	return n, nil
}

// logf adapts slog to the printf-style loggers tsnet wants.
func logf(log *slog.Logger, level slog.Level) func(string, ...any) {
	return func(format string, args ...any) {
		if !log.Enabled(context.Background(), level) {
			return
		}
		log.Log(context.Background(), level, strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"))
	}
}

// Up starts the node and returns once it is logged in, has tailnet
// addresses and has a home DERP region, so that the first connection does
// not stall while the node finds its relay. It fails when ctx ends first.
func (n *Node) Up(ctx context.Context) (*ipnstate.Status, error) {
	if err := n.srv.Start(); err != nil {
		return nil, fmt.Errorf("join tailnet: %w", err)
	}
	n.started = true
	if _, err := n.srv.Up(ctx); err != nil {
		return nil, fmt.Errorf("join tailnet: %w", contextCause(ctx, err))
	}
	lc, err := n.srv.LocalClient()
	if err != nil {
		return nil, fmt.Errorf("join tailnet: %w", err)
	}
	n.lc = lc
	for {
		st, err := lc.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("join tailnet: %w", contextCause(ctx, err))
		}
		if st.Self != nil && st.Self.Relay != "" && len(st.TailscaleIPs) > 0 {
			n.self = st.Self.ID
			n.log.Debug("tailnet up", "name", st.Self.DNSName, "derp", st.Self.Relay)
			return st, nil
		}
		if err := pause(ctx, 25*time.Millisecond); err != nil {
			return nil, fmt.Errorf("join tailnet: waiting for a home DERP region: %w", err)
		}
	}
}

// contextCause prefers ctx's error over the error tsnet wraps it in.
func contextCause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ProbeControl fails fast, with a clear error, when the coordination
// server at controlURL cannot be reached at all; tsnet itself would retry
// until its context ends. It asks for GET /key, the first call of every
// Tailscale client, which Tailscale, Headscale and the dev control server
// all answer.
func ProbeControl(ctx context.Context, controlURL string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(controlURL, "/")+"/key?v=88", nil)
	if err != nil {
		return fmt.Errorf("control URL %q: %w", controlURL, err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			err = ne
		} else if ctx.Err() != nil {
			err = errors.New("no answer within 10s")
		}
		return fmt.Errorf("cannot reach the tailnet control server at %s: %v", controlURL, err)
	}
	res.Body.Close()
	return nil
}

// ControlKey returns the coordination server's answer to GET /key: its
// public keys, which change when a control server is re-created (a
// restarted dev broker's). Its nodes then lose it until they join again,
// so an agent that cannot reach its broker asks, cheaply, whether this
// is why. Bounded: 5 s, 4 KiB, no redirect followed.
func ControlKey(ctx context.Context, controlURL string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(controlURL, "/")+"/key?v=88", nil)
	if err != nil {
		return "", fmt.Errorf("control URL %q: %w", controlURL, err)
	}
	res, err := (&http.Client{CheckRedirect: NoRedirects}).Do(req)
	if err != nil {
		return "", fmt.Errorf("control server key: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("control server key: %s", res.Status)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	if err != nil {
		return "", fmt.Errorf("control server key: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

// Peer is another node of the tailnet.
type Peer struct {
	ID   tailcfg.StableNodeID
	Name string     // FQDN without the trailing dot
	IP   netip.Addr // the peer's tailnet IPv4 address
}

// ErrNoSuchPeer reports that no peer of the tailnet has the requested name.
var ErrNoSuchPeer = errors.New("no such peer on the tailnet")

// FindPeer returns the peer whose MagicDNS name is name (with or without
// the trailing dot) or whose first label is name.
func (n *Node) FindPeer(ctx context.Context, name string) (Peer, error) {
	if n.lc == nil {
		return Peer{}, errors.New("find peer: node is not up")
	}
	st, err := n.lc.Status(ctx)
	if err != nil {
		return Peer{}, fmt.Errorf("find peer %q: %w", name, err)
	}
	want := strings.TrimSuffix(name, ".")
	for _, p := range st.Peer {
		fqdn := strings.TrimSuffix(p.DNSName, ".")
		short, _, _ := strings.Cut(fqdn, ".")
		if fqdn != want && short != want {
			continue
		}
		for _, ip := range p.TailscaleIPs {
			if ip.Is4() {
				return Peer{ID: p.ID, Name: fqdn, IP: ip}, nil
			}
		}
	}
	return Peer{}, fmt.Errorf("%q: %w", name, ErrNoSuchPeer)
}

// PeerMatch says which peers are wanted: those named by one of Names (a
// MagicDNS name or its first label, as [Node.FindPeer] matches) and, if
// Tag is set, those the control server gave that ACL tag.
type PeerMatch struct {
	Names []string
	Tag   string
}

// Matches reports whether a node named fqdn (without the trailing dot)
// and carrying tags is wanted.
func (m PeerMatch) Matches(fqdn string, tags []string) bool {
	fqdn = strings.TrimSuffix(fqdn, ".")
	short, _, _ := strings.Cut(fqdn, ".")
	for _, name := range m.Names {
		name = strings.TrimSuffix(name, ".")
		if name != "" && (name == fqdn || name == short) {
			return true
		}
	}
	return m.Tag != "" && slices.Contains(tags, m.Tag)
}

// String names m in logs and errors.
func (m PeerMatch) String() string {
	var parts []string
	if len(m.Names) > 0 {
		parts = append(parts, "named "+strings.Join(m.Names, " or "))
	}
	if m.Tag != "" {
		parts = append(parts, "tagged "+m.Tag)
	}
	return strings.Join(parts, ", or ")
}

// FindPeers returns the current peers m wants, by name.
func (n *Node) FindPeers(ctx context.Context, m PeerMatch) ([]Peer, error) {
	if n.lc == nil {
		return nil, errors.New("find peers: node is not up")
	}
	st, err := n.lc.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("find peers: %w", err)
	}
	var out []Peer
	for _, p := range st.Peer {
		var tags []string
		if p.Tags != nil {
			tags = p.Tags.AsSlice()
		}
		if !m.Matches(p.DNSName, tags) {
			continue
		}
		for _, ip := range p.TailscaleIPs {
			if ip.Is4() {
				out = append(out, Peer{ID: p.ID, Name: strings.TrimSuffix(p.DNSName, "."), IP: ip})
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// WaitAnyPeer waits until a peer m wants is on the tailnet and answers
// disco pings (see [Node.WaitPeer]), trying all of them at once, and
// returns the first that answers; skip names peers not to return (a
// broker node just found dead, say) unless no other answers.
func (n *Node) WaitAnyPeer(ctx context.Context, m PeerMatch, skip ...tailcfg.StableNodeID) (Peer, error) {
	for {
		peers, err := n.FindPeers(ctx, m)
		if err != nil {
			return Peer{}, err
		}
		if p, ok := n.firstAnswering(ctx, peers, skip); ok {
			return p, nil
		}
		if werr := pause(ctx, 50*time.Millisecond); werr != nil {
			return Peer{}, fmt.Errorf("wait for a peer %s: %w (%d found, none answered)", m, werr, len(peers))
		}
	}
}

// firstAnswering pings peers at once and returns the first to answer,
// preferring those not in skip.
func (n *Node) firstAnswering(ctx context.Context, peers []Peer, skip []tailcfg.StableNodeID) (Peer, bool) {
	if len(peers) == 0 {
		return Peer{}, false
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	answers := make(chan Peer, len(peers))
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			if n.pingTwice(ctx, p.IP) == nil {
				answers <- p
			}
		})
	}
	go func() { wg.Wait(); close(answers) }()
	var fallback *Peer
	for p := range answers {
		if !slices.Contains(skip, p.ID) {
			return p, true
		}
		if fallback == nil {
			fallback = &p
		}
	}
	if fallback != nil {
		return *fallback, true
	}
	return Peer{}, false
}

// WaitPeer waits until the peer named name is on the tailnet and answers a
// disco ping, which also warms the path so the first dial does not stall.
func (n *Node) WaitPeer(ctx context.Context, name string) (Peer, error) {
	for {
		p, err := n.FindPeer(ctx, name)
		if err == nil {
			// A pong means the peer's magicsock knows our current disco
			// key. Its WireGuard engine learns our node key a moment
			// later, from the same netmap; a handshake that arrives in
			// between is dropped and retried only after 5 s. A second
			// pong a little later closes that window in practice.
			err = n.pingTwice(ctx, p.IP)
			if err == nil {
				return p, nil
			}
		} else if !errors.Is(err, ErrNoSuchPeer) {
			return Peer{}, err
		}
		if werr := pause(ctx, 50*time.Millisecond); werr != nil {
			return Peer{}, fmt.Errorf("wait for peer %q: %w (last: %v)", name, werr, err)
		}
	}
}

func (n *Node) pingTwice(ctx context.Context, ip netip.Addr) error {
	for i := range 2 {
		if i > 0 {
			if err := pause(ctx, 150*time.Millisecond); err != nil {
				return err
			}
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := n.Ping(pctx, ip)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// Ping sends one disco ping to ip and returns its latency.
func (n *Node) Ping(ctx context.Context, ip netip.Addr) (time.Duration, error) {
	if n.lc == nil {
		return 0, errors.New("ping: node is not up")
	}
	res, err := n.lc.Ping(ctx, ip, tailcfg.PingDisco)
	if err != nil {
		return 0, fmt.Errorf("ping %v: %w", ip, err)
	}
	if res.Err != "" {
		return 0, fmt.Errorf("ping %v: %s", ip, res.Err)
	}
	return time.Duration(res.LatencySeconds * float64(time.Second)), nil
}

// ErrNotOnTailnet reports that an address or node is not a current peer
// of the tailnet: nothing was sent to it.
var ErrNotOnTailnet = errors.New("not on the tailnet")

// Dial connects to addr ("ip:port") over the tailnet, and only over the
// tailnet. addr must be an IP literal that the tailnet's netmap currently
// gives a peer; anything else — a host name, a host-network address, a
// peer's old address — is refused with [ErrNotOnTailnet] before a packet
// is sent. The connection goes through the node's userspace network stack
// only: unlike [tsnet.Server.Dial], there is no fallback to the host
// network for addresses the tailnet does not route.
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" {
		return nil, fmt.Errorf("dial %s %s: only tcp over the tailnet", network, addr)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w: want a tailnet IP literal and port", addr, ErrNotOnTailnet)
	}
	if !tsaddr.IsTailscaleIP(ap.Addr()) {
		return nil, fmt.Errorf("dial %s: %w: not a tailnet address", addr, ErrNotOnTailnet)
	}
	if n.lc == nil {
		return nil, errors.New("dial: node is not up")
	}
	// WhoIs answers from the current netmap: an address no current peer
	// holds is refused here.
	if _, err := n.WhoIs(ctx, ap.String()); err != nil {
		return nil, fmt.Errorf("dial %s: %w: no current peer has this address", addr, ErrNotOnTailnet)
	}
	d := n.srv.Sys().Dialer.Get()
	if d == nil || d.NetstackDialTCP == nil {
		return nil, errors.New("dial: the node's network stack is not ready")
	}
	// A peer the netmap still lists but that is gone (its process died,
	// its host is down) never answers; bound the wait.
	ctx, cancel := context.WithTimeoutCause(ctx, DialTimeout, fmt.Errorf("dial %s: %w: no answer within %v", addr, ErrPeerSilent, DialTimeout))
	defer cancel()
	c, err := d.NetstackDialTCP(ctx, ap)
	if err != nil && errors.Is(context.Cause(ctx), ErrPeerSilent) {
		return nil, context.Cause(ctx)
	}
	return c, err
}

// DialTimeout bounds [Node.Dial]: long enough for a first WireGuard
// handshake, which is retried after 5 s when the peer's engine had not yet
// learnt our key, short enough that a call to a peer that is gone fails
// in seconds rather than at the caller's own deadline.
const DialTimeout = 12 * time.Second

// ErrPeerSilent reports that a current peer did not answer a dial.
var ErrPeerSilent = errors.New("the peer did not answer on the tailnet")

// NodeAddr returns the tailnet IPv4 address the netmap currently gives the
// node with stable ID id, or [ErrNotOnTailnet] when it is not a current
// peer. Use it, never an address a peer reported about itself, to find
// where to dial a node.
func (n *Node) NodeAddr(ctx context.Context, id tailcfg.StableNodeID) (netip.Addr, error) {
	if id == "" {
		return netip.Addr{}, fmt.Errorf("node address: %w: no node ID", ErrNotOnTailnet)
	}
	n.peersMu.Lock()
	ip, ok := n.peers[id]
	fresh := n.clock().Sub(n.peersAt) < peerCacheTTL
	n.peersMu.Unlock()
	if ok && fresh {
		return ip, nil
	}
	if err := n.refreshPeers(ctx); err != nil {
		return netip.Addr{}, err
	}
	n.peersMu.Lock()
	ip, ok = n.peers[id]
	n.peersMu.Unlock()
	if !ok {
		return netip.Addr{}, fmt.Errorf("node %s: %w", id, ErrNotOnTailnet)
	}
	return ip, nil
}

// peerCacheTTL bounds how long NodeAddr trusts its last view of the
// netmap. A node that left is then found missing within this time, and a
// dial to its old address is refused by Dial's own check in any case.
const peerCacheTTL = time.Second

// ForgetPeers drops NodeAddr's cached view of the netmap, so that the next
// lookup reads it again (call it when a dial to a peer failed).
func (n *Node) ForgetPeers() {
	n.peersMu.Lock()
	n.peersAt = time.Time{}
	n.peersMu.Unlock()
}

func (n *Node) refreshPeers(ctx context.Context) error {
	if n.lc == nil {
		return errors.New("node address: node is not up")
	}
	st, err := n.lc.Status(ctx)
	if err != nil {
		return fmt.Errorf("node address: %w", err)
	}
	peers := make(map[tailcfg.StableNodeID]netip.Addr, len(st.Peer))
	for _, p := range st.Peer {
		for _, ip := range p.TailscaleIPs {
			if ip.Is4() {
				peers[p.ID] = ip
				break
			}
		}
	}
	n.peersMu.Lock()
	n.peers, n.peersAt = peers, n.clock()
	n.peersMu.Unlock()
	return nil
}

func (n *Node) clock() time.Time { return time.Now() }

// HTTPTransport returns an HTTP transport that reaches tailnet peers only,
// through [Node.Dial]: no proxy from the environment, no host network.
// Pair it with [NoRedirects] and bounded reads.
func (n *Node) HTTPTransport() *http.Transport {
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            n.Dial,
		DisableCompression:     true,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

// ErrRedirect is the error a client built with [NoRedirects] returns when
// a peer answers with a redirect.
var ErrRedirect = errors.New("the peer answered with a redirect, which Tether never follows")

// NoRedirects is an [http.Client] CheckRedirect that refuses every
// redirect: a peer cannot send the caller, its headers or its body
// anywhere else.
func NoRedirects(*http.Request, []*http.Request) error { return ErrRedirect }

// Listen listens for TCP connections on port of the node's tailnet IPv4
// address. The listener lives in the node's userspace network stack: no
// host interface sees it.
func (n *Node) Listen(port uint16) (net.Listener, error) {
	ip4, _ := n.srv.TailscaleIPs()
	if !ip4.IsValid() {
		return nil, errors.New("listen: node has no tailnet address yet (call Up first)")
	}
	return n.srv.Listen("tcp", net.JoinHostPort(ip4.String(), strconv.Itoa(int(port))))
}

// SelfID returns the node's stable ID, or "" before Up.
func (n *Node) SelfID() tailcfg.StableNodeID { return n.self }

// IPv4 returns the node's tailnet IPv4 address, or the zero Addr before Up.
func (n *Node) IPv4() netip.Addr {
	ip4, _ := n.srv.TailscaleIPs()
	return ip4
}

// Identity is who is at the other end of a tailnet connection.
type Identity struct {
	NodeID tailcfg.StableNodeID
	Name   string // node FQDN without the trailing dot
	Login  string // the owning user's login name, may be empty
	Tags   []string
}

// WhoIs identifies the tailnet node at remoteAddr ("ip:port"). It fails for
// addresses that are not on the tailnet.
func (n *Node) WhoIs(ctx context.Context, remoteAddr string) (Identity, error) {
	if n.lc == nil {
		return Identity{}, errors.New("whois: node is not up")
	}
	res, err := n.lc.WhoIs(ctx, remoteAddr)
	if err != nil {
		return Identity{}, fmt.Errorf("whois %s: %w", remoteAddr, err)
	}
	if res.Node == nil {
		return Identity{}, fmt.Errorf("whois %s: not a tailnet node", remoteAddr)
	}
	id := Identity{
		NodeID: res.Node.StableID,
		Name:   strings.TrimSuffix(res.Node.Name, "."),
		Tags:   res.Node.Tags,
	}
	if res.UserProfile != nil {
		id.Login = res.UserProfile.LoginName
	}
	return id, nil
}

// Close stops the node.
func (n *Node) Close() error {
	var err error
	if n.started {
		err = n.srv.Close()
	}
	if n.tmpDir != "" {
		os.RemoveAll(n.tmpDir)
	}
	return err
}
