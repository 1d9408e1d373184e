package devidp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// signingKey is one ES256 key of an issuer; its kid is its RFC 7638
// thumbprint, so a new key always has a new kid.
type signingKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newSigningKey() (*signingKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate p-256 key: %w", err)
	}
	tp, err := (&jose.JSONWebKey{Key: &priv.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("thumbprint p-256 key: %w", err)
	}
	return &signingKey{kid: base64.RawURLEncoding.EncodeToString(tp), priv: priv}, nil
}

func (k *signingKey) sign(claims map[string]any) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("new signer: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("marshal claims: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return jws.CompactSerialize()
}

func (is *issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	is.mu.Lock()
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(is.keys))}
	for _, k := range is.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{
			Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: string(jose.ES256), Use: "sig",
		})
	}
	is.mu.Unlock()
	// Keys change on RotateKey: let verifiers refetch at once.
	w.Header().Set("Cache-Control", "no-cache")
	writeJSON(w, http.StatusOK, set)
}

// idToken signs an ID token for u with the issuer's current key. nonce
// and accessToken (for at_hash) are left out when empty.
func (is *issuer) idToken(u *user, clientID, nonce, accessToken string, authTime, now time.Time) (string, error) {
	claims := make(map[string]any, len(u.extra)+14)
	for name, raw := range u.extra {
		claims[name] = raw
	}
	claims["iss"] = is.url
	claims["sub"] = u.subject
	claims["aud"] = clientID
	claims["iat"] = now.Unix()
	claims["nbf"] = now.Unix()
	claims["exp"] = now.Add(is.p.ttl).Unix()
	claims["auth_time"] = authTime.Unix()
	claims["email"] = u.email
	claims["email_verified"] = true
	claims["groups"] = u.groups
	if u.name != "" {
		claims["name"] = u.name
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	if accessToken != "" {
		// OpenID Connect Core §3.1.3.6: the left half of the SHA-256 of
		// the access token.
		h := sha256.Sum256([]byte(accessToken))
		claims["at_hash"] = base64.RawURLEncoding.EncodeToString(h[:len(h)/2])
	}
	is.mu.Lock()
	k := is.keys[len(is.keys)-1]
	is.mu.Unlock()
	tok, err := k.sign(claims)
	if err != nil {
		return "", fmt.Errorf("sign id token of issuer %q: %w", is.name, err)
	}
	return tok, nil
}
