package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type fixture struct {
	vendor, acme *testIssuer
	cfg          Config
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{vendor: newTestIssuer(t), acme: newTestIssuer(t)}
	f.vendor.publish("v1", jose.RS256, rsaKey(t, 0))
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.vendor.publish("v-es", jose.ES256, ec)
	f.acme.publish("a1", jose.EdDSA, newEdKey(t))
	f.cfg = Config{Issuers: []IssuerConfig{
		{
			Name:      "vendor",
			IssuerURL: f.vendor.URL,
			ClientID:  "tether-broker",
			Audiences: []string{"tether-cli"},
			RoleMap:   map[string]string{"eng": names.RoleEngineer, "rev": names.RoleReviewer, "ops": names.RoleAdmin},
		},
		{
			Name:        "acme",
			IssuerURL:   f.acme.URL,
			ClientID:    "tether-acme",
			GroupsClaim: "roles",
			Tenant:      "acme",
			RoleMap:     map[string]string{"acme-approvers": names.RoleApprover},
		},
	}}
	return f
}

func (f *fixture) verifier(t testing.TB) *Verifier {
	t.Helper()
	v, err := New(context.Background(), f.cfg, WithClock(func() time.Time { return testNow }))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

// claims returns standard claims, valid at testNow, merged with extra.
func claims(iss, aud, sub string, extra map[string]any) map[string]any {
	c := map[string]any{
		"iss": iss,
		"aud": aud,
		"sub": sub,
		"iat": testNow.Add(-time.Minute).Unix(),
		"exp": testNow.Add(10 * time.Minute).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t)
	ven, acme := f.vendor, f.acme
	eng := map[string]any{"groups": []string{"eng"}, "email": "ada@vendor.example"}
	approver := map[string]any{"roles": "acme-approvers"}
	with := func(base map[string]any, kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	hmacKey := []byte("0123456789abcdef0123456789abcdef")

	tests := []struct {
		name       string
		token      string
		wantErr    error
		wantRoles  []string
		wantGroups []string
		wantTenant string
		wantIssuer string
	}{
		{
			name:       "vendor engineer RS256",
			token:      ven.token("v1", claims(ven.URL, "tether-broker", "ada", eng)),
			wantRoles:  []string{names.RoleEngineer},
			wantGroups: []string{"eng"},
			wantIssuer: "vendor",
		},
		{
			name:       "vendor engineer ES256",
			token:      ven.token("v-es", claims(ven.URL, "tether-broker", "ada", eng)),
			wantRoles:  []string{names.RoleEngineer},
			wantGroups: []string{"eng"},
			wantIssuer: "vendor",
		},
		{
			name:       "extra audience accepted",
			token:      ven.token("v1", claims(ven.URL, "tether-cli", "ada", eng)),
			wantRoles:  []string{names.RoleEngineer},
			wantGroups: []string{"eng"},
			wantIssuer: "vendor",
		},
		{
			name:       "audience list holding client id",
			token:      ven.token("v1", claims(ven.URL, "", "ada", with(eng, "aud", []string{"other", "tether-broker"}))),
			wantRoles:  []string{names.RoleEngineer},
			wantGroups: []string{"eng"},
			wantIssuer: "vendor",
		},
		{
			name:       "groups map to several roles",
			token:      ven.token("v1", claims(ven.URL, "tether-broker", "ada", map[string]any{"groups": []string{"rev", "unrelated", "eng", "ops"}})),
			wantRoles:  []string{names.RoleAdmin, names.RoleEngineer, names.RoleReviewer},
			wantGroups: []string{"rev", "unrelated", "eng", "ops"},
			wantIssuer: "vendor",
		},
		{
			name:       "customer approver EdDSA",
			token:      acme.token("a1", claims(acme.URL, "tether-acme", "bob", approver)),
			wantRoles:  []string{names.RoleApprover},
			wantGroups: []string{"acme-approvers"},
			wantTenant: "acme",
			wantIssuer: "acme",
		},
		{
			name:       "tenant claim in token ignored",
			token:      acme.token("a1", claims(acme.URL, "tether-acme", "bob", with(approver, "tenant", "globex"))),
			wantRoles:  []string{names.RoleApprover},
			wantGroups: []string{"acme-approvers"},
			wantTenant: "acme",
			wantIssuer: "acme",
		},
		{
			name:       "expired within skew",
			token:      ven.token("v1", claims(ven.URL, "tether-broker", "ada", with(eng, "exp", testNow.Add(-30*time.Second).Unix()))),
			wantRoles:  []string{names.RoleEngineer},
			wantGroups: []string{"eng"},
			wantIssuer: "vendor",
		},
		{
			name:    "expired beyond skew",
			token:   ven.token("v1", claims(ven.URL, "tether-broker", "ada", with(eng, "exp", testNow.Add(-61*time.Second).Unix()))),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "no exp",
			token:   ven.token("v1", claims(ven.URL, "tether-broker", "ada", with(eng, "exp", nil))),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "wrong audience",
			token:   ven.token("v1", claims(ven.URL, "someone-else", "ada", eng)),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "other issuer's client id",
			token:   ven.token("v1", claims(ven.URL, "tether-acme", "ada", eng)),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "HS256 refused",
			token:   sign(t, jose.HS256, "v1", hmacKey, claims(ven.URL, "tether-broker", "ada", eng)),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "alg none refused",
			token:   unsignedToken(claims(ven.URL, "tether-broker", "ada", eng)),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "unknown issuer",
			token:   ven.token("v1", claims("https://idp.evil.example", "tether-broker", "ada", eng)),
			wantErr: ErrUnknownIssuer,
		},
		{
			name:    "issuer URL differing by a slash",
			token:   ven.token("v1", claims(ven.URL+"/", "tether-broker", "ada", eng)),
			wantErr: ErrUnknownIssuer,
		},
		{
			name:    "vendor key claiming acme issuer",
			token:   ven.token("v1", claims(acme.URL, "tether-acme", "mallory", approver)),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "acme key claiming vendor issuer",
			token:   acme.token("a1", claims(ven.URL, "tether-broker", "mallory", eng)),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "no sub",
			token:   ven.token("v1", claims(ven.URL, "tether-broker", "", with(eng, "sub", nil))),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "malformed groups claim",
			token:   ven.token("v1", claims(ven.URL, "tether-broker", "ada", map[string]any{"groups": 42})),
			wantErr: ErrInvalidToken,
		},
		{
			name:    "no mapped group",
			token:   ven.token("v1", claims(ven.URL, "tether-broker", "ada", map[string]any{"groups": []string{"unrelated"}})),
			wantErr: ErrNoRole,
		},
		{
			name:    "no groups claim",
			token:   ven.token("v1", claims(ven.URL, "tether-broker", "ada", nil)),
			wantErr: ErrNoRole,
		},
		{
			name:    "customer groups read from wrong claim",
			token:   acme.token("a1", claims(acme.URL, "tether-acme", "bob", map[string]any{"groups": []string{"acme-approvers"}})),
			wantErr: ErrNoRole,
		},
		{
			name:    "not a JWT",
			token:   "not-a-token",
			wantErr: ErrInvalidToken,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := v.Verify(context.Background(), tt.token)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Verify(%s) = %+v, %v, want %v", tt.name, p, err, tt.wantErr)
				}
				t.Logf("Verify(%s): %v", tt.name, err)
				return
			}
			if err != nil {
				t.Fatalf("Verify(%s) = %v, want nil", tt.name, err)
			}
			if !slices.Equal(p.Roles, tt.wantRoles) || !slices.Equal(p.Groups, tt.wantGroups) || p.Tenant != tt.wantTenant || p.IssuerName != tt.wantIssuer {
				t.Errorf("Verify(%s) = roles %q groups %q tenant %q issuer %q, want %q %q %q %q",
					tt.name, p.Roles, p.Groups, p.Tenant, p.IssuerName, tt.wantRoles, tt.wantGroups, tt.wantTenant, tt.wantIssuer)
			}
			if p.Subject == "" || p.Expiry.IsZero() {
				t.Errorf("Verify(%s) = %+v, want subject and expiry set", tt.name, p)
			}
		})
	}
}

