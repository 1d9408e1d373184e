package broker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/internal/broker"
)

// mdTable is one markdown table: its header cells and rows of cells, each
// row with its line number.
type mdTable struct {
	header []string
	rows   [][]string
	lines  []int
}

// readTable returns the first table of the markdown file at path whose
// header's first cell is first.
func readTable(t *testing.T, path, first string) mdTable {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var tab mdTable
	for i, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "|") {
			if tab.header != nil {
				break // the table ended
			}
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		switch {
		case tab.header == nil && cells[0] == first:
			tab.header = cells
		case tab.header == nil, strings.HasPrefix(cells[0], "---"):
		default:
			if len(cells) != len(tab.header) {
				t.Fatalf("%s:%d: %d cells, the header has %d", path, i+1, len(cells), len(tab.header))
			}
			tab.rows = append(tab.rows, cells)
			tab.lines = append(tab.lines, i+1)
		}
	}
	if tab.header == nil {
		t.Fatalf("%s: no table whose header starts with %q", path, first)
	}
	return tab
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// readmeActions maps each route of the authorization table to the actions
// that name it in the README's permission table (the backquoted names in
// a row's first cell). A new route needs an entry here and its action in a
// README row whose role columns say who may call it.
var readmeActions = map[string][]string{
	"GET /api/v1/whoami":                                               {"whoami"},
	"GET /api/v1/broker":                                               {"info"},
	"GET /api/v1/tickets/{owner}/{repo}/{number}":                      {"ticket check"},
	"POST /api/v1/deployments":                                         {"deployment create"},
	"GET /api/v1/deployments":                                          {"deployment list"},
	"GET /api/v1/deployments/{id}":                                     {"deployment show"},
	"GET /api/v1/deployments/{tenant}/{name}":                          {"deployment show"},
	"POST /api/v1/deployments/{id}/pairing-tokens":                     {"deployment pairing-token"},
	"POST /api/v1/deployments/{tenant}/{name}/pairing-tokens":          {"deployment pairing-token"},
	"POST /api/v1/deployments/{id}/ping":                               {"deployment ping"},
	"POST /api/v1/deployments/{tenant}/{name}/ping":                    {"deployment ping"},
	"PUT /api/v1/deployments/{tenant}/{name}/settings":                 {"deployment set"},
	"GET /api/v1/deployments/{tenant}/{name}/customer-settings":        {"deployment freeze list", "deployment maintenance list"},
	"PUT /api/v1/deployments/{tenant}/{name}/customer-settings":        {"deployment freeze add/remove", "deployment maintenance add/remove"},
	"POST /api/v1/deployments/{tenant}/{name}/revoke-agent":            {"deployment revoke-agent"},
	"POST /api/v1/requests":                                            {"request create"},
	"GET /api/v1/requests":                                             {"request list"},
	"GET /api/v1/requests/{id}":                                        {"request show"},
	"POST /api/v1/requests/{id}/approve":                               {"request approve"},
	"POST /api/v1/requests/{id}/approval-statement":                    {"request approve (sign)"},
	"GET /api/v1/deployments/{tenant}/{name}/permits":                  {"permit list"},
	"POST /api/v1/deployments/{tenant}/{name}/permits/statement":       {"permit create", "permit sign"},
	"POST /api/v1/deployments/{tenant}/{name}/permits":                 {"permit create", "permit sign"},
	"DELETE /api/v1/deployments/{tenant}/{name}/permits/{permit}":      {"permit revoke"},
	"POST /api/v1/requests/{id}/deny":                                  {"request deny"},
	"POST /api/v1/requests/{id}/cancel":                                {"request cancel"},
	"POST /api/v1/requests/{id}/revoke":                                {"request revoke"},
	"POST /api/v1/deployments/{tenant}/{name}/network/plan":            {"network … plan"},
	"POST /api/v1/requests/{id}/network/apply":                         {"network … apply"},
	"POST /api/v1/requests/{id}/network/teardown":                      {"network … teardown"},
	"GET /api/v1/requests/{id}/network/status":                         {"network … status"},
	"GET /api/v1/network/registrations":                                {"network registrations"},
	"POST /api/v1/tenants/{tenant}/network/registrations":              {"network register"},
	"POST /api/v1/tenants/{tenant}/network/registrations/{id}/confirm": {"network confirm"},
	"DELETE /api/v1/tenants/{tenant}/network/registrations/{id}":       {"network unregister"},
	"GET /api/v1/audit/events":                                         {"audit …"},
	"GET /api/v1/audit/checkpoint":                                     {"audit …"},
	"GET /api/v1/audit/proof/inclusion":                                {"audit …"},
	"GET /api/v1/audit/proof/consistency":                              {"audit …"},
	"GET /api/v1/audit/export":                                         {"audit …"},
	"GET /api/v1/audit/public-key":                                     {"audit …"},
	"GET /api/v1/tenants/{tenant}/audit/events":                        {"audit … --tenant"},
	"GET /api/v1/tenants/{tenant}/audit/export":                        {"audit … --tenant"},
	"GET /api/v1/tenants/{tenant}/audit/public-key":                    {"audit … --tenant"},
	"POST /api/v1/deployments/{tenant}/{name}/clickhouse/query":        {"query", "proxy"},
	"/api/v1/deployments/{tenant}/{name}/prometheus/{rest...}":         {"prom", "proxy"},
}

