package agentload_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/agentload"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devbroker"
	"github.com/tetherhq/tether/internal/pgtest"
	"github.com/tetherhq/tether/internal/protocol"
)

// The broker runs in its own process — this test binary, run again with
// envBroker set — so that its RSS and CPU are its own and the agents'
// work is not counted in them (nor hidden by sharing its heap).
const (
	envBroker   = "TETHER_AGENTLOAD_BROKER"   // the broker's data dir
	envInterval = "TETHER_AGENTLOAD_INTERVAL" // its heartbeat interval; empty for the default
	envPG       = "TETHER_AGENTLOAD_PG_DSN"   // a PostgreSQL store; empty for SQLite
	envPprof    = "TETHER_AGENTLOAD_PPROF"    // serve the broker process's net/http/pprof there (HOST:PORT)
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(envBroker); dir != "" {
		os.Exit(serveBroker(dir))
	}
	os.Exit(m.Run())
}

// ready is what the broker process prints on stdout once it serves.
type ready struct {
	APIURL    string `json:"api_url"`
	Token     string `json:"token"`
	AgentAddr string `json:"agent_addr"`
	BrokerKey string `json:"broker_key"`
}

// serveBroker is the broker process: a dev broker (for its bootstrap
// admin token; the agents use none of its tailnet) whose agent API is
// served on loopback, callers identified by agentload.LoopbackPeers.
func serveBroker(dir string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "agentload broker:", err)
		return 1
	}
	var interval time.Duration
	if v := os.Getenv(envInterval); v != "" {
		var err error
		if interval, err = time.ParseDuration(v); err != nil {
			return fail(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	readyc := make(chan struct{})
	h := readyHandler{Handler: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}), once: new(sync.Once), ch: readyc}
	cfg := broker.Config{
		Dev:               devbroker.New(devbroker.Config{}),
		DataDir:           dir,
		Listen:            "127.0.0.1:0",
		HeartbeatInterval: interval,
		AgentTransport:    agentload.LoopbackPeers{Listener: ln},
		Logger:            slog.New(h),
	}
	if dsn := os.Getenv(envPG); dsn != "" {
		cfg.StoreDriver, cfg.StoreDSN = "postgres", dsn
	}
	if addr := os.Getenv(envPprof); addr != "" {
		// The broker process's profiles, for a run by hand.
		go http.ListenAndServe(addr, nil)
	}
	b, err := broker.New(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	select {
	case <-readyc:
	case err := <-errc:
		return fail(fmt.Errorf("stopped before it was ready: %v", err))
	}
	var cli config.CLI
	var join config.Join
	if err := config.Load(filepath.Join(dir, "cli.json"), &cli); err != nil {
		return fail(err)
	}
	if err := config.Load(filepath.Join(dir, "join.json"), &join); err != nil {
		return fail(err)
	}
	line, _ := json.Marshal(ready{APIURL: cli.APIURL, Token: cli.Token, AgentAddr: ln.Addr().String(), BrokerKey: join.BrokerKey})
	fmt.Println(string(line))
	if err := <-errc; err != nil {
		return fail(err)
	}
	return 0
}

// readyHandler passes records on and closes ch at the broker's "broker
// ready": everything is served from then on.
type readyHandler struct {
	slog.Handler
	once *sync.Once
	ch   chan struct{}
}

func (h readyHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "broker ready" {
		h.once.Do(func() { close(h.ch) })
	}
	return h.Handler.Handle(ctx, r)
}

func (h readyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return readyHandler{Handler: h.Handler.WithAttrs(as), once: h.once, ch: h.ch}
}

func (h readyHandler) WithGroup(name string) slog.Handler {
	return readyHandler{Handler: h.Handler.WithGroup(name), once: h.once, ch: h.ch}
}

// brokerProc is a running broker process.
type brokerProc struct {
	ready
	pid int
}

// startBroker starts the broker process and waits until it serves; it is
// stopped when t ends, its log shown if t failed.
func startBroker(t testing.TB, interval time.Duration, pgDSN string) *brokerProc {
	t.Helper()
	dir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "broker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envBroker+"="+dir, envInterval+"=", envPG+"="+pgDSN)
	if interval > 0 {
		cmd.Env = append(cmd.Env, envInterval+"="+interval.String())
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			raw, _ := os.ReadFile(logPath)
			lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
			t.Logf("broker log (last 40 of %d lines):\n%s", len(lines), strings.Join(lines[max(len(lines)-40, 0):], "\n"))
		}
	})
	linec := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			linec <- sc.Text()
		}
		close(linec)
	}()
	var r ready
	select {
	case line, ok := <-linec:
		if !ok {
			<-done
			raw, _ := os.ReadFile(logPath)
			t.Fatalf("broker process exited before it was ready:\n%s", raw)
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("broker process: %v: %q", err, line)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("broker process not ready within 90 s")
	}
	return &brokerProc{ready: r, pid: cmd.Process.Pid}
}

