package agentcli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/cli"
)

// TestHealth: 'agent health' exits 0 only on the agent's 200, and with
// --live also on its 503 (broker unreachable); it fails on no answer or
// on something that is not the agent's health, and refuses a
// non-loopback address.
func TestHealth(t *testing.T) {
	srv := func(code int, body string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(code)
			io.WriteString(w, body)
		}))
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://")
	}
	ok := srv(http.StatusOK, `{"status":"ok"}`)
	down := srv(http.StatusServiceUnavailable, `{"status":"broker unreachable"}`)
	other := srv(http.StatusNotFound, "404 page not found")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"ok", []string{"--addr", ok}, 0, "ok"},
		{"ok live", []string{"--addr", ok, "--live"}, 0, "ok"},
		{"broker unreachable", []string{"--addr", down}, 1, "says broker unreachable"},
		{"broker unreachable live", []string{"--addr", down, "--live"}, 0, "live: broker unreachable"},
		{"not the agent", []string{"--addr", other, "--live"}, 1, "not the agent's health"},
		{"nothing listening", []string{"--addr", closed, "--live"}, 1, "no answer from the agent"},
		{"not loopback", []string{"--addr", "10.0.0.1:8081"}, 2, "want the agent's loopback --health-addr"},
		{"no address", nil, 2, "--addr"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), append([]string{"health"}, tt.args...), strings.NewReader(""), &out, io.Discard)
			if cli.ExitCode(err) != tt.code {
				t.Fatalf("agent health %q = %v (exit %d), want exit %d", tt.args, err, cli.ExitCode(err), tt.code)
			}
			got := out.String()
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("agent health %q said %q, want %q", tt.args, got, tt.want)
			}
		})
	}
}
