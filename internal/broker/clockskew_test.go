package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokercli"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/protocol"
)

// TestAgentClockSkew: the skew between an agent's clock and the broker's
// is measured at every heartbeat, stored, shown by 'deployment show' (text
// and JSON) and exported per deployment; beyond 15 s both sides warn, and
// beyond 60 s, where the agent refuses the broker's queries, the agent
// still takes the broker's revocation push.
func TestAgentClockSkew(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var brokerLog syncBuffer
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&brokerLog, nil))
	})
	cliCfg := filepath.Join(b.Dir, "cli.json")

	tests := []struct {
		name      string
		skew      time.Duration
		status    string
		summary   string // in the summary
		agentLog  string // in the agent's log at the level below
		level     string
		brokerLog string // in the broker's log
	}{
		{"in-step", 0, brokerapi.ClockOK, "the broker (±", "", "", ""},
		{"ahead", 20 * time.Second, brokerapi.ClockWarn, "agent 20 s ahead of the broker (±",
			"the agent's clock is ahead of the broker's by more than 15s", "WARN",
			"the agent's clock is 20s ahead of the broker's, more than 15s: beyond 1m0s the agent refuses the broker's queries"},
		{"behind", -5 * time.Minute, brokerapi.ClockRefused, "agent 5m0s behind the broker (±",
			"the agent's clock is behind the broker's by more than 1m0s", "ERROR",
			"the agent's clock is 5m0s behind the broker's, more than the 1m0s the agent allows a signed call"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: tt.name})
			if err != nil {
				t.Fatal(err)
			}
			var agentLog syncBuffer
			brokertest.RunAgent(t, agent.Config{
				StateDir: t.TempDir(), Join: b.Join(), PairingToken: res.Pairing.Token, Hostname: "agent-" + tt.name,
				Logger: slog.New(slog.NewTextHandler(&agentLog, nil)),
				Now:    func() time.Time { return time.Now().Add(tt.skew) },
			}, true)

			// The first heartbeat gives a one-way estimate, the next ones
			// the agent's NTP-style estimate.
			var d brokerapi.Deployment
			for deadline := time.Now().Add(30 * time.Second); ; {
				if d, err = b.Client.GetDeployment(ctx, "acme/"+tt.name); err != nil {
					t.Fatal(err)
				}
				if d.Agent != nil && d.Agent.Clock != nil && !d.Agent.Clock.OneWay {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no measured clock skew after 30s: %+v", d.Agent)
				}
				time.Sleep(50 * time.Millisecond) // polling observable state
			}
			c := d.Agent.Clock
			if got := time.Duration(c.AheadSeconds * float64(time.Second)); (got-tt.skew).Abs() > 200*time.Millisecond ||
				c.UncertaintySeconds <= 0 || c.UncertaintySeconds > 0.2 {
				t.Errorf("clock = %+v, want %v ahead within 200 ms, with an uncertainty within (0, 200 ms]", c, tt.skew)
			}
			if c.Status != tt.status || !strings.Contains(c.Summary, tt.summary) || (c.Warning != "") != (tt.status != brokerapi.ClockOK) {
				t.Errorf("clock = %+v, want status %s, a summary saying %q, and a warning unless ok", c, tt.status, tt.summary)
			}
			t.Logf("%s: %s (%s)", tt.name, c.Summary, c.Warning)

			// Both sides' logs.
			if tt.agentLog != "" && !strings.Contains(agentLog.String(), "level="+tt.level+` msg="`+tt.agentLog) {
				t.Errorf("agent log lacks a %s saying %q:\n%s", tt.level, tt.agentLog, agentLog.String())
			}
			if tt.agentLog == "" && strings.Contains(agentLog.String(), "clock") {
				t.Errorf("agent in step logs about its clock:\n%s", agentLog.String())
			}
			if tt.brokerLog != "" && !strings.Contains(brokerLog.String(), tt.brokerLog) {
				t.Errorf("broker log lacks %q:\n%s", tt.brokerLog, brokerLog.String())
			}

			// 'broker deployment show', text and JSON.
			var out, stderr bytes.Buffer
			if err := brokercli.Run(ctx, []string{"deployment", "show", "acme/" + tt.name, "--config", cliCfg}, &out, &stderr); err != nil {
				t.Fatalf("deployment show: %v\n%s", err, stderr.String())
			}
			if !strings.Contains(out.String(), "Clock:") || !strings.Contains(out.String(), tt.summary) ||
				strings.Contains(out.String(), "Warning:") != (tt.status != brokerapi.ClockOK) {
				t.Errorf("deployment show printed\n%s\nwant a Clock line saying %q, and a Warning line unless ok", out.String(), tt.summary)
			}
			out.Reset()
			if err := brokercli.Run(ctx, []string{"deployment", "show", "acme/" + tt.name, "-o", "json", "--config", cliCfg}, &out, &stderr); err != nil {
				t.Fatalf("deployment show -o json: %v\n%s", err, stderr.String())
			}
			var js brokerapi.Deployment
			if err := json.Unmarshal(out.Bytes(), &js); err != nil || js.Agent == nil || js.Agent.Clock == nil || js.Agent.Clock.Status != tt.status {
				t.Errorf("deployment show -o json = %s (%v), want the agent's clock with status %s", out.String(), err, tt.status)
			}

			// The metric.
			mres, err := http.Get(b.APIURL() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			metrics, _ := io.ReadAll(mres.Body)
			mres.Body.Close()
			if v, ok := metricValue(string(metrics), `tether_agent_clock_skew_seconds{deployment="acme/`+tt.name+`"}`); !ok || math.Abs(v-tt.skew.Seconds()) > 0.5 {
				t.Errorf("tether_agent_clock_skew_seconds of acme/%s = %v (found %v), want %v", tt.name, v, ok, tt.skew.Seconds())
			}

			if tt.status != brokerapi.ClockRefused {
				return
			}
			// Beyond 60 s the agent refuses the broker's calls, saying
			// why, but takes its revocation push.
			call := func(method, path string, body []byte) (int, string) {
				res, err := b.CallAgent(ctx, res.Deployment.ID, method, path, body, http.Header{"Content-Type": {"application/json"}})
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				raw, _ := io.ReadAll(res.Body)
				return res.StatusCode, string(raw)
			}
			if status, body := call(http.MethodGet, protocol.PathAgentPing, nil); status != http.StatusForbidden || !strings.Contains(body, "clock skew") {
				t.Errorf("ping of an agent 5 min behind = %d %s, want 403 naming the clock skew", status, body)
			}
			rev, _ := json.Marshal(protocol.RevokeRequest{GrantID: "0190aaaa-0000-7000-8000-00000000beef", Until: time.Now().Add(time.Hour)})
			if status, body := call(http.MethodPost, protocol.PathRevoke, rev); status != http.StatusOK {
				t.Errorf("revocation pushed to an agent 5 min behind = %d %s, want 200", status, body)
			}
		})
	}
}

// metricValue finds series in a Prometheus text exposition.
func metricValue(exposition, series string) (float64, bool) {
	for line := range strings.Lines(exposition) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}