// load is one run's parameters.
type load struct {
	agents    int
	interval  time.Duration // the broker's heartbeat interval; 0 for its default
	hold      time.Duration // how long all agents are held after the ramp
	growEvery time.Duration // how often the audit log grows while held
	pgDSN     string
	// figure makes the run the figure: it fails unless heartbeat
	// p99 stays under 1 s and every agent beats at its interval. Without
	// it (the small run in `make test`, on a machine busy with every
	// other package's tests) only correctness is checked.
	figure bool
}

// result is one run's figures.
type result struct {
	ramp                     time.Duration
	rampStats, holdStats     agentload.Stats
	online, total            int
	idle, full, start, end   agentload.Proc
	heldFor                  time.Duration
	interval                 time.Duration
	rssPerAgent              float64 // bytes
	cpuPerAgentMinute        float64 // CPU milliseconds per agent per minute held
	brokerCores              float64 // the broker's CPU use while held, in cores
	writeBytesPerHeartbeat   float64
	writeCallsPerHeartbeat   float64
	cosignaturesPerHeartbeat float64
	runQueueWait             float64 // the broker's threads' wait for a CPU while held, per second
	load                     float64 // the machine's load average at the end
}

// runLoad starts a broker process, ramps to l.agents simulated agents,
// holds them for l.hold while the audit log grows every l.growEvery, and
// fails t unless every agent stayed online and no heartbeat failed (and,
// for a figure, unless heartbeat p99 stayed under 1 s).
func runLoad(t testing.TB, l load) result {
	t.Helper()
	br := startBroker(t, l.interval, l.pgDSN)
	var r result
	var err error
	if r.idle, err = agentload.ReadProc(br.pid); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f, err := agentload.NewFleet(ctx, agentload.FleetConfig{APIURL: br.APIURL, AdminToken: br.Token, AgentAddr: br.AgentAddr, BrokerKey: br.BrokerKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	began := time.Now()
	if err := f.Add(ctx, l.agents); err != nil {
		t.Fatalf("ramp to %d agents (%d paired): %v", l.agents, f.Len(), err)
	}
	r.ramp = time.Since(began)
	// Every agent heartbeats at once after pairing: wait for the broker
	// to show the last of them online, at most three intervals.
	r.interval = l.interval
	if r.interval == 0 {
		r.interval = 5 * time.Second // broker.Config's default
	}
	deadline := time.Now().Add(3*r.interval + 10*time.Second)
	for {
		if r.online, r.total, err = f.Online(ctx); err != nil {
			t.Fatal(err)
		}
		if r.online == l.agents {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d agents online %v after the ramp", r.online, l.agents, time.Since(began)-r.ramp)
		}
		time.Sleep(r.interval / 5) // polling an observable state
	}
	r.rampStats = f.Window()

	if r.start, err = agentload.ReadProc(br.pid); err != nil {
		t.Fatal(err)
	}
	held := time.Now()
	tick := time.NewTicker(l.growEvery)
	for time.Since(held) < l.hold {
		<-tick.C
		if err := f.GrowLog(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	r.heldFor = time.Since(held)
	if r.end, err = agentload.ReadProc(br.pid); err != nil {
		t.Fatal(err)
	}
	r.holdStats = f.Window()
	if r.online, r.total, err = f.Online(ctx); err != nil {
		t.Fatal(err)
	}
	r.full = r.end
	n := float64(l.agents)
	r.rssPerAgent = float64(r.full.RSS-r.idle.RSS) / n
	cpu := r.end.CPU - r.start.CPU
	r.cpuPerAgentMinute = float64(cpu.Milliseconds()) / r.heldFor.Minutes() / n
	r.brokerCores = cpu.Seconds() / r.heldFor.Seconds()
	r.runQueueWait = (r.end.RunQueueWait - r.start.RunQueueWait).Seconds() / r.heldFor.Seconds()
	r.load, _ = agentload.LoadAverage()
	if hb := float64(r.holdStats.Heartbeats); hb > 0 {
		r.writeBytesPerHeartbeat = float64(r.end.WriteBytes-r.start.WriteBytes) / hb
		r.writeCallsPerHeartbeat = float64(r.end.WriteCalls-r.start.WriteCalls) / hb
		r.cosignaturesPerHeartbeat = float64(r.holdStats.Cosignatures) / hb
	}
	report(t, l, r)

	for _, s := range []agentload.Stats{r.rampStats, r.holdStats} {
		if s.Failed > 0 || s.Refused > 0 || s.PairFailed > 0 {
			t.Errorf("%d pairings and %d calls failed, %d agents were refused; first errors: %q", s.PairFailed, s.Failed, s.Refused, s.Errors)
		}
	}
	if r.online != l.agents || r.total != l.agents {
		t.Errorf("the broker shows %d of %d agents online at the end, want all %d", r.online, r.total, l.agents)
	}
	if p99 := agentload.Quantile(r.holdStats.Latencies, 0.99); l.figure && p99 >= time.Second {
		t.Errorf("heartbeat p99 %v while holding %d agents, want under 1 s", p99, l.agents)
	}
	// Every agent beats at least every interval plus its own work.
	if want := int(float64(l.agents) * r.heldFor.Seconds() / r.interval.Seconds() * 0.8); l.figure && r.holdStats.Heartbeats < want {
		t.Errorf("%d heartbeats while holding %d agents for %v at %v, want at least %d", r.holdStats.Heartbeats, l.agents, r.heldFor.Round(time.Second), r.interval, want)
	}
	if w := r.holdStats.WitnessFailed + r.rampStats.WitnessFailed; w > 0 {
		// Not a failure of the run: a real agent logs it, stays online
		// and witnesses again at its next heartbeat.
		t.Logf("%d witness steps failed (retried at the next heartbeat); see the errors above", w)
	}
	if r.holdStats.Cosignatures == 0 {
		t.Errorf("no cosignature while the audit log grew every %v", l.growEvery)
	}
	return r
}

func report(t testing.TB, l load, r result) {
	t.Helper()
	q := agentload.Quantile
	hs := r.holdStats
	t.Logf("%d agents, heartbeat interval %v, store %s: ramp %v (%.0f agents/s), held %v with the audit log growing every %v",
		l.agents, r.interval, map[bool]string{true: "PostgreSQL", false: "SQLite"}[l.pgDSN != ""], r.ramp.Round(time.Millisecond),
		float64(l.agents)/r.ramp.Seconds(), r.heldFor.Round(time.Second), l.growEvery)
	t.Logf("held: %d/%d online; %d heartbeats p50 %v p99 %v max %v; %d cosignatures (witness step p50 %v p99 %v), %d witness steps failed; %d sessions; %d failed, %d refused",
		r.online, r.total, hs.Heartbeats, q(hs.Latencies, 0.5), q(hs.Latencies, 0.99), q(hs.Latencies, 1),
		hs.Cosignatures, q(hs.Witness, 0.5), q(hs.Witness, 0.99), hs.WitnessFailed, hs.Sessions, hs.Failed, hs.Refused)
	rs := r.rampStats
	t.Logf("ramp: %d pairings failed (each replaced); %d heartbeats p50 %v p99 %v max %v; %d sessions; %d cosignatures, %d witness steps failed; %d failed, %d refused",
		rs.PairFailed, rs.Heartbeats, q(rs.Latencies, 0.5), q(rs.Latencies, 0.99), q(rs.Latencies, 1), rs.Sessions, rs.Cosignatures, rs.WitnessFailed, rs.Failed, rs.Refused)
	for _, s := range []agentload.Stats{rs, hs} {
		if len(s.Errors) > 0 {
			t.Logf("first errors: %q", s.Errors)
		}
	}
	t.Logf("broker RSS %.1f MB idle, %.1f MB with %d agents (peak %.1f MB): %.1f KB per agent; CPU %.3f cores held, %.1f ms per agent per minute; storage writes %.0f bytes and %.2f write calls per heartbeat",
		mb(r.idle.RSS), mb(r.full.RSS), l.agents, mb(r.full.PeakRSS), r.rssPerAgent/1024, r.brokerCores, r.cpuPerAgentMinute,
		r.writeBytesPerHeartbeat, r.writeCallsPerHeartbeat)
	t.Logf("the broker's threads waited %.2f s per second for a CPU while held; the machine's load average was %.1f at the end (2 cores here: above 2, other work competed)",
		r.runQueueWait, r.load)
	if self, err := agentload.ReadProc(os.Getpid()); err == nil {
		t.Logf("load generator (this process): RSS %.1f MB, CPU %v in all", mb(self.RSS), self.CPU)
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// TestAgentLoad is the load test at small scale, in `make test`: 50
// simulated agents in this process against a broker process, heartbeats
// every 500 ms, held for a few intervals while the audit log grows.
func TestAgentLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker process")
	}
	runLoad(t, load{agents: 50, interval: 500 * time.Millisecond, hold: 3 * time.Second, growEvery: 250 * time.Millisecond})
}

// TestLoopbackPeersBindNodes checks that the load test's transport keeps
// the broker's identity checks meaningful: a caller from an address that
// names no simulated agent is refused as an off-tailnet caller is, and a
// session token presented from another agent's address is refused as one
// presented from another tailnet node is.
func TestLoopbackPeersBindNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker process")
	}
	br := startBroker(t, 500*time.Millisecond, "")
	ctx := context.Background()
	f, err := agentload.NewFleet(ctx, agentload.FleetConfig{APIURL: br.APIURL, AdminToken: br.Token, AgentAddr: br.AgentAddr, BrokerKey: br.BrokerKey})
	if err != nil {
		t.Fatal(err)
	}

	stranger, err := agentload.NewAgent(br.AgentAddr, netip.MustParseAddr("127.0.0.2"), br.BrokerKey)
	if err != nil {
		t.Fatal(err)
	}
	var ae *agentload.Error
	if err := stranger.Pair(ctx, "tpt_"+strings.Repeat("A", 43)); !errors.As(err, &ae) || ae.Code != "not_a_peer" {
		t.Errorf("pair from %v = %v, want refused not_a_peer", stranger.Source(), err)
	}

	res, err := f.API().CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "load", Name: "bound"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agentload.NewAgent(br.AgentAddr, agentload.SourceAddr(7), br.BrokerKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Pair(ctx, res.Pairing.Token); err != nil {
		t.Fatal(err)
	}
	if err := a.OpenSession(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	// The same token from agent 8's address.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: agentload.SourceAddr(8).AsSlice()}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
	body, _ := json.Marshal(protocol.Heartbeat{Version: agentload.Version})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+br.AgentAddr+protocol.PathHeartbeat, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+a.Token())
	hres, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hres.Body.Close()
	if hres.StatusCode != http.StatusForbidden {
		t.Errorf("heartbeat with agent 7's session from agent 8's address = %s, want 403 (wrong_node)", hres.Status)
	}
}

// BenchmarkAgentLoad2000 is the figure: one broker process holding
// 2,000 simulated agents (real protocol, real keys, real SQLite store) at
// the broker's default heartbeat interval, for a minute, while the audit
// log grows every second, so that every agent cosigns at every heartbeat.
// It fails if heartbeat p99 reaches 1 s, or if any agent is refused or
// shown offline. TETHER_AGENTLOAD_AGENTS, TETHER_AGENTLOAD_HOLD and
// TETHER_AGENTLOAD_HB (a heartbeat interval) change the run.
func BenchmarkAgentLoad2000(b *testing.B) {
	benchLoad(b, "")
}

// BenchmarkAgentLoad2000Postgres is the same on PostgreSQL (a throwaway
// cluster with fsync off, outside the broker process).
func BenchmarkAgentLoad2000Postgres(b *testing.B) {
	benchLoad(b, pgtest.Start(b))
}

func benchLoad(b *testing.B, pgDSN string) {
	l := load{agents: 2000, hold: time.Minute, growEvery: time.Second, pgDSN: pgDSN, figure: true}
	if v := os.Getenv("TETHER_AGENTLOAD_AGENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > agentload.MaxAgents {
			b.Fatalf("TETHER_AGENTLOAD_AGENTS=%q: want 1 to %d", v, agentload.MaxAgents)
		}
		l.agents = n
	}
	for env, d := range map[string]*time.Duration{"TETHER_AGENTLOAD_HOLD": &l.hold, "TETHER_AGENTLOAD_HB": &l.interval} {
		if v := os.Getenv(env); v != "" {
			var err error
			if *d, err = time.ParseDuration(v); err != nil {
				b.Fatalf("%s=%q: want a duration such as 60s", env, v)
			}
		}
	}
	for range b.N {
		r := runLoad(b, l)
		b.ReportMetric(float64(r.online), "agents-online")
		b.ReportMetric(ms(agentload.Quantile(r.holdStats.Latencies, 0.5)), "hb-p50-ms")
		b.ReportMetric(ms(agentload.Quantile(r.holdStats.Latencies, 0.99)), "hb-p99-ms")
		b.ReportMetric(mb(r.idle.RSS), "rss-idle-MB")
		b.ReportMetric(mb(r.full.RSS), "rss-held-MB")
		b.ReportMetric(r.rssPerAgent/1024, "rss-KB/agent")
		b.ReportMetric(r.cpuPerAgentMinute, "cpu-ms/agent/min")
		b.ReportMetric(r.brokerCores, "broker-cores")
		b.ReportMetric(r.writeBytesPerHeartbeat, "write-B/hb")
		b.ReportMetric(r.load, "loadavg")
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
