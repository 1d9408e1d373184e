package approval

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/tetherhq/tether/internal/grant"
)

// Errors [Authority.Check] wraps; callers branch on them.
var (
	// ErrNotApproved means the grant lacks the customer proofs it needs.
	ErrNotApproved = errors.New("not approved by the customer")
	// ErrBreakGlassRefused means the grant is a break-glass grant and the
	// customer does not allow them.
	ErrBreakGlassRefused = errors.New("break-glass refused by the customer")
)

const (
	// DefaultGroupsClaim names the claim holding an approver's groups.
	DefaultGroupsClaim = "groups"
	// MaxCeremony bounds how long before an approved window starts its
	// proof may have been signed: the broker starts the window when the
	// statement is made, and the approver signs in just after.
	MaxCeremony = 15 * time.Minute
	// DefaultSkew is the clock skew tolerated on a proof's issue time.
	DefaultSkew = time.Minute
	// maxProofSize bounds one proof (an ID token).
	maxProofSize = 16 << 10
	// cacheSize bounds the verdicts an Authority remembers.
	cacheSize = 1024
)

// Algorithms accepted on proofs.
var proofAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

// MaxAudiences bounds the client IDs an [Authority] accepts approvals
// from.
const MaxAudiences = 8

// Authority is a customer's approval authority as its agent holds it:
// whose ID tokens count as approvals, and how many a grant needs.
type Authority struct {
	// Keys are the signing keys of the customer's identity provider; its
	// issuer is the one proofs must come from.
	Keys *KeySet
	// Audiences are the client IDs the broker's approval ceremony uses at
	// that provider (the web console's and the CLI's, when they differ):
	// a proof's aud claim must hold one of them.
	Audiences []string
	// Group is the value of GroupsClaim that makes someone an approver.
	Group string
	// GroupsClaim names the claim holding the groups; empty means
	// DefaultGroupsClaim.
	GroupsClaim string
	// Required is how many distinct approvers must have signed; zero
	// means 1.
	Required int
	// AllowBreakGlass serves break-glass grants without proofs.
	AllowBreakGlass bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]Verdict // verdicts of grants already checked
}

// Approver is someone whose proof counted.
type Approver struct {
	Issuer   string    `json:"iss"`
	Subject  string    `json:"sub"`
	Email    string    `json:"email,omitempty"`
	SignedAt time.Time `json:"signed_at"`
}

// Name is how an approver is shown: their e-mail, else their subject.
func (a Approver) Name() string {
	if a.Email != "" {
		return a.Email
	}
	return a.Subject
}

// Verdict says on what the agent serves a grant.
type Verdict struct {
	Approvers  []Approver // whose proofs counted
	Permit     string     // the permit's ID, for a grant under a permit
	BreakGlass bool       // served without proofs, as the customer allows
}

// Describe is the verdict for people: who approved, or under what.
func (v Verdict) Describe() string {
	var who []string
	for _, a := range v.Approvers {
		who = append(who, a.Name())
	}
	switch {
	case v.BreakGlass:
		return "break-glass, allowed by the customer without approval"
	case v.Permit != "":
		return "permit " + v.Permit + " signed by " + strings.Join(who, ", ")
	}
	return "approved by " + strings.Join(who, ", ")
}

// Validate reports every problem with a's configuration.
func (a *Authority) Validate() error {
	var errs []error
	if a.Keys == nil {
		errs = append(errs, errors.New("no issuer: set --approver-issuer to the customer identity provider"))
	}
	switch {
	case len(a.Audiences) == 0:
		errs = append(errs, errors.New("no audience: set --approver-audience to the client ID the approval ceremony uses at that provider"))
	case len(a.Audiences) > MaxAudiences:
		errs = append(errs, fmt.Errorf("%d audiences: at most %d client IDs may sign approvals", len(a.Audiences), MaxAudiences))
	case slices.Contains(a.Audiences, ""):
		errs = append(errs, errors.New("an empty audience: each --approver-audience is a client ID"))
	}
	if a.Group == "" {
		errs = append(errs, errors.New("no group: set --approver-group to the group claim value of the customer's approvers"))
	}
	if a.Required < 0 || a.Required > grant.MaxProofs {
		errs = append(errs, fmt.Errorf("approvals required %d: want 1 to %d", a.Required, grant.MaxProofs))
	}
	return errors.Join(errs...)
}

