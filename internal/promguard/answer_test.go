package promguard_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/promguard"
)

// targets2_42 is what Prometheus 2.42 answered to /api/v1/targets for a
// scrape configuration with params: {token: [...]} and user-info in the
// target's address, plus a dropped target and a field of a later release.
const targets2_42 = `{"status":"success","data":{"activeTargets":[
{"discoveredLabels":{"__address__":"127.0.0.1:19391","__metrics_path__":"/metrics","__scheme__":"http","__scrape_interval__":"1s","__scrape_timeout__":"1s","job":"prometheus"},
 "labels":{"instance":"127.0.0.1:19391","job":"prometheus"},"scrapePool":"prometheus","scrapeUrl":"http://127.0.0.1:19391/metrics","globalUrl":"http://vm:19391/metrics",
 "lastError":"","lastScrape":"2026-12-03T09:32:14.519718797Z","lastScrapeDuration":0.003540918,"health":"up","scrapeInterval":"1s","scrapeTimeout":"1s"},
{"discoveredLabels":{"__address__":"scrapeuser:pw-SECRET-456@127.0.0.1:19391","__metrics_path__":"/metrics","__param_token":"tok-SECRET-123","__scheme__":"http","job":"secret"},
 "labels":{"instance":"scrapeuser:pw-SECRET-456@127.0.0.1:19391","job":"secret","probe":"https://u:pw-SECRET-789@example.com/x?key=tok-SECRET-000"},"scrapePool":"secret",
 "scrapeUrl":"http://scrapeuser:pw-SECRET-456%40127.0.0.1:19391/metrics?token=tok-SECRET-123",
 "globalUrl":"http://scrapeuser:pw-SECRET-456%40127.0.0.1:19391/metrics?token=tok-SECRET-123#frag",
 "lastError":"parse \"http://scrapeuser:pw-SECRET-456%!.(MISSING)0.1:19391/metrics?token=tok-SECRET-123\": invalid URL escape",
 "lastScrape":"2026-12-03T09:32:15.44499359Z","lastScrapeDuration":0.000111877,"health":"down","scrapeInterval":"1s","scrapeTimeout":"1s",
 "someFutureField":"tok-SECRET-999"}],
"droppedTargets":[{"discoveredLabels":{"__address__":"a:b@host:1","__param_token":"tok-SECRET-321","job":"x"}}]}}`

// secrets are the strings no rewritten answer may hold.
var secrets = []string{"SECRET", "scrapeuser", "__param", "__address__", "token=", "key=", "u:pw", "#frag", "parse "}

func TestRewriteTargets(t *testing.T) {
	got, err := promguard.Rewrite("/api/v1/targets", []byte(targets2_42))
	if err != nil {
		t.Fatalf("Rewrite(targets) = %v", err)
	}
	for _, s := range secrets {
		if strings.Contains(string(got), s) {
			t.Errorf("Rewrite(targets) holds %q:\n%s", s, got)
		}
	}
	want := `{"status":"success","data":{"activeTargets":[` +
		`{"discoveredLabels":{},"labels":{"instance":"127.0.0.1:19391","job":"prometheus"},"scrapePool":"prometheus","scrapeUrl":"http://127.0.0.1:19391/metrics","globalUrl":"http://vm:19391/metrics","lastError":"","lastScrape":"2026-12-03T09:32:14.519718797Z","lastScrapeDuration":0.003540918,"health":"up","scrapeInterval":"1s","scrapeTimeout":"1s"},` +
		`{"discoveredLabels":{},"labels":{"instance":"127.0.0.1:19391","job":"secret","probe":"https://example.com/x"},"scrapePool":"secret","scrapeUrl":"http://127.0.0.1:19391/metrics","globalUrl":"http://127.0.0.1:19391/metrics","lastError":"withheld by the agent","lastScrape":"2026-12-03T09:32:15.44499359Z","lastScrapeDuration":0.000111877,"health":"down","scrapeInterval":"1s","scrapeTimeout":"1s"}],` +
		`"droppedTargets":[{"discoveredLabels":{}}]}}` + "\n"
	if string(got) != want {
		t.Errorf("Rewrite(targets) =\n%s\nwant\n%s", got, want)
	}
	again, err := promguard.Rewrite("/api/v1/targets", got)
	if err != nil || string(again) != string(got) {
		t.Errorf("Rewrite of its own answer = %s, %v; want it unchanged", again, err)
	}
}

