// Package grant issues and verifies access grants: short-lived, signed
// statements by the broker that one engineer may use some scopes through
// one agent of one deployment, between two times.
//
// A grant travels as a compact JWS signed with EdDSA (Ed25519) by the
// broker key, the key every agent pinned when it paired. [Issue] signs;
// [Verifier.Verify] refuses anything that is not exactly what Issue
// produces: other serializations, other algorithms, extra or missing
// header parameters, other keys, and grants for another deployment,
// agent or scope, outside their time window, or revoked. Callers branch
// on the sentinel errors, such as [ErrExpired].
package grant

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/tetherhq/tether/internal/source/registry"
)

const (
	// Type is the JWS typ header of a grant, which keeps other tokens
	// signed with the broker key from passing as grants.
	Type = "tether-grant+jwt"
	// MaxLifetime bounds a grant's window, from not-before to expiry.
	MaxLifetime = 12 * time.Hour
	// MaxTokenSize bounds a grant's compact serialization, checked before
	// anything is parsed. It leaves room for the customer's approval
	// proofs a grant carries.
	MaxTokenSize = 48 << 10
	// MaxProofs bounds the approval proofs one grant carries.
	MaxProofs = 8
	// DefaultSkew is the clock skew a [Verifier] tolerates unless told
	// otherwise.
	DefaultSkew = 30 * time.Second
)

// Errors a caller branches on. Every error of [Verifier.Verify] wraps one
// of them, but for a misconfigured Verifier.
var (
	ErrMalformed       = errors.New("malformed grant")
	ErrAlgorithm       = errors.New("grant not signed with EdDSA")
	ErrSignature       = errors.New("grant signature not valid for the broker key")
	ErrExpired         = errors.New("grant expired")
	ErrNotYetValid     = errors.New("grant not yet valid")
	ErrWrongDeployment = errors.New("grant is for another deployment")
	ErrWrongAgent      = errors.New("grant is for another agent")
	ErrScope           = errors.New("grant does not cover the scope")
	ErrRevoked         = errors.New("grant revoked")
)

// Grant is what a grant says. Times have a precision of one second.
type Grant struct {
	ID         string // the grant's own ID, by which it is revoked
	RequestID  string // the access request the grant answers
	Deployment string // the deployment whose agent honours it
	Agent      string // the one agent that honours it
	Subject    string // the engineer it is for
	Scopes     []string
	NotBefore  time.Time
	Expiry     time.Time
	IssuedAt   time.Time
	PolicyHash string // the hash of the policy that allowed it; optional
	Issuer     string // the broker's origin; optional

	// EngineerIssuer and EngineerSubject name the engineer at their
	// identity provider, as the customer's approval statements do.
	EngineerIssuer  string
	EngineerSubject string
	// Proofs are the customer's approval proofs (ID tokens) that the
	// request's approval or the permit below needed; see package approval.
	Proofs []string
	// Permit is the canonical customer permit the grant was given under,
	// instead of a per-request approval; empty for none.
	Permit string
	// BreakGlass marks an emergency grant given without customer approval,
	// which an agent serves only if its customer allows break-glass.
	BreakGlass bool
}

// claims is a grant's JWS payload.
type claims struct {
	GID string   `json:"gid"`
	RID string   `json:"rid"`
	Dep string   `json:"dep"`
	Agt string   `json:"agt"`
	Sub string   `json:"sub"`
	Scp []string `json:"scp"`
	NBF int64    `json:"nbf"`
	EXP int64    `json:"exp"`
	IAT int64    `json:"iat"`
	Pol string   `json:"pol,omitempty"`
	Iss string   `json:"iss,omitempty"`
	Eis string   `json:"eis,omitempty"`
	Esb string   `json:"esb,omitempty"`
	Prf []string `json:"prf,omitempty"`
	Pmt string   `json:"pmt,omitempty"`
	BG  bool     `json:"bg,omitempty"`
}

