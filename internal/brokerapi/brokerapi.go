// Package brokerapi is the broker's HTTP JSON API as its clients see it: the
// request and response types, and a [Client] the CLI uses.
package brokerapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/config"
)

// ErrorEnvelope is the JSON error body of the broker's API. An agent
// answers its refusals in the same envelope, which the broker passes on to
// the engineer unchanged.
type ErrorEnvelope struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody says what went wrong: Code is stable for programs, Message is
// for people.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// MaxBody bounds request and response bodies of the API.
const MaxBody = 1 << 20

// Agent status values of [Deployment.AgentStatus].
const (
	StatusUnpaired = "unpaired" // no agent has paired yet
	StatusOnline   = "online"   // a heartbeat arrived within three intervals
	StatusOffline  = "offline"  // three or more heartbeats were missed
)

// CreateDeploymentRequest is the body of POST /api/v1/deployments.
type CreateDeploymentRequest struct {
	Tenant string `json:"tenant"`
	Name   string `json:"name"`
	Region string `json:"region,omitempty"`
}

// CreateDeploymentResponse carries the new deployment and its one-time
// pairing token, which is shown only here.
type CreateDeploymentResponse struct {
	Deployment Deployment   `json:"deployment"`
	Pairing    PairingToken `json:"pairing"`
}