func TestRewriteRulesAndAlerts(t *testing.T) {
	alertJSON := `{"labels":{"alertname":"Down","instance":"u:pw-SECRET-1@h:1","__param_x":"SECRET"},"annotations":{"summary":"down, see https://wiki/?token=SECRET","runbook":"SECRET"},"state":"firing","activeAt":"2026-01-01T00:00:00Z","value":"0e+00"}`
	rules := `{"status":"success","data":{"groups":[{"name":"g","file":"/etc/prometheus/rules.yml","rules":[` +
		`{"state":"firing","name":"Down","query":"up == 0","duration":60,"labels":{"severity":"page"},"annotations":{"summary":"SECRET"},"alerts":[` + alertJSON + `],"health":"err","lastError":"SECRET quoted","evaluationTime":0.001,"lastEvaluation":"2026-01-01T00:00:00Z","type":"alerting"},` +
		`{"name":"job:up:sum","query":"sum by (job) (up)","labels":{},"health":"ok","evaluationTime":0.001,"lastEvaluation":"2026-01-01T00:00:00Z","type":"recording"}` +
		`],"interval":15,"limit":0,"evaluationTime":0.002,"lastEvaluation":"2026-01-01T00:00:00Z"}]}}`
	got, err := promguard.Rewrite("/api/v1/rules", []byte(rules))
	if err != nil {
		t.Fatalf("Rewrite(rules) = %v", err)
	}
	wantAlert := `{"labels":{"alertname":"Down","instance":"h:1"},"annotations":{"runbook":"withheld by the agent","summary":"withheld by the agent"},"state":"firing","activeAt":"2026-01-01T00:00:00Z","value":"0e+00"}`
	want := `{"status":"success","data":{"groups":[{"name":"g","file":"/etc/prometheus/rules.yml","rules":[` +
		`{"state":"firing","name":"Down","query":"up == 0","duration":60,"labels":{"severity":"page"},"annotations":{"summary":"withheld by the agent"},"alerts":[` + wantAlert + `],"health":"err","lastError":"withheld by the agent","evaluationTime":0.001,"lastEvaluation":"2026-01-01T00:00:00Z","type":"alerting"},` +
		`{"name":"job:up:sum","query":"sum by (job) (up)","labels":{},"health":"ok","evaluationTime":0.001,"lastEvaluation":"2026-01-01T00:00:00Z","type":"recording"}` +
		`],"interval":15,"limit":0,"evaluationTime":0.002,"lastEvaluation":"2026-01-01T00:00:00Z"}]}}` + "\n"
	if string(got) != want {
		t.Errorf("Rewrite(rules) =\n%s\nwant\n%s", got, want)
	}

	got, err = promguard.Rewrite("/api/v1/alerts", []byte(`{"status":"success","data":{"alerts":[`+alertJSON+`]}}`))
	if err != nil {
		t.Fatalf("Rewrite(alerts) = %v", err)
	}
	if want := `{"status":"success","data":{"alerts":[` + wantAlert + `]}}` + "\n"; string(got) != want {
		t.Errorf("Rewrite(alerts) =\n%s\nwant\n%s", got, want)
	}

	got, err = promguard.Rewrite("/api/v1/targets/metadata", []byte(`{"status":"success","data":[{"target":{"instance":"u:SECRET@h:1","job":"j"},"metric":"up","type":"gauge","help":"1 if up","unit":""}]}`))
	if err != nil {
		t.Fatalf("Rewrite(targets/metadata) = %v", err)
	}
	if want := `{"status":"success","data":[{"target":{"instance":"h:1","job":"j"},"metric":"up","type":"gauge","help":"1 if up","unit":""}]}` + "\n"; string(got) != want {
		t.Errorf("Rewrite(targets/metadata) =\n%s\nwant\n%s", got, want)
	}
}

