// Package approval is the customer's side of an access decision: the
// statements a customer approver signs at their own identity provider,
// and the check an agent makes before it serves a grant.
//
// An approval is a signing ceremony. The approver signs in again at the
// customer's OpenID Connect provider with a nonce that is the digest of a
// canonical statement ([Statement.Digest]): which request, deployment,
// agent and engineer, which scopes, which window, which decision. The ID
// token that comes back is the proof: only the customer's provider can
// sign it, and its nonce binds it to those exact terms. A standing
// [Permit] is signed the same way and stands in for per-request approvals
// within its windows.
//
// The broker stores proofs with reviews and puts those a grant needs into
// it. The agent, configured by the customer with an [Authority], rebuilds
// the statement from the grant's own claims and serves the grant only when
// enough distinct approvers signed exactly that ([Authority.Check]): a
// broker that mints a grant nobody approved, or changes a scope or a
// minute of an approved one, gets nothing.
package approval

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/source/registry"
)

// Versions of the signed forms; a verifier refuses any other.
const (
	StatementVersion = "tether-approval/1"
	PermitVersion    = "tether-permit/1"
)

// Decisions a statement records.
const (
	Approve = "approve"
	Deny    = "deny"
)

// Bounds on permits.
const (
	// MaxPermitWindows is how many windows one permit may hold.
	MaxPermitWindows = 2
	// MaxPermitWindow is the longest window of a permit.
	MaxPermitWindow = 30 * 24 * time.Hour
	// MaxPermitReach is how long after its signing a permit's last window
	// may end: a signature does not vouch for ever.
	MaxPermitReach = 90 * 24 * time.Hour
	// maxField bounds every text field of a signed form.
	maxField = 512
)

// Person names someone at an identity provider.
type Person struct {
	Issuer  string `json:"iss"`
	Subject string `json:"sub"`
}

// Statement is what a customer approver signs for one access request.
// Times have a precision of one second.
type Statement struct {
	Request    string
	Deployment string
	Agent      string
	Engineer   Person
	Scopes     []string // any order; the canonical form sorts them
	NotBefore  time.Time
	NotAfter   time.Time
	Decision   string // Approve or Deny
}

// statementJSON is the canonical form: these fields, in this order, no
// whitespace, no HTML escaping, times in RFC 3339 UTC seconds.
type statementJSON struct {
	V          string   `json:"v"`
	Request    string   `json:"request"`
	Deployment string   `json:"deployment"`
	Agent      string   `json:"agent"`
	Engineer   Person   `json:"engineer"`
	Scopes     []string `json:"scopes"`
	NotBefore  string   `json:"not_before"`
	NotAfter   string   `json:"not_after"`
	Decision   string   `json:"decision"`
}

// StatementFor is the statement an approval of grant g must have signed:
// rebuilt from the grant's own claims, so that a grant differing in any
// term from what was approved matches no proof.
func StatementFor(g grant.Grant) Statement {
	return Statement{
		Request: g.RequestID, Deployment: g.Deployment, Agent: g.Agent,
		Engineer: Person{Issuer: g.EngineerIssuer, Subject: g.EngineerSubject},
		Scopes:   g.Scopes, NotBefore: g.NotBefore, NotAfter: g.Expiry, Decision: Approve,
	}
}

// Validate reports the first problem with s's shape.
func (s Statement) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"request", s.Request}, {"deployment", s.Deployment}, {"agent", s.Agent},
		{"engineer issuer", s.Engineer.Issuer}, {"engineer subject", s.Engineer.Subject},
	} {
		if err := checkField(f.name, f.v); err != nil {
			return err
		}
	}
	if err := checkScopes(s.Scopes); err != nil {
		return err
	}
	if s.NotBefore.IsZero() || s.NotAfter.IsZero() || !s.NotAfter.After(s.NotBefore) {
		return errors.New("the window needs a start before its end")
	}
	if s.NotAfter.Sub(s.NotBefore) > grant.MaxLifetime {
		return fmt.Errorf("the window is longer than a grant may be (%s)", grant.MaxLifetime)
	}
	if s.Decision != Approve && s.Decision != Deny {
		return fmt.Errorf("decision %q: want %s or %s", clip(s.Decision), Approve, Deny)
	}
	return nil
}

