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
	// this agent. A revoked agent may no longer authenticate.
	RevokedAt time.Time
	// Last is the most recent heartbeat; its At is zero before the first.
	Last Heartbeat
}

// Heartbeat is what an agent reports every few seconds.
type Heartbeat struct {
	At        time.Time         // when the broker received it
	Version   string            // agent version
	Uptime    time.Duration     // agent process uptime
	TailnetIP string            // the agent's tailnet IPv4 address
	Upstreams map[string]string // upstream name → health ("ok" or an error); may be nil
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
	// RecordHeartbeat stores hb as the agent's latest heartbeat. It returns
	// an error wrapping ErrNotFound if the agent does not exist.
	RecordHeartbeat(ctx context.Context, agentID string, hb Heartbeat) error
	// Close releases the store's resources.
	Close() error
}
