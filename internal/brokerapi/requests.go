package brokerapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether/internal/protocol"
)

// Access request states, as [AccessRequest.State].
const (
	StatePending   = "pending"
	StateApproved  = "approved"
	StateActive    = "active"
	StateExpired   = "expired"
	StateRevoked   = "revoked"
	StateDenied    = "denied"
	StateCancelled = "cancelled"
	StateTimedOut  = "timed_out"
)

// CreateAccessRequest is the body of POST /api/v1/requests.
type CreateAccessRequest struct {
	Deployment string   `json:"deployment"` // TENANT/NAME
	Scopes     []string `json:"scopes"`
	Duration   string   `json:"duration"` // e.g. "30m"
	Reason     string   `json:"reason"`
	Ticket     string   `json:"ticket,omitempty"` // owner/repo#N
	BreakGlass bool     `json:"break_glass,omitempty"`
	// Network is the change a network:peering request asks for; the
	// approvers approve exactly this.
	Network *PeeringSpec `json:"network,omitempty"`
}

// PeeringSpec is the peer side of a network change. Its account, VPC,
// role and route tables must be registered to the deployment's tenant
// ([NetworkRegistration]); the broker holds the role's external ID.
type PeeringSpec struct {
	Kind          string   `json:"kind"` // "peering" or "ingress"
	AccountID     string   `json:"account_id"`
	Region        string   `json:"region"`
	VPCID         string   `json:"vpc_id"`
	RoleARN       string   `json:"role_arn"`
	RouteTableIDs []string `json:"route_table_ids,omitempty"`
	// OutsideWindow asks to make the change outside the deployment's
	// maintenance windows.
	OutsideWindow bool `json:"outside_window,omitempty"`
}

// NetworkConfig is where a deployment's BYOC VPC is and how Tether
// reaches its account. The account, VPC and role must be registered to
// the deployment's tenant ([NetworkRegistration]); the broker holds the
// role's external ID.
type NetworkConfig struct {
	AccountID       string            `json:"account_id"`
	Region          string            `json:"region"`
	VPCID           string            `json:"vpc_id"`
	RoleARN         string            `json:"role_arn"`
	RouteTableIDs   []string          `json:"route_table_ids,omitempty"`
	LBTags          map[string]string `json:"lb_tags,omitempty"`
	PrivateHostname string            `json:"private_hostname,omitempty"`
}

// RequiredReview is one kind of review a request needs.
type RequiredReview struct {
	Tenant string `json:"tenant,omitempty"`
	Role   string `json:"role"` // "approver" (of Tenant) or "internal" (vendor reviewer or admin)
	Count  int    `json:"count"`
}

// Decision is the policy's decision on a request.
type Decision struct {
	Allow           bool             `json:"allow"`
	Reasons         []string         `json:"reasons"`
	RequiredReviews []RequiredReview `json:"required_reviews"`
	MaxDuration     string           `json:"max_duration"`
	Scopes          []string         `json:"scopes"`
	PolicyHash      string           `json:"policy_hash"`
}

// Review is one reviewer's verdict.
type Review struct {
	Reviewer string    `json:"reviewer"` // email, or subject
	Tenant   string    `json:"tenant,omitempty"`
	Role     string    `json:"role"`
	Approve  bool      `json:"approve"`
	Comment  string    `json:"comment,omitempty"`
	At       time.Time `json:"at"`
}

// Grant is the live part of an approved request (never the token).
type Grant struct {
	ID        string    `json:"id"`
	Scopes    []string  `json:"scopes"`
	NotBefore time.Time `json:"not_before"`
	Expiry    time.Time `json:"expiry"`
}

