package brokerapi

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// PermitWindow is one window of a standing permit.
type PermitWindow struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// PermitStatementBody asks for the permit a customer approver signs: a
// new one from its terms, or an existing one (ID) to co-sign.
type PermitStatementBody struct {
	ID            string         `json:"id,omitempty"`
	Scopes        []string       `json:"scopes,omitempty"`
	Windows       []PermitWindow `json:"windows,omitempty"`
	EngineerGroup string         `json:"engineer_group,omitempty"`
	MaxGrant      string         `json:"max_grant,omitempty"` // a Go duration
}

// PermitStatement is a permit to sign: its canonical text, its digest
// (the nonce of the signing ceremony) and where to sign it.
type PermitStatement struct {
	ID       string `json:"id"`
	Permit   string `json:"permit"`
	Digest   string `json:"digest"`
	Issuer   string `json:"issuer"`
	ClientID string `json:"client_id"`
}

// SignPermitBody is a signed permit: the canonical text and the proof.
type SignPermitBody struct {
	Permit string `json:"permit"`
	Proof  string `json:"proof"`
}

// Permit is a standing permit as the API shows it.
type Permit struct {
	ID            string         `json:"id"`
	Scopes        []string       `json:"scopes"`
	Windows       []PermitWindow `json:"windows"`
	EngineerGroup string         `json:"engineer_group,omitempty"`
	MaxGrant      string         `json:"max_grant"`
	Signers       []string       `json:"signers"`
	Digest        string         `json:"digest"`
	CreatedAt     time.Time      `json:"created_at"`
	RevokedAt     *time.Time     `json:"revoked_at,omitempty"`
	RevokedBy     string         `json:"revoked_by,omitempty"`
}

func permitsPath(ref string) string { return refPath(ref) + "/permits" }

// Permits lists a deployment's standing permits.
func (c *Client) Permits(ctx context.Context, ref string) ([]Permit, error) {
	var out []Permit
	err := c.do(ctx, http.MethodGet, permitsPath(ref), nil, &out)
	return out, err
}

// PermitStatementFor asks for the permit to sign.
func (c *Client) PermitStatementFor(ctx context.Context, ref string, body PermitStatementBody) (PermitStatement, error) {
	var out PermitStatement
	err := c.do(ctx, http.MethodPost, permitsPath(ref)+"/statement", body, &out)
	return out, err
}

// SignPermit sends a signed permit: a new one, or a co-signature.
func (c *Client) SignPermit(ctx context.Context, ref string, body SignPermitBody) (Permit, error) {
	var out Permit
	err := c.do(ctx, http.MethodPost, permitsPath(ref), body, &out)
	return out, err
}

// RevokePermit revokes a standing permit.
func (c *Client) RevokePermit(ctx context.Context, ref, id string) (Permit, error) {
	var out Permit
	err := c.do(ctx, http.MethodDelete, permitsPath(ref)+"/"+url.PathEscape(id), nil, &out)
	return out, err
}
