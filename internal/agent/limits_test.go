package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/protocol"
)

func TestMain(m *testing.M) {
	code := m.Run()
	chtest.Stop()
	os.Exit(code)
}

// heldProm is a Prometheus upstream that holds every call for the metric
// "held" open until release is closed (or the agent hangs up), and
// answers every other query at once. entered receives one value per held
// call that reached it.
type heldProm struct {
	*httptest.Server
	entered chan struct{}
	release chan struct{}
}

func newHeldProm(t *testing.T) *heldProm {
	p := &heldProm{entered: make(chan struct{}, 64), release: make(chan struct{})}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("query") == "held" {
			p.entered <- struct{}{}
			select {
			case <-p.release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	}))
	t.Cleanup(p.Close)
	return p
}

// limitsAgent is an agent serving its two data-plane handlers on
// loopback (the tailnet and the broker's call signatures are tested
// elsewhere), with grants signed by key.
type limitsAgent struct {
	a   *Agent
	key ed25519.PrivateKey
	url string

	mu    sync.Mutex
	ended map[string]chan struct{} // closed when the call's handler returned, by Test-Call
	seq   atomic.Int64
}

func newLimitsAgent(t *testing.T, up Upstreams, maxCalls int) *limitsAgent {
	t.Helper()
	dir := t.TempDir()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := loadRevocations(revocationsPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{
		cfg: Config{StateDir: dir, MaxCallsPerGrant: maxCalls}, log: testLogger(t), now: time.Now,
		nonces: map[string]time.Time{}, ready: make(chan struct{}),
		state: State{
			AgentID: "0190aaaa-0000-7000-8000-00000000000a", DeploymentID: "0190aaaa-0000-7000-8000-00000000000d",
			Tenant: "acme", Name: "prod", BrokerKey: protocol.EncodePublicKey(pub),
		},
		data: newDataPlane(up, rev),
	}
	if a.spool, err = openSpool(filepath.Join(dir, "spool.jsonl"), a.now); err != nil {
		t.Fatal(err)
	}
	la := &limitsAgent{a: a, key: key, ended: map[string]chan struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+protocol.PathClickHouseQuery, a.handleClickHouse)
	mux.HandleFunc(protocol.PathPrometheus, a.handlePrometheus)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		la.mu.Lock()
		ended := la.ended[r.Header.Get("Test-Call")]
		la.mu.Unlock()
		if ended != nil {
			defer close(ended)
		}
		if r.Header.Get("Test-Abort") != "" {
			w = abortingWriter{w}
		}
		mux.ServeHTTP(w, r)
	}))
	la.url = srv.URL
	t.Cleanup(func() {
		srv.Close()
		a.finishing.close()
		a.spool.close()
	})
	return la
}

// abortingWriter aborts the handler (panic(http.ErrAbortHandler), as a
// handler that cannot go on does) when it starts its answer.
type abortingWriter struct{ http.ResponseWriter }

func (w abortingWriter) WriteHeader(int) { panic(http.ErrAbortHandler) }

// grant issues a grant for both scopes, live for an hour.
func (la *limitsAgent) grant(t *testing.T, id string) string {
	t.Helper()
	now := time.Now()
	tok, err := grant.Issue(grant.Grant{
		ID: id, RequestID: "req-" + id, Deployment: la.a.state.DeploymentID, Agent: la.a.state.AgentID,
		Subject: "eng@vendor.example", Scopes: []string{names.ScopeClickHouse, names.ScopePrometheus},
		NotBefore: now.Add(-time.Minute), Expiry: now.Add(time.Hour), IssuedAt: now.Add(-time.Minute),
	}, la.key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// call is one data-plane call: PromQL when prom is set, SQL otherwise.
type call struct {
	tok, prom, sql string
	abort          bool // the handler aborts when it starts answering
}

// answer is what a call got; err is set when no answer came.
type answer struct {
	status    int
	code, msg string
	body      string
	err       error
}

// do makes c and returns once the agent's handler for it has returned
// (so its grant's slot is released), whatever the client saw.
func (la *limitsAgent) do(ctx context.Context, t *testing.T, c call) answer {
	id := strconv.FormatInt(la.seq.Add(1), 10)
	ended := make(chan struct{})
	la.mu.Lock()
	la.ended[id] = ended
	la.mu.Unlock()
	var req *http.Request
	if c.prom != "" {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, la.url+protocol.PathPrometheus+"api/v1/query?query="+c.prom, nil)
	} else {
		b, _ := json.Marshal(protocol.ClickHouseQuery{SQL: c.sql})
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, la.url+protocol.PathClickHouseQuery, bytes.NewReader(b))
	}
	req.Header.Set(protocol.HeaderGrant, c.tok)
	req.Header.Set("Test-Call", id)
	if c.abort {
		req.Header.Set("Test-Abort", "1")
	}
	var ans answer
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		ans.err = err
	} else {
		b, rerr := io.ReadAll(res.Body)
		res.Body.Close()
		ans.status, ans.body, ans.err = res.StatusCode, string(b), rerr
		var e brokerapi.ErrorEnvelope
		if json.Unmarshal(b, &e) == nil {
			ans.code, ans.msg = e.Error.Code, e.Error.Message
		}
	}
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Errorf("the agent's handler of call %s did not return in 30s", id)
	}
	return ans
}