func (c claims) grant() Grant {
	return Grant{
		ID: c.GID, RequestID: c.RID, Deployment: c.Dep, Agent: c.Agt, Subject: c.Sub,
		Scopes:    c.Scp,
		NotBefore: time.Unix(c.NBF, 0).UTC(), Expiry: time.Unix(c.EXP, 0).UTC(), IssuedAt: time.Unix(c.IAT, 0).UTC(),
		PolicyHash: c.Pol, Issuer: c.Iss,
		EngineerIssuer: c.Eis, EngineerSubject: c.Esb, Proofs: c.Prf, Permit: c.Pmt, BreakGlass: c.BG,
	}
}

// check reports the first problem with c's shape, whoever signed it.
func (c claims) check() error {
	for _, f := range []struct{ name, v string }{
		{"grant ID", c.GID}, {"request ID", c.RID}, {"deployment", c.Dep}, {"agent", c.Agt}, {"subject", c.Sub},
	} {
		if f.v == "" {
			return fmt.Errorf("no %s", f.name)
		}
	}
	if len(c.Scp) == 0 {
		return errors.New("no scopes")
	}
	if len(c.Prf) > MaxProofs {
		return fmt.Errorf("%d approval proofs, over the limit of %d", len(c.Prf), MaxProofs)
	}
	if (c.Eis == "") != (c.Esb == "") {
		return errors.New("the engineer's issuer and subject go together")
	}
	if c.NBF <= 0 || c.EXP <= 0 || c.IAT <= 0 {
		return errors.New("not-before, expiry and issue times must be set, after 1970")
	}
	if c.EXP <= c.NBF {
		return fmt.Errorf("expiry %s is not after not-before %s", unix(c.EXP), unix(c.NBF))
	}
	if c.EXP-c.NBF > int64(MaxLifetime/time.Second) {
		return fmt.Errorf("window from %s to %s is over the %s limit", unix(c.NBF), unix(c.EXP), MaxLifetime)
	}
	return nil
}

func unix(s int64) string { return time.Unix(s, 0).UTC().Format(time.RFC3339) }

