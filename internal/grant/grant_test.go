package grant_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/go-jose/go-jose/v4"

	"github.com/tetherhq/tether/internal/grant"
)

var (
	seed    = [32]byte{1, 2, 3}
	priv    = ed25519.NewKeyFromSeed(seed[:])
	pub     = priv.Public().(ed25519.PublicKey)
	other   = ed25519.NewKeyFromSeed(make([]byte, 32))
	nbf     = time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	revoked = "g-revoked"
)

func sample() grant.Grant {
	return grant.Grant{
		ID: "g-1", RequestID: "r-1", Deployment: "dep-1", Agent: "agt-1", Subject: "alice@vendor.test",
		Scopes:    []string{names.ScopePrometheus, names.ScopeClickHouse},
		NotBefore: nbf, Expiry: nbf.Add(time.Hour), IssuedAt: nbf.Add(-time.Second),
		PolicyHash: "sha256:abc", Issuer: "https://broker.example",
	}
}

func verifier(now time.Time) grant.Verifier {
	return grant.Verifier{
		Key: pub, Deployment: "dep-1", Agent: "agt-1",
		Now:     func() time.Time { return now },
		Revoked: func(id string) bool { return id == revoked },
	}
}

func issue(t testing.TB, g grant.Grant, key ed25519.PrivateKey) string {
	t.Helper()
	tok, err := grant.Issue(g, key)
	if err != nil {
		t.Fatalf("Issue(%+v) = %v", g, err)
	}
	return tok
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// signed builds a compact JWS by hand, Ed25519-signed with key, whatever
// its header says.
func signed(header, payload string, key ed25519.PrivateKey) string {
	in := b64(header) + "." + b64(payload)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(in)))
}

// payloadOf returns the claims of a token Issue made.
func payloadOf(t testing.TB, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const header = `{"alg":"EdDSA","typ":"tether-grant+jwt"}`

func TestRoundTrip(t *testing.T) {
	g := sample()
	tok := issue(t, g, priv)
	if len(tok) > 1024 {
		t.Errorf("token is %d bytes", len(tok))
	}
	got, err := verifier(nbf.Add(time.Minute)).Verify(tok, names.ScopePrometheus)
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if !reflect.DeepEqual(got, g) {
		t.Errorf("Verify = %+v, want %+v", got, g)
	}
	if _, err := verifier(nbf.Add(time.Minute)).Verify(tok, names.ScopeClickHouse); err != nil {
		t.Errorf("Verify(second scope) = %v", err)
	}
	// The header is exactly the one the verifier allows.
	h, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if string(h) != header {
		t.Errorf("header = %s, want %s", h, header)
	}
	// Sub-second times are truncated.
	g.NotBefore, g.Expiry = nbf.Add(400*time.Millisecond), nbf.Add(time.Hour+900*time.Millisecond)
	got, err = verifier(nbf.Add(time.Minute)).Verify(issue(t, g, priv), names.ScopePrometheus)
	if err != nil || !got.NotBefore.Equal(nbf) || !got.Expiry.Equal(nbf.Add(time.Hour)) {
		t.Errorf("Verify = %v, %v, %v; want %v, %v", got.NotBefore, got.Expiry, err, nbf, nbf.Add(time.Hour))
	}
}

func TestIssueRefuses(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*grant.Grant)
		want string
	}{
		{"no ID", func(g *grant.Grant) { g.ID = "" }, "no grant ID"},
		{"no request", func(g *grant.Grant) { g.RequestID = "" }, "no request ID"},
		{"no deployment", func(g *grant.Grant) { g.Deployment = "" }, "no deployment"},
		{"no agent", func(g *grant.Grant) { g.Agent = "" }, "no agent"},
		{"no subject", func(g *grant.Grant) { g.Subject = "" }, "no subject"},
		{"no scopes", func(g *grant.Grant) { g.Scopes = nil }, "no scopes"},
		{"unknown scope", func(g *grant.Grant) { g.Scopes = []string{"clickhouse:admin"} }, "unknown scope"},
		{"scope twice", func(g *grant.Grant) { g.Scopes = []string{names.ScopePrometheus, names.ScopePrometheus} }, "twice"},
		{"no not-before", func(g *grant.Grant) { g.NotBefore = time.Time{} }, "no not-before"},
		{"no expiry", func(g *grant.Grant) { g.Expiry = time.Time{} }, "no expiry"},
		{"no issue time", func(g *grant.Grant) { g.IssuedAt = time.Time{} }, "no issue time"},
		{"expiry before not-before", func(g *grant.Grant) { g.Expiry = nbf.Add(-time.Second) }, "not after"},
		{"empty window", func(g *grant.Grant) { g.Expiry = nbf.Add(500 * time.Millisecond) }, "not after"},
		{"too long", func(g *grant.Grant) { g.Expiry = nbf.Add(grant.MaxLifetime + time.Second) }, "over the 12h0m0s limit"},
		{"before 1970", func(g *grant.Grant) { g.NotBefore, g.Expiry = time.Unix(-10, 0), time.Unix(10, 0) }, "after 1970"},
		{"huge", func(g *grant.Grant) { g.Subject = strings.Repeat("a", grant.MaxTokenSize) }, "over the 49152-byte limit"},
	}
	for _, tt := range tests {
		g := sample()
		tt.mod(&g)
		if _, err := grant.Issue(g, priv); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Issue = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	g := sample()
	g.Expiry = g.NotBefore.Add(grant.MaxLifetime)
	if _, err := grant.Issue(g, priv); err != nil {
		t.Errorf("Issue(12h window) = %v, want it issued", err)
	}
	if _, err := grant.Issue(sample(), priv[:32]); err == nil {
		t.Error("Issue with a 32-byte key succeeded")
	}
}

