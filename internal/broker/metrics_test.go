package broker_test

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

// TestDeploymentAgentMetrics: /metrics says, per deployment, whether it
// has a paired agent, whether that agent is online and when its latest
// heartbeat came; an agent that stops goes offline three heartbeat
// intervals after its last heartbeat; the API's requests are counted by
// route pattern and status, never by a path's values.
func TestDeploymentAgentMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var ahead atomic.Int64 // how far the broker's clock is moved on
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	})
	res, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "on"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "globex", Name: "unpaired"}); err != nil {
		t.Fatal(err)
	}
	_, stop := brokertest.RunAgent(t, agent.Config{StateDir: t.TempDir(), Join: b.Join(), PairingToken: res.Pairing.Token, Hostname: "agent-on"}, true)
	if _, err := b.Client.GetDeployment(ctx, "acme/on"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client.GetDeployment(ctx, "acme/nothing-here"); err == nil {
		t.Fatal("GetDeployment of a deployment that does not exist: no error")
	}

	scrape := func() string {
		t.Helper()
		res, err := http.Get(b.APIURL() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return string(body)
	}
	m := scrape()
	for _, c := range []struct {
		series string
		want   float64
	}{
		{`tether_deployment_agent_paired{deployment="acme/on",tenant="acme"}`, 1},
		{`tether_deployment_agent_online{deployment="acme/on",tenant="acme"}`, 1},
		{`tether_deployment_agent_witness_refusing{deployment="acme/on",tenant="acme"}`, 0},
		{`tether_deployment_agent_paired{deployment="globex/unpaired",tenant="globex"}`, 0},
		{`tether_http_requests_total{code="200",route="GET /api/v1/deployments/{tenant}/{name}"}`, 1},
		{`tether_http_requests_total{code="404",route="GET /api/v1/deployments/{tenant}/{name}"}`, 1},
	} {
		if got, ok := metricValue(m, c.series); !ok || got != c.want {
			t.Errorf("%s = %v (present: %v), want %v", c.series, got, ok, c.want)
		}
	}
	if _, ok := metricValue(m, `tether_deployment_agent_online{deployment="globex/unpaired",tenant="globex"}`); ok {
		t.Error("a deployment with no paired agent has tether_deployment_agent_online: want it absent (nothing to be offline)")
	}
	hb, ok := metricValue(m, `tether_deployment_agent_last_heartbeat_timestamp_seconds{deployment="acme/on",tenant="acme"}`)
	if now := float64(time.Now().Unix()); !ok || hb < now-30 || hb > now+1 {
		t.Errorf("last heartbeat = %v (present: %v), want within the last 30 s of %v", hb, ok, now)
	}

	// The agent stops; three heartbeat intervals (1 s here) on, the
	// broker's clock says it is offline.
	stop()
	ahead.Store(int64(10 * time.Second))
	m = scrape()
	if got, _ := metricValue(m, `tether_deployment_agent_online{deployment="acme/on",tenant="acme"}`); got != 0 {
		t.Errorf("tether_deployment_agent_online of a stopped agent, 10 s on = %v, want 0", got)
	}
	if got, _ := metricValue(m, `tether_deployment_agent_last_heartbeat_timestamp_seconds{deployment="acme/on",tenant="acme"}`); got < hb {
		t.Errorf("last heartbeat of a stopped agent = %v, want at least %v", got, hb)
	}
}