func TestVerifyPrincipalFields(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t)
	exp := testNow.Add(5 * time.Minute).Truncate(time.Second)
	tok := f.vendor.token("v1", claims(f.vendor.URL, "tether-broker", "ada", map[string]any{
		"groups": []string{"eng"}, "email": "ada@vendor.example", "exp": exp.Unix(),
	}))
	p, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify(vendor engineer) = %v, want nil", err)
	}
	want := Principal{Subject: "ada", Email: "ada@vendor.example", Issuer: f.vendor.URL, IssuerName: "vendor",
		Roles: []string{names.RoleEngineer}, Groups: []string{"eng"}, Expiry: exp}
	if p.Subject != want.Subject || p.Email != want.Email || p.Issuer != want.Issuer || p.IssuerName != want.IssuerName ||
		p.Tenant != "" || !slices.Equal(p.Roles, want.Roles) || !p.Expiry.Equal(want.Expiry) {
		t.Errorf("Verify(vendor engineer) = %+v, want %+v", p, want)
	}
}

func TestVerifyAdminsAndGitHubLogin(t *testing.T) {
	f := newFixture(t)
	f.cfg.Issuers[0].Admins = []string{"root"}
	f.cfg.Issuers[0].GitHubLoginClaim = "gh_login"
	f.cfg.Issuers[0].CLIClientID = "tether-cli-public"
	v := f.verifier(t)
	// An admin named by subject needs no group; the CLI client ID is an
	// accepted audience.
	tok := f.vendor.token("v1", claims(f.vendor.URL, "tether-cli-public", "root", map[string]any{"gh_login": "root-gh"}))
	p, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify(admin by subject) = %v, want nil", err)
	}
	if !slices.Equal(p.Roles, []string{names.RoleAdmin}) || p.GitHubLogin != "root-gh" {
		t.Errorf("Verify(admin by subject) = roles %q, github %q; want [admin], root-gh", p.Roles, p.GitHubLogin)
	}
	// Another subject without groups is still refused.
	tok = f.vendor.token("v1", claims(f.vendor.URL, "tether-broker", "rooty", nil))
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrNoRole) {
		t.Errorf("Verify(non-admin without groups) = %v, want ErrNoRole", err)
	}
	// An engineer named as admin holds both roles, once each.
	tok = f.vendor.token("v1", claims(f.vendor.URL, "tether-broker", "root", map[string]any{"groups": []string{"eng", "ops"}}))
	if p, err := v.Verify(context.Background(), tok); err != nil || !slices.Equal(p.Roles, []string{names.RoleAdmin, names.RoleEngineer}) {
		t.Errorf("Verify(admin engineer) = %q, %v; want [admin engineer]", p.Roles, err)
	}
}

