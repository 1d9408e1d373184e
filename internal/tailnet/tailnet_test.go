package tailnet_test

import (
	"context"
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
