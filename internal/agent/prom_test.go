package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/promguard"
	"github.com/tetherhq/tether/internal/promtest"
	"github.com/tetherhq/tether/internal/protocol"
)

// promGet makes a GET of the agent's Prometheus API, origin-form, with
// grant tok, and returns the status, the error code (for an error) and
// the body.
func promGet(t *testing.T, la *limitsAgent, tok, target string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, la.url+strings.TrimSuffix(protocol.PathPrometheus, "/")+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(protocol.HeaderGrant, tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the answer: %v", target, err)
	}
	var e brokerapi.ErrorEnvelope
	if res.StatusCode != http.StatusOK && json.Unmarshal(body, &e) == nil {
		return res.StatusCode, e.Error.Code, body
	}
	return res.StatusCode, "", body
}

// TestPrometheusAbsoluteFormRefused sends absolute-form request lines
// (GET http://host/… HTTP/1.1) over a raw TCP connection: the agent
// refuses them, says why, audits the refusal, and Prometheus sees nothing.
// The same call in origin form passes, so the refusal is about the form.
func TestPrometheusAbsoluteFormRefused(t *testing.T) {
	var hits atomic.Int32
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	}))
	t.Cleanup(prom.Close)
	la := newLimitsAgent(t, Upstreams{PrometheusURL: prom.URL}, 0)
	tok := la.grant(t, "g-absolute")
	host := strings.TrimPrefix(la.url, "http://")

	raw := func(target string) (int, brokerapi.ErrorEnvelope) {
		t.Helper()
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n"+protocol.HeaderGrant+": "+tok+"\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("GET %s: %v", target, err)
		}
		defer res.Body.Close()
		var e brokerapi.ErrorEnvelope
		b, _ := io.ReadAll(res.Body)
		json.Unmarshal(b, &e)
		return res.StatusCode, e
	}

	for _, target := range []string{
		"http://" + host + protocol.PathPrometheus + "api/v1/query?query=up",
		"http://prometheus.internal:9090" + protocol.PathPrometheus + "api/v1/query?query=up",
		"http://user:pw@" + host + protocol.PathPrometheus + "api/v1/targets",
		"HTTP://" + host + protocol.PathPrometheus + "api/v1/query?query=up",
	} {
		status, e := raw(target)
		if status != http.StatusForbidden || e.Error.Code != "prom_denied" || !strings.Contains(e.Error.Message, "origin-form") {
			t.Errorf("GET %s = %d %+v, want 403 prom_denied saying the target must be origin-form", target, status, e.Error)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("Prometheus received %d calls of absolute-form requests, want none", n)
	}
	denied := 0
	for _, e := range la.events(t) {
		if e.Type == audit.PromDenied && e.GrantID == "g-absolute" && strings.Contains(e.Reason, "origin-form") {
			denied++
		}
	}
	if denied != 4 {
		t.Errorf("%d prom.denied events for the absolute-form calls, want 4", denied)
	}

	if status, e := raw(protocol.PathPrometheus + "api/v1/query?query=up"); status != http.StatusOK || hits.Load() != 1 {
		t.Errorf("the same call in origin form = %d %+v, %d upstream calls; want 200 and 1", status, e.Error, hits.Load())
	}
}

// leakyScrapeConfigs are scrape jobs whose configuration holds secrets:
// a token in params: (the scrape URL's query string) and user-info in a
// target's address. Neither target answers, so their lastError quotes
// the scrape URL with the token.
const leakyScrapeConfigs = `  - job_name: with-userinfo
    params:
      token: ['tok-SECRET-123']
    static_configs:
      - targets: ['scrapeuser:pw-SECRET-456@127.0.0.1:9']
  - job_name: with-token
    params:
      token: ['tok-SECRET-789']
    static_configs:
      - targets: ['127.0.0.1:9']
`

