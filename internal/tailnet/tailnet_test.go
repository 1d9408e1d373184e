package tailnet_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/devnet"
	"github.com/tetherhq/tether/internal/tailnet"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func TestTwoNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dn, err := devnet.Start(ctx, devnet.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dn.Close() })

	up := func(name string) *tailnet.Node {
		n, err := tailnet.New(tailnet.Config{Hostname: name, ControlURL: dn.ControlURL, AuthKey: dn.AuthKey, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		if _, err := n.Up(ctx); err != nil {
			t.Fatalf("%s: Up: %v", name, err)
		}
		return n
	}
	a, b := up("alpha"), up("bravo")

	ln, err := b.Listen(80)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ln.Addr().String(), b.IPv4().String()+":") {
		t.Errorf("Listen addr = %v, want on tailnet IP %v", ln.Addr(), b.IPv4())
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := b.WhoIs(r.Context(), r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		io.WriteString(w, id.Name)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	p, err := a.WaitPeer(ctx, "bravo")
	if err != nil {
		t.Fatal(err)
	}
	if p.IP != b.IPv4() {
		t.Errorf("WaitPeer IP = %v, want %v", p.IP, b.IPv4())
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: a.Dial}}
	res, err := hc.Get("http://" + net.JoinHostPort(p.IP.String(), "80") + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if got := string(body); !strings.HasPrefix(got, "alpha.") {
		t.Errorf("WhoIs name = %q, want alpha.*", got)
	}
	if _, err := a.FindPeer(ctx, "charlie"); err == nil {
		t.Error("FindPeer(charlie) succeeded, want ErrNoSuchPeer")
	}

	// NodeAddr gives the address the netmap holds for a node ID.
	if ip, err := a.NodeAddr(ctx, p.ID); err != nil || ip != b.IPv4() {
		t.Errorf("NodeAddr(%s) = %v, %v; want %v", p.ID, ip, err, b.IPv4())
	}
	if _, err := a.NodeAddr(ctx, "TESTCTRL7fffffff"); !errors.Is(err, tailnet.ErrNotOnTailnet) {
		t.Errorf("NodeAddr(unknown node) = %v, want ErrNotOnTailnet", err)
	}

	// Dial reaches tailnet peers only: no host network, no names, no
	// address the netmap does not give a peer. The loopback listener
	// shows a fallback to the host network would have connected.
	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := hostLn.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	for _, addr := range []string{
		hostLn.Addr().String(),                      // the host's loopback
		"localhost:80",                              // a name
		"100.64.99.99:80",                           // a tailnet-looking address no peer holds
		"169.254.169.254:80",                        // the cloud metadata endpoint
		"[fd7a:115c:a1e0::9999]:80",                 // a tailnet IPv6 address no peer holds
		net.JoinHostPort(p.IP.String(), "80") + "x", // malformed
	} {
		if c, err := a.Dial(ctx, "tcp", addr); err == nil {
			c.Close()
			t.Errorf("Dial(%s) connected, want a refusal", addr)
		} else if !errors.Is(err, tailnet.ErrNotOnTailnet) {
			t.Errorf("Dial(%s) = %v, want ErrNotOnTailnet", addr, err)
		}
	}
	select {
	case <-accepted:
		t.Error("a dial reached the host's loopback listener")
	default:
	}
	if _, err := a.Dial(ctx, "udp", net.JoinHostPort(p.IP.String(), "80")); err == nil {
		t.Error("Dial(udp) succeeded, want only tcp")
	}

	// A client built the way the broker builds its agent client follows
	// no redirect.
	ln2, err := b.Listen(81)
	if err != nil {
		t.Fatal(err)
	}
	redir := &http.Server{Handler: http.RedirectHandler("http://"+hostLn.Addr().String()+"/", http.StatusTemporaryRedirect)}
	go redir.Serve(ln2)
	t.Cleanup(func() { redir.Close() })
	rc := &http.Client{Transport: a.HTTPTransport(), CheckRedirect: tailnet.NoRedirects}
	if _, err := rc.Post("http://"+net.JoinHostPort(p.IP.String(), "81")+"/", "text/plain", strings.NewReader("body")); !errors.Is(err, tailnet.ErrRedirect) {
		t.Errorf("POST to a redirecting peer = %v, want ErrRedirect", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []tailnet.Config{
		{Hostname: "", ControlURL: "http://x"},
		{Hostname: "Bad_Name", ControlURL: "http://x"},
		{Hostname: "ok", ControlURL: "ftp://x"},
		{Hostname: "ok", ControlURL: "nohost"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want error", c)
		}
	}
	if err := (tailnet.Config{Hostname: "ok", ControlURL: "https://controlplane.tailscale.com"}).Validate(); err != nil {
		t.Errorf("Validate(valid) = %v", err)
	}
}