// AccessRequest is a request as the API shows it.
type AccessRequest struct {
	ID           string               `json:"id"`
	Deployment   string               `json:"deployment"` // TENANT/NAME
	DeploymentID string               `json:"deployment_id"`
	Tenant       string               `json:"tenant"`
	Requester    string               `json:"requester"`
	Scopes       []string             `json:"scopes"`
	Duration     string               `json:"duration"`
	Reason       string               `json:"reason"`
	Ticket       string               `json:"ticket,omitempty"`
	BreakGlass   bool                 `json:"break_glass,omitempty"`
	Network      *PeeringSpec         `json:"network,omitempty"`
	NetworkPlan  *ApprovedNetworkPlan `json:"network_plan,omitempty"`
	State        string               `json:"state"`
	Decision     Decision             `json:"decision"`
	Reviews      []Review             `json:"reviews,omitempty"`
	Waiting      []string             `json:"waiting,omitempty"` // what a pending request still needs, in words
	Grant        *Grant               `json:"grant,omitempty"`
	PendingUntil time.Time            `json:"pending_until"`
	CreatedAt    time.Time            `json:"created_at"`
	UpdatedAt    time.Time            `json:"updated_at"`
	EndedAt      time.Time            `json:"ended_at,omitzero"`
	EndedBy      string               `json:"ended_by,omitempty"`
	EndReason    string               `json:"end_reason,omitempty"`
	Version      int64                `json:"version"`
}

// ListAccessRequests is the body of GET /api/v1/requests.
type ListAccessRequests struct {
	Requests []AccessRequest `json:"requests"`
}

// ReviewBody is the body of approve and deny.
type ReviewBody struct {
	Comment string `json:"comment,omitempty"`
	// PlanDigest, when set, is the network plan digest the reviewer was
	// shown; the review is refused if the request's differs.
	PlanDigest string `json:"plan_digest,omitempty"`
	// Statement is the approval statement a customer approver signed (as
	// [ApprovalStatement.Statement] gave it) and Proof the ID token of
	// their identity provider whose nonce is its digest.
	Statement string `json:"statement,omitempty"`
	Proof     string `json:"proof,omitempty"`
}

// ApprovalStatementBody asks for the statement a customer approver signs;
// an approver may shorten the window and drop scopes.
type ApprovalStatementBody struct {
	Duration string   `json:"duration,omitempty"` // a Go duration; empty: as asked
	Scopes   []string `json:"scopes,omitempty"`   // empty: all the request may have
}