func TestVerifyCacheHonoursExpiry(t *testing.T) {
	f := newFixture(t)
	now := testNow
	v, err := New(context.Background(), f.cfg, WithClock(func() time.Time { return now }), WithClockSkew(0))
	if err != nil {
		t.Fatal(err)
	}
	tok := f.vendor.token("v1", claims(f.vendor.URL, "tether-broker", "ada", map[string]any{"groups": []string{"eng"}}))
	for i := range 2 { // the second call is a cache hit
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("Verify #%d = %v, want nil", i, err)
		}
	}
	p, _ := v.Verify(context.Background(), tok)
	p.Roles[0] = names.RoleAdmin // callers cannot poison the cache
	if p, _ := v.Verify(context.Background(), tok); !slices.Equal(p.Roles, []string{names.RoleEngineer}) {
		t.Errorf("Verify after caller edit = %q, want [engineer]", p.Roles)
	}
	now = testNow.Add(11 * time.Minute) // past exp
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify(cached token after exp) = %v, want ErrInvalidToken", err)
	}
	// A token that failed is not cached as good.
	bad := tok[:len(tok)-4] + "AAAA"
	for range 2 {
		if _, err := v.Verify(context.Background(), bad); err == nil {
			t.Errorf("Verify(tampered) = nil, want an error")
		}
	}
}