func TestVerifyRefuses(t *testing.T) {
	now := nbf.Add(time.Minute)
	good := issue(t, sample(), priv)
	with := func(mod func(*grant.Grant)) string {
		g := sample()
		mod(&g)
		return issue(t, g, priv)
	}
	claims := payloadOf(t, good)
	parts := strings.Split(good, ".")

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	joseSigned := func(alg jose.SignatureAlgorithm, key any, opts *jose.SignerOptions) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := s.Sign([]byte(claims))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := obj.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	typed := (&jose.SignerOptions{}).WithType(grant.Type)
	// The classic confusion: HS256 keyed with the public key's bytes,
	// which a verifier trusting the token's alg would check with the
	// public key and accept.
	hs256 := func() string {
		in := b64(`{"alg":"HS256","typ":"tether-grant+jwt"}`) + "." + b64(claims)
		m := hmac.New(sha256.New, pub)
		m.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	jsonSer := func() string {
		obj, err := jose.ParseSignedCompact(good, []jose.SignatureAlgorithm{jose.EdDSA})
		if err != nil {
			t.Fatal(err)
		}
		return obj.FullSerialize()
	}
	// The last base64 character of a 64-byte signature carries 4 unused
	// bits; setting one gives another encoding of the same signature.
	malleable := func() string {
		sig := []byte(parts[2])
		c := sig[len(sig)-1]
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		sig[len(sig)-1] = alphabet[strings.IndexByte(alphabet, c)|1]
		return parts[0] + "." + parts[1] + "." + string(sig)
	}
	resign := func(mod func(map[string]any)) string {
		var m map[string]any
		json.Unmarshal([]byte(claims), &m)
		mod(m)
		b, _ := json.Marshal(m)
		return signed(header, string(b), priv)
	}

	tests := []struct {
		name  string
		tok   string
		scope string
		now   time.Time
		want  error
	}{
		{"expired", good, "", nbf.Add(time.Hour + grant.DefaultSkew), grant.ErrExpired},
		{"long expired", with(func(g *grant.Grant) { g.NotBefore, g.Expiry = nbf.Add(-2*time.Hour), nbf.Add(-time.Hour) }), "", now, grant.ErrExpired},
		{"not yet valid", good, "", nbf.Add(-grant.DefaultSkew - time.Second), grant.ErrNotYetValid},
		{"far future", with(func(g *grant.Grant) { g.NotBefore, g.Expiry = nbf.Add(time.Hour), nbf.Add(2*time.Hour) }), "", now, grant.ErrNotYetValid},
		{"other deployment", with(func(g *grant.Grant) { g.Deployment = "dep-2" }), "", now, grant.ErrWrongDeployment},
		{"other agent", with(func(g *grant.Grant) { g.Agent = "agt-2" }), "", now, grant.ErrWrongAgent},
		{"wrong scope", with(func(g *grant.Grant) { g.Scopes = []string{names.ScopeClickHouse} }), names.ScopePrometheus, now, grant.ErrScope},
		{"no scope asked", good, "-", now, grant.ErrScope},
		{"unknown scope asked", good, "clickhouse:admin", now, grant.ErrScope},
		{"revoked", with(func(g *grant.Grant) { g.ID = revoked }), "", now, grant.ErrRevoked},
		{"forged signature", issue(t, sample(), other), "", now, grant.ErrSignature},
		{"signature of another grant", parts[0] + "." + parts[1] + "." + strings.Split(with(func(g *grant.Grant) { g.ID = "g-2" }), ".")[2], "", now, grant.ErrSignature},
		{"tampered payload", parts[0] + "." + b64(strings.Replace(claims, `"dep-1"`, `"dep-2"`, 1)) + "." + parts[2], "", now, grant.ErrSignature},
		{"tampered scopes", parts[0] + "." + b64(strings.Replace(claims, `"scp":[`, `"scp":["clickhouse:system",`, 1)) + "." + parts[2], "", now, grant.ErrSignature},
		{"tampered header", b64(`{"typ":"tether-grant+jwt","alg":"EdDSA"}`) + "." + parts[1] + "." + parts[2], "", now, grant.ErrSignature},
		{"alg none", b64(`{"alg":"none","typ":"tether-grant+jwt"}`) + "." + parts[1] + ".", "", now, grant.ErrAlgorithm},
		{"alg none, no typ", b64(`{"alg":"none"}`) + "." + parts[1] + ".", "", now, grant.ErrAlgorithm},
		{"alg none, signature kept", b64(`{"alg":"none","typ":"tether-grant+jwt"}`) + "." + parts[1] + "." + parts[2], "", now, grant.ErrAlgorithm},
		{"alg None", b64(`{"alg":"None","typ":"tether-grant+jwt"}`) + "." + parts[1] + ".", "", now, grant.ErrAlgorithm},
		{"alg eddsa", b64(`{"alg":"eddsa","typ":"tether-grant+jwt"}`) + "." + parts[1] + "." + parts[2], "", now, grant.ErrAlgorithm},
		{"no alg", b64(`{"typ":"tether-grant+jwt"}`) + "." + parts[1] + "." + parts[2], "", now, grant.ErrAlgorithm},
		{"HS256 keyed with the public key", hs256(), "", now, grant.ErrAlgorithm},
		{"RS256", joseSigned(jose.RS256, rsaKey, typed), "", now, grant.ErrAlgorithm},
		{"PS256", joseSigned(jose.PS256, rsaKey, typed), "", now, grant.ErrAlgorithm},
		{"ES256", joseSigned(jose.ES256, ecKey, typed), "", now, grant.ErrAlgorithm},
		{"embedded jwk of the attacker", joseSigned(jose.EdDSA, other, (&jose.SignerOptions{EmbedJWK: true}).WithType(grant.Type)), "", now, grant.ErrMalformed},
		{"kid", signed(`{"alg":"EdDSA","typ":"tether-grant+jwt","kid":"k1"}`, claims, priv), "", now, grant.ErrMalformed},
		{"jku", signed(`{"alg":"EdDSA","typ":"tether-grant+jwt","jku":"https://evil/jwks"}`, claims, priv), "", now, grant.ErrMalformed},
		{"x5u", signed(`{"alg":"EdDSA","typ":"tether-grant+jwt","x5u":"https://evil/cert"}`, claims, priv), "", now, grant.ErrMalformed},
		{"x5c", signed(`{"alg":"EdDSA","typ":"tether-grant+jwt","x5c":["MIIB"]}`, claims, priv), "", now, grant.ErrMalformed},
		{"crit", signed(`{"alg":"EdDSA","typ":"tether-grant+jwt","crit":["exp"],"exp":1}`, claims, priv), "", now, grant.ErrMalformed},
		{"b64 false", signed(`{"alg":"EdDSA","typ":"tether-grant+jwt","b64":false,"crit":["b64"]}`, claims, priv), "", now, grant.ErrMalformed},
		{"alg twice", signed(`{"alg":"EdDSA","alg":"none","typ":"tether-grant+jwt"}`, claims, priv), "", now, grant.ErrMalformed},
		{"ALG", signed(`{"ALG":"EdDSA","typ":"tether-grant+jwt"}`, claims, priv), "", now, grant.ErrMalformed},
		{"no typ", signed(`{"alg":"EdDSA"}`, claims, priv), "", now, grant.ErrMalformed},
		{"typ JWT", joseSigned(jose.EdDSA, priv, (&jose.SignerOptions{}).WithType("JWT")), "", now, grant.ErrMalformed},
		{"typ not a string", signed(`{"alg":"EdDSA","typ":1}`, claims, priv), "", now, grant.ErrMalformed},
		{"header not an object", signed(`["alg","EdDSA"]`, claims, priv), "", now, grant.ErrMalformed},
		{"header trailing data", signed(header+`{}`, claims, priv), "", now, grant.ErrMalformed},
		{"JSON serialization", jsonSer(), "", now, grant.ErrMalformed},
		{"extra part", good + ".", "", now, grant.ErrMalformed},
		{"JWE-like five parts", good + ".x.y", "", now, grant.ErrMalformed},
		{"two parts", parts[0] + "." + parts[1], "", now, grant.ErrMalformed},
		{"no signature", parts[0] + "." + parts[1] + ".", "", now, grant.ErrMalformed},
		{"no payload", parts[0] + ".." + parts[2], "", now, grant.ErrMalformed},
		{"empty", "", "", now, grant.ErrMalformed},
		{"huge", good + strings.Repeat("A", grant.MaxTokenSize), "", now, grant.ErrMalformed},
		{"huge header", b64(`{"alg":"EdDSA","typ":"`+strings.Repeat("x", 7000)+`"}`) + "." + parts[1] + "." + parts[2], "", now, grant.ErrMalformed},
		{"whitespace", parts[0] + ".\n" + parts[1] + "." + parts[2], "", now, grant.ErrMalformed},
		{"padding", parts[0] + "=." + parts[1] + "." + parts[2], "", now, grant.ErrMalformed},
		{"standard base64", strings.NewReplacer("-", "+", "_", "/").Replace(good), "", now, grant.ErrMalformed},
		{"non-canonical signature encoding", malleable(), "", now, grant.ErrMalformed},
		{"Bearer prefix", "Bearer " + good, "", now, grant.ErrMalformed},
		{"payload not JSON", signed(header, "not json", priv), "", now, grant.ErrMalformed},
		{"claims of the wrong type", resign(func(m map[string]any) { m["exp"] = "tomorrow" }), "", now, grant.ErrMalformed},
		{"fractional exp", resign(func(m map[string]any) { m["exp"] = 1748775600.5 }), "", now, grant.ErrMalformed},
		{"no gid", resign(func(m map[string]any) { delete(m, "gid") }), "", now, grant.ErrMalformed},
		{"no exp", resign(func(m map[string]any) { delete(m, "exp") }), "", now, grant.ErrMalformed},
		{"no nbf", resign(func(m map[string]any) { delete(m, "nbf") }), "", now, grant.ErrMalformed},
		{"no scp", resign(func(m map[string]any) { delete(m, "scp") }), "", now, grant.ErrMalformed},
		{"13h window", resign(func(m map[string]any) { m["exp"] = nbf.Add(13 * time.Hour).Unix() }), "", now, grant.ErrMalformed},
		{"exp before nbf", resign(func(m map[string]any) { m["exp"] = nbf.Add(-time.Second).Unix() }), "", now, grant.ErrMalformed},
	}
	for _, tt := range tests {
		scope := tt.scope
		switch scope {
		case "":
			scope = names.ScopePrometheus
		case "-":
			scope = ""
		}
		if _, err := verifier(tt.now).Verify(tt.tok, scope); !errors.Is(err, tt.want) {
			t.Errorf("%s: Verify = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestVerifySkew(t *testing.T) {
	tok := issue(t, sample(), priv)
	exp := nbf.Add(time.Hour)
	tests := []struct {
		now  time.Time
		skew time.Duration
		want error
	}{
		{nbf, 0, nil},
		{nbf.Add(-grant.DefaultSkew), 0, nil},
		{nbf.Add(-grant.DefaultSkew - time.Second), 0, grant.ErrNotYetValid},
		{exp.Add(-time.Second), 0, nil},
		{exp, 0, nil},
		{exp.Add(grant.DefaultSkew - time.Second), 0, nil},
		{exp.Add(grant.DefaultSkew), 0, grant.ErrExpired},
		{nbf.Add(-5 * time.Minute), 5 * time.Minute, nil},
		{nbf.Add(-5*time.Minute - time.Second), 5 * time.Minute, grant.ErrNotYetValid},
		{exp.Add(5*time.Minute - time.Second), 5 * time.Minute, nil},
		{nbf.Add(-time.Second), -1, grant.ErrNotYetValid},
		{nbf, -1, nil},
		{exp.Add(-time.Nanosecond), -1, nil},
		{exp, -1, grant.ErrExpired},
	}
	for _, tt := range tests {
		v := verifier(tt.now)
		v.Skew = tt.skew
		if _, err := v.Verify(tok, names.ScopePrometheus); !errors.Is(err, tt.want) {
			t.Errorf("Verify at %v with skew %v = %v, want %v", tt.now, tt.skew, err, tt.want)
		}
	}
}

// TestVerifyReturns: a grant signed by the broker key is returned with its
// refusal, for the audit record; a token that is not is returned as nothing.
func TestVerifyReturns(t *testing.T) {
	v := verifier(nbf.Add(2 * time.Hour))
	g, err := v.Verify(issue(t, sample(), priv), names.ScopePrometheus)
	if !errors.Is(err, grant.ErrExpired) || g.ID != "g-1" || g.Subject != "alice@vendor.test" {
		t.Errorf("Verify(expired) = %+v, %v; want the grant and ErrExpired", g, err)
	}
	g, err = v.Verify(issue(t, sample(), other), names.ScopePrometheus)
	if !errors.Is(err, grant.ErrSignature) || !reflect.DeepEqual(g, grant.Grant{}) {
		t.Errorf("Verify(forged) = %+v, %v; want the zero Grant and ErrSignature", g, err)
	}
}

func TestVerifierDefaults(t *testing.T) {
	g := sample()
	g.NotBefore, g.Expiry = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	tok := issue(t, g, priv)
	v := grant.Verifier{Key: pub, Deployment: "dep-1", Agent: "agt-1"} // the real clock, no revocation list
	if _, err := v.Verify(tok, names.ScopeClickHouse); err != nil {
		t.Errorf("Verify with defaults = %v", err)
	}
	for _, bad := range []grant.Verifier{
		{Deployment: "dep-1", Agent: "agt-1"},
		{Key: pub[:16], Deployment: "dep-1", Agent: "agt-1"},
		{Key: pub, Agent: "agt-1"},
		{Key: pub, Deployment: "dep-1"},
	} {
		if _, err := bad.Verify(tok, names.ScopeClickHouse); err == nil {
			t.Errorf("Verify with %+v succeeded, want an error", bad)
		}
	}
}

func FuzzVerify(f *testing.F) {
	good := issue(f, sample(), priv)
	parts := strings.Split(good, ".")
	f.Add(good)
	f.Add(issue(f, sample(), other))
	f.Add(b64(`{"alg":"none","typ":"tether-grant+jwt"}`) + "." + parts[1] + ".")
	f.Add(signed(`{"alg":"EdDSA","typ":"tether-grant+jwt","kid":"k"}`, payloadOf(f, good), priv))
	f.Add(signed(header, `{"gid":"g","exp":1e99}`, priv))
	f.Add(parts[0] + "." + parts[1])
	f.Add("{}")
	f.Add("..")
	v := verifier(nbf.Add(time.Minute))
	sentinels := []error{grant.ErrMalformed, grant.ErrAlgorithm, grant.ErrSignature, grant.ErrExpired, grant.ErrNotYetValid,
		grant.ErrWrongDeployment, grant.ErrWrongAgent, grant.ErrScope, grant.ErrRevoked}
	f.Fuzz(func(t *testing.T, tok string) {
		g, err := v.Verify(tok, names.ScopePrometheus)
		if err == nil {
			// Nothing but the broker key's signature gets here.
			if tok != good {
				t.Fatalf("Verify(%q) accepted a token Issue did not make: %+v", tok, g)
			}
			return
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("Verify(%q) = %v, which wraps no sentinel error", tok, err)
	})
}

func BenchmarkVerify(b *testing.B) {
	tok := issue(b, sample(), priv)
	v := verifier(nbf.Add(time.Minute))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok, names.ScopePrometheus); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssue(b *testing.B) {
	g := sample()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := grant.Issue(g, priv); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSigCache: a cached signature still has every claim checked on each
// call, and a token altered after caching is not taken from the cache.
func TestSigCache(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	g := grant.Grant{ID: "g1", RequestID: "r1", Deployment: "d1", Agent: "a1", Subject: "eng", Scopes: []string{names.ScopeClickHouse},
		NotBefore: now.Add(-time.Minute), Expiry: now.Add(time.Minute), IssuedAt: now}
	tok, err := grant.Issue(g, priv)
	if err != nil {
		t.Fatal(err)
	}
	clock := now
	revoked := false
	v := grant.Verifier{Key: pub, Deployment: "d1", Agent: "a1", Now: func() time.Time { return clock }, Skew: -1,
		Revoked: func(string) bool { return revoked }, Cache: grant.NewSigCache(2)}
	for i := range 2 {
		if _, err := v.Verify(tok, names.ScopeClickHouse); err != nil {
			t.Fatalf("Verify #%d = %v, want nil", i, err)
		}
	}
	if _, err := v.Verify(tok, names.ScopePrometheus); !errors.Is(err, grant.ErrScope) {
		t.Errorf("Verify(cached, other scope) = %v, want grant.ErrScope", err)
	}
	revoked = true
	if _, err := v.Verify(tok, names.ScopeClickHouse); !errors.Is(err, grant.ErrRevoked) {
		t.Errorf("Verify(cached, revoked) = %v, want grant.ErrRevoked", err)
	}
	revoked, clock = false, now.Add(2*time.Minute)
	if _, err := v.Verify(tok, names.ScopeClickHouse); !errors.Is(err, grant.ErrExpired) {
		t.Errorf("Verify(cached, expired) = %v, want grant.ErrExpired", err)
	}
	clock = now
	tampered := tok[:len(tok)-2] + "AA"
	if _, err := v.Verify(tampered, names.ScopeClickHouse); err == nil {
		t.Error("Verify(tampered after caching) = nil, want a signature error")
	}
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	other, _ := grant.Issue(g, otherPriv)
	if _, err := v.Verify(other, names.ScopeClickHouse); err == nil {
		t.Error("Verify(signed by another key) = nil")
	}
}