// Canonical is the one serialization of s whose digest is signed.
func (s Statement) Canonical() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("approval statement: %w", err)
	}
	return marshal(statementJSON{
		V: StatementVersion, Request: s.Request, Deployment: s.Deployment, Agent: s.Agent,
		Engineer: s.Engineer, Scopes: sorted(s.Scopes),
		NotBefore: stamp(s.NotBefore), NotAfter: stamp(s.NotAfter), Decision: s.Decision,
	})
}

// Digest is the nonce an approver's ID token must carry: the unpadded
// base64url SHA-256 of the canonical statement.
func (s Statement) Digest() (string, error) {
	b, err := s.Canonical()
	if err != nil {
		return "", err
	}
	return Digest(b), nil
}

// Digest is the unpadded base64url SHA-256 of b.
func Digest(b []byte) string {
	h := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// ParseStatement reads a canonical statement and refuses anything that
// is not exactly its canonical form, so that one statement has one
// digest.
func ParseStatement(b []byte) (Statement, error) {
	var j statementJSON
	if err := strict(b, &j); err != nil {
		return Statement{}, fmt.Errorf("approval statement: %w", err)
	}
	if j.V != StatementVersion {
		return Statement{}, fmt.Errorf("approval statement: version %q, want %q", clip(j.V), StatementVersion)
	}
	nbf, err1 := parseStamp(j.NotBefore)
	naf, err2 := parseStamp(j.NotAfter)
	if err := errors.Join(err1, err2); err != nil {
		return Statement{}, fmt.Errorf("approval statement: %w", err)
	}
	s := Statement{Request: j.Request, Deployment: j.Deployment, Agent: j.Agent, Engineer: j.Engineer,
		Scopes: j.Scopes, NotBefore: nbf, NotAfter: naf, Decision: j.Decision}
	c, err := s.Canonical()
	if err != nil {
		return Statement{}, err
	}
	if !bytes.Equal(c, b) {
		return Statement{}, errors.New("approval statement: not in canonical form (fields in order, scopes sorted, no whitespace)")
	}
	return s, nil
}

// Window is a span of time, start included, end excluded.
type Window struct {
	Start time.Time
	End   time.Time
}

// Contains reports whether [from, to) lies within w.
func (w Window) Contains(from, to time.Time) bool {
	return !from.Before(w.Start) && !to.After(w.End)
}

// Permit is a customer's standing authorization: within its windows,
// requests for its deployment and scopes (by engineers of its group, if
// it names one) are granted without a per-request approval, for at most
// MaxGrant each.
type Permit struct {
	ID            string
	Deployment    string
	Scopes        []string
	Windows       []Window
	EngineerGroup string // optional; the broker checks it (the agent cannot)
	MaxGrant      time.Duration
}

type permitJSON struct {
	V             string       `json:"v"`
	Permit        string       `json:"permit"`
	Deployment    string       `json:"deployment"`
	Scopes        []string     `json:"scopes"`
	Windows       []windowJSON `json:"windows"`
	EngineerGroup string       `json:"engineer_group"`
	MaxGrant      int64        `json:"max_grant_seconds"`
}

type windowJSON struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Validate reports the first problem with p's shape.
func (p Permit) Validate() error {
	if err := checkField("permit ID", p.ID); err != nil {
		return err
	}
	if err := checkField("deployment", p.Deployment); err != nil {
		return err
	}
	if p.EngineerGroup != "" {
		if err := checkField("engineer group", p.EngineerGroup); err != nil {
			return err
		}
	}
	if err := checkScopes(p.Scopes); err != nil {
		return err
	}
	if len(p.Windows) == 0 || len(p.Windows) > MaxPermitWindows {
		return fmt.Errorf("%d windows: a permit has 1 or %d", len(p.Windows), MaxPermitWindows)
	}
	for i, w := range p.Windows {
		if w.Start.IsZero() || !w.End.After(w.Start) {
			return fmt.Errorf("window %d needs a start before its end", i+1)
		}
		if w.End.Sub(w.Start) > MaxPermitWindow {
			return fmt.Errorf("window %d lasts %s, over the %d-day limit", i+1, w.End.Sub(w.Start).Round(time.Hour), MaxPermitWindow/(24*time.Hour))
		}
	}
	if p.MaxGrant < time.Minute || p.MaxGrant > grant.MaxLifetime || p.MaxGrant%time.Second != 0 {
		return fmt.Errorf("max grant %s: want whole seconds from 1m to %s", p.MaxGrant, grant.MaxLifetime)
	}
	return nil
}

// Canonical is the one serialization of p whose digest is signed.
func (p Permit) Canonical() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("permit: %w", err)
	}
	j := permitJSON{V: PermitVersion, Permit: p.ID, Deployment: p.Deployment, Scopes: sorted(p.Scopes),
		EngineerGroup: p.EngineerGroup, MaxGrant: int64(p.MaxGrant / time.Second)}
	for _, w := range p.Windows {
		j.Windows = append(j.Windows, windowJSON{Start: stamp(w.Start), End: stamp(w.End)})
	}
	return marshal(j)
}

