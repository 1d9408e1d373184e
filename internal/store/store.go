// Package store defines the broker's persistent state — deployments, pairing
// tokens, paired agents and the audit log — behind one interface, with
// implementations in sub-packages:
// [github.com/tetherhq/tether/internal/store/sqlitestore] (the default) and
// [github.com/tetherhq/tether/internal/store/pgstore] (for several brokers
// sharing one database).
//
// Every implementation passes the same conformance suite in
// [github.com/tetherhq/tether/internal/store/storetest].
package store

import (
	"context"
	"errors"
	"time"

	"github.com/tetherhq/tether/audit"
)

// Sentinel errors callers branch on. Implementations wrap them with %w.
var (
	// ErrNotFound reports that the named deployment or agent does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict reports that a deployment with the same tenant and name,
	// or an audit event with the same ID, already exists.
	ErrConflict = errors.New("already exists")
	// ErrTokenUnknown reports that no pairing token has the presented hash.
	ErrTokenUnknown = errors.New("pairing token unknown")
	// ErrTokenExpired reports that the pairing token exists but expired.
	ErrTokenExpired = errors.New("pairing token expired")
	// ErrTokenUsed reports that the pairing token was already redeemed.
	ErrTokenUsed = errors.New("pairing token already used")
)

// Deployment is one customer deployment an agent can be paired with.
type Deployment struct {
	ID        string // UUID, assigned by the caller
	Tenant    string // DNS label
	Name      string // DNS label, unique within Tenant
	Region    string // free-form cloud region, may be empty
	CreatedAt time.Time
	Settings  DeploymentSettings
}

// DeploymentSettings are what the access policy reads about a deployment
// besides its name. The zero value means customer approval, no labels,
// no windows.
//
// Rows written before the vendor-set approval mode was removed may hold
// "approval_mode" ("auto_prometheus"); decoding ignores it and nothing
// reads it: only a customer's standing permit spares a request its review.
type DeploymentSettings struct {
	Labels map[string]string `json:"labels,omitempty"`
	// FreezeWindows are the customer's declared change freezes.
	FreezeWindows []Window `json:"freeze_windows,omitempty"`
	// MaintenanceWindows are when the customer accepts changes.
	MaintenanceWindows []Window `json:"maintenance_windows,omitempty"`
	// Network is the deployment's AWS side, for network changes; nil
	// until an admin configures it.
	Network *NetworkConfig `json:"network,omitempty"`
	// Permits are the customer's standing permits; only its approvers
	// sign and revoke them.
	Permits []Permit `json:"permits,omitempty"`
}

// Permit is a customer's standing authorization as its approvers signed
// it: requests it covers are granted without a per-request approval, and
// their grants carry its proofs for the agent to check.
type Permit struct {
	ID        string    `json:"id"`
	Canonical string    `json:"canonical"` // the signed permit (package approval)
	Proofs    []string  `json:"proofs"`    // one ID token per signer, nonce = digest of Canonical
	Signers   []Person  `json:"signers"`
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
}

// NetworkConfig is where a deployment's BYOC VPC is and how Tether
// reaches its account. The account, VPC and role must be registered to the
// deployment's tenant ([NetworkRegistration]), which holds the role's
// external ID.
type NetworkConfig struct {
	AccountID       string            `json:"account_id"`
	Region          string            `json:"region"`
	VPCID           string            `json:"vpc_id"`
	RoleARN         string            `json:"role_arn"`
	RouteTableIDs   []string          `json:"route_table_ids,omitempty"`
	LBTags          map[string]string `json:"lb_tags,omitempty"`
	PrivateHostname string            `json:"private_hostname,omitempty"`
}

