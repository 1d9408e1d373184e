package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/protocol"
)

// rawQuery posts sql under tok to the agent at url and returns the
// response, its body unread.
func rawQuery(ctx context.Context, t *testing.T, url, tok, sql string) *http.Response {
	t.Helper()
	b, _ := json.Marshal(protocol.ClickHouseQuery{SQL: sql})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+protocol.PathClickHouseQuery, bytes.NewReader(b))
	req.Header.Set(protocol.HeaderGrant, tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestResultTrailer: every successful answer of the agent ends with the
// Tether-Result trailer — complete for a whole result, incomplete with
// the reason for one a revocation cut off or ClickHouse ended with its
// own exception — and the cut query is audited as query.finished with
// outcome failure and the reason.
func TestResultTrailer(t *testing.T) {
	ch := chtest.Start(t)
	la := newLimitsAgent(t, Upstreams{
		ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password,
		Limits: QueryLimits{MaxResultRows: 1_000_000},
	}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("complete", func(t *testing.T) {
		res := rawQuery(ctx, t, la.url, la.grant(t, "grant-whole"), "SELECT name FROM system.tables WHERE database = 'system' LIMIT 3")
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if got := res.Trailer.Get(protocol.TrailerResult); err != nil || res.StatusCode != 200 || got != protocol.ResultComplete {
			t.Errorf("whole result: status %d, %v, trailer %q, want %q (body %q)", res.StatusCode, err, got, protocol.ResultComplete, body)
		}
	})
	t.Run("ClickHouse exception after the answer began", func(t *testing.T) {
		res := rawQuery(ctx, t, la.url, la.grant(t, "grant-exception"), "SELECT number FROM system.numbers LIMIT 3000000")
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		complete, reason := protocol.ResultReason(res.Trailer.Get(protocol.TrailerResult))
		if complete || !strings.Contains(reason, "ClickHouse ended the answer with its error code") {
			t.Errorf("result past max_result_rows: trailer %q, want incomplete naming ClickHouse's error", res.Trailer.Get(protocol.TrailerResult))
		}
	})
	t.Run("revoked mid-stream", func(t *testing.T) {
		const id = "grant-revoked-mid"
		// One row per block: the answer streams for many seconds.
		res := rawQuery(ctx, t, la.url, la.grant(t, id), "SELECT number FROM system.numbers LIMIT 900000 SETTINGS max_block_size = 1")
		defer res.Body.Close()
		br := bufio.NewReader(res.Body)
		for range 3 { // the header and two rows have arrived: the answer is streaming
			if _, err := br.ReadString('\n'); err != nil {
				t.Fatalf("reading the first rows: %v", err)
			}
		}
		if n, err := la.a.data.Revoke(id, time.Now().Add(time.Hour), time.Now()); n != 1 || err != nil {
			t.Fatalf("Revoke = %d, %v; want the one call cut off", n, err)
		}
		rest, err := io.ReadAll(br)
		complete, reason := protocol.ResultReason(res.Trailer.Get(protocol.TrailerResult))
		if err != nil || complete || !strings.Contains(reason, "revoked") {
			t.Errorf("revoked mid-stream: read %v, trailer %q, want incomplete, revoked", err, res.Trailer.Get(protocol.TrailerResult))
		}
		if len(rest) > 0 && rest[len(rest)-1] != '\n' {
			t.Logf("the agent's answer ended in a torn row (%d bytes after the cut); the trailer says so", len(rest))
		}
		la.a.finishing.wg.Wait()
		var fin *audit.Event
		for _, e := range la.events(t) {
			if e.Type == audit.QueryFinished && e.GrantID == id {
				fin = &e
			}
		}
		if fin == nil || fin.Outcome != audit.Failure || !strings.Contains(fin.Reason, "revoked") {
			t.Errorf("query.finished of the revoked query = %+v, want outcome failure naming the revocation", fin)
		}
	})
}

// trickleProm is a Prometheus upstream whose answer takes d to stream,
// a piece every tick.
func trickleProm(t *testing.T, d, tick time.Duration) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[`)
		rc := http.NewResponseController(w)
		rc.Flush()
		end := time.Now().Add(d)
		for i := 0; time.Now().Before(end); i++ {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(tick):
			}
			if i > 0 {
				io.WriteString(w, ",")
			}
			io.WriteString(w, `{"metric":{"__name__":"up"},"value":[1,"1"]}`)
			rc.Flush()
		}
		io.WriteString(w, `]}}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// serveLikeTailnet serves la's data plane through the agent API's own
// server (newAPIServer: its timeouts), not httptest's default one.
func serveLikeTailnet(t *testing.T, la *limitsAgent) string {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+protocol.PathClickHouseQuery, la.a.handleClickHouse)
	mux.HandleFunc(protocol.PathPrometheus, la.a.handlePrometheus)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config = la.a.newAPIServer(mux)
	srv.Config.ConnContext = nil
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestLongStreamOutlivesWriteTimeout: an answer that streams for longer
// than the agent's write timeout completes, with its complete trailer:
// the write deadline moves with the data, bounded by the grant and the
// query's time limit (before, the server's fixed 60 s write timeout —
// equal to the query time limit — ended every long answer in EOF). The
// write timeout is 300 ms here, the answer takes 1.5 s.
func TestLongStreamOutlivesWriteTimeout(t *testing.T) {
	prom := trickleProm(t, 1500*time.Millisecond, 100*time.Millisecond)
	la := newLimitsAgent(t, Upstreams{PrometheusURL: prom.URL, Limits: QueryLimits{MaxExecutionTime: 10 * time.Second}}, 0)
	la.a.cfg.WriteTimeout = 300 * time.Millisecond
	url := serveLikeTailnet(t, la)
	req, _ := http.NewRequest(http.MethodGet, url+protocol.PathPrometheus+"api/v1/query?query=up", nil)
	req.Header.Set(protocol.HeaderGrant, la.grant(t, "grant-long"))
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	took := time.Since(start)
	var v struct{ Status string }
	if err != nil || res.StatusCode != 200 || json.Unmarshal(body, &v) != nil || v.Status != "success" {
		t.Fatalf("long answer: status %d, read %v after %v, body %d bytes %.80q…", res.StatusCode, err, took, len(body), body)
	}
	if got := res.Trailer.Get(protocol.TrailerResult); got != protocol.ResultComplete {
		t.Errorf("long answer's trailer = %q, want %q", got, protocol.ResultComplete)
	}
	if took < time.Second {
		t.Errorf("the answer took %v; the test needs it longer than the write timeout", took)
	}
}

