package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/protocol"
)

// checkOneLineError asserts a failed command printed one clear line, no
// stack trace, and exited with the wanted status.
func checkOneLineError(t *testing.T, stderr string, code, wantCode int, want string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit status = %d, want %d (stderr %q)", code, wantCode, stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr = %q, want it to contain %q", stderr, want)
	}
	if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
		t.Errorf("stderr has a stack trace: %q", stderr)
	}
	if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 0 {
		t.Errorf("stderr has %d lines, want one: %q", n+1, stderr)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCLIBadInput(t *testing.T) {
	b := startBroker(t)
	b.createDeployment(t, "acme", "prod")
	dir := t.TempDir()
	notDir := writeFile(t, dir, "file", "x")
	badJSON := writeFile(t, dir, "bad.json", "{\n  \"api_url\": \n")
	unknownField := writeFile(t, dir, "unknown.json", `{"api_url":"http://127.0.0.1:1","token":"x","tokne":"y"}`)
	badURL := writeFile(t, dir, "badurl.json", `{"api_url":"127.0.0.1:8443","token":"x"}`)
	var cli config.CLI
	if err := config.Load(b.cliJSON, &cli); err != nil {
		t.Fatal(err)
	}
	badAuth := writeFile(t, dir, "badauth.json", `{"api_url":"`+cli.APIURL+`","token":"tat_wrong"}`)
	closed := writeFile(t, dir, "closed.json", `{"api_url":"http://127.0.0.1:1","token":"x"}`)

	tests := []struct {
		name     string
		env      []string
		bin      string
		args     []string
		wantCode int
		want     string
	}{
		{"no command", nil, "broker", nil, 2, "no command given"},
		{"unknown command", nil, "broker", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown subcommand", nil, "broker", []string{"deployment", "delete"}, 2, "unknown command 'deployment delete'"},
		{"unknown flag", []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", []string{"deployment", "create", "--tenant", "a", "--name", "b", "--bogus"}, 2, `unknown flag --bogus`},
		{"no config", []string{"TETHER_CONFIG=", "XDG_CONFIG_HOME=" + dir}, "broker", []string{"deployment", "list"}, 2, "no CLI config at " + filepath.Join(dir, "tether", "cli.json") + ": run 'broker login --api-url https://BROKER'"},
		{"not logged in", nil, "broker", []string{"whoami", "--config", writeFile(t, dir, "anon.json", `{"api_url":"`+cli.APIURL+`"}`)}, 2, "not logged in: run 'broker login'"},
		{"login unknown dev user", nil, "broker", []string{"login", "--config", b.cliJSON, "--dev-user", "nobody@vendor.test"}, 2, `--dev-user "nobody@vendor.test": no such dev user; the dev broker has engineer@vendor.test`},
		{"login unknown issuer", nil, "broker", []string{"login", "--config", b.cliJSON, "--issuer", "initech"}, 2, `--issuer "initech": the broker has no identity provider by that name`},
		{"login dev user of another issuer", nil, "broker", []string{"login", "--config", b.cliJSON, "--issuer", "globex", "--dev-user", "approver@acme.test"}, 2, "--dev-user approver@acme.test belongs to issuer acme, not globex"},
		{"login without config", []string{"TETHER_CONFIG="}, "broker", []string{"login", "--config", filepath.Join(dir, "new", "cli.json")}, 2, "no CLI config at " + filepath.Join(dir, "new", "cli.json") + ": give --api-url"},
		{"missing config", nil, "broker", []string{"deployment", "list", "--config", filepath.Join(dir, "nope.json")}, 1, "nope.json: no such file or directory"},
		{"malformed config", nil, "broker", []string{"deployment", "list", "--config", badJSON}, 1, "the JSON ends before the object is complete"},
		{"unknown config field", nil, "broker", []string{"deployment", "list", "--config", unknownField}, 1, `unknown field "tokne"`},
		{"bad api_url", nil, "broker", []string{"deployment", "list", "--config", badURL}, 1, `"api_url" is "127.0.0.1:8443": want an absolute http:// or https:// URL`},
		{"wrong admin token", nil, "broker", []string{"deployment", "list", "--config", badAuth}, 1, "invalid bootstrap token"},
		{"garbage ID token", nil, "broker", []string{"deployment", "list", "--config", writeFile(t, dir, "garbage.json", `{"api_url":"`+cli.APIURL+`","token":"eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0."}`)}, 1, `iss "x": unknown issuer: this broker does not trust that issuer; run 'broker login --issuer NAME'`},
		{"broker down", nil, "broker", []string{"deployment", "list", "--config", closed}, 1, "cannot reach the broker API at http://127.0.0.1:1"},
		{"bad output", []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", []string{"deployment", "list", "--output", "yaml"}, 2, `--output "yaml": want one of table, json`},
		{"invalid tenant", []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", []string{"deployment", "create", "--tenant", "Acme", "--name", "prod"}, 1, `tenant "Acme" is not a DNS label`},
		{"invalid name", []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", []string{"deployment", "create", "--tenant", "acme", "--name", "-prod"}, 1, `name "-prod" is not a DNS label`},
		{"invalid region", []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", []string{"deployment", "create", "--tenant", "acme", "--name", "p2", "--region", "Mars 1"}, 1, `region "Mars 1": want a cloud region such as us-east-1`},
		{"duplicate name", []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", []string{"deployment", "create", "--tenant", "acme", "--name", "prod"}, 1, `tenant "acme" already has a deployment named "prod"`},
		{"missing flags", []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", []string{"deployment", "create", "--tenant", "acme"}, 2, "--tenant and --name are required"},
		{"unknown deployment", []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", []string{"deployment", "show", "acme/nope"}, 1, "no deployment acme/nope"},
		{"bad deployment id", []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", []string{"deployment", "show", "not-a-uuid"}, 1, `deployment "not-a-uuid": want a deployment ID`},
		{"serve without control", []string{"TETHER_CONTROL_URL="}, "broker", []string{"serve", "--data-dir", dir}, 2, "outside dev mode the broker needs the tailnet's control server"},
		{"serve with an admin token", []string{"TETHER_CONTROL_URL=http://127.0.0.1:1", "TETHER_AUTH_KEY=k", "TETHER_ADMIN_TOKEN=t"}, "broker", []string{"serve", "--data-dir", dir}, 2, "admin_token (TETHER_ADMIN_TOKEN) is no longer accepted"},
		{"serve without identity", []string{"TETHER_CONTROL_URL=http://127.0.0.1:1", "TETHER_AUTH_KEY=k"}, "broker", []string{"serve", "--data-dir", dir}, 2, "identity is not configured"},
		{"serve with a bad identity", []string{"TETHER_CONTROL_URL=http://127.0.0.1:1", "TETHER_AUTH_KEY=k"}, "broker", []string{"serve", "--data-dir", dir, "--config", writeFile(t, dir, "badidentity.json", `{"identity":{"issuers":[{"name":"vendor","issuer_url":"http://login.vendor.example","client_id":"tether","role_map":{"eng":"engineer"}}]}}`)}, 2, "use https"},
		{"serve plain HTTP on a public address", []string{"TETHER_CONTROL_URL=http://127.0.0.1:1", "TETHER_AUTH_KEY=k"}, "broker", []string{"serve", "--data-dir", dir, "--listen", "0.0.0.0:8443"}, 2, "is not loopback and TLS is off"},
		{"serve --dev in production", nil, "broker", []string{"serve", "--dev", "--data-dir", dir}, 2, "--dev is not in this build: the production broker links no dev tailnet or dev identity provider; run bin/broker-dev serve --dev"},
		{"serve --dev-addr in production", nil, "broker", []string{"serve", "--dev-addr", "127.0.0.1", "--data-dir", dir}, 2, "run bin/broker-dev serve --dev"},
		{"serve bad AWS endpoint", nil, "broker-dev", []string{"serve", "--dev", "--data-dir", dir, "--aws-endpoint-url", "127.0.0.1:5000"}, 2, `AWS endpoint URL "127.0.0.1:5000": want an http:// or https:// URL`},
		{"serve private domain of AWS", nil, "broker-dev", []string{"serve", "--dev", "--data-dir", dir, "--network-private-domain", "amazonaws.com"}, 2, `network.private_domain`},
		{"serve bad listen", nil, "broker-dev", []string{"serve", "--dev", "--data-dir", dir, "--listen", "8443"}, 2, `listen address "8443": want HOST:PORT`},
		{"serve unwritable data dir", nil, "broker-dev", []string{"serve", "--dev", "--data-dir", filepath.Join(notDir, "d")}, 1, "data dir " + filepath.Join(notDir, "d") + ": not a directory"},

		{"agent no command", nil, "agent", nil, 2, "no command given"},
		{"agent unknown flag", nil, "agent", []string{"run", "--nope"}, 2, `unknown flag --nope`},
		{"agent no state dir", nil, "agent", []string{"run", "--join", b.join, "--pairing-token", "tpt_" + strings.Repeat("A", 43)}, 1, "state dir is not set"},
		{"agent missing join", nil, "agent", []string{"run", "--join", filepath.Join(dir, "nope.json"), "--state-dir", filepath.Join(dir, "s1")}, 1, "nope.json: no such file or directory"},
		{"agent malformed join", nil, "agent", []string{"run", "--join", badJSON, "--state-dir", filepath.Join(dir, "s2")}, 1, "bad.json is not valid"},
		{"agent join syntax error", nil, "agent", []string{"run", "--join", writeFile(t, dir, "syntax.json", "{\n\"control_url\": x}"), "--state-dir", filepath.Join(dir, "s2")}, 1, "JSON syntax error on line 2"},
		{"agent join wrong fields", nil, "agent", []string{"run", "--join", unknownField, "--state-dir", filepath.Join(dir, "s3")}, 1, `unknown field "api_url"`},
		{"agent unwritable state dir", nil, "agent", []string{"run", "--join", b.join, "--state-dir", filepath.Join(notDir, "s"), "--pairing-token", "tpt_" + strings.Repeat("A", 43)}, 1, "not a directory"},
		{"agent not paired, no token", nil, "agent", []string{"run", "--join", b.join, "--state-dir", filepath.Join(dir, "s4")}, 1, "not paired yet: give --pairing-token"},
		{"agent malformed token", nil, "agent", []string{"run", "--join", b.join, "--state-dir", filepath.Join(dir, "s5"), "--pairing-token", "hunter2"}, 1, "malformed pairing token"},
		{"agent token from unset env", nil, "agent", []string{"run", "--join", b.join, "--state-dir", filepath.Join(dir, "s6"), "--pairing-token", "env:TETHER_E2E_UNSET"}, 1, "environment variable TETHER_E2E_UNSET is not set"},
		{"agent both join and flags", nil, "agent", []string{"run", "--join", b.join, "--control-url", "http://x", "--state-dir", filepath.Join(dir, "s7")}, 2, "either --join FILE or"},
		{"agent bad broker key", nil, "agent", []string{"run", "--state-dir", filepath.Join(dir, "s8"), "--control-url", "http://127.0.0.1:1", "--auth-key", "k", "--broker-name", "b", "--broker-key", "ssh-ed25519 AAAA", "--pairing-token", "tpt_" + strings.Repeat("A", 43)}, 1, `"broker_key" must be the broker's public key`},
		{"agent health not loopback", nil, "agent", []string{"run", "--join", b.join, "--state-dir", filepath.Join(dir, "s9"), "--health-addr", "0.0.0.0:9090", "--pairing-token", "tpt_" + strings.Repeat("A", 43)}, 1, "want a loopback HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runBin(t, tt.env, tt.bin, tt.args...)
			checkOneLineError(t, stderr, code, tt.wantCode, tt.want)
		})
	}

	// Nothing half-written: the refused creates added nothing, and the
	// refused agents left no state.
	out, _, _ := b.cli(t, "deployment", "list", "--output", "json")
	if n := strings.Count(out, `"tenant"`); n != 1 {
		t.Errorf("after refused creates the broker lists %d deployments, want 1", n)
	}
	for _, s := range []string{"s1", "s2", "s3", "s4", "s5", "s6", "s7", "s9"} {
		if _, err := os.Stat(filepath.Join(dir, s, "state.json")); err == nil {
			t.Errorf("refused agent run left %s/state.json", s)
		}
	}
}

// TestAgentUnreachableControl: a control URL nobody answers is a clear
// error within a bounded time, not a hang.
func TestAgentUnreachableControl(t *testing.T) {
	start := time.Now()
	_, stderr, code := runBin(t, nil, "agent", "run", "--state-dir", t.TempDir(),
		"--control-url", "http://127.0.0.1:1", "--auth-key", "tskey-x", "--broker-name", "tether-broker",
		"--broker-key", protocol.EncodePublicKey(make([]byte, 32)), "--pairing-token", "tpt_"+strings.Repeat("A", 43))
	checkOneLineError(t, stderr, code, 1, "cannot reach the tailnet control server at http://127.0.0.1:1")
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v to report an unreachable control server, want under 15s", d)
	}
}

// TestWrongBrokerKey: an agent refuses a broker that cannot prove the key
// pinned at pairing, both when told another key and when its state says
// another key.
func TestWrongBrokerKey(t *testing.T) {
	b := startBroker(t)
	res := b.createDeployment(t, "acme", "prod")
	stateDir := filepath.Join(t.TempDir(), "a")
	a := b.startAgent(t, stateDir, "--pairing-token", res.Pairing.Token)
	a.waitLine(t, `msg="agent online"`, 90*time.Second)
	a.stop()

	other := protocol.EncodePublicKey(make([]byte, 32))
	var j config.Join
	if err := config.Load(b.join, &j); err != nil {
		t.Fatal(err)
	}
	j.BrokerKey = other
	joinOther := filepath.Join(t.TempDir(), "join.json")
	if err := config.Write(joinOther, j, 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runBin(t, nil, "agent", "run", "--join", joinOther, "--state-dir", stateDir)
	checkOneLineError(t, stderr, code, 1, "broker key mismatch: this agent paired with broker key")

	// Tamper with the pinned key in the state: the real broker's
	// challenge signature no longer verifies, and the agent stops.
	statePath := filepath.Join(stateDir, "state.json")
	var st agent.State
	if err := config.Load(statePath, &st); err != nil {
		t.Fatal(err)
	}
	st.BrokerKey = other
	if err := config.Write(statePath, st, 0o600); err != nil {
		t.Fatal(err)
	}
	// No broker key given: the agent relies on the one it pinned.
	p := start(t, "agent", nil, "run", "--state-dir", stateDir,
		"--control-url", j.ControlURL, "--auth-key", j.AuthKey, "--broker-name", j.BrokerName)
	if err := p.wait(t, 90*time.Second); err == nil {
		t.Fatal("agent with a wrong pinned broker key exited 0")
	}
	if !strings.Contains(p.output(), "broker key mismatch") || !strings.Contains(p.output(), "signed its proof with a key other than the pinned") {
		t.Errorf("agent output = %q, want a broker key mismatch", p.output())
	}
	if strings.Contains(p.output(), "agent online") {
		t.Error("agent went online with a wrong pinned broker key")
	}
	var raw map[string]any
	b2, _ := os.ReadFile(statePath)
	if json.Unmarshal(b2, &raw) != nil {
		t.Error("state.json damaged by the refused run")
	}
}
