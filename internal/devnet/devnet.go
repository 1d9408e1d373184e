// Package devnet runs a complete private tailnet inside the broker process
// for development and tests: the coordination server that ships with the
// tailscale.com module (testcontrol), a DERP relay and a STUN responder, all
// bound to one local address (loopback by default). Real tsnet nodes in
// other processes join it with the pre-auth key it hands out and talk real
// WireGuard through it.
package devnet

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"time"

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
		DERPMap:         derpMap,
		DNSConfig:       &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain:  MagicDNSDomain,
		RequireAuthKey:  authKey,
		TagOwners:       map[string][]string{},
		ExplicitBaseURL: t.ControlURL,
		Logf:            logf(log),
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
