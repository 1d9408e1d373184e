package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokercli"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devbroker"
)

// TestTenantAudit: a customer's approver reads their own tenant's audit
// trail and nothing of another tenant's. With events of acme and globex
// in the log, acme's approver's search and export hold exactly the events
// of acme's deployments and of acme's people (the same the vendor's
// reviewer finds for acme) and no globex event; the export verifies with
// acme's agent's witness key and fails with globex's, or with an event
// changed or dropped; a filter naming a globex deployment is refused
// (403), as is globex's approver reading acme's trail. The CLI does the
// same for an approver without --tenant.
func TestTenantAudit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := brokertest.Start(t, nil)
	acmeAgent := b.Pair(t, "acme", "prod")
	globexAgent := b.Pair(t, "globex", "prod")
	for _, d := range []string{"acme/staging", "globex/staging"} {
		tenant, name, _ := strings.Cut(d, "/")
		if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: tenant, Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	acme, globex := asUser(t, b, "approver@acme.test"), asUser(t, b, "approver@globex.test")
	reviewer := asUser(t, b, "reviewer@vendor.test")
	// Each approver's refused look at the other's deployment: an event
	// of each tenant's people.
	if _, err := acme.GetDeployment(ctx, "globex/prod"); err == nil {
		t.Fatal("acme's approver read globex/prod")
	}
	if _, err := globex.GetDeployment(ctx, "acme/prod"); err == nil {
		t.Fatal("globex's approver read acme/prod")
	}
	scopes := map[string]audit.TenantScope{}
	deps, err := b.Client.ListDeployments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps {
		s := scopes[d.Tenant]
		s.Tenant = d.Tenant
		s.Deployments = append(s.Deployments, d.ID)
		scopes[d.Tenant] = s
	}
	all, err := reviewer.AuditSearch(ctx, brokerapi.AuditQuery{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	// wantOf is the indices of tenant's events among evs, and every
	// event's tenant is checked.
	indicesOf := func(tenant string, evs []brokerapi.AuditEvent) []uint64 {
		var out []uint64
		for _, ae := range evs {
			var e audit.Event
			if err := json.Unmarshal(ae.Event, &e); err != nil {
				t.Fatal(err)
			}
			if scopes[tenant].Includes(e) {
				out = append(out, ae.Index)
			}
		}
		return out
	}
	wantAcme := indicesOf("acme", all)
	if len(wantAcme) < 4 || len(indicesOf("globex", all)) < 4 {
		t.Fatalf("the log holds %d events of acme and %d of globex, want several of each", len(wantAcme), len(indicesOf("globex", all)))
	}

	// The search.
	got, err := acme.AuditSearch(ctx, brokerapi.AuditQuery{Tenant: "acme", Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	var gotIdx []uint64
	for _, ae := range got {
		gotIdx = append(gotIdx, ae.Index)
	}
	if !slices.Equal(gotIdx, wantAcme) || len(indicesOf("acme", got)) != len(got) {
		t.Errorf("acme's approver's search found events %v, want exactly acme's %v", gotIdx, wantAcme)
	}
	for _, ae := range got {
		var e audit.Event
		json.Unmarshal(ae.Event, &e)
		if scopes["globex"].Includes(e) || e.Actor.Tenant == "globex" {
			t.Errorf("acme's approver's search found globex's event %s", ae.Event)
		}
	}

	// Filters naming another tenant's deployment, request or grant are
	// refused, never answered empty; so is the other tenant's trail.
	for _, tc := range []struct {
		name string
		c    *brokerapi.Client
		q    brokerapi.AuditQuery
	}{
		{"acme naming globex/prod", acme, brokerapi.AuditQuery{Tenant: "acme", Deployment: "globex/prod"}},
		{"acme naming globex/nope", acme, brokerapi.AuditQuery{Tenant: "acme", Deployment: "globex/nope"}},
		{"acme naming globex's deployment ID", acme, brokerapi.AuditQuery{Tenant: "acme", Deployment: scopes["globex"].Deployments[0]}},
		{"globex reading acme's trail", globex, brokerapi.AuditQuery{Tenant: "acme"}},
		{"acme reading the whole log", acme, brokerapi.AuditQuery{}},
	} {
		evs, err := tc.c.AuditSearch(ctx, tc.q)
		var ae *brokerapi.Error
		if !errors.As(err, &ae) || ae.Status != 403 {
			t.Errorf("%s = %d events, %v; want 403", tc.name, len(evs), err)
		}
	}
	if evs, err := acme.AuditSearch(ctx, brokerapi.AuditQuery{Tenant: "acme", Deployment: "acme/prod"}); err != nil || len(evs) == 0 {
		t.Errorf("acme's search of acme/prod = %d events, %v; want its events", len(evs), err)
	}

	// The export, once acme's agent has cosigned a checkpoint covering
	// every event so far.
	last := all[len(all)-1].Index
	var exp bytes.Buffer
	for deadline := time.Now().Add(60 * time.Second); ; {
		exp.Reset()
		err := acme.TenantAuditExport(ctx, "acme", &exp, time.Time{}, time.Time{})
		var ae *brokerapi.Error
		if err != nil && !(errors.As(err, &ae) && ae.Code == "nothing_to_export") {
			t.Fatal(err)
		}
		var h struct {
			Size uint64 `json:"size"`
		}
		if err == nil {
			json.Unmarshal(exp.Bytes()[:bytes.IndexByte(exp.Bytes(), '\n')], &h)
		}
		if h.Size > last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acme's agent cosigned no checkpoint beyond event %d within 60s (last try: %v)", last, err)
		}
		time.Sleep(100 * time.Millisecond) // polling for the agent's next cosignature
	}
	var gotExp []uint64
	for _, l := range bytes.Split(bytes.TrimSpace(exp.Bytes()), []byte("\n")) {
		var line struct {
			Kind  string
			Index uint64
			Event json.RawMessage
		}
		if err := json.Unmarshal(l, &line); err != nil {
			t.Fatal(err)
		}
		if line.Kind == "event" && line.Index <= last {
			gotExp = append(gotExp, line.Index)
		}
	}
	if !slices.Equal(gotExp, wantAcme) {
		t.Errorf("acme's export holds events %v, want exactly acme's %v", gotExp, wantAcme)
	}
	if bytes.Contains(exp.Bytes(), []byte(scopes["globex"].Deployments[0])) || bytes.Contains(exp.Bytes(), []byte("approver@globex.test")) {
		t.Errorf("acme's export holds something of globex's:\n%s", exp.Bytes())
	}

	key, err := reviewer.AuditPublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logV := verifier(t, key.VerifierKey)
	witness := func(a *agent.Agent) note.Verifier {
		k, err := a.WitnessKey()
		if err != nil {
			t.Fatal(err)
		}
		return verifier(t, k)
	}
	acmeW, globexW := witness(acmeAgent), witness(globexAgent)
	rep, err := audit.VerifyTenant(bytes.NewReader(exp.Bytes()), audit.VerifyOptions{Log: logV, Witnesses: []note.Verifier{acmeW}})
	if err != nil {
		t.Fatalf("acme's export does not verify with acme's witness key: %v", err)
	}
	if rep.Tenant != "acme" || len(rep.Checkpoint.Witnesses) != 1 {
		t.Errorf("report = %+v", rep)
	}
	lines := strings.SplitAfter(exp.String(), "\n")
	firstEvent := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, `{"kind":"event"`) })
	for _, tc := range []struct {
		name      string
		export    string
		witnesses []note.Verifier
		want      string
	}{
		{"globex's witness key", exp.String(), []note.Verifier{globexW}, "not cosigned by any witness key given"},
		{"a byte of an event changed", strings.Join(slices.Concat(lines[:firstEvent], []string{strings.Replace(lines[firstEvent], `"outcome":"`, `"outcome":"x`, 1)}, lines[firstEvent+1:]), ""),
			[]note.Verifier{acmeW}, "leaf hash does not match"},
		{"an event dropped", strings.Join(slices.Concat(lines[:firstEvent], lines[firstEvent+1:]), ""), []note.Verifier{acmeW}, "lines dropped"},
	} {
		if _, err := audit.VerifyTenant(strings.NewReader(tc.export), audit.VerifyOptions{Log: logV, Witnesses: tc.witnesses}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: VerifyTenant = %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	var ae *brokerapi.Error
	if err := globex.TenantAuditExport(ctx, "acme", &bytes.Buffer{}, time.Time{}, time.Time{}); !errors.As(err, &ae) || ae.Status != 403 {
		t.Errorf("globex's approver exporting acme's trail = %v, want 403", err)
	}

	// The CLI, as acme's approver, with no --tenant: search, export,
	// public-key and verify with the agent's witness key.
	dir := t.TempDir()
	cliCfg := filepath.Join(dir, "cli.json")
	tok, err := b.DevIdP().Token(brokertest.IssuerOf("approver@acme.test"), "approver@acme.test", devbroker.ClientID, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := config.Write(cliCfg, config.CLI{APIURL: b.APIURL(), Token: tok}, 0o600); err != nil {
		t.Fatal(err)
	}
	wk := func(name string, a *agent.Agent) string {
		k, _ := a.WitnessKey()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(k+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	acmeWK, globexWK := wk("acme.wkey", acmeAgent), wk("globex.wkey", globexAgent)
	run := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := brokercli.Run(ctx, args, &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	out, err := run("audit", "search", "--config", cliCfg, "-o", "json")
	if err != nil {
		t.Fatalf("broker audit search as acme's approver: %v\n%s", err, out)
	}
	var cliEvs brokerapi.AuditEvents
	if err := json.Unmarshal([]byte(out), &cliEvs); err != nil {
		t.Fatal(err)
	}
	if n := len(indicesOf("acme", cliEvs.Events)); n != len(cliEvs.Events) || n < len(wantAcme) {
		t.Errorf("broker audit search as acme's approver: %d events, %d of them acme's; want only acme's, at least %d", len(cliEvs.Events), n, len(wantAcme))
	}
	if out, err := run("audit", "search", "--config", cliCfg, "--deployment", "globex/prod"); err == nil || !strings.Contains(out+err.Error(), "not one of tenant acme's") {
		t.Errorf("broker audit search --deployment globex/prod as acme's approver = %v\n%s\nwant a refusal", err, out)
	}
	expFile, keyFile := filepath.Join(dir, "acme.jsonl"), filepath.Join(dir, "log.key")
	if out, err := run("audit", "export", "--config", cliCfg, "--out", expFile); err != nil || !strings.Contains(out, "of tenant acme") {
		t.Fatalf("broker audit export as acme's approver = %v\n%s", err, out)
	}
	if out, err := run("audit", "public-key", "--config", cliCfg, "--out", keyFile); err != nil {
		t.Fatalf("broker audit public-key as acme's approver = %v\n%s", err, out)
	}
	if out, err := run("audit", "verify", "--log", expFile, "--key", keyFile, "--witness-key", acmeWK); err != nil || !strings.Contains(out, "OK: ") || !strings.Contains(out, "tenant acme's export") {
		t.Errorf("broker audit verify --witness-key acme's = %v\n%s", err, out)
	}
	if out, err := run("audit", "verify", "--log", expFile, "--key", keyFile, "--witness-key", globexWK); err == nil || !strings.Contains(err.Error(), "verification FAILED") {
		t.Errorf("broker audit verify --witness-key globex's = %v\n%s\nwant FAILED", err, out)
	}
	if out, err := run("audit", "verify", "--log", expFile, "--key", keyFile); err == nil || !strings.Contains(err.Error(), "witness key") {
		t.Errorf("broker audit verify of a tenant export without --witness-key = %v\n%s\nwant FAILED asking for the witness key", err, out)
	}
}

func verifier(t *testing.T, vkey string) note.Verifier {
	t.Helper()
	v, err := audit.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