// ApprovalStatement is what a customer approver is asked to sign: the
// canonical statement, its digest (the nonce of the signing ceremony) and
// where to sign it.
type ApprovalStatement struct {
	Statement string    `json:"statement"`
	Digest    string    `json:"digest"`
	Issuer    string    `json:"issuer"`    // the approver's identity provider
	ClientID  string    `json:"client_id"` // the public client the ceremony uses there
	Scopes    []string  `json:"scopes"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Agent     string    `json:"agent"`
	// Unsigned, when set, says why this request's approval is not signed
	// (the other fields are then empty).
	Unsigned string `json:"unsigned,omitempty"`
}

// RevokeBody is the body of revoke.
type RevokeBody struct {
	Reason string `json:"reason"`
}

// DeploymentSettings are a deployment's settings as its view shows them,
// and the body of PUT /api/v1/deployments/{tenant}/{name}/settings, which
// sets the vendor's: labels and network.
type DeploymentSettings struct {
	Labels map[string]string `json:"labels,omitempty"`
	// ApprovalMode is never set in a view. The vendor-set approval mode
	// was removed: a PUT may leave it out or send "customer" (as an older
	// client does, changing nothing); the broker refuses any other value
	// with invalid_approval_mode. A customer who wants requests granted
	// without a per-request approval has its approvers sign a standing
	// permit.
	ApprovalMode string `json:"approval_mode,omitempty"`
	// FreezeWindows and MaintenanceWindows are the customer's
	// ([CustomerSettings]): the vendor's PUT leaves them out, and refuses
	// them if they differ from the stored ones.
	FreezeWindows      []Window       `json:"freeze_windows,omitempty"`
	MaintenanceWindows []Window       `json:"maintenance_windows,omitempty"`
	Network            *NetworkConfig `json:"network,omitempty"`
}

// Window is a span of time [Start, End).
type Window struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Reason string    `json:"reason,omitempty"`
}

// RequestQuery selects requests for [Client.ListRequests].
type RequestQuery struct {
	State      string // one state, or empty
	Mine       bool   // only the caller's own
	Deployment string // TENANT/NAME, or empty
}

// CreateRequest asks for access.
func (c *Client) CreateRequest(ctx context.Context, r CreateAccessRequest) (AccessRequest, error) {
	var out AccessRequest
	err := c.do(ctx, http.MethodPost, "/api/v1/requests", r, &out)
	return out, err
}

// ListRequests lists the requests the caller may see.
func (c *Client) ListRequests(ctx context.Context, q RequestQuery) ([]AccessRequest, error) {
	v := url.Values{}
	if q.State != "" {
		v.Set("state", q.State)
	}
	if q.Mine {
		v.Set("mine", "true")
	}
	if q.Deployment != "" {
		v.Set("deployment", q.Deployment)
	}
	path := "/api/v1/requests"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var out ListAccessRequests
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out.Requests, err
}

// GetRequest returns one request.
func (c *Client) GetRequest(ctx context.Context, id string) (AccessRequest, error) {
	var out AccessRequest
	err := c.do(ctx, http.MethodGet, "/api/v1/requests/"+url.PathEscape(id), nil, &out)
	return out, err
}

// WaitRequest returns the request once its version differs from
// version, or after about wait (at most 60s) with it unchanged.
func (c *Client) WaitRequest(ctx context.Context, id string, version int64, wait time.Duration) (AccessRequest, error) {
	var out AccessRequest
	path := fmt.Sprintf("/api/v1/requests/%s?version=%d&wait=%s", url.PathEscape(id), version, wait)
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

func (c *Client) requestAction(ctx context.Context, id, action string, body any) (AccessRequest, error) {
	var out AccessRequest
	err := c.do(ctx, http.MethodPost, "/api/v1/requests/"+url.PathEscape(id)+"/"+action, body, &out)
	return out, err
}

// A Signer signs an approval statement at the approver's identity
// provider (the signing ceremony) and returns the proof: an ID token
// whose nonce is st.Digest.
type Signer func(ctx context.Context, st ApprovalStatement) (proof string, err error)

// SetSigner makes [Client.Approve] sign the approval statement with s, as
// a customer approver's approval must be.
func (c *Client) SetSigner(s Signer) { c.signer = s }

// ApprovalStatementFor asks for the statement to sign to approve request
// id; body may narrow it.
func (c *Client) ApprovalStatementFor(ctx context.Context, id string, body ApprovalStatementBody) (ApprovalStatement, error) {
	var out ApprovalStatement
	err := c.do(ctx, http.MethodPost, "/api/v1/requests/"+url.PathEscape(id)+"/approval-statement", body, &out)
	return out, err
}

// Approve approves a request as the caller; a client with a [Signer]
// signs the approval statement first.
func (c *Client) Approve(ctx context.Context, id, comment string) (AccessRequest, error) {
	return c.ApproveWith(ctx, id, comment, ApprovalStatementBody{})
}

// ApproveWith approves a request, narrowed as narrow says (a narrowed
// approval needs a [Signer]).
func (c *Client) ApproveWith(ctx context.Context, id, comment string, narrow ApprovalStatementBody) (AccessRequest, error) {
	body := ReviewBody{Comment: comment}
	if c.signer != nil {
		st, err := c.ApprovalStatementFor(ctx, id, narrow)
		if err != nil {
			return AccessRequest{}, err
		}
		if st.Unsigned == "" {
			if body.Proof, err = c.signer(ctx, st); err != nil {
				return AccessRequest{}, fmt.Errorf("sign the approval at %s: %w", st.Issuer, err)
			}
			body.Statement = st.Statement
		}
	}
	return c.requestAction(ctx, id, "approve", body)
}

// Deny denies a request as the caller; comment is required.
func (c *Client) Deny(ctx context.Context, id, comment string) (AccessRequest, error) {
	return c.requestAction(ctx, id, "deny", ReviewBody{Comment: comment})
}

// Cancel withdraws the caller's own pending request.
func (c *Client) Cancel(ctx context.Context, id string) (AccessRequest, error) {
	return c.requestAction(ctx, id, "cancel", struct{}{})
}

// Revoke ends an approved or active request at once.
func (c *Client) Revoke(ctx context.Context, id, reason string) (AccessRequest, error) {
	return c.requestAction(ctx, id, "revoke", RevokeBody{Reason: reason})
}

// SetDeploymentSettings replaces a deployment's vendor settings (labels,
// network). Leave FreezeWindows and MaintenanceWindows nil:
// they are the customer's ([Client.SetCustomerSettings]), and the broker
// refuses a change to them here.
func (c *Client) SetDeploymentSettings(ctx context.Context, ref string, s DeploymentSettings) (Deployment, error) {
	var out Deployment
	err := c.do(ctx, http.MethodPut, refPath(ref)+"/settings", s, &out)
	return out, err
}

// QueryClickHouse runs sql on a deployment under the caller's active
// grant and returns the streamed answer (the caller closes it). format,
// when not empty, is the ClickHouse output format for SQL that names none.
func (c *Client) QueryClickHouse(ctx context.Context, deployment, sql, format string) (io.ReadCloser, error) {
	body := map[string]string{"sql": sql}
	if format != "" {
		body["format"] = format
	}
	return c.dataCall(ctx, http.MethodPost, refPath(deployment)+"/clickhouse/query", body, nil)
}

// Prometheus calls a Prometheus read API path (such as "api/v1/query")
// with params on a deployment under the caller's active grant.
func (c *Client) Prometheus(ctx context.Context, deployment, path string, params url.Values) (io.ReadCloser, error) {
	return c.dataCall(ctx, http.MethodGet, refPath(deployment)+"/prometheus/"+path+"?"+params.Encode(), nil, nil)
}

// DataPlane forwards a raw data-plane call (for the local proxies): the
// method, a path below the deployment (such as "clickhouse/query" or
// "prometheus/api/v1/query_range?…") and a body.
func (c *Client) DataPlane(ctx context.Context, method, deployment, path string, body io.Reader, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+refPath(deployment)+"/"+path, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.hc
	hc.Timeout = 0 // results stream for as long as the grant allows
	return doCompressed(&hc, req)
}

// doCompressed sends a data-plane call accepting zstd — the broker then
// passes the agent's compressed answer on as it came, and the engineer's
// link carries several times fewer bytes — and returns the answer with
// its body decompressed, as net/http does for gzip. A caller that set
// Accept-Encoding itself gets the answer as it came.
func doCompressed(hc *http.Client, req *http.Request) (*http.Response, error) {
	if req.Header.Get("Accept-Encoding") != "" {
		return hc.Do(req)
	}
	req.Header.Set("Accept-Encoding", protocol.EncodingZstd)
	res, err := hc.Do(req)
	if err != nil || res.Header.Get("Content-Encoding") != protocol.EncodingZstd {
		return res, err
	}
	dec, err := zstd.NewReader(res.Body, protocol.ZstdDecoderOptions()...)
	if err != nil {
		res.Body.Close()
		return nil, fmt.Errorf("the broker's compressed answer: %w", err)
	}
	res.Body = &decodedBody{dec: dec, raw: res.Body}
	res.Header.Del("Content-Encoding")
	res.Header.Del("Content-Length")
	res.ContentLength = -1
	res.Uncompressed = true
	return res, nil
}

// decodedBody is an answer's body decompressed. At the end of the
// compressed stream it reads the wire to its end, so that the answer's
// trailer (whether the result is complete) arrives.
type decodedBody struct {
	dec *zstd.Decoder
	raw io.ReadCloser
}

func (d *decodedBody) Read(p []byte) (int, error) {
	n, err := d.dec.Read(p)
	if err == io.EOF {
		// Nothing but the trailer may follow the stream's end.
		var one [1]byte
		if k, rerr := d.raw.Read(one[:]); k > 0 {
			return n, errors.New("the broker's answer goes on after its compressed stream ends")
		} else if rerr != nil && rerr != io.EOF {
			return n, rerr
		}
	}
	return n, err
}

func (d *decodedBody) Close() error {
	d.dec.Close()
	return d.raw.Close()
}

func (c *Client) dataCall(ctx context.Context, method, path string, in any, header http.Header) (io.ReadCloser, error) {
	var body io.Reader
	if in != nil {
		b, err := jsonBody(in)
		if err != nil {
			return nil, err
		}
		body = b
		if header == nil {
			header = http.Header{}
		}
		header.Set("Content-Type", "application/json")
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.hc
	hc.Timeout = 0
	res, err := doCompressed(&hc, req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the broker API at %s: %v", c.base, err)
	}
	if res.StatusCode >= 300 {
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, MaxBody))
		return nil, responseError(res, b)
	}
	return res.Body, nil
}

// Token is the bearer token the client sends (for a long-running proxy
// that refreshes it).
func (c *Client) Token() string { return c.token }

func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

// NetworkStep is one resource a network change creates, changes or
// deletes ("none": already as wanted).
type NetworkStep struct {
	Action   string `json:"action"`
	Resource string `json:"resource"`
	Account  string `json:"account,omitempty"`
	ID       string `json:"id,omitempty"`
}

// NetworkPlan is what a network change would do, or did.
type NetworkPlan struct {
	Steps    []NetworkStep `json:"steps"`
	Warnings []string      `json:"warnings,omitempty"`
}

// NetworkItem is one piece of a network change and its state: "ok",
// "missing" or "drifted".
type NetworkItem struct {
	Resource string `json:"resource"`
	ID       string `json:"id,omitempty"`
	State    string `json:"state"`
	Detail   string `json:"detail,omitempty"`
}

// NetworkStatus is the state of a network change's pieces.
type NetworkStatus struct {
	Items []NetworkItem `json:"items"`
}

// PlanNetwork plans a network change on a deployment without making it.
func (c *Client) PlanNetwork(ctx context.Context, deployment string, spec PeeringSpec) (NetworkPlan, error) {
	var out NetworkPlan
	err := c.do(ctx, http.MethodPost, refPath(deployment)+"/network/plan", spec, &out)
	return out, err
}

// ApplyNetwork carries out an approved network change request.
func (c *Client) ApplyNetwork(ctx context.Context, requestID string) (NetworkPlan, error) {
	var out NetworkPlan
	err := c.do(ctx, http.MethodPost, "/api/v1/requests/"+url.PathEscape(requestID)+"/network/apply", struct{}{}, &out)
	return out, err
}

// TeardownNetwork removes what Tether created for a network change.
func (c *Client) TeardownNetwork(ctx context.Context, requestID string) (NetworkPlan, error) {
	var out NetworkPlan
	err := c.do(ctx, http.MethodPost, "/api/v1/requests/"+url.PathEscape(requestID)+"/network/teardown", struct{}{}, &out)
	return out, err
}

// NetworkStatus checks each piece of a network change.
func (c *Client) NetworkStatus(ctx context.Context, requestID string) (NetworkStatus, error) {
	var out NetworkStatus
	err := c.do(ctx, http.MethodGet, "/api/v1/requests/"+url.PathEscape(requestID)+"/network/status", nil, &out)
	return out, err
}
