package store

import (
	"encoding/json"
	"time"
)

// NetworkPlan is what the approvers of a network change approve, fixed
// when the request is created, and how far the change got. It holds no
// secret: the roles' external IDs are not part of it.
type NetworkPlan struct {
	// Intent is the exact state the change makes (netmgr.Intent in its
	// canonical encoding): accounts, VPCs, CIDRs, route tables, routes,
	// security group rules, hostname. Digest is its SHA-256 as
	// "sha256:<hex>". Apply refuses when what it would make differs.
	Intent json.RawMessage `json:"intent"`
	Digest string          `json:"digest"`
	// PlannedAt is when the plan was made.
	PlannedAt time.Time `json:"planned_at"`
	// Freezes are the deployment's freeze windows the policy saw when it
	// decided; a freeze not among them that is on at apply time blocks
	// the apply.
	Freezes []Window `json:"freezes,omitempty"`
	// AppliedAt is when an apply first began to change AWS: from then on
	// the request may be torn down in any state.
	AppliedAt time.Time `json:"applied_at,omitzero"`
	// TornDownAt is when a teardown last completed.
	TornDownAt time.Time `json:"torn_down_at,omitzero"`
	// TeardownDue, when set, is when the broker tears the change down by
	// itself next (an applied request was revoked); TeardownAttempts and
	// TeardownError say how the tries so far went.
	TeardownDue      time.Time `json:"teardown_due,omitzero"`
	TeardownAttempts int       `json:"teardown_attempts,omitempty"`
	TeardownError    string    `json:"teardown_error,omitempty"`
}
