package identity

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// testIssuer is an in-process OpenID provider: it serves discovery and a
// JWKS, and signs ID tokens with keys the test can rotate.
type testIssuer struct {
	t   testing.TB
	srv *httptest.Server
	URL string

	jwksHits atomic.Int32

	mu   sync.Mutex
	keys map[string]testKey // published keys, by kid
}

type testKey struct {
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	ti := &testIssuer{t: t, keys: map[string]testKey{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                ti.URL,
			"jwks_uri":                              ti.URL + "/jwks",
			"authorization_endpoint":                ti.URL + "/authorize",
			"token_endpoint":                        ti.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256", "EdDSA", "HS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwksHits.Add(1)
		ti.mu.Lock()
		var set jose.JSONWebKeySet
		for kid, k := range ti.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: kid, Algorithm: string(k.alg), Use: "sig"})
		}
		ti.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(set)
	})
	ti.srv = httptest.NewServer(mux)
	ti.URL = ti.srv.URL
	t.Cleanup(ti.srv.Close)
	return ti
}

var (
	rsaOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// rsaKey returns one of a few RSA keys generated once per test binary.
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	return rsaKeys[i]
}

func newEdKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publish adds a key to the JWKS.
func (ti *testIssuer) publish(kid string, alg jose.SignatureAlgorithm, priv crypto.Signer) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.keys[kid] = testKey{alg: alg, priv: priv}
}

// retire removes a key from the JWKS.
func (ti *testIssuer) retire(kid string) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	delete(ti.keys, kid)
}

// sign returns a compact JWS of claims signed by priv with kid in the
// header, whether or not the key is published.
func sign(t testing.TB, alg jose.SignatureAlgorithm, kid string, priv any, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: priv, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// token signs claims with the published key kid.
func (ti *testIssuer) token(kid string, claims map[string]any) string {
	ti.t.Helper()
	ti.mu.Lock()
	k, ok := ti.keys[kid]
	ti.mu.Unlock()
	if !ok {
		ti.t.Fatalf("no published key %q", kid)
	}
	return sign(ti.t, k.alg, kid, k.priv, claims)
}

// unsignedToken returns an alg "none" token.
func unsignedToken(claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}
