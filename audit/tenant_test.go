package audit_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
)

// tenantEnv is a log holding events of tenants acme and globex, and a
// checkpoint cosigned by each tenant's agent.
type tenantEnv struct {
	log                     *audit.Log
	logV                    note.Verifier
	acmeW, globexW          note.Verifier
	acmeDep, globexDep      string
	acmeSize, globexSize    uint64
	acmeWitness, globexName string
}

func witnessKey(t *testing.T, name string) (note.Signer, note.Verifier) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := audit.NewSigner(name, priv)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := audit.VerifierKey(name, pub)
	if err != nil {
		t.Fatal(err)
	}
	v, err := audit.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func newTenantEnv(t *testing.T) tenantEnv {
	t.Helper()
	ctx := context.Background()
	env := newEnv(t, openSQLite(t, filepath.Join(t.TempDir(), "t.db")))
	l, _ := runLog(t, env)
	logV, err := audit.NewVerifier(env.vkey)
	if err != nil {
		t.Fatal(err)
	}
	te := tenantEnv{log: l, logV: logV, acmeDep: "0190aaaa-0000-7000-8000-00000000000a", globexDep: "0190aaaa-0000-7000-8000-00000000000b",
		acmeWitness: "tether-witness/acme-agent", globexName: "tether-witness/globex-agent"}
	acmeS, acmeV := witnessKey(t, te.acmeWitness)
	globexS, globexV := witnessKey(t, te.globexName)
	te.acmeW, te.globexW = acmeV, globexV
	record := func(i int) {
		for _, e := range []audit.Event{
			{Type: audit.QueryAllowed, Outcome: audit.Success, Deployment: te.acmeDep, Actor: audit.Actor{Subject: "engineer@vendor.test"}, Details: map[string]any{"sql": fmt.Sprintf("SELECT %d FROM system.one", i)}},
			{Type: audit.QueryAllowed, Outcome: audit.Success, Deployment: te.globexDep, Actor: audit.Actor{Subject: "engineer@vendor.test"}, Reason: "globex secret"},
			{Type: audit.AuthLogin, Outcome: audit.Success, Actor: audit.Actor{Subject: "approver@acme.test", Tenant: "acme", Role: "approver"}},
			{Type: audit.AuthLogin, Outcome: audit.Success, Actor: audit.Actor{Subject: "approver@globex.test", Tenant: "globex", Role: "approver"}, Reason: "globex secret"},
			{Type: audit.AuthLogin, Outcome: audit.Success, Actor: audit.Actor{Subject: "reviewer@vendor.test", Role: "reviewer"}},
			// An acme approver acting on globex's deployment: globex's.
			{Type: audit.APIRefused, Outcome: audit.Failure, Deployment: te.globexDep, Actor: audit.Actor{Subject: "approver@acme.test", Tenant: "acme", Role: "approver"}, Reason: "globex secret"},
		} {
			if err := l.Record(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	cosign := func(s note.Signer) uint64 {
		cp, _, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := audit.Cosign(cp.Note, logV, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.st.AddCosignature(ctx, audit.Cosignature{Size: cp.Size, Witness: s.Name(), Note: cs}); err != nil {
			t.Fatal(err)
		}
		return cp.Size
	}
	for i := range 20 {
		record(i)
	}
	te.acmeSize = cosign(acmeS)
	record(20) // globex's agent cosigns a later checkpoint
	te.globexSize = cosign(globexS)
	record(21) // nobody cosigned these yet: acme's are pending
	return te
}

func (te tenantEnv) export(t *testing.T, tenant string, deps []string) ([]byte, audit.TenantExportResult) {
	t.Helper()
	ctx := context.Background()
	x, err := te.log.PrepareTenantExport(ctx, audit.TenantExportOptions{
		Scope: audit.TenantScope{Tenant: tenant, Deployments: deps},
		Witness: func(_ context.Context, name string) (bool, error) {
			return name == "tether-witness/"+tenant+"-agent", nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	res, err := x.WriteTo(ctx, &buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), res
}

// TestTenantExport: acme's export holds acme's events only — those of
// its deployment and its people's logins, never globex's, nor the
// vendor's own logins, nor acme's approver's call on globex's deployment
// — each proven against the checkpoint acme's agent cosigned; the events
// after it are counted as pending, not exported; it verifies with acme's
// witness key.
func TestTenantExport(t *testing.T) {
	te := newTenantEnv(t)
	exp, res := te.export(t, "acme", []string{te.acmeDep})
	if res.Size != te.acmeSize || res.Events != 40 || res.Pending != 4 || len(res.Witnesses) != 1 || res.Witnesses[0] != te.acmeWitness {
		t.Errorf("export result = %+v, want checkpoint %d, 40 events, 4 pending, witness %s", res, te.acmeSize, te.acmeWitness)
	}
	if bytes.Contains(exp, []byte("globex")) || bytes.Contains(exp, []byte("reviewer@vendor.test")) {
		t.Errorf("acme's export holds another tenant's or the vendor's event:\n%s", exp)
	}
	rep, err := audit.VerifyTenant(bytes.NewReader(exp), audit.VerifyOptions{Log: te.logV, Witnesses: []note.Verifier{te.acmeW}})
	if err != nil {
		t.Fatalf("VerifyTenant = %v", err)
	}
	if rep.Tenant != "acme" || rep.Events != 40 || rep.Pending != 4 || rep.Checkpoint.Size != te.acmeSize ||
		len(rep.Checkpoint.Witnesses) != 1 || rep.Types[audit.QueryAllowed] != 20 || rep.Types[audit.AuthLogin] != 20 {
		t.Errorf("report = %+v", rep)
	}
	// globex's export is against globex's own (later) checkpoint.
	gexp, gres := te.export(t, "globex", []string{te.globexDep})
	// (acme's approver's refused call on globex's deployment is globex's.)
	if gres.Size != te.globexSize || bytes.Contains(gexp, []byte(te.acmeDep)) || bytes.Contains(gexp, []byte("SELECT")) || bytes.Contains(gexp, []byte(`"subject":"approver@acme.test","tenant":"acme","role":"approver"},"source":{},"outcome":"success"`)) {
		t.Errorf("globex's export: checkpoint %d (want %d), or it holds an acme event:\n%s", gres.Size, te.globexSize, gexp)
	}
	if _, err := audit.VerifyTenant(bytes.NewReader(gexp), audit.VerifyOptions{Log: te.logV, Witnesses: []note.Verifier{te.globexW}}); err != nil {
		t.Errorf("globex's export does not verify: %v", err)
	}
}

// TestTenantExportNotWitnessed: a tenant none of whose agents cosigned
// a checkpoint gets no export, with ErrNotWitnessed.
func TestTenantExportNotWitnessed(t *testing.T) {
	te := newTenantEnv(t)
	_, err := te.log.PrepareTenantExport(context.Background(), audit.TenantExportOptions{
		Scope:   audit.TenantScope{Tenant: "initech"},
		Witness: func(context.Context, string) (bool, error) { return false, nil },
	})
	if !errors.Is(err, audit.ErrNotWitnessed) {
		t.Errorf("PrepareTenantExport of an unwitnessed tenant = %v, want ErrNotWitnessed", err)
	}
}

// TestVerifyTenantRefusesTampering: every change to a tenant export, and
// a witness key that is not the tenant's, fails verification with a
// message naming the problem.
func TestVerifyTenantRefusesTampering(t *testing.T) {
	te := newTenantEnv(t)
	exp, _ := te.export(t, "acme", []string{te.acmeDep})
	gexp, _ := te.export(t, "globex", []string{te.globexDep})
	lines := strings.SplitAfter(string(exp), "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	// lines: 0 header, 1 checkpoint, 2 cosignature, 3.. events, last end.
	firstEvent, end := 3, len(lines)-1
	edit := func(f func(ls []string) []string) []byte {
		ls := f(append([]string(nil), lines...))
		return []byte(strings.Join(ls, ""))
	}
	field := func(line, key string) string {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		return string(m[key])
	}
	acmeOnly := []note.Verifier{te.acmeW}
	for _, tc := range []struct {
		name      string
		export    []byte
		witnesses []note.Verifier
		want      string
	}{
		{"untouched", exp, acmeOnly, ""},
		{"globex's witness key", exp, []note.Verifier{te.globexW}, "not cosigned by any witness key given"},
		{"no witness key", exp, nil, "give its witness key"},
		{"an event's byte changed", edit(func(ls []string) []string {
			ls[firstEvent] = strings.Replace(ls[firstEvent], "SELECT 0", "SELECT 9", 1)
			return ls
		}), acmeOnly, "leaf hash does not match the event's bytes"},
		{"an event's byte changed and its leaf hash recomputed", edit(func(ls []string) []string {
			raw := field(ls[firstEvent], "event")
			edited := strings.Replace(raw, "SELECT 0", "SELECT 9", 1)
			h := audit.LeafHash([]byte(edited))
			ls[firstEvent] = strings.Replace(strings.Replace(ls[firstEvent], raw, edited, 1), strings.Trim(field(ls[firstEvent], "leaf_hash"), `"`), fmt.Sprintf("%x", h), 1)
			return ls
		}), acmeOnly, "inclusion proof does not lead to checkpoint"},
		{"a proof hash changed", edit(func(ls []string) []string {
			p := field(ls[firstEvent+1], "proof")
			var hs []string
			json.Unmarshal([]byte(p), &hs)
			b := []byte(hs[0])
			b[10] = "0123456789abcdef"[(strings.IndexByte("0123456789abcdef", b[10])+1)%16]
			ls[firstEvent+1] = strings.Replace(ls[firstEvent+1], hs[0], string(b), 1)
			return ls
		}), acmeOnly, "inclusion proof does not lead to checkpoint"},
		{"an event dropped", edit(func(ls []string) []string {
			return append(ls[:firstEvent+2], ls[firstEvent+3:]...)
		}), acmeOnly, "end line counts 40 events, the export holds 39"},
		{"an event dropped and the count fixed", edit(func(ls []string) []string {
			ls[end] = strings.Replace(ls[end], `"events":40`, `"events":39`, 1)
			return append(ls[:firstEvent+2], ls[firstEvent+3:]...)
		}), acmeOnly, "the log signed an export of 40 events"},
		{"two events swapped", edit(func(ls []string) []string {
			ls[firstEvent], ls[firstEvent+1] = ls[firstEvent+1], ls[firstEvent]
			return ls
		}), acmeOnly, "out of order or repeated"},
		{"an event repeated", edit(func(ls []string) []string {
			return append(ls[:firstEvent+1], ls[firstEvent:]...)
		}), acmeOnly, "out of order or repeated"},
		{"a globex event added, with a valid proof against acme's checkpoint", edit(func(ls []string) []string {
			g := strings.SplitAfter(string(gexp), "\n")[firstEvent]
			var idx uint64
			json.Unmarshal([]byte(field(g, "index")), &idx)
			proof, err := te.log.InclusionProof(context.Background(), idx, te.acmeSize)
			if err != nil {
				t.Fatal(err)
			}
			hs := make([]string, len(proof))
			for i, h := range proof {
				hs[i] = fmt.Sprintf("%x", h)
			}
			pj, _ := json.Marshal(hs)
			g = strings.Replace(g, field(g, "proof"), string(pj), 1)
			return append(ls[:firstEvent+1], append([]string{g}, ls[firstEvent+1:]...)...)
		}), acmeOnly, "is not tenant acme's"},
		{"the header's deployments edited", edit(func(ls []string) []string {
			ls[0] = strings.Replace(ls[0], `"deployments":["`, `"deployments":["`+te.globexDep+`","`, 1)
			return ls
		}), acmeOnly, "the header or the events are not those the log signed"},
		{"the cosignature removed", edit(func(ls []string) []string {
			return append(ls[:2], ls[3:]...)
		}), acmeOnly, "want the cosignature of the tenant's agent"},
		{"the end line removed", edit(func(ls []string) []string { return ls[:end] }), acmeOnly, "without an end line (truncated?)"},
		{"the pending count lowered", edit(func(ls []string) []string {
			ls[end] = strings.Replace(ls[end], `"pending":4`, `"pending":0`, 1)
			return ls
		}), acmeOnly, "end line says 0 pending, the log signed 4"},
		{"the end note's signature replaced", edit(func(ls []string) []string {
			n := field(ls[end], "note")
			i := strings.LastIndex(n, " ")
			ls[end] = strings.Replace(ls[end], n[i+1:len(n)-3], strings.Repeat("A", len(n)-3-i-1), 1)
			return ls
		}), acmeOnly, "end note"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := audit.VerifyTenant(bytes.NewReader(tc.export), audit.VerifyOptions{Log: te.logV, Witnesses: tc.witnesses})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("VerifyTenant = %v, want success", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("VerifyTenant = %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// A tenant export is not a full export, and the other way round.
	if _, err := audit.Verify(bytes.NewReader(exp), audit.VerifyOptions{Log: te.logV}); err == nil || !strings.Contains(err.Error(), "this is a tenant export") {
		t.Errorf("Verify of a tenant export = %v, want a format error", err)
	}
}