// effectiveRoles is who may call e: its roles, except that a vendor-scope
// route refuses a customer's approver whatever its roles say.
func effectiveRoles(e broker.Endpoint) []string {
	var out []string
	for _, r := range e.Roles {
		if r == names.RoleApprover && e.Scope == broker.ScopeVendor {
			continue
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// TestREADMEPermissionTable keeps the README's "who may call what" table
// in step with the authorization table, both ways: every route's actions
// are in a row whose role columns are exactly who may call the route,
// and every action the table names is some route's.
func TestREADMEPermissionTable(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	tab := readTable(t, path, "action")
	roles := []string{names.RoleEngineer, names.RoleReviewer, names.RoleAdmin, names.RoleApprover}
	col := map[string]int{}
	for i, h := range tab.header[1:] {
		col[strings.Fields(h)[0]] = i + 1
	}
	for _, r := range roles {
		if _, ok := col[r]; !ok {
			t.Fatalf("%s: the permission table has no %q column; its header is %q", path, r, tab.header)
		}
	}
	type row struct {
		line  int
		roles []string
	}
	actions := map[string]row{} // action → its row
	for i, cells := range tab.rows {
		var who []string
		for _, r := range roles {
			if cells[col[r]] != "" {
				who = append(who, r)
			}
		}
		slices.Sort(who)
		spans := codeSpan.FindAllStringSubmatch(cells[0], -1)
		if len(spans) == 0 {
			t.Errorf("%s:%d: row %q names no `action`: name the commands it is about in backquotes", path, tab.lines[i], cells[0])
		}
		for _, m := range spans {
			if prev, dup := actions[m[1]]; dup {
				t.Errorf("%s:%d: action %s is also in the row of line %d: keep it in one row", path, tab.lines[i], m[1], prev.line)
			}
			actions[m[1]] = row{tab.lines[i], who}
		}
	}

	used := map[string]bool{}
	for _, e := range broker.Endpoints() {
		if e.Scope == broker.ScopePublic {
			continue // needs no login; docs/api.md lists it
		}
		acts, ok := readmeActions[e.Pattern]
		if !ok {
			t.Errorf("route %q (roles %s) is in broker.Endpoints but not in the README's permission table: add its command to a row of %s whose columns say who may call it, and map the route in readmeActions", e.Pattern, strings.Join(effectiveRoles(e), ", "), path)
			continue
		}
		want := effectiveRoles(e)
		for _, a := range acts {
			used[a] = true
			r, ok := actions[a]
			if !ok {
				t.Errorf("%s: the permission table has no row for `%s` (route %q): add one with ✓ for %s", path, a, e.Pattern, strings.Join(want, ", "))
				continue
			}
			if !slices.Equal(r.roles, want) {
				t.Errorf("%s:%d: `%s` is marked for %s, but route %q allows %s: fix the row's role columns", path, r.line, a, strings.Join(r.roles, ", "), e.Pattern, strings.Join(want, ", "))
			}
		}
	}
	for pattern := range readmeActions {
		if !slices.ContainsFunc(broker.Endpoints(), func(e broker.Endpoint) bool { return e.Pattern == pattern }) {
			t.Errorf("readmeActions maps route %q, which broker.Endpoints no longer has: remove it here, and its action from the README's permission table", pattern)
		}
	}
	for a, r := range actions {
		if !used[a] {
			t.Errorf("%s:%d: the permission table names `%s`, which no route of broker.Endpoints serves: remove it from the row, or map its route in readmeActions", path, r.line, a)
		}
	}
}

// TestAPIDocListsEveryRoute keeps docs/api.md's route table in step with
// the authorization table, both ways: every route, its roles and its
// scope.
func TestAPIDocListsEveryRoute(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "api.md")
	tab := readTable(t, path, "route")
	type row struct {
		line         int
		roles, scope string
	}
	doc := map[string]row{}
	for i, cells := range tab.rows {
		m := codeSpan.FindStringSubmatch(cells[0])
		if m == nil {
			t.Errorf("%s:%d: the route cell %q holds no `METHOD /path`", path, tab.lines[i], cells[0])
			continue
		}
		if prev, dup := doc[m[1]]; dup {
			t.Errorf("%s:%d: route %q is listed twice (also line %d): remove one row", path, tab.lines[i], m[1], prev.line)
		}
		doc[m[1]] = row{tab.lines[i], cells[1], cells[2]}
	}
	for _, e := range broker.Endpoints() {
		roles := "—"
		if len(e.Roles) > 0 {
			roles = strings.Join(e.Roles, ", ")
		}
		want := fmt.Sprintf("| `%s` | %s | %s | what it does |", e.Pattern, roles, e.Scope)
		r, ok := doc[e.Pattern]
		switch {
		case !ok:
			t.Errorf("route %q is in broker.Endpoints but not in %s: add the row %s", e.Pattern, path, want)
		case r.roles != roles || r.scope != e.Scope.String():
			t.Errorf("%s:%d: route %q says roles %q, scope %q; broker.Endpoints says %q, %q: fix the row to %s", path, r.line, e.Pattern, r.roles, r.scope, roles, e.Scope, want)
		}
		delete(doc, e.Pattern)
	}
	for pattern, r := range doc {
		t.Errorf("%s:%d: route %q is not in broker.Endpoints: remove the row", path, r.line, pattern)
	}
}