// TestHungUpstreamTimesOut: a Prometheus that takes the connection and
// never answers gets the engineer a 504 naming Prometheus and how long
// the agent waited — its answer written in time, even past the agent's
// write timeout (before, it was written after the server's write
// deadline, the connection closed without an answer, and the broker's
// retry of the signed call was refused as clock skew, with a spurious
// auth.failed) — and no auth.failed is recorded.
func TestHungUpstreamTimesOut(t *testing.T) {
	prom := newHeldProm(t)
	defer close(prom.release)
	la := newLimitsAgent(t, Upstreams{PrometheusURL: prom.URL, Limits: QueryLimits{MaxExecutionTime: time.Second}}, 0)
	la.a.cfg.WriteTimeout = 300 * time.Millisecond
	url := serveLikeTailnet(t, la)
	req, _ := http.NewRequest(http.MethodGet, url+protocol.PathPrometheus+"api/v1/query?query=held", nil)
	req.Header.Set(protocol.HeaderGrant, la.grant(t, "grant-hung"))
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("no answer from the agent after %v: %v", time.Since(start), err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var e brokerapi.ErrorEnvelope
	json.Unmarshal(body, &e)
	if res.StatusCode != http.StatusGatewayTimeout || e.Error.Code != "upstream_timeout" || !strings.HasPrefix(e.Error.Message, "Prometheus did not answer the agent within 2s") {
		t.Errorf("hung Prometheus = %d %s %q, want 504 upstream_timeout \"Prometheus did not answer the agent within 2s …\"", res.StatusCode, e.Error.Code, e.Error.Message)
	}
	for _, ev := range la.events(t) {
		if ev.Type == audit.AuthFailed {
			t.Errorf("a hung upstream recorded auth.failed: %s", ev.Reason)
		}
	}
}

// TestResultTrailerCutUpstream: an answer cut by the grant's expiry, or
// by the upstream dying mid-answer, ends with an incomplete trailer
// saying why.
func TestResultTrailerCutUpstream(t *testing.T) {
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100000")
		io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[`)
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // the upstream dies mid-answer
	}))
	t.Cleanup(dying.Close)
	trickle := trickleProm(t, 5*time.Second, 100*time.Millisecond)
	for _, tc := range []struct {
		name, url string
		life      time.Duration // the grant's
		want      string
	}{
		{"upstream died", dying.URL, time.Hour, "Prometheus stopped answering"},
		{"grant expired", trickle.URL, 1500 * time.Millisecond, "the grant expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			la := newLimitsAgent(t, Upstreams{PrometheusURL: tc.url}, 0)
			now := time.Now()
			tok, err := grant.Issue(grant.Grant{
				ID: "grant-cut", RequestID: "req-cut", Deployment: la.a.state.DeploymentID, Agent: la.a.state.AgentID,
				Subject: "eng@vendor.example", Scopes: []string{names.ScopePrometheus},
				NotBefore: now.Add(-time.Minute), Expiry: now.Add(tc.life), IssuedAt: now.Add(-time.Minute),
			}, la.key)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodGet, la.url+protocol.PathPrometheus+"api/v1/query?query=up", nil)
			req.Header.Set(protocol.HeaderGrant, tok)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			complete, reason := protocol.ResultReason(res.Trailer.Get(protocol.TrailerResult))
			if res.StatusCode != 200 || complete || !strings.Contains(reason, tc.want) {
				t.Errorf("status %d, trailer %q; want incomplete, %q", res.StatusCode, res.Trailer.Get(protocol.TrailerResult), tc.want)
			}
		})
	}
}

// TestUpstreamRedirectNotFollowed: an upstream that answers with a
// redirect does not make the agent fetch the address it names — which
// could be any service of the customer's network, past the guard that
// checked only the call to the upstream itself.
func TestUpstreamRedirectNotFollowed(t *testing.T) {
	var hits atomic.Int64
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	}))
	t.Cleanup(canary.Close)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, canary.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	t.Cleanup(redirecting.Close)
	la := newLimitsAgent(t, Upstreams{PrometheusURL: redirecting.URL}, 0)
	url := serveLikeTailnet(t, la)
	req, _ := http.NewRequest(http.MethodGet, url+protocol.PathPrometheus+"api/v1/query?query=up", nil)
	req.Header.Set(protocol.HeaderGrant, la.grant(t, "grant-redirect"))
	res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if n := hits.Load(); n != 0 {
		t.Errorf("the agent followed the upstream's redirect: the address it named got %d requests", n)
	}
	if res.StatusCode == http.StatusOK {
		t.Errorf("a redirecting upstream answered 200 through the agent, want it not followed")
	}
}
