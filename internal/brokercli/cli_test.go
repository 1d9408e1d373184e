package brokercli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/tetherhq/tether/internal/cli"
)

// parser is the broker's command line, for walking its commands.
func parser(t *testing.T) *kong.Kong {
	t.Helper()
	k, err := newParser(&brokerCLI{}, io.Discard, io.Discard, &env{ctx: context.Background()})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestHelpAtEveryLevel: -h on every command the framework lists, and
// 'help' wherever a command is expected, print that command's help to
// stdout and exit 0 — including the branches that once answered
// "unknown command" (deployment -h, deployment help, network ingress -h).
func TestHelpAtEveryLevel(t *testing.T) {
	k := parser(t)
	type tc struct {
		args []string
		want string
	}
	tests := []tc{
		{[]string{"-h"}, "Usage: broker <command>"},
		{[]string{"help"}, "Usage: broker <command>"},
		{[]string{"deployment", "-h"}, "deployment (deployments) list"},
		{[]string{"deployment", "help"}, "deployment (deployments) list"},
		{[]string{"deployments", "help", "create"}, "Usage: broker deployment (deployments) create"},
		{[]string{"network", "ingress", "-h"}, "network ingress enable"},
		{[]string{"network", "ingress", "help"}, "network ingress enable"},
		{[]string{"help", "request", "list"}, "--state=S"},
		{[]string{"request", "help", "list"}, "--state=S"},
		{[]string{"requests", "show", "-h"}, "<id>"},
	}
	for _, n := range cli.Commands(k.Model.Node) {
		path := strings.Fields(strings.TrimPrefix(cli.CommandPath(n), "broker "))
		tests = append(tests, tc{append(path, "-h"), "Usage: broker " + strings.Join(path[:1], " ")})
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tt.args, strings.NewReader(""), &out, &errOut, Options{})
		if !errors.Is(err, cli.ErrHelp) || cli.ExitCode(err) != 0 {
			t.Errorf("broker %s = %v (exit %d), want help and exit 0", strings.Join(tt.args, " "), err, cli.ExitCode(err))
			continue
		}
		if !strings.Contains(out.String(), tt.want) || errOut.Len() != 0 {
			t.Errorf("broker %s printed %q (stderr %q), want %q on stdout", strings.Join(tt.args, " "), out.String(), errOut.String(), tt.want)
		}
	}
}

// TestUsageErrorsSuggest: a mistyped command or flag is a one-line usage
// error (exit 2) naming the closest one and what is accepted.
func TestUsageErrorsSuggest(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"requst", "list"}, []string{`unknown command "requst" (did you mean "request"?)`, "request, permit, query, prom, proxy, policy", "network, ticket", "(run 'broker help')"}},
		{[]string{"deployment", "lst"}, []string{`unknown command 'deployment lst' (did you mean one of "list", "set"?)`, "want create, list, show, set, freeze, maintenance, pairing-token, revoke-agent or ping"}},
		{[]string{"network", "ingress", "enabel"}, []string{`unknown command 'network ingress enabel' (did you mean "enable"?)`}},
		{[]string{"request", "list", "--stat", "pending"}, []string{`broker request list: unknown flag --stat (did you mean "--state"?)`, "(run 'broker request list -h')"}},
		{[]string{"query", "--deplyment", "acme/prod", "SELECT 1"}, []string{`unknown flag --deplyment (did you mean "--deployment"?)`}},
		{[]string{"deployment"}, []string{"deployment: want a subcommand: create, list", "(run 'broker deployment -h')"}},
		{nil, []string{"no command given: want serve, login"}},
		{[]string{"info", "extra"}, []string{`broker info: unexpected argument "extra"`}},
		{[]string{"deployment", "ping", "acme/prod", "--count", "x"}, []string{"broker deployment ping: --count: expected a valid"}},
	} {
		err := run(context.Background(), tt.args, strings.NewReader(""), io.Discard, io.Discard, Options{})
		var ue *cli.UsageError
		if !errors.As(err, &ue) || cli.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("broker %s = %v (exit %d), want a one-line usage error", strings.Join(tt.args, " "), err, cli.ExitCode(err))
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("broker %s = %q, want it to contain %q", strings.Join(tt.args, " "), err, w)
			}
		}
	}
}

