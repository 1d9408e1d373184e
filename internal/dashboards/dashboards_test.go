package dashboards_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/dashboards"
	"github.com/tetherhq/tether/internal/devbroker"
	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/internal/testenv"
)

var (
	grafanaDir    = filepath.Join("..", "..", "deploy", "grafana")
	prometheusDir = filepath.Join("..", "..", "deploy", "prometheus")
	alertsFile    = filepath.Join(prometheusDir, "alerts.yml")
)

// dashboardFiles are the dashboards, by the side whose metrics they show.
var dashboardFiles = map[string]string{"broker": "broker.json", "agent": "agent.json"}

// datasourceUID is how every panel and query names its data source: the
// dashboard's Prometheus variable.
const datasourceUID = "${datasource}"

func usesVariable(raw json.RawMessage) bool {
	var ds struct{ Type, UID string }
	return json.Unmarshal(raw, &ds) == nil && ds.Type == "prometheus" && ds.UID == datasourceUID
}

// TestDashboards: each dashboard is JSON Grafana imports (schema 39 or
// later, a Prometheus data-source variable every panel and query uses),
// its panel IDs are unique, and every panel's PromQL parses.
func TestDashboards(t *testing.T) {
	for side, file := range dashboardFiles {
		t.Run(side, func(t *testing.T) {
			d, err := dashboards.LoadDashboard(filepath.Join(grafanaDir, file))
			if err != nil {
				t.Fatal(err)
			}
			if d.SchemaVersion < 39 || d.UID == "" || d.Title == "" {
				t.Errorf("schemaVersion %d, uid %q, title %q: want 39 or later, a uid and a title", d.SchemaVersion, d.UID, d.Title)
			}
			i := slices.IndexFunc(d.Templating.List, func(v dashboards.Variable) bool { return v.Name == "datasource" })
			if i < 0 || d.Templating.List[i].Type != "datasource" || string(d.Templating.List[i].Query) != `"prometheus"` {
				t.Errorf("no Prometheus data-source variable named datasource in %+v", d.Templating.List)
			}
			for _, v := range d.Templating.List {
				if v.Type == "query" && !usesVariable(v.Datasource) {
					t.Errorf("variable %s: data source %s, want %s", v.Name, v.Datasource, datasourceUID)
				}
			}
			ids := map[int]string{}
			panels := d.AllPanels()
			if len(panels) < 10 {
				t.Errorf("%d panels, want the dashboard's panels", len(panels))
			}
			for _, p := range panels {
				if prev, dup := ids[p.ID]; dup {
					t.Errorf("panels %q and %q share ID %d", prev, p.Title, p.ID)
				}
				ids[p.ID] = p.Title
				if !usesVariable(p.Datasource) {
					t.Errorf("panel %q: data source %s, want %s", p.Title, p.Datasource, datasourceUID)
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				for _, q := range p.Targets {
					if !usesVariable(q.Datasource) {
						t.Errorf("panel %q query %s: data source %s, want %s", p.Title, q.RefID, q.Datasource, datasourceUID)
					}
					if _, err := dashboards.MetricNames(q.Expr); err != nil {
						t.Errorf("panel %q query %s: %q does not parse: %v", p.Title, q.RefID, q.Expr, err)
					}
				}
			}
		})
	}
}

// requiredAlerts are the alerts the operator's documentation names.
var requiredAlerts = []string{"TetherAgentOffline", "TetherWitnessRefusing", "TetherAuditFsyncSlow", "TetherCheckpointStale", "TetherSpoolGrowing"}

// TestAlertRules: every rule is an alert with a for duration, a severity
// (warning or critical), a summary and a description saying what to do,
// and PromQL that parses; the alerts the documentation names are there.
func TestAlertRules(t *testing.T) {
	g, err := dashboards.LoadRules(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, grp := range g.Groups {
		if grp.Name != "tether-broker" && grp.Name != "tether-agent" {
			t.Errorf("group %q: want tether-broker or tether-agent (the side whose metrics it reads)", grp.Name)
		}
		for _, r := range grp.Rules {
			names = append(names, r.Alert)
			if r.Alert == "" || r.For == "" {
				t.Errorf("rule %q (%q): want an alert with a for duration", r.Alert, r.Expr)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			if len(r.Annotations["summary"]) < 20 || len(r.Annotations["description"]) < 80 {
				t.Errorf("%s: want a summary and a description that says what to do, have %q", r.Alert, r.Annotations)
			}
			if _, err := dashboards.MetricNames(r.Expr); err != nil {
				t.Errorf("%s: %q does not parse: %v", r.Alert, r.Expr, err)
			}
		}
	}
	for _, want := range requiredAlerts {
		if !slices.Contains(names, want) {
			t.Errorf("no alert %s in %s", want, alertsFile)
		}
	}
}

// TestPromtool runs Prometheus's own checks: `promtool check rules` on
// the alerts, and `promtool test rules` on their unit tests, which hold
// each alert quiet on series that should not fire it and firing, with its
// labels and annotations, on those that should.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	testenv.Require(t, err == nil, "promtool (apt-get install --no-install-recommends prometheus; scripts/install-deps.sh)")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = prometheusDir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// families parses an exposition.
func families(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %s: %s", url, res.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	series := 0
	for _, f := range fams {
		series += len(f.GetMetric())
	}
	t.Logf("GET %s: %d families, %d series, %d bytes", url, len(fams), series, len(b))
	return fams
}

// freeLoopbackAddr is a loopback address with a port free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// emptyUntilObserved are agent families with labels that have no series
// until their first observation: internal/agent's
// TestDashboardMetricsRegistered checks them against the agent's registry.
var emptyUntilObserved = []string{"tether_agent_refusals_total"}

// TestMetricsExist runs a broker (with a webhook, a paired agent and an
// access request behind it) and the agent, with its loopback health
// address, and scrapes both: every metric a dashboard panel or an alert
// names is one the side it reads exports.
func TestMetricsExist(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(hooks.Close)
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Webhooks = []notify.Webhook{{Tenant: "acme", URL: hooks.URL + "/hook", Secret: strings.Repeat("s", 32)}}
	})
	res, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	health := freeLoopbackAddr(t)
	brokertest.RunAgent(t, agent.Config{StateDir: t.TempDir(), Join: b.Join(), PairingToken: res.Pairing.Token, Hostname: "agent-prod", HealthAddr: health, Version: "test"}, true)
	tok, err := b.DevIdP().Token(brokertest.IssuerOf("engineer@vendor.test"), "engineer@vendor.test", devbroker.ClientID, "")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := brokerapi.NewClient(config.CLI{APIURL: b.APIURL(), Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "dashboards"}); err != nil {
		t.Fatal(err)
	}

	scraped := map[string]map[string]*dto.MetricFamily{
		"broker": families(t, b.APIURL()+"/metrics"),
		"agent":  families(t, "http://"+health+"/metrics"),
	}
	referenced := map[string]map[string][]string{"broker": {}, "agent": {}} // side → metric → where
	for side, file := range dashboardFiles {
		d, err := dashboards.LoadDashboard(filepath.Join(grafanaDir, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range d.AllPanels() {
			for _, q := range p.Targets {
				names, err := dashboards.MetricNames(q.Expr)
				if err != nil {
					t.Fatalf("%s panel %q: %v", file, p.Title, err)
				}
				for _, n := range names {
					referenced[side][n] = append(referenced[side][n], file+": "+p.Title)
				}
			}
		}
	}
	g, err := dashboards.LoadRules(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, grp := range g.Groups {
		side := strings.TrimPrefix(grp.Name, "tether-")
		for _, r := range grp.Rules {
			names, err := dashboards.MetricNames(r.Expr)
			if err != nil {
				t.Fatalf("%s: %v", r.Alert, err)
			}
			for _, n := range names {
				referenced[side][n] = append(referenced[side][n], "alerts.yml: "+r.Alert)
			}
		}
	}
	for side, refs := range referenced {
		fams := scraped[side]
		exists := func(n string) bool {
			return fams[n] != nil || (side == "agent" && slices.Contains(emptyUntilObserved, n))
		}
		if len(refs) < 10 {
			t.Errorf("%s: only %d metrics referenced", side, len(refs))
		}
		for n, where := range refs {
			if _, ok := dashboards.Family(n, exists); !ok {
				t.Errorf("%s exports no %s, which %s use", side, n, strings.Join(where, ", "))
			}
		}
	}

	// The served agent's state, as the dashboard shows it.
	af := scraped["agent"]
	for _, c := range []struct {
		name string
		ok   func(float64) bool
		want string
	}{
		{"tether_agent_tailnet_up", func(v float64) bool { return v == 1 }, "1"},
		{"tether_agent_broker_nodes_proven", func(v float64) bool { return v >= 1 }, "at least 1"},
		{"tether_agent_heartbeat_last_success_timestamp_seconds", func(v float64) bool { return v > float64(time.Now().Add(-time.Minute).Unix()) }, "within the last minute"},
		{"tether_agent_heartbeat_interval_seconds", func(v float64) bool { return v == 1 }, "1 (brokertest's)"},
		{"tether_agent_witness_refusing", func(v float64) bool { return v == 0 }, "0"},
	} {
		f := af[c.name]
		if f == nil || len(f.GetMetric()) != 1 || !c.ok(f.GetMetric()[0].GetGauge().GetValue()) {
			t.Errorf("the running agent's %s = %v, want %s", c.name, f.GetMetric(), c.want)
		}
	}
}
