// Package devnet runs a complete private tailnet inside the broker process
// for development and tests: the coordination server that ships with the
// tailscale.com module (testcontrol), a DERP relay and a STUN responder, all
// bound to one local address (loopback by default). Real tsnet nodes in
// other processes join it with the pre-auth key it hands out and talk real
// WireGuard through it.
package devnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/tetherhq/tether/internal/config"
	"tailscale.com/derp/derpserver"
	"tailscale.com/net/stun"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
)

// Config configures the dev tailnet.
type Config struct {
	// Addr is the IP address the control server, DERP relay and STUN
	// responder bind to. Empty means 127.0.0.1. Anything but loopback is
	// for tests that place nodes in other network namespaces.
	Addr string
	// ControlPort, if non-zero, is tried first for the control server so
	// that a restarted dev broker keeps its join file valid. When it is
	// taken, a free port is used instead.
	ControlPort int
	// AuthKey, if set, is the pre-auth key nodes must present; otherwise a
	// random one is made.
	AuthKey string
	// StateFile, if set, is where the control server keeps the nodes it
	// registered (their public keys, IDs and addresses; no private key),
	// so that a restarted dev tailnet gives every node that joins again
	// its ID and addresses back. Empty keeps them in memory only.
	StateFile string
	// Logger receives the servers' logs; nil discards them.
	Logger *slog.Logger
}

// Tailnet is a running dev tailnet.
type Tailnet struct {
	// ControlURL is the coordination server's base URL.
	ControlURL string
	// AuthKey is the reusable pre-auth key every node must log in with.
	AuthKey string

	control *http.Server
	derp    *httptest.Server
	derpSrv *derpserver.Server
	stun    net.PacketConn
	stunEnd chan struct{}

	server    *testcontrol.Server
	stateFile string
	saveReq   chan struct{} // a node changed: save the state
	saveEnd   chan struct{} // closed when the saver stopped
	stopSave  chan struct{}
}

// MagicDNSDomain is the dev tailnet's DNS suffix.
const MagicDNSDomain = "tether.dev.ts.net"

// Start starts the dev tailnet. Close stops it.
func Start(ctx context.Context, cfg Config) (_ *Tailnet, err error) {
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1"
	}
	ip, perr := netip.ParseAddr(addr)
	if perr != nil || !ip.Is4() {
		return nil, fmt.Errorf("dev tailnet address %q: want an IPv4 address such as 127.0.0.1", addr)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "devnet")
	authKey := cfg.AuthKey
	if authKey == "" {
		var b [24]byte
		rand.Read(b[:])
		authKey = "tskey-dev-" + hex.EncodeToString(b[:])
	}
	t := &Tailnet{AuthKey: authKey}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()

	// STUN, so nodes learn their endpoints and pick direct paths.
	var lc net.ListenConfig
	t.stun, err = lc.ListenPacket(ctx, "udp4", net.JoinHostPort(addr, "0"))
	if err != nil {
		return nil, fmt.Errorf("dev tailnet STUN: %w", err)
	}
	t.stunEnd = make(chan struct{})
	go serveSTUN(t.stun, t.stunEnd)

	// DERP over TLS; nodes skip verification because the node entry says
	// InsecureForTests.
	t.derpSrv = derpserver.New(key.NewNode(), logf(log))
	derpLn, err := lc.Listen(ctx, "tcp4", net.JoinHostPort(addr, "0"))
	if err != nil {
		return nil, fmt.Errorf("dev tailnet DERP: %w", err)
	}
	t.derp = httptest.NewUnstartedServer(derpserver.Handler(t.derpSrv))
	t.derp.Listener.Close()
	t.derp.Listener = derpLn
	t.derp.Config.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	t.derp.Config.TLSNextProto = make(map[string]func(*http.Server, *tls.Conn, http.Handler))
	t.derp.StartTLS()

	derpMap := &tailcfg.DERPMap{
		Regions: map[int]*tailcfg.DERPRegion{
			1: {
				RegionID:   1,
				RegionCode: "dev",
				RegionName: "Tether dev",
				Nodes: []*tailcfg.DERPNode{{
					Name:             "1a",
					RegionID:         1,
					HostName:         addr,
					IPv4:             addr,
					IPv6:             "none",
					STUNPort:         t.stun.LocalAddr().(*net.UDPAddr).Port,
					DERPPort:         derpLn.Addr().(*net.TCPAddr).Port,
					InsecureForTests: true,
					STUNTestIP:       addr,
				}},
			},
		},
	}

	ctlLn, err := listenPreferring(ctx, addr, cfg.ControlPort)
	if err != nil {
		return nil, fmt.Errorf("dev tailnet control: %w", err)
	}
	t.ControlURL = "http://" + ctlLn.Addr().String()
	control := &testcontrol.Server{
		DERPMap:        derpMap,
		DNSConfig:      &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain: MagicDNSDomain,
		RequireAuthKey: authKey,
		TagOwners:      map[string][]string{},
		// One user for every node: testcontrol numbers users in
		// registration order, so with a user per node a restored node
		// could name a user the restarted server never made, and its
		// peers could not identify it.
		AllNodesSameUser: true,
		ExplicitBaseURL:  t.ControlURL,
		Logf:             logf(log),
	}
	if cfg.StateFile != "" {
		if err := t.restore(control, cfg.StateFile); err != nil {
			return nil, err
		}
	}
	// testcontrol panics on any path it does not serve; a stray request
	// must not take the broker down, so only its own paths reach it.
	mux := http.NewServeMux()
	for _, p := range []string{"/key", "/generate_204", "/machine/", "/ts2021", "/c2n/"} {
		mux.Handle(p, control)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Tether dev tailnet control server", http.StatusNotFound)
	})
	t.control = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go t.control.Serve(ctlLn)
	log.Info("dev tailnet up", "control", t.ControlURL, "derp", derpLn.Addr().String(), "stun", t.stun.LocalAddr().String())
	return t, nil
}

