// Package audit records what happens to access in Tether: each security
// relevant action becomes an [Event], written durably before the action is
// answered.
//
// This first version appends events as JSON lines to a file and fsyncs each
// one; the tamper-evident log (Merkle tree, signed checkpoints, witness
// cosignatures) builds on the same [Event] and [Recorder].
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
)

// SchemaVersion is the version of [Event]'s shape.
const SchemaVersion = 1

// Type names what an event records.
type Type string

// Event types known so far.
const (
	DeploymentCreated  Type = "deployment.created"
	PairingTokenIssued Type = "deployment.pairing_token_issued"
	AgentPaired        Type = "agent.paired"
	AgentPairFailed    Type = "agent.pair_failed"
	AuthFailed         Type = "auth.failed"
)

// Outcome is how the recorded action ended.
type Outcome string

// Outcomes.
const (
	Success Outcome = "success"
	Failure Outcome = "failure"
)

// Event is one audit record. Field comments say whether the field may hold
// sensitive data; no field ever holds a secret, a token or customer data.
type Event struct {
	Version    int       `json:"v"`                    // safe
	ID         string    `json:"id"`                   // safe: UUIDv7
	Time       time.Time `json:"time"`                 // safe
	Type       Type      `json:"type"`                 // safe
	Actor      Actor     `json:"actor"`                // safe: identities, not credentials
	Deployment string    `json:"deployment,omitempty"` // safe: deployment ID
	AgentID    string    `json:"agent_id,omitempty"`   // safe
	Source     Source    `json:"source"`               // safe
	Outcome    Outcome   `json:"outcome"`              // safe
	Reason     string    `json:"reason,omitempty"`     // safe: our own words, never input echoed back
	Details    any       `json:"details,omitempty"`    // sensitive: reviewed per event type
}

// Actor is who acted.
type Actor struct {
	Subject string `json:"subject,omitempty"` // e.g. "admin:bootstrap", "agent:<id>"
	Tenant  string `json:"tenant,omitempty"`
	Role    string `json:"role,omitempty"`
}

// Source is where the action came from.
type Source struct {
	TailnetNode string `json:"tailnet_node,omitempty"`
	IP          string `json:"ip,omitempty"`
}

// Recorder is what code that acts uses to record it. Record returns only
// once the event is durable; an error means the action must not proceed.
type Recorder interface {
	Record(ctx context.Context, e Event) error
}

// FileLog appends events to a file as JSON lines, fsyncing each.
type FileLog struct {
	mu  sync.Mutex
	f   *os.File
	now func() time.Time
}

var _ Recorder = (*FileLog)(nil)

// OpenFile opens (creating, mode 0600) the JSON-lines log at path.
func OpenFile(path string, now func() time.Time) (*FileLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &FileLog{f: f, now: now}, nil
}

// Record fills in the version, ID and time, appends e and syncs the file.
func (l *FileLog) Record(ctx context.Context, e Event) error {
	e.Version = SchemaVersion
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	e.ID = id.String()
	if e.Time.IsZero() {
		e.Time = l.now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// Close closes the log file.
func (l *FileLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