// TestPrometheusTargetsLeakNothing is the review's attack: a real
// Prometheus whose scrape configuration holds a token and user-info, asked
// through the agent for /api/v1/targets and the other endpoints that echo
// configuration. Prometheus's own answer shows the secrets; the bytes the
// engineer gets from the agent hold none of them.
func TestPrometheusTargetsLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus")
	}
	prom := promtest.StartOwn(t, promtest.Options{ScrapeConfigs: leakyScrapeConfigs})
	// Wait until both leaky targets were scraped once (their lastError is
	// set), straight from Prometheus: the precondition of the attack.
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(prom.URL + "/api/v1/targets")
		if err != nil {
			t.Fatal(err)
		}
		direct, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if bytes.Count(direct, []byte(`"health":"down"`)) == 2 {
			for _, s := range []string{"tok-SECRET-789", "pw-SECRET-456", "__param_token"} {
				if !bytes.Contains(direct, []byte(s)) {
					t.Fatalf("Prometheus's own answer does not show %q, so this test shows nothing: %s", s, direct)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leaky targets were not scraped in 30s: %s", direct)
		}
		time.Sleep(100 * time.Millisecond) // polling for the first scrape
	}

	la := newLimitsAgent(t, Upstreams{PrometheusURL: prom.URL}, 0)
	tok := la.grant(t, "g-targets")
	for _, target := range []string{
		"/api/v1/targets",
		"/api/v1/targets?state=any",
		"/api/v1/targets?scrapePool=with-token",
		"/api/v1/targets/metadata?" + url.Values{"match_target": {`{job=~"with-.*"}`}}.Encode(),
		"/api/v1/rules",
		"/api/v1/alerts",
	} {
		status, code, body := promGet(t, la, tok, target)
		if status != http.StatusOK || !json.Valid(body) {
			t.Errorf("GET %s through the agent = %d %s %s, want 200 and JSON", target, status, code, body)
			continue
		}
		for _, s := range []string{"SECRET", "scrapeuser", "token=", "__param_", "__address__"} {
			if bytes.Contains(body, []byte(s)) {
				t.Errorf("GET %s through the agent: the answer holds %q:\n%s", target, s, body)
			}
		}
		if strings.HasPrefix(target, "/api/v1/targets?scrapePool") &&
			(!bytes.Contains(body, []byte(`"scrapeUrl":"http://127.0.0.1:9/metrics"`)) || !bytes.Contains(body, []byte(`"lastError":"`+promguard.Withheld+`"`))) {
			t.Errorf("GET %s through the agent lacks the cleaned scrape URL or the withheld error:\n%s", target, body)
		}
	}
}

// TestPrometheusAnswerWithheld: an answer that must be rewritten but is
// not Prometheus's JSON, or is too large to rewrite, is withheld whole,
// answered 502 prom_answer_withheld and audited; none of its bytes reach
// the engineer.
func TestPrometheusAnswerWithheld(t *testing.T) {
	big := `{"status":"success","data":{"activeTargets":[],"droppedTargets":[]},"x":"tok-SECRET-` + strings.Repeat("x", promguard.MaxAnswer) + `"}`
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Query().Get("scrapePool") {
		case "html":
			io.WriteString(w, `<html>tok-SECRET-1</html>`)
		case "big":
			io.WriteString(w, big)
		case "object":
			io.WriteString(w, `{"status":"success","data":{"activeTargets":[{"health":{"token":"tok-SECRET-2"}}],"droppedTargets":[]}}`)
		default:
			io.WriteString(w, `{"status":"success","data":{"activeTargets":[{"scrapeUrl":"http://h:1/metrics?token=tok-SECRET-3","health":"up","labels":{"job":"j"}}],"droppedTargets":[]}}`)
		}
	}))
	t.Cleanup(prom.Close)
	la := newLimitsAgent(t, Upstreams{PrometheusURL: prom.URL}, 0)
	tok := la.grant(t, "g-withheld")

	tests := []struct {
		pool, want string
	}{
		{"html", "not Prometheus's JSON"},
		{"big", "over 8388608 bytes"},
		{"object", "want a string, number"},
	}
	for _, tt := range tests {
		status, code, body := promGet(t, la, tok, "/api/v1/targets?scrapePool="+tt.pool)
		if status != http.StatusBadGateway || code != "prom_answer_withheld" || !bytes.Contains(body, []byte(tt.want)) {
			t.Errorf("scrapePool=%s: %d %s %.300s, want 502 prom_answer_withheld saying %q", tt.pool, status, code, body, tt.want)
		}
		if bytes.Contains(body, []byte("SECRET")) {
			t.Errorf("scrapePool=%s: the refusal quotes the answer: %.300s", tt.pool, body)
		}
	}
	withheld := 0
	for _, e := range la.events(t) {
		if e.Type == audit.PromDenied && e.GrantID == "g-withheld" && e.Details["stage"] == "answer" {
			withheld++
			if strings.Contains(e.Reason, "SECRET") {
				t.Errorf("the audit event quotes the answer: %s", e.Reason)
			}
		}
	}
	if withheld != len(tests) {
		t.Errorf("%d prom.denied events for withheld answers, want %d", withheld, len(tests))
	}

	status, _, body := promGet(t, la, tok, "/api/v1/targets?scrapePool=ok")
	if want := `"scrapeUrl":"http://h:1/metrics"`; status != http.StatusOK || !bytes.Contains(body, []byte(want)) || bytes.Contains(body, []byte("SECRET")) {
		t.Errorf("a well-formed answer = %d %s, want 200 with %s and no secret", status, body, want)
	}
}
