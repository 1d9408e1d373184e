package registry_test

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source/registry"
)

// TestSourcesWellFormed: every registered source has what the agent, the
// broker, grants and the CLI read from it, and no two share a name,
// scope or route.
func TestSourcesWellFormed(t *testing.T) {
	name := regexp.MustCompile(`^[a-z]{1,32}$`)
	scope := regexp.MustCompile(`^[a-z]+:[a-z]+$`)
	seen := map[string]string{}
	for _, s := range registry.All() {
		if !name.MatchString(s.Name) {
			t.Errorf("source name %q: want lowercase letters", s.Name)
		}
		if !scope.MatchString(s.Scope) {
			t.Errorf("source %s: scope %q: want KIND:LEVEL in lowercase", s.Name, s.Scope)
		}
		if s.Title == "" || s.Denied == "" || s.New == nil || s.Proxy.DefaultListen == "" {
			t.Errorf("source %s: Title, Denied, New and Proxy.DefaultListen are required: %+v", s.Name, s)
		}
		if s.Route.Rest == (s.Route.Method != "" || s.Route.Path != "") || (!s.Route.Rest && (s.Route.Method == "" || s.Route.Path == "")) {
			t.Errorf("source %s: route %+v: want Method and Path, or Rest", s.Name, s.Route)
		}
		for _, k := range []string{"name " + s.Name, "scope " + s.Scope, "route " + s.BrokerPattern()} {
			if other, dup := seen[k]; dup {
				t.Errorf("sources %s and %s share the %s", other, s.Name, k)
			}
			seen[k] = s.Name
		}
		if got, ok := registry.Lookup(s.Name); !ok || got.Scope != s.Scope {
			t.Errorf("Lookup(%q) = %v, %v", s.Name, got.Name, ok)
		}
	}
	if _, ok := registry.Lookup("postgres"); ok {
		t.Error(`Lookup("postgres") found a source that is not registered`)
	}
}

// TestFirstSources holds ClickHouse and Prometheus to the paths, patterns
// and scopes the broker, the agent and their clients used before sources
// were registered: the protocol did not change.
func TestFirstSources(t *testing.T) {
	for _, tc := range []struct {
		name, scope, broker, agent string
		agentPath                  string
	}{
		{"clickhouse", names.ScopeClickHouse, "POST /api/v1/deployments/{tenant}/{name}/clickhouse/query", "POST " + protocol.PathClickHouseQuery, protocol.PathClickHouseQuery},
		{"prometheus", names.ScopePrometheus, "/api/v1/deployments/{tenant}/{name}/prometheus/{rest...}", protocol.PathPrometheus, protocol.PathPrometheus},
	} {
		s, ok := registry.Lookup(tc.name)
		if !ok {
			t.Fatalf("Lookup(%q): not registered", tc.name)
		}
		if s.Scope != tc.scope {
			t.Errorf("%s: scope %q, want %q", tc.name, s.Scope, tc.scope)
		}
		if got := s.BrokerPattern(); got != tc.broker {
			t.Errorf("%s: BrokerPattern() = %q, want %q", tc.name, got, tc.broker)
		}
		if got := s.AgentPattern(); got != tc.agent {
			t.Errorf("%s: AgentPattern() = %q, want %q", tc.name, got, tc.agent)
		}
		if got := s.AgentPath(); got != tc.agentPath {
			t.Errorf("%s: AgentPath() = %q, want %q", tc.name, got, tc.agentPath)
		}
	}
	if want := []string{names.ScopeClickHouse, names.ScopePrometheus}; !equal(registry.Scopes(), want) {
		t.Errorf("Scopes() = %v, want %v", registry.Scopes(), want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAgentTarget maps broker requests, as the broker's mux routes them,
// to the agent's target: ClickHouse's fixed path without the query
// string, Prometheus's rest of the path escaped exactly as the caller
// wrote it, with its query.
func TestAgentTarget(t *testing.T) {
	for _, tc := range []struct {
		source, method, target, want string
	}{
		{"clickhouse", "POST", "/api/v1/deployments/acme/prod/clickhouse/query?x=1", "/v1/clickhouse/query"},
		{"prometheus", "GET", "/api/v1/deployments/acme/prod/prometheus/api/v1/query?query=up", "/v1/prometheus/api/v1/query?query=up"},
		{"prometheus", "GET", "/api/v1/deployments/acme/prod/prometheus/api/v1/label/job%2Fx/values", "/v1/prometheus/api/v1/label/job%2Fx/values"},
		{"prometheus", "POST", "/api/v1/deployments/acme/prod/prometheus/api/v1/query_range", "/v1/prometheus/api/v1/query_range"},
		{"prometheus", "GET", "/api/v1/deployments/acme/prod/prometheus/", "/v1/prometheus/"},
		// The deployment's segments escaped: the prefix is cut by segments,
		// not by the length of the unescaped names.
		{"prometheus", "GET", "/api/v1/deployments/%61cme/pr%6Fd/prometheus/api/v1/query?query=up", "/v1/prometheus/api/v1/query?query=up"},
		{"prometheus", "GET", "/api/v1/deployments/ac%2Fme/prod/%70rometheus/api/v1/query", "/v1/prometheus/api/v1/query"},
	} {
		s, _ := registry.Lookup(tc.source)
		var got string
		var err error
		mux := http.NewServeMux()
		mux.HandleFunc(s.BrokerPattern(), func(_ http.ResponseWriter, r *http.Request) { got, err = s.AgentTarget(r) })
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, nil))
		if rec.Code != http.StatusOK || err != nil || got != tc.want {
			t.Errorf("%s %s: AgentTarget = %q, %v (status %d), want %q", tc.method, tc.target, got, err, rec.Code, tc.want)
		}
	}
}