func TestVerifyExpiredIsTokenExpiredError(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t)
	tok := f.vendor.token("v1", claims(f.vendor.URL, "tether-broker", "ada", map[string]any{
		"groups": []string{"eng"}, "exp": testNow.Add(-2 * time.Minute).Unix(),
	}))
	_, err := v.Verify(context.Background(), tok)
	var expired *oidc.TokenExpiredError
	if !errors.Is(err, ErrInvalidToken) || !errors.As(err, &expired) {
		t.Fatalf("Verify(expired) = %v, want ErrInvalidToken wrapping *oidc.TokenExpiredError", err)
	}
}

// TestVerifyKeyRotation runs in a synctest bubble with the issuer served
// in memory, so that synctest.Wait can let go-oidc's background JWKS
// refresh finish between steps: go-oidc v3.21 signals a refresh's waiters
// before it stores the keys and clears the in-flight request, so a token
// verified in that instant reuses the finished refresh's result.
func TestVerifyKeyRotation(t *testing.T) {
	f := newFixture(t)
	ven := f.vendor
	rsaKey(t, 2) // generate outside the bubble
	synctest.Test(t, func(t *testing.T) {
		testKeyRotation(t, f, ven)
	})
}

func testKeyRotation(t *testing.T, f *fixture, ven *testIssuer) {
	client := &http.Client{Transport: handlerTransport{
		ven.srv.Listener.Addr().String():    ven.srv.Config.Handler,
		f.acme.srv.Listener.Addr().String(): f.acme.srv.Config.Handler,
	}}
	v, err := New(context.Background(), f.cfg, WithClock(func() time.Time { return testNow }), WithHTTPClient(client))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := func() map[string]any {
		return claims(ven.URL, "tether-broker", "ada", map[string]any{"groups": []string{"eng"}})
	}
	oldTok := ven.token("v1", c())

	steps := []struct {
		name     string
		do       func()
		token    func() string
		wantErr  error
		wantHits int32 // JWKS fetches after this step
	}{
		{
			name:     "known kid fetches JWKS once",
			token:    func() string { return oldTok },
			wantHits: 1,
		},
		{
			name:     "cached key, no fetch",
			token:    func() string { return ven.token("v1", c()) },
			wantHits: 1,
		},
		{
			name:     "unknown kid refreshes once then refuses",
			token:    func() string { return sign(t, jose.RS256, "rogue", rsaKey(t, 1), c()) },
			wantErr:  ErrInvalidToken,
			wantHits: 2,
		},
		{
			name:     "unpublished key reusing a known kid refreshes once then refuses",
			token:    func() string { return sign(t, jose.RS256, "v1", rsaKey(t, 1), c()) },
			wantErr:  ErrInvalidToken,
			wantHits: 3,
		},
		{
			name: "rotated key accepted after refresh",
			do: func() {
				ven.publish("v2", jose.RS256, rsaKey(t, 2))
				ven.retire("v1")
				ven.retire("v-es")
			},
			token:    func() string { return ven.token("v2", c()) },
			wantHits: 4,
		},
		{
			name:     "retired key refused after refresh",
			token:    func() string { return oldTok },
			wantErr:  ErrInvalidToken,
			wantHits: 5,
		},
		{
			name:     "rotation to EdDSA",
			do:       func() { ven.publish("v3", jose.EdDSA, newEdKey(t)) },
			token:    func() string { return ven.token("v3", c()) },
			wantHits: 6,
		},
	}
	for _, s := range steps {
		if s.do != nil {
			s.do()
		}
		_, err := v.Verify(ctx, s.token())
		synctest.Wait()
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("Verify(%s) = %v, want %v", s.name, err, s.wantErr)
		}
		if got := ven.jwksHits.Load(); got != s.wantHits {
			t.Errorf("Verify(%s): %d JWKS fetches, want %d", s.name, got, s.wantHits)
		}
	}
}

// handlerTransport serves requests in memory from the handler for their
// host.
type handlerTransport map[string]http.Handler