// TestSharedFlags: --config and --output (-o) are declared once and
// every command that calls the broker takes --config, every one that
// prints a result takes --output; and they work: each command below
// reads the CLI config it names and prints JSON with -o json.
func TestSharedFlags(t *testing.T) {
	k := parser(t)
	help := map[string]string{}
	for _, n := range cli.Commands(k.Model.Node) {
		for _, f := range n.Flags {
			if f.Name != "config" && f.Name != "output" || n.Name == "serve" || n.Name == "query" {
				continue
			}
			if h, ok := help[f.Name]; ok && h != f.Help {
				t.Errorf("%s --%s: help %q, want the one shared declaration's %q", cli.CommandPath(n), f.Name, f.Help, h)
			}
			help[f.Name] = f.Help
			if f.Name == "output" && f.Short != 'o' {
				t.Errorf("%s --output has no -o", cli.CommandPath(n))
			}
		}
	}
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
	}))
	defer srv.Close()
	cfg := testConfig(t, srv.URL)
	for _, args := range [][]string{
		{"deployment", "list"},
		{"deployment", "show", "acme/prod"},
		{"whoami"},
		{"info"},
		{"request", "list"},
		{"request", "show", testID},
		{"audit", "search"},
		{"ticket", "check", "acme/incidents#4"},
	} {
		for _, flags := range [][]string{{"--config", cfg, "-o", "json"}, {"--output=json", "--config=" + cfg}} {
			var out bytes.Buffer
			before := calls.Load()
			err := run(context.Background(), append(append([]string{}, args...), flags...), strings.NewReader(""), &out, io.Discard, Options{})
			if err != nil || calls.Load() == before || !json.Valid(out.Bytes()) {
				t.Errorf("broker %s %s = %v, %d calls, output %q; want JSON from the broker the config names", strings.Join(args, " "), strings.Join(flags, " "), err, calls.Load()-before, out.String())
			}
		}
	}
}

// TestDocsListEveryCommand: docs/cli.md has a section for every command
// the framework lists, so the reference cannot drift from the binary.
func TestDocsListEveryCommand(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	k := parser(t)
	for _, n := range append([]*kong.Node{k.Model.Node}, cli.Commands(k.Model.Node)...) {
		if h := "### `" + cli.CommandPath(n) + "`"; !bytes.Contains(doc, []byte(h)) {
			t.Errorf("docs/cli.md has no section %s: run scripts/gencli.sh", h)
		}
	}
}

// TestServerConfigPrecedence: a setting is taken from its flag, else its
// TETHER_* environment variable, else the config file.
func TestServerConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "broker.json")
	if err := os.WriteFile(file, []byte(`{"data_dir": "/file", "listen": "127.0.0.1:1", "heartbeat_interval": "7s",
		"control_url": "https://control.file", "network": {"private_domain": "file.example.com"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		env   map[string]string
		flags []string
		check func(dataDir, listen, controlURL, domain string, hb time.Duration) bool
	}{
		{"file only", nil, nil, func(d, l, c, p string, hb time.Duration) bool {
			return d == "/file" && l == "127.0.0.1:1" && c == "https://control.file" && p == "file.example.com" && hb == 7*time.Second
		}},
		{"env over file", map[string]string{"TETHER_DATA_DIR": "/env", "TETHER_CONTROL_URL": "https://control.env", "TETHER_NETWORK_PRIVATE_DOMAIN": "env.example.com"}, nil,
			func(d, l, c, p string, hb time.Duration) bool {
				return d == "/env" && l == "127.0.0.1:1" && c == "https://control.env" && p == "env.example.com"
			}},
		{"flag over env", map[string]string{"TETHER_DATA_DIR": "/env", "TETHER_LISTEN": "127.0.0.1:2"}, []string{"--data-dir", "/flag", "--network-private-domain", "flag.example.com", "--heartbeat-interval", "9s"},
			func(d, l, c, p string, hb time.Duration) bool {
				return d == "/flag" && l == "127.0.0.1:2" && c == "https://control.file" && p == "flag.example.com" && hb == 9*time.Second
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range []string{"TETHER_DATA_DIR", "TETHER_LISTEN", "TETHER_CONTROL_URL", "TETHER_NETWORK_PRIVATE_DOMAIN"} {
				t.Setenv(name, tt.env[name])
			}
			var cli brokerCLI
			k, err := newParser(&cli, io.Discard, io.Discard, &env{ctx: context.Background()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := k.Parse(append([]string{"serve", "--config", file}, tt.flags...)); err != nil {
				t.Fatal(err)
			}
			cfg, err := cli.Serve.brokerConfig(os.Getenv)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg.DataDir, cfg.Listen, cfg.ControlURL, cfg.NetworkPrivateDomain, cfg.HeartbeatInterval) {
				t.Errorf("broker serve %q with env %v = data_dir %q, listen %q, control_url %q, private_domain %q, heartbeat %v",
					tt.flags, tt.env, cfg.DataDir, cfg.Listen, cfg.ControlURL, cfg.NetworkPrivateDomain, cfg.HeartbeatInterval)
			}
		})
	}
}
