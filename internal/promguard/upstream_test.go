package promguard_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/promguard"
	"github.com/tetherhq/tether/internal/promtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	promtest.Stop()
	os.Exit(code)
}

// TestUpstream sends every allowed call of the corpus, as rebuilt, to a real
// Prometheus: the rebuilt calls must be ones Prometheus accepts.
func TestUpstream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus")
	}
	prom := promtest.Start(t)
	prom.WaitForSamples(t)
	for _, c := range allowed {
		if c.newSyntax {
			continue // the packaged Prometheus may predate it
		}
		req, v := c.check(t)
		if !v.Allow {
			t.Errorf("Check(%v) = denied %q", c, v.Reason)
			continue
		}
		hr, err := req.NewHTTPRequest(context.Background(), prom.URL)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%v: Prometheus answered %s: %s", c, res.Status, body)
		}
	}
}

// leakyScrapeConfigs are scrape jobs whose configuration holds secrets:
// a token in params: (the scrape URL's query string) and user-info in a
// target's address. Neither target answers, so their lastError quotes
// the scrape URL.
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

// leakySecrets are the strings of leakyScrapeConfigs that no answer may
// carry.
var leakySecrets = []string{"SECRET", "scrapeuser", "token=", "__param_", "__address__"}

// TestTargetsLeakNothing asks a real Prometheus, configured with secrets
// in its scrape configuration, for /api/v1/targets through the guard and
// the rewrite: the answer the engineer gets holds none of them.
func TestTargetsLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus")
	}
	prom := promtest.StartOwn(t, promtest.Options{ScrapeConfigs: leakyScrapeConfigs})
	for _, c := range []call{get("/api/v1/targets"), get("/api/v1/targets", "state", "any"), get("/api/v1/targets", "scrapePool", "with-token")} {
		req, v := c.check(t)
		if !v.Allow || !v.Rewrite {
			t.Fatalf("Check(%v) = %+v, want allowed and rewritten", c, v)
		}
		var raw []byte
		// Poll until both jobs have been scraped once, so that their
		// lastError is set.
		deadline := time.Now().Add(30 * time.Second)
		for {
			hr, err := req.NewHTTPRequest(context.Background(), prom.URL)
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.DefaultClient.Do(hr)
			if err != nil {
				t.Fatal(err)
			}
			raw, err = io.ReadAll(io.LimitReader(res.Body, promguard.MaxAnswer+1))
			res.Body.Close()
			if err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("%v: Prometheus answered %d %s, %v", c, res.StatusCode, raw, err)
			}
			if bytes.Count(raw, []byte(`"health":"down"`)) == wantDown(c) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%v: the leaky targets were not scraped in 30s: %s", c, raw)
			}
			time.Sleep(100 * time.Millisecond) // polling for the first scrape
		}
		// The attack: Prometheus itself answers with the secrets.
		if !bytes.Contains(raw, []byte("tok-SECRET-789")) {
			t.Fatalf("%v: Prometheus's own answer does not show the token, so this test shows nothing: %s", c, raw)
		}
		got, err := promguard.Rewrite(v.Endpoint, raw)
		if err != nil {
			t.Fatalf("%v: Rewrite = %v", c, err)
		}
		for _, s := range leakySecrets {
			if bytes.Contains(got, []byte(s)) {
				t.Errorf("%v: the rewritten answer holds %q:\n%s", c, s, got)
			}
		}
		if !bytes.Contains(got, []byte(`"scrapeUrl":"http://127.0.0.1:9/metrics"`)) || !bytes.Contains(got, []byte(`"lastError":"`+promguard.Withheld+`"`)) {
			t.Errorf("%v: the rewritten answer lacks the cleaned scrape URL or the withheld error:\n%s", c, got)
		}
	}
}

func wantDown(c call) int {
	if strings.Contains(c.target, "scrapePool") {
		return 1
	}
	return 2
}
