package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devidp"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
)

// approvalAudience is the client ID of the approval ceremony at the
// customer's identity provider.
const approvalAudience = "tether"

// customerIdP is the customer's own identity provider, on loopback:
// acme's approvers (approver@ and second@acme.test) and a member of acme
// who is no approver (intern@), and another provider (globex) with a user
// of the same name in a group of the same name.
type customerIdP struct {
	idp    *devidp.IdP
	offset atomic.Int64 // added to the clock, to sign proofs in the past
}

func startCustomerIdP(t *testing.T) *customerIdP {
	t.Helper()
	c := &customerIdP{}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	idp, err := devidp.New(devidp.Options{
		BaseURL: srv.URL + "/idp",
		Now:     func() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) },
		Issuers: []devidp.IssuerSpec{
			{Name: "acme", ClientIDs: []string{approvalAudience}, Users: []devidp.User{
				{Email: "approver@acme.test", Groups: []string{"acme-approvers"}},
				{Email: "second@acme.test", Groups: []string{"acme-approvers"}},
				{Email: "intern@acme.test", Groups: []string{"sre"}},
			}},
			{Name: "globex", ClientIDs: []string{approvalAudience}, Users: []devidp.User{
				{Email: "approver@acme.test", Groups: []string{"acme-approvers"}},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/idp/", idp.Handler())
	c.idp = idp
	return c
}

// sign is an approver's signing ceremony for grant g, at (now + ago).
func (c *customerIdP) sign(t *testing.T, issuer, email string, g grant.Grant, ago time.Duration) string {
	t.Helper()
	nonce, err := approval.StatementFor(g).Digest()
	if err != nil {
		t.Fatal(err)
	}
	c.offset.Store(int64(-ago))
	defer c.offset.Store(0)
	tok, err := c.idp.Token(issuer, email, approvalAudience, nonce)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// approvalBench is a dev broker, a ClickHouse and an agent process whose
// customer configured an approval authority, and what a compromised
// broker needs to mint grants: its key and its store.
type approvalBench struct {
	b        *devBroker
	idp      *customerIdP
	agent    *proc
	stateDir string
	ch       *chtest.Server
	pwFile   string
	dep      brokerapi.CreateDeploymentResponse
	agentID  string
	engineer string // the engineer's CLI config
	who      store.Person
	key      ed25519.PrivateKey
	admin    *brokerapi.Client
}

func startApprovalBench(t *testing.T) *approvalBench {
	t.Helper()
	ab := &approvalBench{idp: startCustomerIdP(t), ch: chtest.Start(t)}
	ab.b = startBroker(t)
	ab.dep = ab.b.createDeployment(t, "acme", "prod")
	ab.pwFile = filepath.Join(t.TempDir(), "ch-password")
	if err := os.WriteFile(ab.pwFile, []byte(chtest.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ab.stateDir = filepath.Join(t.TempDir(), "agent")
	ab.runAgent(t, "--pairing-token", ab.dep.Pairing.Token)
	ab.agentID = ab.b.show(t, "acme/prod").Agent.ID

	seed, err := os.ReadFile(filepath.Join(ab.b.dir, "broker.key"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(seed)))
	if err != nil {
		t.Fatal(err)
	}
	ab.key = ed25519.NewKeyFromSeed(raw)
	var cli config.CLI
	if err := config.Load(ab.b.cliJSON, &cli); err != nil {
		t.Fatal(err)
	}
	if ab.admin, err = brokerapi.NewClient(cli); err != nil {
		t.Fatal(err)
	}
	// The engineer asks once, through the CLI, for the broker to know
	// them; the grants below are the broker's own doing.
	ab.engineer = loginConfig(t, ab.b, "engineer@vendor.test")
	out, errOut, code := runBin(t, []string{"TETHER_CONFIG=" + ab.engineer}, "broker", "request", "create", "--deployment", "acme/prod",
		"--scope", names.ScopeClickHouse, "--duration", "30m", "--reason", "e2e", "--output", "json")
	if code != 0 {
		t.Fatalf("request create: %s", errOut)
	}
	var ar brokerapi.AccessRequest
	if err := json.Unmarshal([]byte(out), &ar); err != nil {
		t.Fatal(err)
	}
	st := ab.store(t)
	req, err := st.GetRequest(context.Background(), ar.ID)
	if err != nil {
		t.Fatal(err)
	}
	ab.who = req.Requester
	return ab
}

// runAgent (re)starts the agent process with acme's approval authority
// and extra flags, and waits until it is online.
func (ab *approvalBench) runAgent(t *testing.T, extra ...string) {
	t.Helper()
	if ab.agent != nil {
		ab.agent.stop()
	}
	args := append([]string{"--clickhouse-url", ab.ch.URL, "--clickhouse-user", "tether", "--clickhouse-password-file", ab.pwFile,
		"--approver-issuer", ab.idp.idp.IssuerURL("acme"), "--approver-audience", approvalAudience, "--approver-group", "acme-approvers"}, extra...)
	ab.agent = ab.b.startAgent(t, ab.stateDir, args...)
	ab.agent.waitLine(t, `msg="agent online"`, 90*time.Second)
}

// store opens the broker's own database, as a compromised broker host
// could.
func (ab *approvalBench) store(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(ab.b.dir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newGrant is a grant for the engineer on acme/prod, live now.
func (ab *approvalBench) newGrant() grant.Grant {
	now := time.Now().Truncate(time.Second)
	return grant.Grant{
		ID: uuid.NewString(), RequestID: uuid.NewString(), Deployment: ab.dep.Deployment.ID, Agent: ab.agentID,
		Subject: ab.who.Email, Scopes: []string{names.ScopeClickHouse},
		NotBefore: now.Add(-time.Minute), Expiry: now.Add(20 * time.Minute), IssuedAt: now.Add(time.Second),
		EngineerIssuer: ab.who.Issuer, EngineerSubject: ab.who.Subject,
	}
}

// mint signs g with the broker's key and plants it in the broker's store
// as an active request's grant: what a compromised broker does, no
// customer review involved.
func (ab *approvalBench) mint(t *testing.T, g grant.Grant) string {
	t.Helper()
	tok, err := grant.Issue(g, ab.key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	err = ab.store(t).CreateRequest(context.Background(), store.AccessRequest{
		ID: g.RequestID, DeploymentID: g.Deployment, Tenant: "acme", Name: "prod",
		Requester: ab.who, Scopes: g.Scopes, Duration: g.Expiry.Sub(g.NotBefore), Reason: "minted by a compromised broker",
		State: store.StateActive, Decision: []byte("{}"),
		Grant:     &store.GrantRecord{ID: g.ID, Token: tok, Scopes: g.Scopes, AgentID: g.Agent, NotBefore: g.NotBefore, Expiry: g.Expiry, IssuedAt: g.IssuedAt},
		CreatedAt: now, UpdatedAt: now, Version: 1,
	})
	if err != nil {
		t.Fatalf("plant the grant: %v", err)
	}
	return tok
}

// query runs SQL through the broker API under the grant tok, as the
// engineer, and returns the status and body.
func (ab *approvalBench) query(t *testing.T, tok string) (int, string) {
	t.Helper()
	var cli config.CLI
	if err := config.Load(ab.engineer, &cli); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: "SELECT name FROM system.databases WHERE name = 'system'"})
	req, _ := http.NewRequest(http.MethodPost, cli.APIURL+"/api/v1/deployments/acme/prod/clickhouse/query", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+cli.Login.IDToken)
	req.Header.Set(protocol.HeaderGrant, tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// journal returns the agent journal's entries of a grant, read with the
// agent binary as the customer would.
func (ab *approvalBench) journal(t *testing.T, grantID string) []agent.JournalEntry {
	t.Helper()
	out, errOut, code := runBin(t, nil, "agent", "journal", "--state-dir", ab.stateDir, "--output", "json")
	if code != 0 {
		t.Fatalf("agent journal: exit %d: %s", code, errOut)
	}
	var es []agent.JournalEntry
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var e agent.JournalEntry
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("agent journal output: %v", err)
		}
		if e.GrantID == grantID {
			es = append(es, e)
		}
	}
	return es
}

// auditOf waits until the broker's audit log holds an event of type typ
// for the grant, delivered by the agent, and returns it.
func (ab *approvalBench) auditOf(t *testing.T, grantID, typ string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := ab.admin.AuditSearch(context.Background(), brokerapi.AuditQuery{Grant: grantID, Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 {
			var e map[string]any
			if err := json.Unmarshal(evs[len(evs)-1].Event, &e); err != nil {
				t.Fatal(err)
			}
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event for grant %s in the broker's audit log within 30s", typ, grantID)
		}
		time.Sleep(200 * time.Millisecond) // polling the agent's spool delivery, which has no signal here
	}
}

// refused checks that the agent refused tok with code and a message
// holding why, and that the refusal is in its journal and the audit log.
func (ab *approvalBench) refused(t *testing.T, g grant.Grant, tok, code, why string) {
	t.Helper()
	status, body := ab.query(t, tok)
	var env brokerapi.ErrorEnvelope
	json.Unmarshal([]byte(body), &env)
	if status != http.StatusForbidden || env.Error.Code != code || !strings.Contains(env.Error.Message, why) {
		t.Fatalf("query = %d %s, want 403 %s saying %q", status, body, code, why)
	}
	ev := ab.auditOf(t, g.ID, "auth.failed")
	if r, _ := ev["reason"].(string); !strings.Contains(r, why) {
		t.Errorf("audit auth.failed reason = %q, want it to say %q", r, why)
	}
	if d, _ := ev["details"].(map[string]any); d["code"] != code {
		t.Errorf("audit auth.failed details = %v, want code %s", d, code)
	}
	js := ab.journal(t, g.ID)
	if len(js) != 1 || js[0].Type != "auth.failed" || js[0].Outcome != "failure" || !strings.Contains(js[0].Reason, why) {
		t.Errorf("journal of grant %s = %+v, want one auth.failed saying %q", g.ID, js, why)
	}
}

// served checks that the agent served tok, and that its journal and the
// audit log name the approvers.
func (ab *approvalBench) served(t *testing.T, g grant.Grant, approvers ...string) {
	t.Helper()
	ev := ab.auditOf(t, g.ID, "query.allowed")
	d, _ := ev["details"].(map[string]any)
	var got []string
	for _, a := range asSlice(d["approvers"]) {
		got = append(got, a.(string))
	}
	if !slices.Equal(got, approvers) {
		t.Errorf("audit query.allowed approvers = %v, want %v", d["approvers"], approvers)
	}
	var allowed *agent.JournalEntry
	for _, e := range ab.journal(t, g.ID) {
		if e.Type == "query.allowed" {
			allowed = &e
		}
	}
	if allowed == nil || !slices.Equal(allowed.Approvers, approvers) {
		t.Errorf("journal query.allowed of grant %s = %+v, want approvers %v", g.ID, allowed, approvers)
	}
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func ok(t *testing.T, status int, body string) {
	t.Helper()
	if status != http.StatusOK || body != "name\nsystem\n" {
		t.Fatalf("query = %d %q, want the row served", status, body)
	}
}

// TestAgentEnforcesCustomerApproval: a compromised broker — its key and
// its store — mints grants nobody at the customer approved; the agent,
// configured with the customer's approval authority, refuses each with
// its reason, in its journal and the audit log, and serves only a grant
// carrying valid proofs from the customer's identity provider.
// Break-glass grants are the customer's choice: refused by default,
// served loudly when the agent is started with --break-glass allow.
func TestAgentEnforcesCustomerApproval(t *testing.T) {
	ab := startApprovalBench(t)
	ab.agent.waitLine(t, "customer approval enforced by the agent", 10*time.Second)
	ab.agent.waitLine(t, "fetched the keys of the customer's identity provider", 30*time.Second)
	d := ab.waitApproval(t, "customer approval: enforced by the agent (issuer "+ab.idp.idp.IssuerURL("acme")+", group acme-approvers, 1 approval; break-glass denied)")
	if a := d.Agent.Approval; a == nil || !a.Enforced || a.Required != 1 || a.BreakGlass != "deny" || a.Audience != approvalAudience {
		t.Errorf("deployment show: agent approval = %+v", a)
	}

	other := ab.newGrant()
	attacks := []struct {
		name  string
		proof func(g grant.Grant) []string
		mod   func(g *grant.Grant)
		code  string
		why   string
	}{
		{"no proof", nil, nil, agent.CodeNotApproved, "carries no customer approval proof"},
		{"proof from another issuer", func(g grant.Grant) []string {
			return []string{ab.idp.sign(t, "globex", "approver@acme.test", g, 0)}
		}, nil, agent.CodeNotApproved, "is not the approval authority"},
		{"proof for another request", func(grant.Grant) []string {
			return []string{ab.idp.sign(t, "acme", "approver@acme.test", other, 0)}
		}, nil, agent.CodeNotApproved, "nonce is not the digest of this grant's terms"},
		{"proof from a non-approver", func(g grant.Grant) []string {
			return []string{ab.idp.sign(t, "acme", "intern@acme.test", g, 0)}
		}, nil, agent.CodeNotApproved, `is not in group "acme-approvers"`},
		{"stale proof", func(g grant.Grant) []string {
			return []string{ab.idp.sign(t, "acme", "approver@acme.test", g, 20*time.Minute)}
		}, nil, agent.CodeNotApproved, "before the approved window starts"},
		{"approved grant widened", func(g grant.Grant) []string {
			approved := g
			approved.Expiry = g.Expiry.Add(-10 * time.Minute)
			return []string{ab.idp.sign(t, "acme", "approver@acme.test", approved, 0)}
		}, nil, agent.CodeNotApproved, "nonce is not the digest of this grant's terms"},
		{"break-glass", nil, func(g *grant.Grant) { g.BreakGlass = true }, agent.CodeBreakGlassRefused, "refuses them (--break-glass deny)"},
	}
	for _, tt := range attacks {
		t.Run(tt.name, func(t *testing.T) {
			g := ab.newGrant()
			if tt.mod != nil {
				tt.mod(&g)
			}
			if tt.proof != nil {
				g.Proofs = tt.proof(g)
			}
			ab.refused(t, g, ab.mint(t, g), tt.code, tt.why)
		})
	}
	t.Run("valid proof", func(t *testing.T) {
		g := ab.newGrant()
		g.Proofs = []string{ab.idp.sign(t, "acme", "approver@acme.test", g, 0)}
		tok := ab.mint(t, g)
		for range 3 { // one verification, then the verdict is remembered
			status, body := ab.query(t, tok)
			ok(t, status, body)
		}
		ab.served(t, g, "approver@acme.test")
	})

	// The customer asks for two approvers and allows break-glass.
	ab.runAgent(t, "--approvals-required", "2", "--break-glass", "allow")
	ab.waitApproval(t, "customer approval: enforced by the agent (issuer "+ab.idp.idp.IssuerURL("acme")+", group acme-approvers, 2 approvals; break-glass allowed)")
	t.Run("fewer than N proofs", func(t *testing.T) {
		g := ab.newGrant()
		p := ab.idp.sign(t, "acme", "approver@acme.test", g, 0)
		g.Proofs = []string{p, ab.idp.sign(t, "acme", "approver@acme.test", g, 0)}
		ab.refused(t, g, ab.mint(t, g), agent.CodeNotApproved, "1 valid customer approval proof(s), this agent requires 2")
	})
	t.Run("N distinct approvers", func(t *testing.T) {
		g := ab.newGrant()
		g.Proofs = []string{ab.idp.sign(t, "acme", "approver@acme.test", g, 0), ab.idp.sign(t, "acme", "second@acme.test", g, 0)}
		status, body := ab.query(t, ab.mint(t, g))
		ok(t, status, body)
		ab.served(t, g, "approver@acme.test", "second@acme.test")
	})
	t.Run("break-glass allowed", func(t *testing.T) {
		g := ab.newGrant()
		g.BreakGlass = true
		status, body := ab.query(t, ab.mint(t, g))
		ok(t, status, body)
		ab.agent.waitLine(t, "serving a BREAK-GLASS grant without customer approval", 10*time.Second)
		ev := ab.auditOf(t, g.ID, "query.allowed")
		if d, _ := ev["details"].(map[string]any); d["break_glass"] != true {
			t.Errorf("audit query.allowed details = %v, want break_glass true", d)
		}
		var types []string
		for _, e := range ab.journal(t, g.ID) {
			if !e.BreakGlass {
				t.Errorf("journal entry %+v of a break-glass grant is not marked break_glass", e)
			}
			types = append(types, string(e.Type))
		}
		if !slices.Contains(types, "breakglass.used") || !slices.Contains(types, "query.allowed") {
			t.Errorf("journal of break-glass grant = %v, want breakglass.used and query.allowed", types)
		}
	})
}

// waitApproval waits until 'deployment show' reports the agent's
// customer approval as want (after the agent's next heartbeat).
func (ab *approvalBench) waitApproval(t *testing.T, want string) brokerapi.Deployment {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d := ab.b.show(t, "acme/prod")
		if d.Agent != nil && d.Agent.CustomerApproval == want {
			out, _, _ := ab.b.cli(t, "deployment", "show", "acme/prod")
			if !strings.Contains(out, want) {
				t.Errorf("deployment show = %s, want it to say %q", out, want)
			}
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment show: customer approval %+v, want %q", d.Agent, want)
		}
		time.Sleep(200 * time.Millisecond) // polling the next heartbeat
	}
}

// TestAgentWithoutApprovalAuthority: an agent whose customer configured
// no approval authority serves what the broker key signed, and says so
// loudly at start and in 'deployment show'.
func TestAgentWithoutApprovalAuthority(t *testing.T) {
	g := startGuarded(t)
	g.agent.waitLine(t, "customer approval not enforced by the agent", 10*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		d := g.b.show(t, "acme/prod")
		if d.Agent != nil && d.Agent.CustomerApproval == brokerapi.NotEnforced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment show: customer approval %+v, want %q", d.Agent, brokerapi.NotEnforced)
		}
		time.Sleep(200 * time.Millisecond) // polling the next heartbeat
	}
	out, _, _ := g.b.cli(t, "deployment", "show", "acme/prod")
	if !strings.Contains(out, "\n  customer approval not enforced by the agent\n") {
		t.Errorf("deployment show = %s, want the line %q", out, brokerapi.NotEnforced)
	}
}

// TestAgentServesPermitGrants: a grant under a standing permit acme's
// approver signed is served by acme's agent (a separate process) without
// a per-request approval, and recorded with the permit's signer; a grant
// the permit does not cover (too long, another scope, outside its
// window), or under a permit the broker widened, is refused.
func TestAgentServesPermitGrants(t *testing.T) {
	ab := startApprovalBench(t)
	ab.agent.waitLine(t, "fetched the keys of the customer's identity provider", 30*time.Second)
	now := time.Now().Truncate(time.Second)
	p := approval.Permit{ID: uuid.NewString(), Deployment: ab.dep.Deployment.ID, Scopes: []string{names.ScopeClickHouse}, MaxGrant: 30 * time.Minute,
		Windows: []approval.Window{{Start: now.Add(-time.Hour), End: now.Add(24 * time.Hour)}}}
	canon, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	proof, err := ab.idp.idp.Token("acme", "approver@acme.test", approvalAudience, approval.Digest(canon))
	if err != nil {
		t.Fatal(err)
	}
	under := func(mod func(*grant.Grant)) grant.Grant {
		g := ab.newGrant()
		g.Permit, g.Proofs = string(canon), []string{proof}
		if mod != nil {
			mod(&g)
		}
		return g
	}
	g := under(nil)
	status, body := ab.query(t, ab.mint(t, g))
	ok(t, status, body)
	ab.served(t, g, "approver@acme.test")

	widened := p
	widened.MaxGrant = 12 * time.Hour
	wide, _ := widened.Canonical()
	past := p
	past.Windows = []approval.Window{{Start: now.Add(-3 * time.Hour), End: now.Add(-2 * time.Hour)}}
	pastCanon, _ := past.Canonical()
	pastProof, err := ab.idp.idp.Token("acme", "approver@acme.test", approvalAudience, approval.Digest(pastCanon))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		g    grant.Grant
		why  string
	}{
		{"longer than the permit allows", under(func(g *grant.Grant) { g.Expiry = g.NotBefore.Add(time.Hour) }), "allows at most 30m0s"},
		{"outside the permit's window", under(func(g *grant.Grant) { g.Permit, g.Proofs = string(pastCanon), []string{pastProof} }), "outside permit"},
		{"a permit the broker widened", under(func(g *grant.Grant) { g.Permit = string(wide); g.Expiry = g.NotBefore.Add(time.Hour) }), "nonce is not the digest"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ab.refused(t, tt.g, ab.mint(t, tt.g), agent.CodeNotApproved, tt.why)
		})
	}
}
