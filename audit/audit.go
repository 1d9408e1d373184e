// Package audit is Tether's audit log: what happens to access becomes an
// [Event], written durably before the action it records is answered, as a
// leaf of an append-only Merkle tree (RFC 6962) whose signed checkpoints
// the customer's agent cosigns as a witness. Exports verify offline with
// nothing but the export and the log's public key.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// SchemaVersion is the version of [Event]'s shape.
//
// A field added later is optional and omitted when empty (omitempty,
// omitzero), so every event written before it keeps its exact bytes and
// leaf hash, and a reader of this version that ignores the field still
// reads the event correctly; such an addition keeps the version. A change
// to a field's meaning, or a field a reader must understand to read an
// event safely, takes a new version. Added to version 1 so far:
// [Source.Kind] and [Source.ReceivedAt].
const SchemaVersion = 1

// Type names what an event records.
type Type string

// Event types.
const (
	DeploymentCreated            Type = "deployment.created"
	PairingTokenIssued           Type = "deployment.pairing_token_issued"
	DeploymentSettingsChanged    Type = "deployment.settings_changed"
	AgentPaired                  Type = "agent.paired"
	AgentPairFailed              Type = "agent.pair_failed"
	AgentRevoked                 Type = "agent.revoked" // an admin or the deployment's approver cut an agent off; reason says why
	AgentMoved                   Type = "agent.moved"   // a paired agent proved its key from another tailnet node (its node was re-created), and the broker now reaches it there
	RequestCreated               Type = "request.created"
	RequestCancelled             Type = "request.cancelled"
	RequestTimedOut              Type = "request.timed_out"
	PolicyReloaded               Type = "policy.reloaded" // outcome failure: a broken policy was kept out
	PolicyDecided                Type = "policy.decided"
	ReviewApproved               Type = "review.approved"
	ReviewDenied                 Type = "review.denied"
	GrantIssued                  Type = "grant.issued"
	GrantExpired                 Type = "grant.expired"
	GrantRevoked                 Type = "grant.revoked"
	QueryAllowed                 Type = "query.allowed"
	QueryDenied                  Type = "query.denied"
	QueryFinished                Type = "query.finished" // details: rows, bytes, duration_ms
	PromAllowed                  Type = "prom.allowed"
	PromDenied                   Type = "prom.denied"
	BreakglassUsed               Type = "breakglass.used"
	AuthFailed                   Type = "auth.failed"
	APIRefused                   Type = "api.refused"                    // the broker API refused a call for a reason other than authentication or authorization (400, 404, 409, …)
	NetworkPlanned               Type = "network.planned"                // a network change was planned (nothing changed)
	NetworkApplied               Type = "network.applied"                // an approved network change was carried out
	NetworkTornDown              Type = "network.torn_down"              // what Tether created for a network change was removed
	NetworkDrift                 Type = "network.drift"                  // a status check found a piece missing or changed
	AWSCall                      Type = "aws.call"                       // one AWS call that changed something
	NetworkRegistered            Type = "network.registered"             // an AWS account was registered to a tenant (outcome failure: refused, e.g. registered to another tenant)
	NetworkRegistrationConfirmed Type = "network.registration_confirmed" // a tenant's approver confirmed a vendor admin's registration
	NetworkUnregistered          Type = "network.unregistered"           // an account's registration was removed
	AuthLogin                    Type = "auth.login"                     // a web session began
	AuthLogout                   Type = "auth.logout"                    // a web session ended
	AgentCallRefused             Type = "agent.call_refused"             // the broker refused what an agent answered (a redirect, an oversized answer) or could not reach it on the tailnet
	PermitSigned                 Type = "permit.signed"                  // a customer approver signed a standing permit (details: permit, digest, signers)
	PermitRevoked                Type = "permit.revoked"                 // a customer approver revoked a standing permit
)

// Types lists every known event type.
var Types = []Type{
	DeploymentCreated, PairingTokenIssued, DeploymentSettingsChanged, AgentPaired, AgentPairFailed, AgentRevoked, AgentMoved,
	RequestCreated, RequestCancelled, RequestTimedOut, PolicyDecided, PolicyReloaded, ReviewApproved, ReviewDenied,
	GrantIssued, GrantExpired, GrantRevoked,
	QueryAllowed, QueryDenied, QueryFinished, PromAllowed, PromDenied,
	BreakglassUsed, AuthFailed, APIRefused, AuthLogin, AuthLogout, PermitSigned, PermitRevoked,
	NetworkPlanned, NetworkApplied, NetworkTornDown, NetworkDrift, AWSCall,
	NetworkRegistered, NetworkRegistrationConfirmed, NetworkUnregistered,
	AgentCallRefused, VerifyFailed,
}

// Known reports whether t is a known event type.
func (t Type) Known() bool {
	for _, k := range Types {
		if t == k {
			return true
		}
	}
	return false
}

// Outcome is how the recorded action ended.
type Outcome string

// Outcomes.
const (
	Success Outcome = "success"
	Failure Outcome = "failure"
)