// Issue signs g with the broker key. It refuses a grant without IDs,
// subject or times, with unknown or repeated scopes, or whose window is
// empty or longer than [MaxLifetime]; it does not look at the clock, so a
// grant may be issued ahead of its window.
func Issue(g Grant, key ed25519.PrivateKey) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("issue grant: the signing key is %d bytes, want an Ed25519 private key of %d", len(key), ed25519.PrivateKeySize)
	}
	scopes := registry.Scopes()
	for i, s := range g.Scopes {
		if !slices.Contains(scopes, s) {
			return "", fmt.Errorf("issue grant: unknown scope %q: want one of %s", s, strings.Join(scopes, ", "))
		}
		if slices.Contains(g.Scopes[:i], s) {
			return "", fmt.Errorf("issue grant: scope %q is given twice", s)
		}
	}
	for _, t := range []struct {
		name string
		t    time.Time
	}{{"not-before", g.NotBefore}, {"expiry", g.Expiry}, {"issue time", g.IssuedAt}} {
		if t.t.IsZero() {
			return "", fmt.Errorf("issue grant: no %s", t.name)
		}
	}
	c := claims{
		GID: g.ID, RID: g.RequestID, Dep: g.Deployment, Agt: g.Agent, Sub: g.Subject, Scp: g.Scopes,
		NBF: g.NotBefore.Unix(), EXP: g.Expiry.Unix(), IAT: g.IssuedAt.Unix(),
		Pol: g.PolicyHash, Iss: g.Issuer,
		Eis: g.EngineerIssuer, Esb: g.EngineerSubject, Prf: g.Proofs, Pmt: g.Permit, BG: g.BreakGlass,
	}
	if err := c.check(); err != nil {
		return "", fmt.Errorf("issue grant: %w", err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("issue grant: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, (&jose.SignerOptions{}).WithType(Type))
	if err != nil {
		return "", fmt.Errorf("issue grant: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("issue grant: %w", err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("issue grant: %w", err)
	}
	if len(tok) > MaxTokenSize {
		return "", fmt.Errorf("issue grant: the token is %d bytes, over the %d-byte limit: shorten its IDs", len(tok), MaxTokenSize)
	}
	return tok, nil
}

// Verifier checks grants where they are honoured, in an agent.
type Verifier struct {
	Key        ed25519.PublicKey // the pinned broker key
	Deployment string            // this agent's deployment
	Agent      string            // this agent
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Skew is the clock skew tolerated on both ends of a grant's window:
	// zero means DefaultSkew, a negative value none.
	Skew time.Duration
	// Revoked reports whether a grant ID was revoked; nil means none was.
	Revoked func(grantID string) bool
	// Cache, if set, remembers tokens whose signature verified, so that a
	// grant used for many calls pays for Ed25519 once. Every claim is
	// still checked on every call.
	Cache *SigCache
}

// SigCache remembers grant tokens whose signature verified under a key.
// It is safe for concurrent use and holds at most its size.
type SigCache struct {
	mu  sync.Mutex
	m   map[[32]byte][]byte // SHA-256(key || token) → payload
	max int
}

// NewSigCache returns a cache of at most max tokens.
func NewSigCache(max int) *SigCache {
	return &SigCache{m: make(map[[32]byte][]byte), max: max}
}

func sigKey(key ed25519.PublicKey, token string) [32]byte {
	h := sha256.New()
	h.Write(key)
	h.Write([]byte(token))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (c *SigCache) get(k [32]byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[k]
	return p, ok
}

func (c *SigCache) put(k [32]byte, payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m) // it is only a cache: start over
	}
	c.m[k] = payload
}

// Verify checks token, a grant presented for scope, and returns the grant.
//
// When the grant is signed by the broker key but unfit (expired, revoked,
// for another agent…), Verify returns it with the error, so that the
// caller can record whom it refused; when the token is not a grant signed
// by the broker key, it returns the zero Grant, as nothing in it can be
// trusted.
func (v Verifier) Verify(token, scope string) (Grant, error) {
	if len(v.Key) != ed25519.PublicKeySize {
		return Grant{}, fmt.Errorf("verify grant: the verifier's key is %d bytes, want an Ed25519 public key of %d", len(v.Key), ed25519.PublicKeySize)
	}
	if v.Deployment == "" || v.Agent == "" {
		return Grant{}, errors.New("verify grant: the verifier has no deployment or agent set")
	}
	var (
		payload []byte
		cached  bool
		ck      [32]byte
	)
	if v.Cache != nil && len(token) <= MaxTokenSize {
		ck = sigKey(v.Key, token)
		payload, cached = v.Cache.get(ck)
	}
	if !cached {
		var err error
		if payload, err = verifySignature(token, v.Key); err != nil {
			return Grant{}, fmt.Errorf("verify grant: %w", err)
		}
		if v.Cache != nil && len(token) <= MaxTokenSize {
			v.Cache.put(ck, payload)
		}
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Grant{}, fmt.Errorf("verify grant: claims: %w", ErrMalformed)
	}
	g := c.grant()
	if err := v.checkClaims(c, scope); err != nil {
		if g.ID == "" {
			return g, fmt.Errorf("verify grant: %w", err)
		}
		return g, fmt.Errorf("verify grant %s: %w", g.ID, err)
	}
	return g, nil
}

func (v Verifier) checkClaims(c claims, scope string) error {
	if err := c.check(); err != nil {
		return fmt.Errorf("%v: %w", err, ErrMalformed)
	}
	if c.Dep != v.Deployment {
		return fmt.Errorf("deployment %q, not %q: %w", c.Dep, v.Deployment, ErrWrongDeployment)
	}
	if c.Agt != v.Agent {
		return fmt.Errorf("agent %q, not %q: %w", c.Agt, v.Agent, ErrWrongAgent)
	}
	if scope == "" || !slices.Contains(c.Scp, scope) {
		return fmt.Errorf("the grant gives %s, the call needs %q: %w", strings.Join(c.Scp, ", "), scope, ErrScope)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	skew := v.Skew
	switch {
	case skew == 0:
		skew = DefaultSkew
	case skew < 0:
		skew = 0
	}
	t := now()
	if nbf := time.Unix(c.NBF, 0); t.Add(skew).Before(nbf) {
		return fmt.Errorf("valid from %s, in %s: %w", unix(c.NBF), nbf.Sub(t).Round(time.Second), ErrNotYetValid)
	}
	if exp := time.Unix(c.EXP, 0); !t.Add(-skew).Before(exp) {
		return fmt.Errorf("expired at %s, %s ago: %w", unix(c.EXP), t.Sub(exp).Round(time.Second), ErrExpired)
	}
	if v.Revoked != nil && v.Revoked(c.GID) {
		return ErrRevoked
	}
	return nil
}

// verifySignature returns the payload of token if it is a compact JWS
// exactly as [Issue] makes them, signed by key.
func verifySignature(token string, key ed25519.PublicKey) ([]byte, error) {
	switch {
	case token == "":
		return nil, fmt.Errorf("no grant: %w", ErrMalformed)
	case len(token) > MaxTokenSize:
		return nil, fmt.Errorf("%d bytes, over the %d-byte limit: %w", len(token), MaxTokenSize, ErrMalformed)
	}
	// Only the base64url alphabet and the dots between parts: this refuses
	// the JSON serialization, padding and whitespace, which the decoders
	// would otherwise skip.
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return nil, fmt.Errorf("byte %#x at %d is outside the compact serialization: %w", c, i, ErrMalformed)
		}
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%d parts, want 3 (header.payload.signature): %w", len(parts), ErrMalformed)
	}
	// Strict decoding refuses non-zero trailing bits, so that one grant
	// has one serialization.
	enc := base64.RawURLEncoding.Strict()
	header, err := enc.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("header: %w", ErrMalformed)
	}
	if err := checkHeader(header); err != nil {
		return nil, err
	}
	for _, p := range parts[1:] {
		if _, err := enc.DecodeString(p); err != nil || p == "" {
			return nil, fmt.Errorf("payload or signature missing or not base64url: %w", ErrMalformed)
		}
	}
	obj, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, fmt.Errorf("%v: %w", err, ErrAlgorithm)
		}
		return nil, fmt.Errorf("%v: %w", err, ErrMalformed)
	}
	payload, err := obj.Verify(key)
	if err != nil {
		return nil, ErrSignature
	}
	return payload, nil
}

