package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devbroker"
	"github.com/tetherhq/tether/internal/devnet"
	"github.com/tetherhq/tether/internal/ghub/ghubtest"
	"github.com/tetherhq/tether/internal/pgtest"
	"github.com/tetherhq/tether/internal/testenv"
)

// haproxyPath finds Debian's haproxy.
func haproxyPath() string {
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	return ""
}

// haCluster is several production brokers on one PostgreSQL, sharing one
// key, on a tailnet whose control server the test runs (as Headscale
// would), with the API behind haproxy.
type haCluster struct {
	dir, cert, key  string
	env             []string
	tn              *devnet.Tailnet
	brokers         map[string]*proc
	apis            map[string]string // broker → its own API address
	idp             *brokertest.IdP
	identity        []byte
	github          string // the fake GitHub API's URL
	brokerKeyPublic string
}

// newHACluster starts what the brokers share: PostgreSQL, a tailnet
// (its control server run by the test), the TLS certificate, the signing
// and seal keys as an operator would hand them out, and the identity
// providers. github is the GitHub API the brokers ask, with its token.
func newHACluster(t *testing.T, ctx context.Context, github, githubToken string) *haCluster {
	t.Helper()
	dsn := pgtest.Start(t)
	tn, err := devnet.Start(ctx, devnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	dir := t.TempDir()
	cert, tlsKey := selfSigned(t, dir)
	for _, f := range []string{"broker.key", "seal.key"} {
		b := make([]byte, 32)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, f), []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	idp := brokertest.NewIdP(t)
	identity, _ := json.Marshal(idp.Config)
	return &haCluster{dir: dir, cert: cert, key: tlsKey, tn: tn, idp: idp, identity: identity, github: github,
		env:     []string{"TETHER_E2E_PG_DSN=" + dsn, "TETHER_E2E_TS_KEY=" + tn.AuthKey, "TETHER_E2E_GH_TOKEN=" + githubToken},
		brokers: map[string]*proc{}, apis: map[string]string{}}
}

func (c *haCluster) startBroker(t *testing.T, name string) {
	t.Helper()
	cfgPath := filepath.Join(c.dir, "broker-"+name+".json")
	if err := os.WriteFile(cfgPath, []byte(`{
  "data_dir": "`+filepath.Join(c.dir, name)+`",
  "listen": "127.0.0.1:0",
  "tls_cert": "`+c.cert+`",
  "tls_key": "`+c.key+`",
  "store_driver": "postgres",
  "store_dsn": "env:TETHER_E2E_PG_DSN",
  "control_url": "`+c.tn.ControlURL+`",
  "auth_key": "env:TETHER_E2E_TS_KEY",
  "hostname": "broker-`+name+`",
  "tailnet_tags": ["tag:tether-broker"],
  "signing_key": "file:`+filepath.Join(c.dir, "broker.key")+`",
  "network_seal_key": "file:`+filepath.Join(c.dir, "seal.key")+`",
  "identity": `+string(c.identity)+`,
  "github": {"base_url": "`+c.github+`", "token": "env:TETHER_E2E_GH_TOKEN", "org": "vendor", "teams": ["sre"]},
  "heartbeat_interval": "500ms"
}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "broker", c.env, "serve", "--config", cfgPath)
	ready := p.waitLine(t, `msg="broker ready"`, 90*time.Second)
	m := regexp.MustCompile(`api=https://(127\.0\.0\.1:\d+)`).FindStringSubmatch(ready)
	if m == nil {
		t.Fatalf("ready line %q has no https API address", ready)
	}
	if k := regexp.MustCompile(`broker_key=(ed25519:\S+)`).FindStringSubmatch(ready); k != nil {
		c.brokerKeyPublic = k[1]
	}
	c.brokers[name], c.apis[name] = p, m[1]
}

// cli writes a CLI config for user, through the API at addr.
func (c *haCluster) cli(t *testing.T, addr, user string) []string {
	t.Helper()
	tok := filepath.Join(c.dir, "token-"+user)
	if err := os.WriteFile(tok, []byte(c.idp.Token(t, user)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.dir, "cli-"+user+"-"+strings.ReplaceAll(addr, ":", "_")+".json")
	if err := config.Write(path, config.CLI{APIURL: "https://" + addr, Token: "file:" + tok, CAFile: c.cert}, 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"TETHER_CONFIG=" + path}
}

// TestBrokersBehindHAProxy: three brokers share one PostgreSQL and one key
// behind haproxy. The broker the agent paired with and reports to is
// killed with SIGKILL in the middle of request → approve → query →
// revoke; the flow completes through the other two (the agent fails over
// to another broker node, which proves the shared key), nothing is lost,
// and the audit log exported through the load balancer verifies.
func TestBrokersBehindHAProxy(t *testing.T) {
	hap := haproxyPath()
	testenv.Require(t, hap != "", "haproxy (apt-get install haproxy)")
	ch := chtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// GitHub, which outside dev mode vouches for the ticket a request cites.
	gh := ghubtest.NewServer(t)
	gh.AddToken("ghp_tether_e2e")
	gh.AddTeam("vendor", "sre")
	gh.AddMember("vendor", "sre", "dev-engineer")
	gh.AddIssue(ghubtest.Issue{Owner: "vendor", Repo: "incidents", Number: 7, Title: "acme prod slow merges", Labels: []string{"sev2", "customer:acme"}, Assignees: []string{"dev-engineer"}})
	c := newHACluster(t, ctx, gh.URL(), "ghp_tether_e2e")
	dir, cert, tn := c.dir, c.cert, c.tn

	// Broker a alone first, so that the agent pairs with it and reports
	// to it: it is the one killed.
	c.startBroker(t, "a")
	admin := c.cli(t, c.apis["a"], "admin@vendor.test")
	out, errOut, code := runBin(t, admin, "broker", "deployment", "create", "--tenant", "acme", "--name", "prod", "--output", "json")
	if code != 0 {
		t.Fatalf("deployment create: %s", errOut)
	}
	var dep brokerapi.CreateDeploymentResponse
	if err := json.Unmarshal([]byte(out), &dep); err != nil {
		t.Fatal(err)
	}
	tokenFile, pw := filepath.Join(dir, "pairing-token"), filepath.Join(dir, "ch-password")
	os.WriteFile(tokenFile, []byte(dep.Pairing.Token+"\n"), 0o600)
	os.WriteFile(pw, []byte(chtest.Password+"\n"), 0o600)
	agent := start(t, "agent", []string{"TETHER_E2E_TS_KEY=" + tn.AuthKey}, "run", "--state-dir", filepath.Join(dir, "agent"),
		"--control-url", tn.ControlURL, "--auth-key", "env:TETHER_E2E_TS_KEY",
		"--broker-tag", "tag:tether-broker", "--broker-key", c.brokerKeyPublic, "--pairing-token", "file:"+tokenFile,
		"--clickhouse-url", ch.URL, "--clickhouse-user", "tether", "--clickhouse-password-file", pw)
	agent.waitLine(t, `msg="agent online"`, 90*time.Second)
	c.startBroker(t, "b")
	c.startBroker(t, "c")
	// The agent proves the other brokers' nodes within a heartbeat or
	// two; each could call it at once anyway (it proves a caller then).

	// haproxy in front, checking each broker's port every 100 ms and
	// sending a connection a dead broker refused to another.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := ln.Addr().String()
	ln.Close()
	hcfg := filepath.Join(dir, "haproxy.cfg")
	var servers strings.Builder
	for _, n := range []string{"a", "b", "c"} {
		fmt.Fprintf(&servers, "  server %s %s check inter 100ms fall 1 rise 1\n", n, c.apis[n])
	}
	os.WriteFile(hcfg, []byte(`global
  maxconn 256
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
frontend api
  bind `+lb+`
  default_backend brokers
backend brokers
  balance roundrobin
`+servers.String()), 0o600)
	lbProc := startCmd(t, "haproxy", exec.Command(hap, "-f", hcfg, "-db"), nil)
	eng := c.cli(t, lb, "engineer@vendor.test")
	approver := c.cli(t, lb, "approver@acme.test")
	admin = c.cli(t, lb, "admin@vendor.test")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, code := runBin(t, admin, "broker", "info"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy never answered:\n%s", lbProc.output())
		}
		time.Sleep(100 * time.Millisecond) // polling haproxy's readiness: it has no other signal
	}

	// The engineer asks.
	out, errOut, code = runBin(t, eng, "broker", "request", "create", "--deployment", "acme/prod", "--scope", "clickhouse:system",
		"--duration", "30m", "--reason", "merges are slow", "--ticket", "vendor/incidents#7", "--output", "json")
	if code != 0 {
		t.Fatalf("request create: %s", errOut)
	}
	var ar brokerapi.AccessRequest
	if err := json.Unmarshal([]byte(out), &ar); err != nil {
		t.Fatal(err)
	}
	// The broker the agent reports to dies.
	killed := time.Now()
	if err := c.brokers["a"].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.brokers["a"].wait(t, 10*time.Second)

	// The customer approves and the engineer queries, through the others.
	// acme's approver signs the approval at acme's identity provider (the
	// test's, minting the ID token whose nonce is the statement's digest).
	ac, err := brokerapi.NewClient(config.CLI{APIURL: "https://" + lb, Token: c.idp.Token(t, "approver@acme.test"), CAFile: cert})
	if err != nil {
		t.Fatal(err)
	}
	ac.SetSigner(func(_ context.Context, st brokerapi.ApprovalStatement) (string, error) {
		return c.idp.IdP.Token("acme", "approver@acme.test", devbroker.ClientID, st.Digest)
	})
	if r, err := ac.Approve(ctx, ar.ID, "go ahead"); err != nil || r.State != brokerapi.StateActive {
		t.Fatalf("approve after the kill: %+v, %v", r, err)
	}
	for {
		out, errOut, code = runBin(t, eng, "broker", "query", "--deployment", "acme/prod", "SELECT name FROM system.databases WHERE name = 'system'", "--output", "json")
		if code == 0 || time.Since(killed) > 30*time.Second {
			break
		}
		t.Logf("query %v after the kill: exit %d: %s", time.Since(killed).Round(time.Millisecond), code, strings.TrimSpace(errOut))
		time.Sleep(200 * time.Millisecond) // retrying as an engineer would; the test bounds it
	}
	if code != 0 || !strings.Contains(out, `"name":"system"`) {
		t.Fatalf("query after the kill: exit %d %q %q\nagent:\n%s", code, out, errOut, agent.output())
	}
	failover := time.Since(killed)
	t.Logf("failover: approve → query answered %v after the broker's death", failover.Round(time.Millisecond))
	if failover > 5*time.Second {
		t.Errorf("approve → query took %v after the broker's death, want within 5 s", failover)
	}
	// The agent reports to another broker once its heartbeats to the
	// dead one time out.
	agent.waitLine(t, "failing over to another broker node", 30*time.Second)
	t.Logf("the agent failed over %v after the broker's death", time.Since(killed).Round(time.Millisecond))

	// The customer revokes: the grant stops at once, whichever broker
	// the engineer reaches.
	if _, errOut, code := runBin(t, approver, "broker", "request", "revoke", ar.ID, "--reason", "done"); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	for _, n := range []string{"b", "c"} {
		direct := c.cli(t, c.apis[n], "engineer@vendor.test")
		// Refused by the broker, or — within the second a broker keeps a
		// grant it looked up — by the agent, which the revocation reached.
		if _, errOut, code := runBin(t, direct, "broker", "query", "--deployment", "acme/prod", "SELECT 1"); code == 0 || !strings.Contains(errOut, "no active grant") && !strings.Contains(errOut, "grant revoked") {
			t.Errorf("query at broker %s after revocation: exit %d %q, want refused", n, code, errOut)
		}
	}

	// Nothing lost: the agent's own events reach the log through the
	// broker it now reports to, and the log verifies.
	want := map[string]int{"request.created": 1, "review.approved": 1, "grant.issued": 1, "query.allowed": 1, "query.finished": 1, "grant.revoked": 1}
	export, key := filepath.Join(dir, "export.jsonl"), filepath.Join(dir, "audit.pub")
	deadline = time.Now().Add(30 * time.Second)
	for {
		if _, errOut, code := runBin(t, admin, "broker", "audit", "export", "--out", export); code != 0 {
			t.Fatalf("audit export through haproxy: %s", errOut)
		}
		got := countRequestEvents(t, export, ar.ID)
		missing := ""
		for typ, n := range want {
			if got[typ] < n {
				missing += fmt.Sprintf(" %s(%d/%d)", typ, got[typ], n)
			} else if got[typ] > n && typ != "query.allowed" && typ != "query.finished" {
				t.Errorf("%s recorded %d times, want %d", typ, got[typ], n)
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events missing from the log:%s", missing)
		}
		time.Sleep(250 * time.Millisecond) // the agent delivers its events with its heartbeats
	}
	if _, errOut, code := runBin(t, admin, "broker", "audit", "public-key", "--out", key); code != 0 {
		t.Fatalf("audit public-key: %s", errOut)
	}
	if out, errOut, code := runBin(t, nil, "broker", "audit", "verify", "--log", export, "--key", key); code != 0 || !strings.Contains(out, "OK:") {
		t.Fatalf("audit verify: exit %d %q %q", code, out, errOut)
	}
}

// countRequestEvents counts the events of an audit export whose line
// names request id, by type.
func countRequestEvents(t *testing.T, path, id string) map[string]int {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, line := range strings.Split(string(raw), "\n") {
		var rec struct {
			Event struct {
				Type string `json:"type"`
			} `json:"event"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Event.Type == "" {
			continue
		}
		if strings.Contains(line, id) {
			got[rec.Event.Type]++
		}
	}
	return got
}

// TestProductionBrokerRestart: a production broker (a tailnet it does
// not own, PostgreSQL) killed with SIGKILL and restarted on the same data
// directory after an outage: its paired agent is online again — a
// heartbeat the restarted broker took — within 10 s of it being ready,
// without re-pairing.
func TestProductionBrokerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newHACluster(t, ctx, "http://127.0.0.1:1/api/v3/", "unused")
	dir, tn := c.dir, c.tn
	c.startBroker(t, "a")
	admin := c.cli(t, c.apis["a"], "admin@vendor.test")
	out, errOut, code := runBin(t, admin, "broker", "deployment", "create", "--tenant", "acme", "--name", "prod", "--output", "json")
	if code != 0 {
		t.Fatalf("deployment create: %s", errOut)
	}
	var dep brokerapi.CreateDeploymentResponse
	if err := json.Unmarshal([]byte(out), &dep); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "pairing-token")
	os.WriteFile(tokenFile, []byte(dep.Pairing.Token+"\n"), 0o600)
	agent := start(t, "agent", []string{"TETHER_E2E_TS_KEY=" + tn.AuthKey}, "run", "--state-dir", filepath.Join(dir, "agent"),
		"--control-url", tn.ControlURL, "--auth-key", "env:TETHER_E2E_TS_KEY",
		"--broker-name", "broker-a", "--broker-key", c.brokerKeyPublic, "--pairing-token", "file:"+tokenFile)
	agent.waitLine(t, `msg="agent online"`, 90*time.Second)

	if err := c.brokers["a"].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.brokers["a"].wait(t, 10*time.Second)
	time.Sleep(10 * time.Second) // the outage under test
	c.startBroker(t, "a")
	ready := time.Now()
	admin = c.cli(t, c.apis["a"], "admin@vendor.test")
	for {
		out, errOut, code := runBin(t, admin, "broker", "deployment", "show", "acme/prod", "--output", "json")
		if code != 0 {
			t.Fatalf("deployment show: %s", errOut)
		}
		var d brokerapi.Deployment
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatal(err)
		}
		if d.AgentStatus == "online" && d.Agent != nil && d.Agent.LastSeen != nil && d.Agent.LastSeen.After(ready) {
			break
		}
		if time.Since(ready) > 10*time.Second {
			t.Fatalf("agent %s, last seen %v, 10 s after the restarted broker was ready; want a heartbeat since\nagent:\n%s", d.AgentStatus, d.Agent.LastSeen, agent.output())
		}
		time.Sleep(100 * time.Millisecond) // polling an observable state
	}
	t.Logf("the agent was back %v after the restarted production broker was ready", time.Since(ready).Round(time.Millisecond))
}

// TestHAProxyExampleValid: the haproxy configuration the README points
// operators to parses.
func TestHAProxyExampleValid(t *testing.T) {
	hap := haproxyPath()
	testenv.Require(t, hap != "", "haproxy (apt-get install haproxy)")
	out, err := exec.Command(hap, "-c", "-f", filepath.Join("..", "..", "deploy", "haproxy", "haproxy.cfg")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "valid") {
		t.Fatalf("haproxy -c deploy/haproxy/haproxy.cfg: %v\n%s", err, out)
	}
}