func (a *Authority) required() int { return max(a.Required, 1) }

func (a *Authority) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Check decides whether g, a grant whose broker signature already
// verified, has the customer's approval: a break-glass grant only if the
// customer allows them; a grant under a permit only with enough proofs of
// that permit which covers it; any other only with enough proofs whose
// nonce is the digest of the statement rebuilt from g. Proofs count once
// per approver, never from the engineer. token is g's serialization:
// verdicts are remembered by its hash, so a grant is checked once, not
// once per call.
func (a *Authority) Check(ctx context.Context, g grant.Grant, token string) (Verdict, error) {
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	v, ok := a.cache[key]
	a.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := a.check(ctx, g)
	if err != nil {
		return Verdict{}, err
	}
	a.mu.Lock()
	if a.cache == nil || len(a.cache) >= cacheSize {
		a.cache = make(map[[32]byte]Verdict)
	}
	a.cache[key] = v
	a.mu.Unlock()
	return v, nil
}

func (a *Authority) check(ctx context.Context, g grant.Grant) (Verdict, error) {
	if g.BreakGlass {
		if !a.AllowBreakGlass {
			return Verdict{}, fmt.Errorf("a break-glass grant, and this agent's customer refuses them (--break-glass deny): %w", ErrBreakGlassRefused)
		}
		return Verdict{BreakGlass: true}, nil
	}
	if len(g.Proofs) == 0 {
		return Verdict{}, fmt.Errorf("the grant carries no customer approval proof; this agent requires %d from group %q of %s: %w",
			a.required(), a.Group, a.Keys.Issuer(), ErrNotApproved)
	}
	var (
		nonce string
		check func(p proof) error
		v     Verdict
	)
	if g.Permit != "" {
		p, err := ParsePermit([]byte(g.Permit))
		if err != nil {
			return Verdict{}, fmt.Errorf("%v: %w", err, ErrNotApproved)
		}
		if err := p.Covers(g); err != nil {
			return Verdict{}, fmt.Errorf("%v: %w", err, ErrNotApproved)
		}
		nonce, v.Permit = Digest([]byte(g.Permit)), p.ID
		check = func(pr proof) error {
			var last time.Time
			for _, w := range p.Windows {
				last = maxTime(last, w.End)
			}
			if last.Sub(pr.issuedAt) > MaxPermitReach {
				return fmt.Errorf("signed %s, and the permit reaches %s, over %d days after", stamp(pr.issuedAt), stamp(last), MaxPermitReach/(24*time.Hour))
			}
			return nil
		}
	} else {
		s := StatementFor(g)
		d, err := s.Digest()
		if err != nil {
			return Verdict{}, fmt.Errorf("the grant's terms make no approval statement: %v: %w", err, ErrNotApproved)
		}
		nonce = d
		check = func(pr proof) error {
			if pr.issuedAt.Before(g.NotBefore.Add(-MaxCeremony)) {
				return fmt.Errorf("signed %s, more than %s before the approved window starts (%s)", stamp(pr.issuedAt), MaxCeremony, stamp(g.NotBefore))
			}
			if !pr.issuedAt.Before(g.Expiry) {
				return fmt.Errorf("signed %s, after the approved window ended (%s)", stamp(pr.issuedAt), stamp(g.Expiry))
			}
			if pr.issuedAt.After(g.IssuedAt.Add(DefaultSkew)) {
				return fmt.Errorf("signed %s, after the grant was issued (%s)", stamp(pr.issuedAt), stamp(g.IssuedAt))
			}
			return nil
		}
	}
	var problems []string
	for i, raw := range g.Proofs {
		pr, err := a.verifyProof(ctx, raw)
		if err == nil && pr.nonce != nonce {
			err = errors.New("its nonce is not the digest of this grant's terms (a proof for another request, or other scopes or times)")
		}
		if err == nil {
			err = check(pr)
		}
		if err == nil && pr.issuer == g.EngineerIssuer && pr.subject == g.EngineerSubject {
			err = errors.New("it is the engineer's own")
		}
		if err == nil && slices.ContainsFunc(v.Approvers, func(x Approver) bool { return x.Issuer == pr.issuer && x.Subject == pr.subject }) {
			err = fmt.Errorf("%s signed another proof of this grant already", pr.name())
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("proof %d: %v", i+1, err))
			continue
		}
		v.Approvers = append(v.Approvers, Approver{Issuer: pr.issuer, Subject: pr.subject, Email: pr.email, SignedAt: pr.issuedAt})
	}
	if len(v.Approvers) < a.required() {
		msg := fmt.Sprintf("%d valid customer approval proof(s), this agent requires %d", len(v.Approvers), a.required())
		if len(problems) > 0 {
			msg += ": " + strings.Join(problems, "; ")
		}
		return Verdict{}, fmt.Errorf("%s: %w", msg, ErrNotApproved)
	}
	return v, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// proof is what a verified ID token says.