// checkHeader allows exactly the protected header Issue writes: alg EdDSA
// and typ [Type], each once. Anything else, such as jwk, jku, x5u, x5c,
// kid, crit or b64, is refused rather than ignored.
func checkHeader(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("header is not a JSON object: %w", ErrMalformed)
	}
	seen := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("header: %w", ErrMalformed)
		}
		name, _ := tok.(string)
		if name != "alg" && name != "typ" {
			return fmt.Errorf("header parameter %q is not allowed: %w", clip(name), ErrMalformed)
		}
		if _, dup := seen[name]; dup {
			return fmt.Errorf("header parameter %q is given twice: %w", name, ErrMalformed)
		}
		var v string
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("header parameter %q is not a string: %w", name, ErrMalformed)
		}
		seen[name] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return fmt.Errorf("header: %w", ErrMalformed)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("header: trailing data: %w", ErrMalformed)
	}
	if alg := seen["alg"]; alg != string(jose.EdDSA) {
		return fmt.Errorf("alg %q, want EdDSA: %w", clip(alg), ErrAlgorithm)
	}
	if typ, ok := seen["typ"]; !ok || typ != Type {
		return fmt.Errorf("typ %q, want %q: %w", clip(typ), Type, ErrMalformed)
	}
	return nil
}

// clip bounds attacker-chosen text echoed in errors.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