// Digest is the nonce a permit's proofs carry.
func (p Permit) Digest() (string, error) {
	b, err := p.Canonical()
	if err != nil {
		return "", err
	}
	return Digest(b), nil
}

// ParsePermit reads a canonical permit, refusing any other form.
func ParsePermit(b []byte) (Permit, error) {
	var j permitJSON
	if err := strict(b, &j); err != nil {
		return Permit{}, fmt.Errorf("permit: %w", err)
	}
	if j.V != PermitVersion {
		return Permit{}, fmt.Errorf("permit: version %q, want %q", clip(j.V), PermitVersion)
	}
	p := Permit{ID: j.Permit, Deployment: j.Deployment, Scopes: j.Scopes, EngineerGroup: j.EngineerGroup,
		MaxGrant: time.Duration(j.MaxGrant) * time.Second}
	for _, w := range j.Windows {
		s, err1 := parseStamp(w.Start)
		e, err2 := parseStamp(w.End)
		if err := errors.Join(err1, err2); err != nil {
			return Permit{}, fmt.Errorf("permit: %w", err)
		}
		p.Windows = append(p.Windows, Window{Start: s, End: e})
	}
	c, err := p.Canonical()
	if err != nil {
		return Permit{}, err
	}
	if !bytes.Equal(c, b) {
		return Permit{}, errors.New("permit: not in canonical form (fields in order, scopes sorted, no whitespace)")
	}
	return p, nil
}

// Covers says why p does not cover grant g, or nil when it does: g must
// be for p's deployment, within p's scopes, inside one of p's windows and
// no longer than p allows.
func (p Permit) Covers(g grant.Grant) error {
	if g.Deployment != p.Deployment {
		return fmt.Errorf("permit %s is for deployment %s, the grant for %s", p.ID, p.Deployment, g.Deployment)
	}
	for _, s := range g.Scopes {
		if !slices.Contains(p.Scopes, s) {
			return fmt.Errorf("permit %s covers %s, not %s", p.ID, strings.Join(p.Scopes, ", "), s)
		}
	}
	if d := g.Expiry.Sub(g.NotBefore); d > p.MaxGrant {
		return fmt.Errorf("the grant lasts %s, permit %s allows at most %s", d, p.ID, p.MaxGrant)
	}
	if !slices.ContainsFunc(p.Windows, func(w Window) bool { return w.Contains(g.NotBefore, g.Expiry) }) {
		return fmt.Errorf("the grant's window %s to %s is outside permit %s's windows", stamp(g.NotBefore), stamp(g.Expiry), p.ID)
	}
	return nil
}

func checkField(name, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("no %s", name)
	case len(v) > maxField:
		return fmt.Errorf("%s is longer than %d bytes", name, maxField)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s holds a control character", name)
		}
	}
	return nil
}

func checkScopes(scopes []string) error {
	if len(scopes) == 0 {
		return errors.New("no scopes")
	}
	known := registry.Scopes()
	for i, s := range scopes {
		if !slices.Contains(known, s) {
			return fmt.Errorf("unknown scope %q: want one of %s", clip(s), strings.Join(known, ", "))
		}
		if slices.Contains(scopes[:i], s) {
			return fmt.Errorf("scope %q is given twice", s)
		}
	}
	return nil
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func parseStamp(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 in UTC, whole seconds", clip(s))
	}
	return t.UTC(), nil
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// strict decodes one JSON object with no unknown fields and nothing after.
func strict(b []byte, v any) error {
	if len(b) > 16<<10 {
		return fmt.Errorf("%d bytes, over the 16 KiB limit", len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// clip bounds untrusted text echoed in errors.
func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