// inFlight is the grants the limiter tracks, with their calls in flight.
func (la *limitsAgent) inFlight() map[string]int {
	l := &la.a.calls
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for id, c := range l.grants {
		out[id] = c.inFlight
	}
	return out
}

// events is the agent's spooled audit events.
func (la *limitsAgent) events(t *testing.T) []audit.Event {
	t.Helper()
	raw, err := la.a.spool.pending(10_000, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, r := range raw {
		var e audit.Event
		if err := json.Unmarshal(r, &e); err != nil {
			t.Fatalf("spooled event %s: %v", r, err)
		}
		out = append(out, e)
	}
	return out
}

// limitRefusals is the spooled refusals of grant id for its call limit.
func (la *limitsAgent) limitRefusals(t *testing.T, id string) []audit.Event {
	var out []audit.Event
	for _, e := range la.events(t) {
		if e.GrantID == id && e.Details["limit"] == "max_calls_per_grant" {
			out = append(out, e)
		}
	}
	return out
}

// TestMaxCallsPerGrant holds a grant's four calls open at the agent: the
// fifth — Prometheus or ClickHouse — is answered 429 with a message a
// person can act on, and audited; another grant is not affected; once the
// held calls end, the grant's calls pass again, one after another, and
// the limiter holds nothing.
func TestMaxCallsPerGrant(t *testing.T) {
	ch := chtest.Start(t)
	prom := newHeldProm(t)
	la := newLimitsAgent(t, Upstreams{ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password, PrometheusURL: prom.URL}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tokA, tokB := la.grant(t, "grant-a"), la.grant(t, "grant-b")

	held := make(chan answer, DefaultMaxCallsPerGrant)
	for range DefaultMaxCallsPerGrant {
		go func() { held <- la.do(ctx, t, call{tok: tokA, prom: "held"}) }()
	}
	for range DefaultMaxCallsPerGrant {
		select {
		case <-prom.entered:
		case <-ctx.Done():
			t.Fatal("the held calls did not all reach Prometheus")
		}
	}
	if got := la.inFlight(); got["grant-a"] != DefaultMaxCallsPerGrant {
		t.Fatalf("calls in flight = %v, want grant-a: %d", got, DefaultMaxCallsPerGrant)
	}

	wantMsg := "grant grant-a already has 4 calls in flight (the agent's --max-calls-per-grant); wait for one to finish"
	for _, c := range []call{
		{tok: tokA, prom: "up"},
		{tok: tokA, sql: "SELECT 1"},
	} {
		ans := la.do(ctx, t, c)
		if ans.status != http.StatusTooManyRequests || ans.code != "too_many_calls" || !strings.Contains(ans.msg, wantMsg) {
			t.Errorf("fifth call of grant-a (%+v) = %d %s %q, want 429 too_many_calls %q", c, ans.status, ans.code, ans.msg, wantMsg)
		}
	}
	refused := la.limitRefusals(t, "grant-a")
	if len(refused) != 1 || refused[0].Type != audit.PromDenied || refused[0].Outcome != audit.Failure || !strings.Contains(refused[0].Reason, wantMsg) || refused[0].RequestID != "req-grant-a" {
		t.Fatalf("audited refusals of grant-a = %+v, want one prom.denied saying %q (the second, a repeat within %v, waits for the aggregate)", refused, wantMsg, callRefusalWindow)
	}

	for _, c := range []call{
		{tok: tokB, sql: "SELECT 1"},
		{tok: tokB, prom: "up"},
	} {
		if ans := la.do(ctx, t, c); ans.status != http.StatusOK {
			t.Errorf("grant-b (%+v) while grant-a is at its limit = %d %s %q %v, want 200", c, ans.status, ans.code, ans.msg, ans.err)
		}
	}
	if got := la.limitRefusals(t, "grant-b"); len(got) != 0 {
		t.Errorf("grant-b refusals = %+v, want none", got)
	}

	close(prom.release)
	for range DefaultMaxCallsPerGrant {
		if ans := <-held; ans.status != http.StatusOK {
			t.Errorf("held call = %d %s %q %v, want 200", ans.status, ans.code, ans.msg, ans.err)
		}
	}
	if got := la.inFlight(); len(got) != 0 {
		t.Errorf("after the calls ended the limiter holds %v, want nothing", got)
	}
	// The repeat within the window is recorded once the grant's calls
	// have all ended, as one event with its count.
	refused = la.limitRefusals(t, "grant-a")
	if len(refused) != 2 || refused[1].Type != audit.QueryDenied || refused[1].Details["count"] != 1.0 {
		t.Errorf("audited refusals of grant-a after the burst = %+v, want the prom.denied and then a query.denied aggregate with count 1", refused)
	}

	for i := range 2 * DefaultMaxCallsPerGrant {
		c := call{tok: tokA, prom: "up"}
		if i%2 == 1 {
			c = call{tok: tokA, sql: "SELECT 1"}
		}
		if ans := la.do(ctx, t, c); ans.status != http.StatusOK {
			t.Errorf("call %d of grant-a after the burst (%+v) = %d %s %q %v, want 200", i, c, ans.status, ans.code, ans.msg, ans.err)
		}
	}
}

// TestCallSlotReleased: however a call ends early — its client goes away,
// its grant is revoked, its handler aborts — the grant's slot comes back.
// With a limit of one, a leaked slot would refuse the next call.
func TestCallSlotReleased(t *testing.T) {
	tests := []struct {
		name  string
		abort bool
		end   func(la *limitsAgent, prom *heldProm, cancel context.CancelFunc)
		next  int // status of the grant's next call
	}{
		{"client goes away", false, func(_ *limitsAgent, _ *heldProm, cancel context.CancelFunc) { cancel() }, http.StatusOK},
		{"grant revoked", false, func(la *limitsAgent, _ *heldProm, _ context.CancelFunc) {
			la.a.data.Revoke("grant-x", time.Now().Add(time.Hour), time.Now())
		}, http.StatusForbidden},
		{"handler aborts", true, func(_ *limitsAgent, prom *heldProm, _ context.CancelFunc) { close(prom.release) }, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prom := newHeldProm(t)
			la := newLimitsAgent(t, Upstreams{PrometheusURL: prom.URL}, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tok := la.grant(t, "grant-x")
			callCtx, hangUp := context.WithCancel(ctx)
			defer hangUp()
			done := make(chan answer, 1)
			go func() { done <- la.do(callCtx, t, call{tok: tok, prom: "held", abort: tt.abort}) }()
			select {
			case <-prom.entered:
			case <-ctx.Done():
				t.Fatal("the held call did not reach Prometheus")
			}
			if ans := la.do(ctx, t, call{tok: tok, prom: "up"}); ans.status != http.StatusTooManyRequests {
				t.Fatalf("second call with a limit of 1 = %d %s, want 429", ans.status, ans.code)
			}
			tt.end(la, prom, hangUp)
			<-done
			if got := la.inFlight(); len(got) != 0 {
				t.Errorf("after the call ended the limiter holds %v, want nothing", got)
			}
			if ans := la.do(ctx, t, call{tok: tok, prom: "up"}); ans.status != tt.next {
				t.Errorf("next call = %d %s %q, want %d", ans.status, ans.code, ans.msg, tt.next)
			}
		})
	}
}

// TestCallLimiterWindows: the first refusal of a window is recorded at
// once, repeats within it are counted, and the count is handed over with
// the next window's first refusal, or when the grant's last call ends.
func TestCallLimiterWindows(t *testing.T) {
	var l callLimiter
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := audit.Event{Type: audit.PromDenied}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	if ad := l.acquire("g", 1, at(0), ev); !ad.ok || ad.inFlight != 1 {
		t.Fatalf("first call = %+v, want admitted", ad)
	}
	steps := []struct {
		at      time.Duration
		record  bool
		repeats int
	}{
		{0, true, 0},
		{time.Second, false, 0},
		{2 * time.Second, false, 0},
		{callRefusalWindow + time.Second, true, 2},
		{callRefusalWindow + 2*time.Second, false, 0},
	}
	for i, s := range steps {
		ad := l.acquire("g", 1, at(s.at), ev)
		if ad.ok || ad.record != s.record || ad.repeats.n != s.repeats {
			t.Errorf("refusal %d at +%v = %+v, want record %v with %d repeats", i, s.at, ad, s.record, s.repeats)
		}
	}
	if ad := l.acquire("other", 1, at(0), ev); !ad.ok {
		t.Errorf("another grant = %+v, want admitted", ad)
	}
	if run := l.release("g"); run.n != 1 || !run.first.Equal(at(callRefusalWindow+2*time.Second)) {
		t.Errorf("release of g's last call = %+v, want the one pending repeat", run)
	}
	l.release("other")
	if len(l.grants) != 0 {
		t.Errorf("limiter holds %v after every call ended, want nothing", l.grants)
	}
	if run := l.release("never"); run.n != 0 || len(l.grants) != 0 {
		t.Errorf("release of an unknown grant = %+v, grants %v", run, l.grants)
	}
}

func TestNewRejectsMaxCallsPerGrant(t *testing.T) {
	_, err := New(Config{StateDir: t.TempDir(), MaxCallsPerGrant: -1})
	if err == nil || !strings.Contains(err.Error(), "--max-calls-per-grant") {
		t.Errorf("New(MaxCallsPerGrant: -1) = %v, want an error naming --max-calls-per-grant", err)
	}
}

// TestClickHouseUserLimits: the installed ClickHouse (18.16) takes the
// per-user limits of deploy/clickhouse/users.d/tether.xml, and they apply
// to the tether user.
func TestClickHouseUserLimits(t *testing.T) {
	ch := chtest.Start(t)
	out, err := ch.Query("tether", chtest.Password, "SELECT name, value FROM system.settings WHERE name IN ('max_concurrent_queries_for_user', 'max_memory_usage_for_user', 'max_memory_usage') ORDER BY name FORMAT TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	want := "max_concurrent_queries_for_user\t8\nmax_memory_usage\t2000000000\nmax_memory_usage_for_user\t4000000000\n"
	if out != want {
		t.Errorf("the tether user's limits =\n%s\nwant\n%s", out, want)
	}

	// At the limit ClickHouse refuses the user's next query, but not
	// KILL QUERY: a revocation still stops the grant's queries when the
	// user is at its limit. The limit is lowered to 1 for these queries
	// (readonly=2 lets the user lower it) to need one held query, not 8.
	tether := func(ctx context.Context, sql string, settings url.Values) (string, error) {
		settings.Set("user", "tether")
		settings.Set("password", chtest.Password)
		settings.Set("max_concurrent_queries_for_user", "1")
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ch.URL+"/?"+settings.Encode(), strings.NewReader(sql))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			return string(b), fmt.Errorf("clickhouse answered %s", res.Status)
		}
		return string(b), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	heldDone := make(chan error, 1)
	go func() {
		// Runs until killed (or the profile's max_execution_time).
		_, err := tether(ctx, "SELECT count() FROM system.numbers", url.Values{"query_id": {"tether-limit-held"}})
		heldDone <- err
	}()
	for strings.TrimSpace(ch.Exec(t, "SELECT count() FROM system.processes WHERE query_id = 'tether-limit-held'")) != "1" {
		select {
		case <-ctx.Done():
			t.Fatal("the held query never showed in system.processes")
		case <-time.After(10 * time.Millisecond): // polling system.processes
		}
	}
	if out, err := tether(ctx, "SELECT 1", url.Values{}); err == nil || !strings.Contains(out, "Code: 202") {
		t.Errorf("a query beyond max_concurrent_queries_for_user = %q, %v; want refused with code 202", out, err)
	}
	start := time.Now()
	if out, err := tether(ctx, "KILL QUERY WHERE query_id = 'tether-limit-held' SYNC FORMAT TabSeparated", url.Values{}); err != nil || !strings.Contains(out, "tether-limit-held") {
		t.Fatalf("KILL QUERY at the limit = %q, %v; want it to kill the held query", out, err)
	}
	if err := <-heldDone; err == nil {
		t.Error("the killed query answered as if it had finished")
	}
	t.Logf("KILL QUERY at the limit stopped the held query in %v", time.Since(start))
}
