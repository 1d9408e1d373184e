package promguard_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"testing"

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
