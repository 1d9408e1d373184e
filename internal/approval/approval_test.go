package approval_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/devidp"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/source/registry"
)

const audience = "tether"

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// fixture is a customer identity provider (acme), another provider
// (evil), and an agent's authority trusting acme's approvers.
type fixture struct {
	idp     *devidp.IdP
	clock   *atomic.Pointer[time.Time]
	fetches *atomic.Int64
	auth    *approval.Authority
}

func newFixture(t *testing.T, required int) *fixture {
	t.Helper()
	f := &fixture{clock: new(atomic.Pointer[time.Time]), fetches: new(atomic.Int64)}
	f.set(t0)
	now := func() time.Time { return *f.clock.Load() }
	var base string
	mux := http.NewServeMux()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "jwks") || strings.HasSuffix(r.URL.Path, "/keys") {
			f.fetches.Add(1)
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	base = srv.URL + "/idp"
	idp, err := devidp.New(devidp.Options{BaseURL: base, Now: now, Issuers: []devidp.IssuerSpec{
		{Name: "acme", ClientIDs: []string{audience}, Users: []devidp.User{
			{Email: "approver@acme.test", Groups: []string{"acme-approvers"}},
			{Email: "second@acme.test", Groups: []string{"acme-approvers", "sre"}},
			{Email: "intern@acme.test", Groups: []string{"sre"}},
			{Email: "engineer@acme.test", Subject: "eng-1", Groups: []string{"acme-approvers"}},
		}},
		{Name: "evil", ClientIDs: []string{audience}, Users: []devidp.User{
			{Email: "approver@acme.test", Groups: []string{"acme-approvers"}},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/idp/", idp.Handler())
	f.idp = idp
	keys, err := approval.NewKeySet(idp.IssuerURL("acme"), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	f.auth = &approval.Authority{Keys: keys, Audiences: []string{audience}, Group: "acme-approvers", Required: required, Now: now}
	if err := f.auth.Validate(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) set(t time.Time) { f.clock.Store(&t) }

// sign is an approver's ceremony: an ID token whose nonce is the digest
// of stmt.
func (f *fixture) sign(t *testing.T, issuer, email string, nonce string) string {
	t.Helper()
	tok, err := f.idp.Token(issuer, email, audience, nonce)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func baseGrant() grant.Grant {
	return grant.Grant{
		ID: "g-1", RequestID: "r-1", Deployment: "d-1", Agent: "a-1", Subject: "engineer@vendor.test",
		EngineerIssuer: "https://vendor.example/", EngineerSubject: "eng-1",
		Scopes:    []string{registry.Scopes()[0]},
		NotBefore: t0, Expiry: t0.Add(time.Hour), IssuedAt: t0.Add(2 * time.Minute),
	}
}

func digest(t *testing.T, g grant.Grant) string {
	t.Helper()
	d, err := approval.StatementFor(g).Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCheckGrant(t *testing.T) {
	f := newFixture(t, 1)
	g := baseGrant()
	f.set(t0.Add(time.Minute)) // the approver signs a minute into the window
	good := f.sign(t, "acme", "approver@acme.test", digest(t, g))
	other := baseGrant()
	other.RequestID = "r-2"
	forOther := f.sign(t, "acme", "approver@acme.test", digest(t, other))
	byEvil := f.sign(t, "evil", "approver@acme.test", digest(t, g))
	byIntern := f.sign(t, "acme", "intern@acme.test", digest(t, g))
	wrongAud, _ := f.idp.Token("acme", "approver@acme.test", "someone-else", digest(t, g))
	f.set(t0.Add(-20 * time.Minute))
	stale := f.sign(t, "acme", "approver@acme.test", digest(t, g))
	f.set(t0.Add(time.Minute))
	self := baseGrant()
	self.EngineerIssuer, self.EngineerSubject = f.idp.IssuerURL("acme"), "eng-1"
	bySelf := f.sign(t, "acme", "engineer@acme.test", digest(t, self))
	f.set(t0.Add(3 * time.Minute))

	with := func(mod func(*grant.Grant), proofs ...string) grant.Grant {
		g := baseGrant()
		if mod != nil {
			mod(&g)
		}
		g.Proofs = proofs
		return g
	}
	tests := []struct {
		name string
		g    grant.Grant
		want string // "" to serve
	}{
		{"approved", with(nil, good), ""},
		{"no proof", with(nil), "carries no customer approval proof"},
		{"another issuer", with(nil, byEvil), "is not the approval authority"},
		{"another request", with(nil, forOther), "nonce is not the digest"},
		{"longer than approved", with(func(g *grant.Grant) { g.Expiry = g.Expiry.Add(time.Minute) }, good), "nonce is not the digest"},
		{"another scope", with(func(g *grant.Grant) { g.Scopes = registry.Scopes() }, good), "nonce is not the digest"},
		{"another agent", with(func(g *grant.Grant) { g.Agent = "a-2" }, good), "nonce is not the digest"},
		{"another engineer", with(func(g *grant.Grant) { g.EngineerSubject = "eng-2" }, good), "nonce is not the digest"},
		{"not an approver", with(nil, byIntern), `is not in group "acme-approvers"`},
		{"wrong audience", with(nil, wrongAud), "holds none of"},
		{"stale", with(nil, stale), "before the approved window starts"},
		{"engineer's own", with(func(g *grant.Grant) { *g = self }, bySelf), "engineer's own"},
		{"garbage", with(nil, "not.a.token"), "not a signed ID token"},
		{"break-glass", with(func(g *grant.Grant) { g.BreakGlass = true }), "refuses them"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "engineer's own" {
				tt.g.Proofs = []string{bySelf}
			}
			tok := tt.name // any distinct key per case
			v, err := f.auth.Check(context.Background(), tt.g, tok)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want served", err)
				}
				if len(v.Approvers) != 1 || v.Approvers[0].Email != "approver@acme.test" {
					t.Fatalf("Check approvers = %+v", v.Approvers)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want an error containing %q", err, tt.want)
			}
			if !errors.Is(err, approval.ErrNotApproved) && !errors.Is(err, approval.ErrBreakGlassRefused) {
				t.Fatalf("Check = %v, want it to wrap ErrNotApproved or ErrBreakGlassRefused", err)
			}
		})
	}
}

// TestCheckAcceptsEachAudience: when the web console and the CLI sign in
// at the customer's provider as different clients, the authority takes
// approvals signed for either, and for no other client.
func TestCheckAcceptsEachAudience(t *testing.T) {
	f := newFixture(t, 1)
	f.auth.Audiences = []string{audience, "tether-web"}
	if err := f.auth.Validate(); err != nil {
		t.Fatal(err)
	}
	g := baseGrant()
	f.set(t0.Add(time.Minute))
	for _, tt := range []struct{ aud, want string }{
		{audience, ""},
		{"tether-web", ""},
		{"someone-else", `holds none of ["tether" "tether-web"]`},
	} {
		tok, err := f.idp.Token("acme", "approver@acme.test", tt.aud, digest(t, g))
		if err != nil {
			t.Fatal(err)
		}
		g.Proofs = []string{tok}
		_, err = f.auth.Check(context.Background(), g, "aud-"+tt.aud)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Check(proof for client %q) = %v, want %q", tt.aud, err, tt.want)
		}
	}
	for _, bad := range [][]string{nil, {""}, {"a", "b", "c", "d", "e", "f", "g", "h", "i"}} {
		a := &approval.Authority{Keys: f.auth.Keys, Audiences: bad, Group: "acme-approvers", Required: 1}
		if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "audience") {
			t.Errorf("Validate(audiences %q) = %v, want an error about the audience", bad, err)
		}
	}
}

func TestCheckCountsDistinctApprovers(t *testing.T) {
	f := newFixture(t, 2)
	g := baseGrant()
	d := digest(t, g)
	f.set(t0.Add(time.Minute))
	a, a2, b := f.sign(t, "acme", "approver@acme.test", d), f.sign(t, "acme", "approver@acme.test", d), f.sign(t, "acme", "second@acme.test", d)
	ctx := context.Background()
	g.Proofs = []string{a}
	if _, err := f.auth.Check(ctx, g, "one"); err == nil || !strings.Contains(err.Error(), "1 valid customer approval proof(s), this agent requires 2") {
		t.Fatalf("Check(one proof) = %v, want fewer than 2 refused", err)
	}
	g.Proofs = []string{a, a2}
	if _, err := f.auth.Check(ctx, g, "same twice"); err == nil || !strings.Contains(err.Error(), "signed another proof of this grant already") {
		t.Fatalf("Check(one approver twice) = %v, want refused", err)
	}
	g.Proofs = []string{a, b}
	v, err := f.auth.Check(ctx, g, "two")
	if err != nil || len(v.Approvers) != 2 {
		t.Fatalf("Check(two approvers) = %+v, %v, want served", v, err)
	}
	if got := v.Describe(); got != "approved by approver@acme.test, second@acme.test" {
		t.Errorf("Describe = %q", got)
	}
}

func TestBreakGlassAllowed(t *testing.T) {
	f := newFixture(t, 1)
	f.auth.AllowBreakGlass = true
	g := baseGrant()
	g.BreakGlass = true
	v, err := f.auth.Check(context.Background(), g, "bg")
	if err != nil || !v.BreakGlass {
		t.Fatalf("Check(break-glass, allowed) = %+v, %v", v, err)
	}
}

func TestPermit(t *testing.T) {
	f := newFixture(t, 1)
	p := approval.Permit{
		ID: "p-1", Deployment: "d-1", Scopes: []string{registry.Scopes()[0]}, MaxGrant: time.Hour,
		Windows: []approval.Window{{Start: t0, End: t0.Add(7 * 24 * time.Hour)}},
	}
	canon, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	f.set(t0.Add(-time.Hour))
	proof := f.sign(t, "acme", "approver@acme.test", approval.Digest(canon))
	f.set(t0.Add(48 * time.Hour))
	under := func(mod func(*grant.Grant)) grant.Grant {
		g := baseGrant()
		g.NotBefore, g.Expiry, g.IssuedAt = t0.Add(48*time.Hour), t0.Add(49*time.Hour), t0.Add(48*time.Hour)
		g.Permit, g.Proofs = string(canon), []string{proof}
		if mod != nil {
			mod(&g)
		}
		return g
	}
	tests := []struct {
		name string
		g    grant.Grant
		want string
	}{
		{"inside", under(nil), ""},
		{"outside the window", under(func(g *grant.Grant) {
			g.NotBefore, g.Expiry = t0.Add(8*24*time.Hour), t0.Add(8*24*time.Hour+time.Hour)
		}), "outside permit p-1's windows"},
		{"too long", under(func(g *grant.Grant) { g.Expiry = g.NotBefore.Add(2 * time.Hour) }), "allows at most 1h0m0s"},
		{"another scope", under(func(g *grant.Grant) { g.Scopes = registry.Scopes() }), "permit p-1 covers"},
		{"another deployment", under(func(g *grant.Grant) { g.Deployment = "d-2" }), "is for deployment d-1"},
		{"permit widened by the broker", under(func(g *grant.Grant) {
			w := p
			w.Windows = []approval.Window{{Start: t0, End: t0.Add(30 * 24 * time.Hour)}}
			c, _ := w.Canonical()
			g.Permit = string(c)
		}), "nonce is not the digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := f.auth.Check(context.Background(), tt.g, tt.name)
			if tt.want == "" {
				if err != nil || v.Permit != "p-1" {
					t.Fatalf("Check = %+v, %v, want served under p-1", v, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestStatementCanonical(t *testing.T) {
	g := baseGrant()
	g.Scopes = []string{registry.Scopes()[1], registry.Scopes()[0]}
	b, err := approval.StatementFor(g).Canonical()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":"tether-approval/1","request":"r-1","deployment":"d-1","agent":"a-1","engineer":{"iss":"https://vendor.example/","sub":"eng-1"},"scopes":["` +
		registry.Scopes()[0] + `","` + registry.Scopes()[1] + `"],"not_before":"2026-12-03T10:00:00Z","not_after":"2026-12-03T11:00:00Z","decision":"approve"}`
	if string(b) != want {
		t.Fatalf("Canonical =\n%s\nwant\n%s", b, want)
	}
	s, err := approval.ParseStatement(b)
	if err != nil {
		t.Fatalf("ParseStatement(canonical) = %v", err)
	}
	if d1, _ := s.Digest(); d1 != approval.Digest(b) {
		t.Errorf("digest of the parsed statement differs")
	}
	for _, bad := range []string{
		strings.Replace(want, `,"decision"`, ` ,"decision"`, 1),
		strings.Replace(want, `"decision":"approve"`, `"decision":"approve","extra":1`, 1),
		strings.Replace(want, `T10:00:00Z"`, `T10:00:00+00:00"`, 1),
		strings.Replace(want, `"tether-approval/1"`, `"tether-approval/2"`, 1),
		strings.Replace(want, `"r-1"`, `"r-\n1"`, 1),
	} {
		if _, err := approval.ParseStatement([]byte(bad)); err == nil {
			t.Errorf("ParseStatement(%s) = nil error, want refused", bad)
		}
	}
}

func TestKeySetRefetchesForUnknownKidAtMostEvery30s(t *testing.T) {
	f := newFixture(t, 1)
	g := baseGrant()
	f.set(t0.Add(time.Minute))
	g.Proofs = []string{f.sign(t, "acme", "approver@acme.test", digest(t, g))}
	ctx := context.Background()
	if _, err := f.auth.Check(ctx, g, "before rotation"); err != nil {
		t.Fatal(err)
	}
	before := f.fetches.Load()
	if err := f.idp.RotateKey("acme"); err != nil {
		t.Fatal(err)
	}
	g.Proofs = []string{f.sign(t, "acme", "approver@acme.test", digest(t, g))}
	if _, err := f.auth.Check(ctx, g, "after rotation"); err == nil {
		t.Fatal("a proof under a new key was accepted within 30 s of the last fetch; want a refusal until the refetch is due")
	}
	f.set(t0.Add(2 * time.Minute))
	if _, err := f.auth.Check(ctx, g, "after rotation, later"); err != nil {
		t.Fatalf("Check after the refetch was due = %v", err)
	}
	if got := f.fetches.Load() - before; got != 1 {
		t.Errorf("%d JWKS fetches after the rotation, want 1", got)
	}
}

// BenchmarkCheck measures a grant's proof verification with the keys
// cached and the verdict not: what an agent pays once per grant.
func BenchmarkCheck(b *testing.B) {
	f := newFixture(&testing.T{}, 1)
	g := baseGrant()
	f.set(t0.Add(time.Minute))
	tok, _ := f.idp.Token("acme", "approver@acme.test", audience, mustDigest(g))
	g.Proofs = []string{tok}
	ctx := context.Background()
	if _, err := f.auth.Check(ctx, g, "warm"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		g.ID = "g-" + string(rune('a'+i%26)) + time.Duration(i).String()
		if _, err := f.auth.Check(ctx, g, g.ID); err != nil {
			b.Fatal(err)
		}
	}
}

func mustDigest(g grant.Grant) string {
	d, err := approval.StatementFor(g).Digest()
	if err != nil {
		panic(err)
	}
	return d
}