// PeeringSpec is the peer side of a network change request. Its account,
// VPC, role and route tables must be registered to the deployment's
// tenant ([NetworkRegistration]), which holds the role's external ID.
type PeeringSpec struct {
	Kind          string   `json:"kind"` // "peering" or "ingress"
	AccountID     string   `json:"account_id"`
	Region        string   `json:"region"`
	VPCID         string   `json:"vpc_id"`
	RoleARN       string   `json:"role_arn"`
	RouteTableIDs []string `json:"route_table_ids,omitempty"`
	// OutsideWindow lets the change be made outside the deployment's
	// maintenance windows; the approvers see it.
	OutsideWindow bool `json:"outside_window,omitempty"`
}

// Network registration states.
const (
	// RegistrationPending is a vendor admin's registration that an
	// approver of the tenant has not confirmed yet: nothing may use it.
	RegistrationPending = "pending"
	// RegistrationActive is a registration network changes may use.
	RegistrationActive = "active"
)

// NetworkRegistration registers one AWS account to one tenant, with the
// role Tether assumes there and the VPCs (and, optionally, route tables
// and peer CIDRs) Tether may touch in it. An account is registered to at
// most one tenant.
type NetworkRegistration struct {
	ID        string   `json:"id"` // UUID, assigned by the caller
	Tenant    string   `json:"tenant"`
	AccountID string   `json:"account_id"`
	RoleARN   string   `json:"role_arn"`
	VPCIDs    []string `json:"vpc_ids"`
	// RouteTableIDs, when not empty, are the only route tables of those
	// VPCs a network change may name.
	RouteTableIDs []string `json:"route_table_ids,omitempty"`
	// PeerCIDRs are address ranges in those VPCs the tenant declares its
	// own, such as public space it uses privately.
	PeerCIDRs    []string  `json:"peer_cidrs,omitempty"`
	State        string    `json:"state"` // RegistrationPending or RegistrationActive
	RegisteredBy Person    `json:"registered_by"`
	CreatedAt    time.Time `json:"created_at"`
	ConfirmedBy  *Person   `json:"confirmed_by,omitempty"`
	ConfirmedAt  time.Time `json:"confirmed_at,omitzero"`
	// SealedExternalID is the role's external ID, sealed with the
	// broker's key; empty while pending. It is stored apart from the
	// rest and never encoded with it.
	SealedExternalID []byte `json:"-"`
	// Version increases with every update; [Store.UpdateNetworkRegistration]
	// compares it to detect a concurrent change.
	Version int64 `json:"version"`
}

// Window is a span of time [Start, End).
type Window struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Reason string    `json:"reason,omitempty"`
}

// Access request states. Pending requests end as approved (then active,
// then expired or revoked), denied, cancelled or timed_out.
const (
	StatePending   = "pending"
	StateApproved  = "approved" // every review in; the grant is being issued
	StateActive    = "active"   // a grant is live
	StateExpired   = "expired"
	StateRevoked   = "revoked"
	StateDenied    = "denied"
	StateCancelled = "cancelled"
	StateTimedOut  = "timed_out"
)

// Person is someone who acted, as their identity provider named them.
type Person struct {
	Subject string   `json:"subject"`
	Email   string   `json:"email,omitempty"`
	Issuer  string   `json:"issuer"` // issuer URL
	Tenant  string   `json:"tenant,omitempty"`
	Roles   []string `json:"roles,omitempty"`
}

// Review is one reviewer's verdict on a request.
type Review struct {
	Reviewer Person    `json:"reviewer"`
	Role     string    `json:"role"` // the role it counted as: "approver" or "internal"
	Approve  bool      `json:"approve"`
	Comment  string    `json:"comment,omitempty"`
	At       time.Time `json:"at"`
	// Statement is the canonical approval statement a customer approver
	// signed, and Proof the ID token from their identity provider whose
	// nonce is its digest (package approval); empty for other reviews.
	Statement string `json:"statement,omitempty"`
	Proof     string `json:"proof,omitempty"`
}