// maxStateNodes bounds the nodes a dev tailnet's state file holds.
const maxStateNodes = 10000

// restore gives control the nodes of the state file, if there is one,
// and keeps the file up to date from then on: it is written again soon
// after any node's map request, at most once a second, and at Close.
func (t *Tailnet) restore(control *testcontrol.Server, path string) error {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("dev tailnet state: %w", err)
	default:
		var nodes []*tailcfg.Node
		if err := json.Unmarshal(b, &nodes); err != nil {
			return fmt.Errorf("dev tailnet state %s is damaged (%v): move it aside, and the nodes register again with new IDs", path, err)
		}
		if len(nodes) > maxStateNodes {
			return fmt.Errorf("dev tailnet state %s holds %d nodes, more than %d: move it aside", path, len(nodes), maxStateNodes)
		}
		if err := initNodes(control); err != nil {
			return err
		}
		for _, n := range nodes {
			if n == nil || n.Key.IsZero() {
				return fmt.Errorf("dev tailnet state %s holds a node without a key: move it aside", path)
			}
			n.Online = nil
			control.UpdateNode(n)
		}
	}
	t.server, t.stateFile = control, path
	t.saveReq, t.saveEnd, t.stopSave = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	control.SetOnMapRequest(func(key.NodePublic) {
		select {
		case t.saveReq <- struct{}{}:
		default:
		}
	})
	go t.saver()
	return nil
}

// initNodes makes control's node table, which testcontrol makes only at
// the first registration and which [testcontrol.Server.UpdateNode] needs.
// testcontrol has no other way to start with nodes (AddFakeNode would add
// a node of its own), so the private field is set through reflection;
// TestStateSurvivesRestart catches a tailscale.com release that renames
// it, and this then fails with a clear error rather than corrupt anything.
func initNodes(control *testcontrol.Server) error {
	f := reflect.ValueOf(control).Elem().FieldByName("nodes")
	want := reflect.TypeFor[map[key.NodePublic]*tailcfg.Node]()
	if !f.IsValid() || f.Type() != want {
		return errors.New("dev tailnet state: this tailscale.com's control server cannot be given its nodes back; move the state file aside")
	}
	m := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
	if m.IsNil() {
		m.Set(reflect.MakeMap(want))
	}
	return nil
}

func (t *Tailnet) saver() {
	defer close(t.saveEnd)
	var last []byte
	save := func() {
		b, err := json.Marshal(t.server.AllNodes())
		if err != nil || bytes.Equal(b, last) {
			return
		}
		if config.WriteFile(t.stateFile, b, 0o600) == nil {
			last = b
		}
	}
	for {
		select {
		case <-t.stopSave:
			save()
			return
		case <-t.saveReq:
			save()
		}
		select {
		case <-t.stopSave:
			save()
			return
		case <-time.After(time.Second):
		}
	}
}

// ControlPort is the control server's TCP port, for a restart to reuse.
func (t *Tailnet) ControlPort() int {
	u, err := url.Parse(t.ControlURL)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(u.Port())
	return p
}

func listenPreferring(ctx context.Context, addr string, port int) (net.Listener, error) {
	var lc net.ListenConfig
	if port > 0 {
		if ln, err := lc.Listen(ctx, "tcp4", net.JoinHostPort(addr, strconv.Itoa(port))); err == nil {
			return ln, nil
		}
	}
	return lc.Listen(ctx, "tcp4", net.JoinHostPort(addr, "0"))
}

func serveSTUN(pc net.PacketConn, done chan<- struct{}) {
	defer close(done)
	var buf [2048]byte
	for {
		n, src, err := pc.ReadFrom(buf[:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pkt := buf[:n]
		if !stun.Is(pkt) {
			continue
		}
		txid, err := stun.ParseBindingRequest(pkt)
		if err != nil {
			continue
		}
		ua, ok := src.(*net.UDPAddr)
		if !ok {
			continue
		}
		ap := ua.AddrPort()
		pc.WriteTo(stun.Response(txid, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())), src)
	}
}

func logf(log *slog.Logger) func(string, ...any) {
	return func(format string, args ...any) {
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug(strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"))
		}
	}
}

// Close stops every server of the dev tailnet.
func (t *Tailnet) Close() error {
	if t.control != nil {
		t.control.Close()
	}
	if t.stopSave != nil {
		close(t.stopSave)
		<-t.saveEnd
		t.stopSave = nil
	}
	if t.derp != nil {
		t.derp.CloseClientConnections()
		t.derp.Close()
	}
	if t.derpSrv != nil {
		t.derpSrv.Close()
	}
	if t.stun != nil {
		t.stun.Close()
		<-t.stunEnd
	}
	return nil
}
