package policy

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// value converts in to the policy input exactly as its JSON encoding would
// (nil slices and maps are null, times RFC 3339 with nanoseconds), but
// directly: the JSON round trip rego.EvalInput makes would cost each
// decision about a hundred more allocations, an eighth of its total.
// TestInputValue holds the two to the same result.
func (in Input) value() ast.Value {
	ticket := ast.NullTerm()
	if t := in.Ticket; t != nil {
		ticket = ast.ObjectTerm(
			ast.Item(key["ref"], ast.StringTerm(t.Ref)),
			ast.Item(key["verified"], ast.BooleanTerm(t.Verified)),
			ast.Item(key["state"], ast.StringTerm(t.State)),
			ast.Item(key["labels"], stringsTerm(t.Labels)),
			ast.Item(key["assignees"], stringsTerm(t.Assignees)),
		)
	}
	network := ast.NullTerm()
	if n := in.Network; n != nil {
		network = ast.ObjectTerm(
			ast.Item(key["kind"], ast.StringTerm(n.Kind)),
			ast.Item(key["account_id"], ast.StringTerm(n.AccountID)),
			ast.Item(key["region"], ast.StringTerm(n.Region)),
			ast.Item(key["vpc_id"], ast.StringTerm(n.VPCID)),
			ast.Item(key["role_arn"], ast.StringTerm(n.RoleARN)),
			ast.Item(key["route_table_ids"], stringsTerm(n.RouteTableIDs)),
			ast.Item(key["outside_maintenance_window"], ast.BooleanTerm(n.OutsideMaintenanceWindow)),
		)
	}
	r, d := in.Requester, in.Deployment
	return ast.NewObject(
		ast.Item(key["requester"], ast.ObjectTerm(
			ast.Item(key["subject"], ast.StringTerm(r.Subject)),
			ast.Item(key["email"], ast.StringTerm(r.Email)),
			ast.Item(key["issuer"], ast.StringTerm(r.Issuer)),
			ast.Item(key["tenant"], ast.StringTerm(r.Tenant)),
			ast.Item(key["roles"], stringsTerm(r.Roles)),
			ast.Item(key["groups"], stringsTerm(r.Groups)),
			ast.Item(key["github_login"], ast.StringTerm(r.GitHubLogin)),
			ast.Item(key["github_teams"], stringsTerm(r.GitHubTeams)),
		)),
		ast.Item(key["deployment"], ast.ObjectTerm(
			ast.Item(key["id"], ast.StringTerm(d.ID)),
			ast.Item(key["tenant"], ast.StringTerm(d.Tenant)),
			ast.Item(key["name"], ast.StringTerm(d.Name)),
			ast.Item(key["region"], ast.StringTerm(d.Region)),
			ast.Item(key["labels"], labelsTerm(d.Labels)),
			ast.Item(key["freeze_windows"], windowsTerm(d.FreezeWindows)),
			ast.Item(key["maintenance_windows"], windowsTerm(d.MaintenanceWindows)),
		)),
		ast.Item(key["ticket"], ticket),
		ast.Item(key["scopes"], stringsTerm(in.Scopes)),
		ast.Item(key["duration_seconds"], ast.NumberTerm(json.Number(strconv.FormatInt(in.DurationSeconds, 10)))),
		ast.Item(key["break_glass"], ast.BooleanTerm(in.BreakGlass)),
		ast.Item(key["dev"], ast.BooleanTerm(in.Dev)),
		ast.Item(key["time"], timeTerm(in.Time)),
		ast.Item(key["action"], ast.StringTerm(in.Action)),
		ast.Item(key["network"], network),
	)
}

func stringsTerm(ss []string) *ast.Term {
	if ss == nil {
		return ast.NullTerm()
	}
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}

func labelsTerm(m map[string]string) *ast.Term {
	if m == nil {
		return ast.NullTerm()
	}
	items := make([][2]*ast.Term, 0, len(m))
	for k, v := range m {
		items = append(items, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
	}
	return ast.ObjectTerm(items...)
}

func windowsTerm(ws []Window) *ast.Term {
	if ws == nil {
		return ast.NullTerm()
	}
	ts := make([]*ast.Term, len(ws))
	for i, w := range ws {
		ts[i] = ast.ObjectTerm(
			ast.Item(key["start"], timeTerm(w.Start)),
			ast.Item(key["end"], timeTerm(w.End)),
			ast.Item(key["reason"], ast.StringTerm(w.Reason)),
		)
	}
	return ast.ArrayTerm(ts...)
}

// key holds the input's keys, built once: terms are immutable once built,
// and a decision allocates a tenth less without them.
var key = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, k := range []string{
		"account_id", "action", "assignees", "break_glass",
		"deployment", "dev", "duration_seconds", "email", "end",
		"freeze_windows", "github_login", "github_teams", "groups", "id",
		"issuer", "kind", "labels", "maintenance_windows", "name", "network",
		"outside_maintenance_window", "reason", "ref", "region", "requester",
		"role_arn", "roles", "route_table_ids", "scopes", "start", "state",
		"subject", "tenant", "ticket", "time", "verified", "vpc_id",
	} {
		m[k] = ast.StringTerm(k)
	}
	return m
}()

// timeTerm formats t as time.Time.MarshalJSON does.
func timeTerm(t time.Time) *ast.Term { return ast.StringTerm(t.Format(time.RFC3339Nano)) }