// PairingToken is a one-time pairing token and when it expires.
type PairingToken struct {
	DeploymentID string    `json:"deployment_id"`
	Token        string    `json:"token"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// Deployment is a deployment with the state of its agent.
type Deployment struct {
	ID          string             `json:"id"`
	Tenant      string             `json:"tenant"`
	Name        string             `json:"name"`
	Region      string             `json:"region,omitempty"`
	CreatedAt   time.Time          `json:"created_at"`
	AgentStatus string             `json:"agent_status"`
	Agent       *Agent             `json:"agent,omitempty"`
	Settings    DeploymentSettings `json:"settings"`
}

// Agent is a paired agent as last seen.
type Agent struct {
	ID        string            `json:"id"`
	Node      string            `json:"node"`
	NodeID    string            `json:"node_id"`
	PairedAt  time.Time         `json:"paired_at"`
	LastSeen  *time.Time        `json:"last_seen,omitempty"`
	Version   string            `json:"version,omitempty"`
	Uptime    string            `json:"uptime,omitempty"`
	TailnetIP string            `json:"tailnet_ip,omitempty"`
	Upstreams map[string]string `json:"upstreams,omitempty"`
	// WitnessRefusal, when set, is why the agent refuses every data-plane
	// call: as the customer's witness it found the broker's audit log
	// smaller than, or forking from, the one it cosigned ("log
	// rewritten: …").
	WitnessRefusal string `json:"witness_refusal,omitempty"`
	// Approval is the customer's approval authority the agent reports it
	// enforces, as of its last heartbeat; nil when it enforces none.
	Approval *AgentApproval `json:"approval,omitempty"`
	// CustomerApproval says it for people (see [DescribeApproval]),
	// once the agent has sent a heartbeat.
	CustomerApproval string `json:"customer_approval,omitempty"`
	// Clock is how far the agent's clock was from the broker's at its
	// last heartbeat; nil until measured.
	Clock *AgentClock `json:"clock,omitempty"`
}

// AgentClock is how far an agent's clock is from the broker's, measured
// at every heartbeat: NTP-style by the agent from its previous heartbeat's
// exchange, or, on its first heartbeat, one way by the broker.
type AgentClock struct {
	// AheadSeconds is the agent's clock minus the broker's: negative when
	// the agent's clock is behind.
	AheadSeconds float64 `json:"ahead_seconds"`
	// UncertaintySeconds bounds the error of AheadSeconds: half the
	// round trip of the exchange that measured it. Zero with OneWay.
	UncertaintySeconds float64 `json:"uncertainty_seconds"`
	// OneWay marks the broker's estimate from the agent's send time
	// alone, short by the network's one-way delay.
	OneWay bool `json:"one_way,omitempty"`
	// Status is ClockOK, ClockWarn or ClockRefused.
	Status string `json:"status"`
	// Summary says it for people: "agent 2.4 s ahead of the broker
	// (±3 ms)".
	Summary string `json:"summary"`
	// Warning, with ClockWarn or ClockRefused, says what the skew breaks
	// and what to do.
	Warning string `json:"warning,omitempty"`
}

// Values of [AgentClock.Status].
const (
	// ClockOK: within the warning threshold (15 s).
	ClockOK = "ok"
	// ClockWarn: beyond the warning threshold, within the 60 s the agent
	// allows a signed call's time: fix the clock before calls fail.
	ClockWarn = "warn"
	// ClockRefused: beyond 60 s: the agent refuses the broker's queries
	// (it still takes revocations).
	ClockRefused = "refused"
)

// DescribeClock says for people how far an agent's clock is from the
// broker's, ahead seconds with uncertainty unc seconds (zero for a
// one-way estimate): "agent 2.4 s ahead of the broker (±3 ms)", or "agent
// in step with the broker (±300 µs)" when the offset is within its
// uncertainty.
func DescribeClock(ahead, unc float64, oneWay bool) string {
	if oneWay {
		return fmt.Sprintf("agent %s %s the broker (one-way estimate)", seconds(math.Abs(ahead)), aheadOf(ahead))
	}
	if math.Abs(ahead) <= unc {
		return fmt.Sprintf("agent in step with the broker (±%s)", seconds(unc))
	}
	return fmt.Sprintf("agent %s %s the broker (±%s)", seconds(math.Abs(ahead)), aheadOf(ahead), seconds(unc))
}

func aheadOf(ahead float64) string {
	if ahead < 0 {
		return "behind"
	}
	return "ahead of"
}

// seconds writes a non-negative number of seconds in a unit that suits
// it: "180 µs", "3 ms", "2.4 s", "5m0s".
func seconds(s float64) string {
	switch {
	case s >= 120:
		return time.Duration(s * float64(time.Second)).Round(time.Second).String()
	case s >= 10:
		return fmt.Sprintf("%.0f s", s)
	case s >= 1:
		return fmt.Sprintf("%.1f s", s)
	case s >= 0.001:
		return fmt.Sprintf("%.0f ms", s*1e3)
	}
	return fmt.Sprintf("%.0f µs", s*1e6)
}

// AgentApproval is the customer's approval authority an agent enforces:
// it serves a grant only when it carries approvals by Required distinct
// members of Group, signed by Issuer for Audience. BreakGlass is deny or
// allow. Enforced is false for an agent with no authority that only
// refuses break-glass grants.
type AgentApproval struct {
	Enforced   bool   `json:"enforced"`
	Issuer     string `json:"issuer,omitempty"`
	Audience   string `json:"audience,omitempty"`
	Group      string `json:"group,omitempty"`
	Required   int    `json:"required,omitempty"`
	BreakGlass string `json:"break_glass"`
}

// NotEnforced is how a deployment whose agent does not check the
// customer's approvals is shown.
const NotEnforced = "customer approval not enforced by the agent"

// DescribeApproval says for people what an agent enforces: "customer
// approval: enforced by the agent (issuer …, group …, 2 approvals;
// break-glass denied)", or NotEnforced.
func DescribeApproval(a *AgentApproval) string {
	switch {
	case a == nil:
		return NotEnforced
	case !a.Enforced && a.BreakGlass == "deny":
		return NotEnforced + "; break-glass denied"
	case !a.Enforced:
		return NotEnforced
	}
	n := "1 approval"
	if a.Required > 1 {
		n = strconv.Itoa(a.Required) + " approvals"
	}
	bg := "break-glass denied"
	if a.BreakGlass == "allow" {
		bg = "break-glass allowed"
	}
	return fmt.Sprintf("customer approval: enforced by the agent (issuer %s, group %s, %s; %s)", a.Issuer, a.Group, n, bg)
}

// ListDeploymentsResponse is the body of GET /api/v1/deployments.
type ListDeploymentsResponse struct {
	Deployments []Deployment `json:"deployments"`
}

// PingResponse reports round trips broker → agent → broker over the
// tailnet, each a signed call the agent verified.
type PingResponse struct {
	AgentID string   `json:"agent_id"`
	Version string   `json:"version"`
	RTTs    []string `json:"rtts"`
}

// BrokerInfo is the body of GET /api/v1/broker: what an operator needs to
// point an agent at this broker.
type BrokerInfo struct {
	Version     string `json:"version"`
	TailnetName string `json:"tailnet_name"`
	BrokerKey   string `json:"broker_key"`
	ControlURL  string `json:"control_url"`
}

// AuthConfig is the body of GET /api/v1/auth/config[?issuer=NAME] (no
// credentials needed): how 'broker login' signs in with the issuer named,
// or the vendor's. It names no other issuer.
type AuthConfig struct {
	Issuers []AuthIssuer `json:"issuers"`
	// Dev is true on a dev broker, whose embedded identity provider
	// logs in any of DevUsers without a password.
	Dev      bool      `json:"dev,omitempty"`
	DevUsers []DevUser `json:"dev_users,omitempty"`
}

// AuthIssuer is one identity provider the broker trusts.
type AuthIssuer struct {
	Name      string `json:"name"`
	IssuerURL string `json:"issuer_url"`
	// ClientID is the public client the CLI logs in as.
	ClientID string `json:"client_id"`
	// Tenant is empty for the vendor's identity provider.
	Tenant string   `json:"tenant,omitempty"`
	Scopes []string `json:"scopes"`
}

// DevUser is a user of a dev broker's embedded identity provider.
type DevUser struct {
	Email  string   `json:"email"`
	Issuer string   `json:"issuer"` // [AuthIssuer.Name]
	Roles  []string `json:"roles"`
	Tenant string   `json:"tenant,omitempty"`
}

// Whoami is the body of GET /api/v1/whoami: the caller as the broker
// sees it after verifying their token.
type Whoami struct {
	Subject     string    `json:"subject"`
	Email       string    `json:"email,omitempty"`
	Issuer      string    `json:"issuer"`      // issuer URL ("" for the dev bootstrap token)
	IssuerName  string    `json:"issuer_name"` // as configured
	Tenant      string    `json:"tenant,omitempty"`
	Roles       []string  `json:"roles"`
	Groups      []string  `json:"groups,omitempty"`
	GitHubLogin string    `json:"github_login,omitempty"`
	GitHubTeams []string  `json:"github_teams,omitempty"`
	GitHubError string    `json:"github_error,omitempty"` // why teams could not be looked up
	Expiry      time.Time `json:"expiry,omitzero"`
}

// AuthConfig fetches how to sign in with the broker's identity provider
// named issuer, or with the vendor's when issuer is empty; it needs no
// credentials. The broker lists no other issuer.
func (c *Client) AuthConfig(ctx context.Context, issuer string) (AuthConfig, error) {
	var out AuthConfig
	path := "/api/v1/auth/config"
	if issuer != "" {
		path += "?" + url.Values{"issuer": {issuer}}.Encode()
	}
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// Whoami returns the caller as the broker sees it.
func (c *Client) Whoami(ctx context.Context) (Whoami, error) {
	var out Whoami
	err := c.do(ctx, http.MethodGet, "/api/v1/whoami", nil, &out)
	return out, err
}

// Ticket is the body of GET /api/v1/tickets/{owner}/{repo}/{number}: a
// verified, open GitHub issue.
type Ticket struct {
	Ref       string    `json:"ref"` // owner/repo#N
	Title     string    `json:"title"`
	State     string    `json:"state"`
	URL       string    `json:"url"`
	Labels    []string  `json:"labels"`
	Assignees []string  `json:"assignees"`
	Author    string    `json:"author"`
	CreatedAt time.Time `json:"created_at"`
}

// Ticket verifies a ticket reference, owner/repo#N, at GitHub.
func (c *Client) Ticket(ctx context.Context, ref string) (Ticket, error) {
	owner, rest, ok1 := strings.Cut(ref, "/")
	repo, num, ok2 := strings.Cut(rest, "#")
	if !ok1 || !ok2 || owner == "" || repo == "" || num == "" {
		return Ticket{}, fmt.Errorf("ticket %q: want owner/repo#NUMBER, such as acme/incidents#42", ref)
	}
	var out Ticket
	err := c.do(ctx, http.MethodGet, "/api/v1/tickets/"+url.PathEscape(owner)+"/"+url.PathEscape(repo)+"/"+url.PathEscape(num), nil, &out)
	return out, err
}

// Error is an error the API answered with.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Client calls the broker API.
type Client struct {
	base   *url.URL
	token  string
	hc     *http.Client
	signer Signer
}

// NewClient returns a client for the API described by cfg.
func NewClient(cfg config.CLI) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var token string
	if cfg.Login != nil {
		token = cfg.Login.IDToken
	} else {
		var err error
		if token, err = config.Secret(cfg.Token); err != nil {
			return nil, err
		}
	}
	return newClient(cfg.APIURL, cfg.CAFile, token)
}

// NewAnonymousClient returns a client that sends no credentials, for the
// endpoints that need none (such as [Client.AuthConfig] before a login).
func NewAnonymousClient(apiURL, caFile string) (*Client, error) {
	if err := (config.CLI{APIURL: apiURL, Token: "-"}).Validate(); err != nil {
		return nil, err
	}
	return newClient(apiURL, caFile, "")
}

func newClient(apiURL, caFile, token string) (*Client, error) {
	base, _ := url.Parse(strings.TrimSuffix(apiURL, "/"))
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates found", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Client{base: base, token: token, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach the broker API at %s: %v (is 'broker serve' running, and is api_url in the CLI config right?)", c.base, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, MaxBody))
	if err != nil {
		return fmt.Errorf("read broker response: %w", err)
	}
	if res.StatusCode >= 300 {
		return responseError(res, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("broker response is not the JSON expected: %w", err)
	}
	return nil
}

// CreateDeployment creates a deployment and returns its pairing token.
func (c *Client) CreateDeployment(ctx context.Context, r CreateDeploymentRequest) (CreateDeploymentResponse, error) {
	var out CreateDeploymentResponse
	err := c.do(ctx, http.MethodPost, "/api/v1/deployments", r, &out)
	return out, err
}

// ListDeployments lists every deployment.
func (c *Client) ListDeployments(ctx context.Context) ([]Deployment, error) {
	var out ListDeploymentsResponse
	err := c.do(ctx, http.MethodGet, "/api/v1/deployments", nil, &out)
	return out.Deployments, err
}

// refPath turns a deployment reference, an ID or TENANT/NAME, into a path.
func refPath(ref string) string {
	if tenant, name, ok := strings.Cut(ref, "/"); ok {
		return "/api/v1/deployments/" + url.PathEscape(tenant) + "/" + url.PathEscape(name)
	}
	return "/api/v1/deployments/" + url.PathEscape(ref)
}

// GetDeployment returns one deployment by ID or TENANT/NAME.
func (c *Client) GetDeployment(ctx context.Context, ref string) (Deployment, error) {
	var out Deployment
	err := c.do(ctx, http.MethodGet, refPath(ref), nil, &out)
	return out, err
}

// NewPairingToken issues a new one-time pairing token for a deployment, to
// pair a replacement agent.
func (c *Client) NewPairingToken(ctx context.Context, ref string) (PairingToken, error) {
	var out PairingToken
	err := c.do(ctx, http.MethodPost, refPath(ref)+"/pairing-tokens", nil, &out)
	return out, err
}

// Ping asks the broker to call the deployment's agent count times.
func (c *Client) Ping(ctx context.Context, ref string, count int) (PingResponse, error) {
	var out PingResponse
	err := c.do(ctx, http.MethodPost, refPath(ref)+"/ping?count="+strconv.Itoa(count), nil, &out)
	return out, err
}

// Broker returns the broker's tailnet identity and key.
func (c *Client) Broker(ctx context.Context) (BrokerInfo, error) {
	var out BrokerInfo
	err := c.do(ctx, http.MethodGet, "/api/v1/broker", nil, &out)
	return out, err
}

// AuditEvent is one stored audit event and its index in the log.
type AuditEvent struct {
	Index uint64          `json:"index"`
	Event json.RawMessage `json:"event"`
}

// AuditEvents is the body of GET /api/v1/audit/events.
type AuditEvents struct {
	Events []AuditEvent `json:"events"`
}

// AuditCheckpoint is the latest signed checkpoint and who witnessed it.
type AuditCheckpoint struct {
	Size      uint64    `json:"size"`
	Root      string    `json:"root"`
	Time      time.Time `json:"time"`
	Note      string    `json:"note"`
	Witnesses []string  `json:"witnesses,omitempty"`
}

// InclusionProof proves one event is in the tree of a given size.
type InclusionProof struct {
	Index    uint64          `json:"index"`
	Size     uint64          `json:"size"`
	LeafHash string          `json:"leaf_hash"`
	Event    json.RawMessage `json:"event"`
	Proof    []string        `json:"proof"`
}

// ConsistencyProof proves the tree of size To extends the tree of size
// From.
type ConsistencyProof struct {
	From  uint64   `json:"from"`
	To    uint64   `json:"to"`
	Proof []string `json:"proof"`
}

// AuditPublicKey is the audit log's origin and its note verifier key.
type AuditPublicKey struct {
	Origin      string `json:"origin"`
	VerifierKey string `json:"verifier_key"`
}

// AuditQuery selects events for AuditSearch.
type AuditQuery struct {
	Actor, Deployment, Type, Grant, Request string
	Since, Until                            time.Time
	Limit                                   int
	// Tenant, when set, searches that tenant's own audit view (GET
	// /api/v1/tenants/{tenant}/audit/events): a customer approver's only
	// one.
	Tenant string
}

// AuditSearch searches the audit log.
func (c *Client) AuditSearch(ctx context.Context, q AuditQuery) ([]AuditEvent, error) {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("actor", q.Actor)
	set("deployment", q.Deployment)
	set("type", q.Type)
	set("grant", q.Grant)
	set("request", q.Request)
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	p := "/api/v1/audit/events?"
	if q.Tenant != "" {
		p = "/api/v1/tenants/" + url.PathEscape(q.Tenant) + "/audit/events?"
	}
	var out AuditEvents
	err := c.do(ctx, http.MethodGet, p+v.Encode(), nil, &out)
	return out.Events, err
}

// AuditCheckpoint returns the latest signed checkpoint.
func (c *Client) AuditCheckpoint(ctx context.Context) (AuditCheckpoint, error) {
	var out AuditCheckpoint
	err := c.do(ctx, http.MethodGet, "/api/v1/audit/checkpoint", nil, &out)
	return out, err
}

// AuditPublicKey returns the audit log's verifier key.
func (c *Client) AuditPublicKey(ctx context.Context) (AuditPublicKey, error) {
	var out AuditPublicKey
	err := c.do(ctx, http.MethodGet, "/api/v1/audit/public-key", nil, &out)
	return out, err
}

// AuditExport writes an export of the audit log (events by time in
// [since, until), zero meaning unbounded) to w.
func (c *Client) AuditExport(ctx context.Context, w io.Writer, since, until time.Time) error {
	v := url.Values{}
	if !since.IsZero() {
		v.Set("since", since.UTC().Format(time.RFC3339))
	}
	if !until.IsZero() {
		v.Set("until", until.UTC().Format(time.RFC3339))
	}
	return c.stream(ctx, "/api/v1/audit/export?"+v.Encode(), w)
}

// stream GETs path and copies a successful body to w.
func (c *Client) stream(ctx context.Context, path string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+path, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.hc
	hc.Timeout = 30 * time.Minute // exports can be large
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the broker API at %s: %v", c.base, err)
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(res.Body, MaxBody))
		return responseError(res, b)
	}
	_, err = io.Copy(w, res.Body)
	return err
}

// responseError turns an error response and its body into an *Error,
// with the API's own message when the body carries one.
func responseError(res *http.Response, body []byte) error {
	var e ErrorEnvelope
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return &Error{Status: res.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	return &Error{Status: res.StatusCode, Code: "http_" + strconv.Itoa(res.StatusCode), Message: fmt.Sprintf("broker answered %s", res.Status)}
}

// InclusionProof fetches the proof that event index is in the tree of the
// given size (0: the latest checkpoint).
func (c *Client) InclusionProof(ctx context.Context, index, size uint64) (InclusionProof, error) {
	var out InclusionProof
	err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/audit/proof/inclusion?index=%d&size=%d", index, size), nil, &out)
	return out, err
}

// ConsistencyProof fetches the proof that the tree of size to extends the
// tree of size from (to 0: the latest checkpoint).
func (c *Client) ConsistencyProof(ctx context.Context, from, to uint64) (ConsistencyProof, error) {
	var out ConsistencyProof
	err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/audit/proof/consistency?from=%d&to=%d", from, to), nil, &out)
	return out, err
}

// DecodeHashes decodes a proof's hex hashes.
func DecodeHashes(hs []string) ([][32]byte, error) {
	out := make([][32]byte, len(hs))
	for i, h := range hs {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("proof hash %d is not 32 hex-encoded bytes", i)
		}
		copy(out[i][:], b)
	}
	return out, nil
}