// Event is one audit record, schema version 1.
//
// Every field is classified with an `audit` struct tag: "safe" fields hold
// identities, identifiers, times and our own words; "sensitive" fields may
// hold what a person typed (a reason, a query's text) and are shown only to
// security reviewers. No field ever holds a secret, a token or a result
// row: query text is recorded, results never are. A test holds every field
// to a classification.
type Event struct {
	Version    int            `json:"v" audit:"safe"`
	ID         string         `json:"id" audit:"safe"`   // UUIDv7
	Time       time.Time      `json:"time" audit:"safe"` // when the broker (or agent) recorded it, UTC
	Type       Type           `json:"type" audit:"safe"`
	Actor      Actor          `json:"actor" audit:"safe"`
	Deployment string         `json:"deployment,omitempty" audit:"safe"` // deployment ID
	RequestID  string         `json:"request_id,omitempty" audit:"safe"`
	GrantID    string         `json:"grant_id,omitempty" audit:"safe"`
	AgentID    string         `json:"agent_id,omitempty" audit:"safe"`
	Source     Source         `json:"source" audit:"safe"`
	Outcome    Outcome        `json:"outcome" audit:"safe"`
	Reason     string         `json:"reason,omitempty" audit:"sensitive"` // may quote a requester's words
	Details    map[string]any `json:"details,omitempty" audit:"sensitive"`
}

// Actor is who acted.
type Actor struct {
	Subject string `json:"subject,omitempty" audit:"safe"` // e.g. "alice@vendor.test", "agent:<id>", "admin:bootstrap"
	Issuer  string `json:"issuer,omitempty" audit:"safe"`  // OIDC issuer, when a person acted
	Tenant  string `json:"tenant,omitempty" audit:"safe"`
	Role    string `json:"role,omitempty" audit:"safe"`
}

// Source is where the action came from.
//
// For an event an agent delivered (Kind [SourceAgent]) the broker replaces
// whatever the agent wrote here: TailnetNode and IP are the delivering
// agent's node and address as the broker's tailnet saw them, and
// ReceivedAt is the broker's clock when it took the event. The event's
// Time, Reason and Details are then the agent's account, which the broker
// checked only as far as its rules for agent events go.
type Source struct {
	TailnetNode string `json:"tailnet_node,omitempty" audit:"safe"`
	IP          string `json:"ip,omitempty" audit:"safe"`
	// Kind is empty for an event the broker recorded itself and
	// SourceAgent for one an agent delivered from its spool.
	Kind string `json:"kind,omitempty" audit:"safe"`
	// ReceivedAt is when the broker received an agent-delivered event, by
	// the broker's clock, UTC; zero for the broker's own events.
	ReceivedAt time.Time `json:"received_at,omitzero" audit:"safe"`
}

// SourceAgent is the [Source.Kind] of an event an agent recorded and
// delivered: its Actor, GrantID, RequestID and Time were checked by the
// broker against the grant it names (see docs/audit.md), and its Source
// was stamped by the broker.
const SourceAgent = "agent"

// Validate reports the first problem with e as a stored event.
func (e Event) Validate() error {
	switch {
	case e.Version != SchemaVersion:
		return fmt.Errorf("unknown schema version %d (this build reads version %d)", e.Version, SchemaVersion)
	case e.ID == "":
		return fmt.Errorf("event has no id")
	case e.Time.IsZero():
		return fmt.Errorf("event %s has no time", e.ID)
	case !e.Type.Known():
		return fmt.Errorf("event %s has unknown type %q", e.ID, e.Type)
	case e.Outcome != Success && e.Outcome != Failure:
		return fmt.Errorf("event %s has outcome %q: want success or failure", e.ID, e.Outcome)
	case e.Source.Kind != "" && e.Source.Kind != SourceAgent:
		return fmt.Errorf("event %s has source kind %q: want none or %q", e.ID, e.Source.Kind, SourceAgent)
	case e.Source.Kind == SourceAgent && (e.Source.ReceivedAt.IsZero() || e.AgentID == ""):
		return fmt.Errorf("event %s was delivered by an agent but does not say which agent and when the broker received it", e.ID)
	case e.Source.Kind == "" && !e.Source.ReceivedAt.IsZero():
		return fmt.Errorf("event %s has a receipt time but no source kind", e.ID)
	}
	return nil
}

// Marshal returns the event's canonical bytes: the exact bytes stored,
// hashed into the Merkle tree and exported. encoding/json writes struct
// fields in declaration order and map keys sorted, so equal events encode
// equally.
func (e Event) Marshal() ([]byte, error) {
	return json.Marshal(e)
}

// Recorder is what code that acts uses to record it. Record returns only
// once the event is durable; an error means the action must not proceed.
type Recorder interface {
	Record(ctx context.Context, e Event) error
}

// Statement is the SQL or PromQL e records: the query of a guard's
// verdict, or the request target of a refused Prometheus call; "" for
// other events. Session replays show it.
func (e Event) Statement() string {
	str := func(k string) string { s, _ := e.Details[k].(string); return s }
	switch e.Type {
	case QueryAllowed, QueryDenied:
		return str("sql")
	case PromAllowed:
		params, _ := e.Details["params"].(map[string]any)
		var qs []string
		for _, k := range []string{"query", "match[]"} {
			vs, _ := params[k].([]any)
			for _, v := range vs {
				if s, ok := v.(string); ok {
					qs = append(qs, s)
				}
			}
		}
		return strings.TrimSpace(str("endpoint") + " " + strings.Join(qs, " "))
	case PromDenied:
		if t := str("target"); t != "" {
			return t
		}
		return str("endpoint")
	}
	return ""
}