type proof struct {
	issuer, subject, email, nonce string
	issuedAt                      time.Time
}

func (p proof) name() string {
	if p.email != "" {
		return p.email
	}
	return p.subject
}

// verifyProof checks an ID token: signed by the authority's issuer with
// one of its keys, for the audience, by a member of the group, issued
// (iat) no later than now. Its expiry is not checked: an approval outlives
// the token that carried it, and the windows bound its use instead.
func (a *Authority) verifyProof(ctx context.Context, raw string) (proof, error) {
	if len(raw) > maxProofSize {
		return proof{}, fmt.Errorf("%d bytes, over the %d-byte limit", len(raw), maxProofSize)
	}
	obj, err := jose.ParseSignedCompact(raw, proofAlgs)
	if err != nil {
		return proof{}, fmt.Errorf("not a signed ID token: %v", err)
	}
	if len(obj.Signatures) != 1 {
		return proof{}, errors.New("not exactly one signature")
	}
	// Another provider's token names keys this one does not have: say
	// whose it is, and do not refetch keys for it.
	var unverified struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(obj.UnsafePayloadWithoutVerification(), &unverified) == nil && unverified.Iss != a.Keys.Issuer() {
		return proof{}, fmt.Errorf("issuer %q is not the approval authority %s", clip(unverified.Iss), a.Keys.Issuer())
	}
	h := obj.Signatures[0].Protected
	keys, err := a.Keys.key(ctx, h.KeyID, h.Algorithm)
	if err != nil {
		return proof{}, err
	}
	var payload []byte
	for _, k := range keys {
		if payload, err = obj.Verify(k.Key); err == nil {
			break
		}
	}
	if payload == nil {
		return proof{}, fmt.Errorf("the signature is not valid for the keys of %s", a.Keys.Issuer())
	}
	var c map[string]json.RawMessage
	if err := json.Unmarshal(payload, &c); err != nil {
		return proof{}, errors.New("claims are not a JSON object")
	}
	var (
		p   proof
		iat float64
	)
	str := func(name string, dst *string) { _ = json.Unmarshal(c[name], dst) }
	str("iss", &p.issuer)
	str("sub", &p.subject)
	str("email", &p.email)
	str("nonce", &p.nonce)
	if p.issuer != a.Keys.Issuer() {
		return proof{}, fmt.Errorf("issuer %q is not the approval authority %s", clip(p.issuer), a.Keys.Issuer())
	}
	if p.subject == "" {
		return proof{}, errors.New("no sub claim")
	}
	aud, err := stringsClaim(c["aud"])
	if err != nil || !slices.ContainsFunc(aud, func(s string) bool { return slices.Contains(a.Audiences, s) }) {
		return proof{}, fmt.Errorf("audience %q holds none of %q", aud, a.Audiences)
	}
	if err := json.Unmarshal(c["iat"], &iat); err != nil || iat <= 0 {
		return proof{}, errors.New("no iat claim")
	}
	p.issuedAt = time.Unix(int64(iat), 0).UTC()
	if p.issuedAt.After(a.now().Add(DefaultSkew)) {
		return proof{}, fmt.Errorf("issued %s, in the future", stamp(p.issuedAt))
	}
	claim := a.GroupsClaim
	if claim == "" {
		claim = DefaultGroupsClaim
	}
	groups, err := stringsClaim(c[claim])
	if err != nil || !slices.Contains(groups, a.Group) {
		return proof{}, fmt.Errorf("%s is not in group %q (claim %q)", p.name(), a.Group, claim)
	}
	return p, nil
}

// stringsClaim reads a claim that is a string or an array of strings.
func stringsClaim(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, errors.New("not a string or an array of strings")
	}
	return many, nil
}