// GrantRecord is the grant issued for an approved request.
type GrantRecord struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"` // the signed grant; useless without the broker's tailnet node and key
	Scopes    []string  `json:"scopes"`
	AgentID   string    `json:"agent_id"`
	NotBefore time.Time `json:"not_before"`
	Expiry    time.Time `json:"expiry"`
	IssuedAt  time.Time `json:"issued_at"`
}

// AccessRequest is an engineer's request for access to one deployment,
// with the policy's decision, the reviews and the grant.
type AccessRequest struct {
	ID           string        `json:"id"` // UUID, assigned by the caller
	DeploymentID string        `json:"deployment_id"`
	Tenant       string        `json:"tenant"`
	Name         string        `json:"name"` // the deployment's
	Requester    Person        `json:"requester"`
	Scopes       []string      `json:"scopes"` // requested
	Duration     time.Duration `json:"duration"`
	Reason       string        `json:"reason"`
	Ticket       string        `json:"ticket,omitempty"`
	BreakGlass   bool          `json:"break_glass,omitempty"`
	// Permit is the ID of the customer permit the request was granted
	// under, instead of a per-request customer approval.
	Permit string `json:"permit,omitempty"`
	// Network is the change a network:peering request asks for.
	Network *PeeringSpec `json:"network,omitempty"`
	// NetworkPlan is the plan its approvers approve, and its progress.
	NetworkPlan *NetworkPlan `json:"network_plan,omitempty"`
	State       string       `json:"state"`
	// Decision is the policy's decision, as JSON.
	Decision []byte       `json:"decision"`
	Reviews  []Review     `json:"reviews,omitempty"`
	Grant    *GrantRecord `json:"grant,omitempty"`
	// PendingUntil is when a pending request times out.
	PendingUntil time.Time `json:"pending_until"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// EndedAt, EndedBy and EndReason say how a request left the pending or
	// active state: who denied, cancelled or revoked it, and why.
	EndedAt   time.Time `json:"ended_at,omitzero"`
	EndedBy   string    `json:"ended_by,omitempty"`
	EndReason string    `json:"end_reason,omitempty"`
	// Version increases with every update; [Store.UpdateRequest] compares
	// it to detect a concurrent change.
	Version int64 `json:"version"`
}

// DueAt is when the request needs the broker's attention without anyone
// acting: a pending request's timeout, an active grant's expiry, the next
// try of a revoked network change's teardown. Zero for requests that are
// over.
func (r AccessRequest) DueAt() time.Time {
	switch r.State {
	case StatePending:
		return r.PendingUntil
	case StateApproved, StateActive:
		if r.Grant != nil {
			return r.Grant.Expiry
		}
		return r.PendingUntil
	case StateRevoked:
		// An applied network change the broker still has to tear down.
		if r.NetworkPlan != nil {
			return r.NetworkPlan.TeardownDue
		}
	}
	return time.Time{}
}

// RequestFilter selects access requests; zero fields match everything.
type RequestFilter struct {
	Tenant       string
	DeploymentID string
	Requester    string // subject
	States       []string
	// DueBefore selects requests whose DueAt is non-zero and before it.
	DueBefore time.Time
	Limit     int // default and maximum 1000
}

// PairingToken is the stored form of a one-time pairing token. The token
// itself is never stored: only its SHA-256 hash.
type PairingToken struct {
	Hash         []byte // SHA-256 of the token's 32 random bytes
	DeploymentID string
	CreatedAt    time.Time
	ExpiresAt    time.Time
}

// Agent is an agent paired with a deployment.
type Agent struct {
	ID           string // UUID, assigned by the caller
	DeploymentID string
	PublicKey    []byte // Ed25519 public key the agent signs challenges with
	NodeID       string // tailnet stable node ID the agent paired from
	NodeName     string // tailnet node name (FQDN) at pairing
	PairedAt     time.Time
	// RevokedAt is set when a later pairing of the same deployment replaced
	// this agent, or an operator revoked it ([Store.RevokeAgent]). A
	// revoked agent may no longer authenticate.
	RevokedAt time.Time
	// Last is the most recent heartbeat; its At is zero before the first.
	Last Heartbeat
}

// AgentSession is an agent's session with the brokers: the SHA-256 of its
// token, the tailnet node it is bound to, and when it expires.
type AgentSession struct {
	TokenHash [32]byte
	AgentID   string
	NodeID    string
	Expires   time.Time
}

// RevocationPush is a revocation the deployment's agent has not taken
// yet: any broker sharing the store pushes it until the agent does, or
// until the grant's expiry, past which the agent refuses it by itself.
type RevocationPush struct {
	GrantID      string
	DeploymentID string
	Expiry       time.Time
	CreatedAt    time.Time
}

// AgentHeartbeat is one agent's heartbeat, for RecordHeartbeats.
type AgentHeartbeat struct {
	AgentID string
	Heartbeat
}

// Heartbeat is what an agent reports every few seconds.
type Heartbeat struct {
	At        time.Time         // when the broker received it
	Version   string            // agent version
	Uptime    time.Duration     // agent process uptime
	TailnetIP string            // the agent's tailnet IPv4 address
	Upstreams map[string]string // upstream name → health ("ok" or an error); may be nil
	// WitnessRefusal, when set, is why the agent refuses every data-plane
	// call: as the customer's witness it found the broker's audit log
	// smaller than, or forking from, the one it cosigned.
	WitnessRefusal string
	// Approval is the customer's approval authority the agent enforces,
	// as its latest heartbeat said; nil when it enforces none.
	Approval *AgentApproval
	// Clock is how far the agent's clock was from the broker's at this
	// heartbeat; nil when it could not be measured (an agent that
	// predates the measure).
	Clock *ClockSkew
}

// ClockSkew is an agent's clock offset from the broker's: the agent's
// NTP-style estimate from its previous heartbeat's exchange, or, when it
// had none yet, the broker's one-way estimate from the heartbeat's send
// time (OneWay), which is short by the network's one-way delay.
type ClockSkew struct {
	// Offset is the agent's clock minus the broker's: positive when the
	// agent's clock is ahead.
	Offset time.Duration `json:"offset_ns"`
	// RTT is the round trip of the exchange that measured it; the true
	// offset lies within Offset ± RTT/2. Zero for a one-way estimate.
	RTT    time.Duration `json:"rtt_ns,omitempty"`
	OneWay bool          `json:"one_way,omitempty"`
}

// AgentApproval is the customer's approval authority an agent reports it
// enforces: it serves a grant only with Required distinct approvals signed
// by Issuer for Audience by members of Group; BreakGlassAllowed says
// whether it serves break-glass grants without them. An empty Issuer
// means no authority: the agent only refuses break-glass grants.
type AgentApproval struct {
	Issuer            string `json:"issuer,omitempty"`
	Audience          string `json:"audience,omitempty"`
	Group             string `json:"group,omitempty"`
	Required          int    `json:"required,omitempty"`
	BreakGlassAllowed bool   `json:"break_glass_allowed,omitempty"`
}

// Enforced reports whether the agent enforces the customer's approvals.
func (a *AgentApproval) Enforced() bool { return a != nil && a.Issuer != "" }

// ApprovalsRequired is how many distinct customer approvals the agent
// requires of a grant, as its latest heartbeat said: 0 when it enforces
// none. The broker should require at least as many before it issues a
// grant the agent would refuse.
func (a Agent) ApprovalsRequired() int {
	if !a.Last.Approval.Enforced() {
		return 0
	}
	return max(a.Last.Approval.Required, 1)
}

// DeploymentStatus is a deployment with its current (unrevoked) agent, if any.
type DeploymentStatus struct {
	Deployment
	Agent *Agent // nil when no agent is paired
}

// Store is the broker's persistent state. All methods are safe for
// concurrent use by several goroutines and, for shared databases, by
// several brokers.
type Store interface {
	// Storage keeps the audit log's records, checkpoints and
	// cosignatures in the same database.
	audit.Storage
	// AddCosignatures stores several cosignatures in one transaction,
	// each as AddCosignature does.
	AddCosignatures(ctx context.Context, cs []audit.Cosignature) error

	// CreateDeployment stores d together with its first pairing token, in
	// one transaction. It returns an error wrapping ErrConflict if the
	// tenant already has a deployment named d.Name.
	CreateDeployment(ctx context.Context, d Deployment, tok PairingToken) error
	// GetDeployment returns the deployment with the given ID, or an error
	// wrapping ErrNotFound.
	GetDeployment(ctx context.Context, id string) (DeploymentStatus, error)
	// GetDeploymentByName returns the tenant's deployment with the given
	// name, or an error wrapping ErrNotFound.
	GetDeploymentByName(ctx context.Context, tenant, name string) (DeploymentStatus, error)
	// ListDeployments returns every deployment ordered by tenant, then name.
	ListDeployments(ctx context.Context) ([]DeploymentStatus, error)
	// AddPairingToken stores a new pairing token for an existing
	// deployment (to re-pair it), or returns an error wrapping ErrNotFound.
	AddPairingToken(ctx context.Context, tok PairingToken) error
	// RedeemPairingToken atomically marks the token with the given hash as
	// used at now and stores a as the deployment's agent, revoking any
	// agent paired before. a.DeploymentID is filled in from the token.
	// It fails with an error wrapping ErrTokenUnknown, ErrTokenExpired
	// (now is at or after the expiry) or ErrTokenUsed, and then changes
	// nothing. Of two concurrent redemptions of one token exactly one
	// succeeds.
	RedeemPairingToken(ctx context.Context, hash []byte, now time.Time, a Agent) (Deployment, error)
	// GetAgent returns the agent with the given ID (revoked or not), or an
	// error wrapping ErrNotFound.
	GetAgent(ctx context.Context, id string) (Agent, error)
	// RevokeAgent marks the agent with the given ID revoked at now: the
	// deployment then has no current agent until another pairs. It
	// returns an error wrapping ErrNotFound for an unknown agent and
	// ErrConflict for one already revoked, and then changes nothing.
	RevokeAgent(ctx context.Context, id string, now time.Time) error
	// MoveAgent records that the agent with the given ID now calls from
	// tailnet node nodeID (named nodeName), after it proved its key from
	// there; any other agent recorded on nodeID is then recorded on no
	// node (""). It returns an error wrapping ErrNotFound for an unknown
	// agent and ErrConflict for a revoked one, and then changes nothing.
	MoveAgent(ctx context.Context, id, nodeID, nodeName string) error
	// RecordHeartbeat stores hb as the agent's latest heartbeat. It returns
	// an error wrapping ErrNotFound if the agent does not exist.
	RecordHeartbeat(ctx context.Context, agentID string, hb Heartbeat) error
	// RecordHeartbeats stores several agents' latest heartbeats in one
	// transaction, each as RecordHeartbeat does; an agent that does not
	// exist is skipped.
	RecordHeartbeats(ctx context.Context, hbs []AgentHeartbeat) error
	// PutAgentSession stores s as its agent's one session: the agent's
	// other sessions, and those expired at now, are deleted.
	PutAgentSession(ctx context.Context, s AgentSession, now time.Time) error
	// GetAgentSession returns the live session whose token hashes to
	// tokenHash, or an error wrapping ErrNotFound.
	GetAgentSession(ctx context.Context, tokenHash [32]byte, now time.Time) (AgentSession, error)
	// DeleteAgentSessions deletes the agent's sessions and says how many.
	DeleteAgentSessions(ctx context.Context, agentID string) (int, error)
	// AddRevocationPush records a revocation its agent has not taken yet;
	// adding one already recorded changes nothing.
	AddRevocationPush(ctx context.Context, p RevocationPush) error
	// RevocationPushes returns the recorded pushes whose grant expires
	// after now, oldest first, at most limit, and forgets the others.
	RevocationPushes(ctx context.Context, now time.Time, limit int) ([]RevocationPush, error)
	// DeleteRevocationPush forgets a push the agent took.
	DeleteRevocationPush(ctx context.Context, grantID string) error
	// SetDeploymentSettings replaces a deployment's settings, or returns
	// an error wrapping ErrNotFound.
	SetDeploymentSettings(ctx context.Context, id string, s DeploymentSettings) error

	// CreateRequest stores a new access request (its Version is stored as
	// given, normally 1). It returns an error wrapping ErrConflict if the
	// ID exists and ErrNotFound if the deployment does not.
	CreateRequest(ctx context.Context, r AccessRequest) error
	// GetRequest returns the request with the given ID, or an error
	// wrapping ErrNotFound.
	GetRequest(ctx context.Context, id string) (AccessRequest, error)
	// ListRequests returns the requests f selects, newest first.
	ListRequests(ctx context.Context, f RequestFilter) ([]AccessRequest, error)
	// UpdateRequest stores r if the stored request's Version is still
	// r.Version, and stores it with Version r.Version+1. If another update
	// came first it changes nothing and returns an error wrapping
	// ErrConflict: the caller reloads and decides again. An unknown ID is
	// an error wrapping ErrNotFound.
	UpdateRequest(ctx context.Context, r AccessRequest) error
	// CreateNetworkRegistration stores a new registration (its Version as
	// given, normally 1). It returns an error wrapping ErrConflict if its
	// account is registered already, to any tenant, or its ID exists.
	CreateNetworkRegistration(ctx context.Context, reg NetworkRegistration) error
	// GetNetworkRegistration returns the registration with the given ID,
	// or an error wrapping ErrNotFound.
	GetNetworkRegistration(ctx context.Context, id string) (NetworkRegistration, error)
	// GetNetworkRegistrationByAccount returns the registration of an AWS
	// account, whatever its tenant, or an error wrapping ErrNotFound.
	GetNetworkRegistrationByAccount(ctx context.Context, accountID string) (NetworkRegistration, error)
	// ListNetworkRegistrations returns the tenant's registrations, or
	// every tenant's for an empty tenant, ordered by tenant, then account.
	ListNetworkRegistrations(ctx context.Context, tenant string) ([]NetworkRegistration, error)
	// UpdateNetworkRegistration stores reg if the stored registration's
	// Version is still reg.Version, with Version reg.Version+1; otherwise
	// it changes nothing and returns an error wrapping ErrConflict. Its
	// tenant and account never change (an error if they differ). An
	// unknown ID is an error wrapping ErrNotFound.
	UpdateNetworkRegistration(ctx context.Context, reg NetworkRegistration) error
	// DeleteNetworkRegistration removes the registration with the given
	// ID, or returns an error wrapping ErrNotFound.
	DeleteNetworkRegistration(ctx context.Context, id string) error

	// WebStore keeps the web console's sessions and pending logins.
	WebStore
	// WebhookQueue keeps the notifications not yet delivered.
	WebhookQueue
	// ChallengeStore keeps the challenges agents answer to open a
	// session.
	ChallengeStore

	// Close releases the store's resources.
	Close() error
}

// MaxWebhookBody bounds the body of a stored webhook delivery.
const MaxWebhookBody = 256 << 10

// WebhookDelivery is a notification not yet delivered to one webhook (or
// one tenant's e-mail recipients): a row of the [WebhookQueue].
type WebhookDelivery struct {
	// Seq is assigned by the store; it orders a lane's deliveries.
	Seq int64
	// Lane names the webhook: a digest of its tenant, URL and format the
	// notifier computes, never its secret. Brokers send a lane's
	// deliveries only if their configuration has that webhook.
	Lane      string
	MessageID string
	Type      string
	// Body is the request body as sent, at most [MaxWebhookBody] bytes.
	Body []byte
	// Attempts is how many attempts were made; NextAt is when the next
	// one is due.
	Attempts  int
	NextAt    time.Time
	CreatedAt time.Time
}

// WebhookLane is how many deliveries of one lane are pending, and how
// many of those a claimer may take now.
type WebhookLane struct {
	Lane         string
	Pending, Due int
}

// WebhookQueue keeps notifications until they are delivered, so that a
// delivery a broker accepted survives its death: it, after a restart, or
// any other broker sharing the database makes it. A broker claims a
// delivery for a lease; another may take it once the lease has passed
// (delivery is at least once). A delivery is due when its NextAt and its
// lease have passed.
type WebhookQueue interface {
	// AddWebhookDeliveries stores ds, unclaimed, in one transaction, and
	// then deletes the oldest deliveries of each of their lanes past max;
	// dropped are those deleted, newest included if max is that small.
	AddWebhookDeliveries(ctx context.Context, ds []WebhookDelivery, max int) (dropped []WebhookDelivery, err error)
	// ClaimWebhookDelivery leases the oldest delivery of lane due at now
	// to claimer until leaseUntil and returns it; ok is false when none
	// is due. Of concurrent claims, by any brokers, of one delivery at
	// most one gets it.
	ClaimWebhookDelivery(ctx context.Context, lane, claimer string, now, leaseUntil time.Time) (d WebhookDelivery, ok bool, err error)
	// RescheduleWebhookDelivery records the attempts made of a delivery
	// leased to claimer, when the next is due, and its lease (the zero
	// time releases it). ok is false, and nothing changes, when the
	// delivery is gone or leased to another claimer.
	RescheduleWebhookDelivery(ctx context.Context, seq int64, claimer string, attempts int, next, leaseUntil time.Time) (ok bool, err error)
	// DeleteWebhookDelivery deletes a delivery made or given up; deleting
	// one already gone is not an error.
	DeleteWebhookDelivery(ctx context.Context, seq int64) error
	// WebhookLanes returns the lanes holding deliveries, with how many
	// are pending and due at now.
	WebhookLanes(ctx context.Context, now time.Time) ([]WebhookLane, error)
	// SweepWebhookDeliveries deletes the deliveries stored before
	// before, whatever their lane, and says how many: those of a webhook
	// no broker is configured with any more.
	SweepWebhookDeliveries(ctx context.Context, before time.Time) (int, error)
}

// AgentChallenge is a challenge a broker gave an agent to sign, to open
// a session: the SHA-256 of the challenge (never the challenge), the
// agent it is for, the tailnet node that asked for it, and when it
// expires.
type AgentChallenge struct {
	Hash    [32]byte
	AgentID string
	NodeID  string
	Expires time.Time
}

// ChallengeStore keeps agents' outstanding challenges, so that an agent
// may ask one broker for a challenge and open its session at another,
// and so that each challenge is answered once across all brokers. A
// challenge is live while now is before its expiry.
type ChallengeStore interface {
	// PutAgentChallenge stores c as the one outstanding challenge of
	// (c.AgentID, c.NodeID), replacing any earlier one, and deletes the
	// challenges expired at now. If max live challenges of other agents
	// or nodes are outstanding it stores nothing and ok is false.
	PutAgentChallenge(ctx context.Context, c AgentChallenge, max int, now time.Time) (ok bool, err error)
	// TakeAgentChallenge deletes the challenge whose SHA-256 is hash and
	// returns it if it was live at now, or an error wrapping ErrNotFound.
	// Of concurrent takes of one challenge, by any brokers, at most one
	// returns it.
	TakeAgentChallenge(ctx context.Context, hash [32]byte, now time.Time) (AgentChallenge, error)
	// AgentChallenges is how many live challenges are outstanding.
	AgentChallenges(ctx context.Context, now time.Time) (int, error)
}