func TestRewriteErrorAnswer(t *testing.T) {
	got, err := promguard.Rewrite("/api/v1/targets", []byte(`{"status":"error","errorType":"bad_data","error":"invalid parameter","data":{"SECRET":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"status":"error","errorType":"bad_data","error":"invalid parameter"}` + "\n"; string(got) != want {
		t.Errorf("Rewrite(error answer) = %s, want %s", got, want)
	}
}

func TestRewritePassesOtherEndpoints(t *testing.T) {
	for _, ep := range []string{"/api/v1/query", "/api/v1/label/{name}/values", "/api/v1/status/buildinfo"} {
		body := []byte("not even JSON: streamed as it comes")
		if got, err := promguard.Rewrite(ep, body); err != nil || string(got) != string(body) {
			t.Errorf("Rewrite(%s) = %q, %v; want the body unchanged", ep, got, err)
		}
	}
	if _, err := promguard.Rewrite("/api/v1/status/config", []byte(`{}`)); !errors.Is(err, promguard.ErrAnswer) {
		t.Errorf("Rewrite(an endpoint that is not allowed) = %v, want ErrAnswer", err)
	}
}

func TestRewriteRefusesMalformed(t *testing.T) {
	active := func(fields string) string {
		return `{"status":"success","data":{"activeTargets":[{` + fields + `}],"droppedTargets":[]}}`
	}
	tests := []struct {
		name, endpoint, body, want string
	}{
		{"not JSON", "/api/v1/targets", `<html>proxy error</html>`, "not Prometheus's JSON"},
		{"empty", "/api/v1/targets", ``, "not Prometheus's JSON"},
		{"two values", "/api/v1/targets", `{"status":"success","data":{}} {"x":1}`, "data after"},
		{"unknown status", "/api/v1/targets", `{"status":"ok","data":{}}`, "status other than"},
		{"no data", "/api/v1/targets", `{"status":"success"}`, "no data"},
		{"data is a list", "/api/v1/targets", `{"status":"success","data":[]}`, "cannot unmarshal"},
		{"label not a string", "/api/v1/targets", active(`"labels":{"a":1}`), "cannot unmarshal"},
		{"object where a scalar goes", "/api/v1/targets", active(`"health":{"token":"SECRET"}`), "want a string"},
		{"URL not a string", "/api/v1/targets", active(`"scrapeUrl":["http://x"]`), "cannot unmarshal"},
		{"annotations not strings", "/api/v1/alerts", `{"status":"success","data":{"alerts":[{"annotations":{"a":{"b":1}}}]}}`, "cannot unmarshal"},
		{"metadata not a list", "/api/v1/targets/metadata", `{"status":"success","data":{}}`, "cannot unmarshal"},
		{"too large", "/api/v1/rules", `{"status":"success","data":{"groups":[]},"x":"` + strings.Repeat("x", promguard.MaxAnswer) + `"}`, "over 8388608 bytes"},
	}
	for _, tt := range tests {
		got, err := promguard.Rewrite(tt.endpoint, []byte(tt.body))
		if err == nil || !errors.Is(err, promguard.ErrAnswer) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Rewrite(%s) = %.80q, %v; want an ErrAnswer containing %q", tt.name, tt.endpoint, got, err, tt.want)
		}
		if got != nil {
			t.Errorf("%s: Rewrite returned %d bytes with its error", tt.name, len(got))
		}
	}
}

// TestVerdictRewrite pins which endpoints' answers are rewritten.
func TestVerdictRewrite(t *testing.T) {
	for _, c := range allowed {
		_, v := c.check(t)
		want := map[string]bool{"/api/v1/targets": true, "/api/v1/targets/metadata": true, "/api/v1/rules": true, "/api/v1/alerts": true}[v.Endpoint]
		if v.Rewrite != want {
			t.Errorf("Check(%v).Rewrite = %v, want %v", c, v.Rewrite, want)
		}
	}
}

func FuzzRewrite(f *testing.F) {
	f.Add("/api/v1/targets", []byte(targets2_42))
	f.Add("/api/v1/alerts", []byte(`{"status":"success","data":{"alerts":[{"labels":{"a":"u@h"},"annotations":{"s":"x"},"value":"1"}]}}`))
	f.Add("/api/v1/targets/metadata", []byte(`{"status":"success","data":[{"target":{"instance":"u:p@h:1"},"metric":"up"}]}`))
	f.Fuzz(func(t *testing.T, endpoint string, body []byte) {
		if _, v := promguard.Check(http.MethodGet, mustURL(endpoint), "", nil); !v.Rewrite {
			return
		}
		got, err := promguard.Rewrite(endpoint, body)
		if err != nil {
			return
		}
		if !json.Valid(got) {
			t.Fatalf("Rewrite(%s, %q) = %q: not JSON", endpoint, body, got)
		}
		again, err := promguard.Rewrite(endpoint, got)
		if err != nil || string(again) != string(got) {
			t.Fatalf("Rewrite(%s) of its own answer %q = %q, %v: want it unchanged", endpoint, got, again, err)
		}
	})
}

func mustURL(path string) *url.URL {
	return &url.URL{Path: path}
}

// BenchmarkRewriteTargets rewrites a /api/v1/targets answer of 1,000
// targets, each shaped like Prometheus 2.42's.
func BenchmarkRewriteTargets(b *testing.B) {
	one := `{"discoveredLabels":{"__address__":"u:pw@10.0.0.1:9100","__metrics_path__":"/metrics","__param_token":"t","__scheme__":"http","job":"node"},` +
		`"labels":{"instance":"10.0.0.1:9100","job":"node"},"scrapePool":"node","scrapeUrl":"http://u:pw%4010.0.0.1:9100/metrics?token=t","globalUrl":"http://u:pw%4010.0.0.1:9100/metrics?token=t",` +
		`"lastError":"","lastScrape":"2026-12-03T09:32:14.519718797Z","lastScrapeDuration":0.0035,"health":"up","scrapeInterval":"15s","scrapeTimeout":"10s"}`
	body := []byte(`{"status":"success","data":{"activeTargets":[` + strings.TrimSuffix(strings.Repeat(one+",", 1000), ",") + `],"droppedTargets":[]}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := promguard.Rewrite("/api/v1/targets", body); err != nil {
			b.Fatal(err)
		}
	}
}