func (h handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	hd, ok := h[r.URL.Host]
	if !ok {
		return nil, fmt.Errorf("no handler for host %q", r.URL.Host)
	}
	rec := httptest.NewRecorder()
	hd.ServeHTTP(rec, r)
	return rec.Result(), nil
}

func TestVerifyDiscoveryFailure(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t)
	tok := f.vendor.token("v1", claims(f.vendor.URL, "tether-broker", "ada", map[string]any{"groups": []string{"eng"}}))
	f.vendor.srv.Close()
	_, err := v.Verify(context.Background(), tok)
	if err == nil || errors.Is(err, ErrInvalidToken) || errors.Is(err, ErrUnknownIssuer) || errors.Is(err, ErrNoRole) {
		t.Fatalf("Verify(issuer down) = %v, want a discovery error that is not a refusal", err)
	}
}

func TestCanActOnTenant(t *testing.T) {
	tests := []struct {
		name   string
		p      Principal
		tenant string
		want   bool
	}{
		{"vendor engineer on acme", Principal{Roles: []string{names.RoleEngineer}}, "acme", true},
		{"vendor reviewer on globex", Principal{Roles: []string{names.RoleReviewer}}, "globex", true},
		{"vendor admin on acme", Principal{Roles: []string{names.RoleAdmin}}, "acme", true},
		{"vendor without role", Principal{}, "acme", false},
		{"vendor approver role (impossible by config)", Principal{Roles: []string{names.RoleApprover}}, "acme", false},
		{"acme approver on acme", Principal{Tenant: "acme", Roles: []string{names.RoleApprover}}, "acme", true},
		{"acme approver on globex", Principal{Tenant: "acme", Roles: []string{names.RoleApprover}}, "globex", false},
		{"acme principal with vendor role", Principal{Tenant: "acme", Roles: []string{names.RoleEngineer}}, "acme", false},
		{"empty tenant", Principal{Roles: []string{names.RoleEngineer}}, "", false},
	}
	for _, tt := range tests {
		if got := tt.p.CanActOnTenant(tt.tenant); got != tt.want {
			t.Errorf("CanActOnTenant(%s, %q) = %v, want %v", tt.name, tt.tenant, got, tt.want)
		}
	}
}

// TestVerifyTenantIsolation checks end to end that a token from acme's
// issuer claiming tenant globex acts only on acme.
func TestVerifyTenantIsolation(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t)
	tok := f.acme.token("a1", claims(f.acme.URL, "tether-acme", "bob", map[string]any{
		"roles": []string{"acme-approvers"}, "tenant": "globex",
	}))
	p, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify(acme approver claiming globex) = %v, want nil", err)
	}
	if p.CanActOnTenant("globex") {
		t.Errorf("Verify(acme approver claiming globex).CanActOnTenant(globex) = true, want false")
	}
	if !p.CanActOnTenant("acme") {
		t.Errorf("Verify(acme approver claiming globex).CanActOnTenant(acme) = false, want true")
	}
}

// BenchmarkVerify measures ID-token verification with the JWKS cached
// (the first Verify discovers the issuer and fetches its keys).
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	v := f.verifier(b)
	toks := map[string]string{
		"RS256": f.vendor.token("v1", claims(f.vendor.URL, "tether-broker", "ada", map[string]any{"groups": []string{"eng"}})),
		"ES256": f.vendor.token("v-es", claims(f.vendor.URL, "tether-broker", "ada", map[string]any{"groups": []string{"eng"}})),
		"EdDSA": f.acme.token("a1", claims(f.acme.URL, "tether-acme", "bob", map[string]any{"roles": "acme-approvers"})),
	}
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		tok := toks[alg]
		b.Run(alg, func(b *testing.B) {
			if _, err := v.Verify(context.Background(), tok); err != nil {
				b.Fatalf("Verify: %v", err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(context.Background(), tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		// The full check (parse, signature, claims) that a token's first
		// use pays, bypassing the verified-token cache.
		b.Run(alg+"/uncached", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.verify(context.Background(), tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
