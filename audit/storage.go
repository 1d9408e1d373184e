package audit

import (
	"context"
	"errors"
	"time"
)

// Record is an event as stored: its position in the Merkle tree, the
// fields searches filter on, and its exact canonical bytes.
type Record struct {
	Index      uint64 // leaf index in the tree, from 0, without gaps
	ID         string // the event's ID (UUIDv7), unique
	Time       time.Time
	Type       Type
	Subject    string // Actor.Subject
	Deployment string
	RequestID  string
	GrantID    string
	// ActorTenant is Actor.Tenant of an event about no deployment, and
	// empty for one about a deployment: the column [TenantScope] selects
	// a tenant's deployment-less events by.
	ActorTenant string
	Data        []byte   // the event's canonical JSON (Event.Marshal)
	LeafHash    [32]byte // LeafHash(Data)
}

// StoredCheckpoint is a signed checkpoint as stored.
type StoredCheckpoint struct {
	Size uint64
	Root [32]byte
	Time time.Time
	Note string // the signed note text
}

// Cosignature is a witness's signature on a checkpoint.
type Cosignature struct {
	Size    uint64
	Witness string // the witness's note key name, e.g. "tether-witness/<agent-id>"
	Note    string // the checkpoint note carrying the log's and the witness's signatures
	At      time.Time
}

// Filter selects records. Zero fields do not filter. Results are in index
// order.
type Filter struct {
	Subject    string
	Deployment string
	Type       Type
	GrantID    string
	RequestID  string
	Since      time.Time // Time >= Since
	Until      time.Time // Time < Until
	FromIndex  uint64    // Index >= FromIndex
	ToIndex    uint64    // Index < ToIndex, when non-zero
	Limit      int       // at most this many, when non-zero
	// Tenant, when set, selects only the events the scope includes
	// ([TenantScope.Includes]); a Tenant with no Tenant name selects
	// none.
	Tenant *TenantScope
	// Descending returns the newest first: the Limit records with the
	// highest indexes that match, highest first.
	Descending bool
}

// ErrNotContinuing reports that records did not continue the stored log:
// another writer (another broker on the same database) appended first.
var ErrNotContinuing = errors.New("the records do not continue the stored log")

// Storage is where the log keeps its records, checkpoints and
// cosignatures. Implementations must make AppendRecords durable (synced
// to disk) before returning.
type Storage interface {
	// AppendRecords stores recs, whose indexes continue the log without a
	// gap, in one transaction. When the first index is not the log's size
	// (another writer appended first), it stores nothing and returns an
	// error wrapping [ErrNotContinuing].
	AppendRecords(ctx context.Context, recs []Record) error
	// AppendRecordsNext stores recs after the records stored, in one
	// transaction under the lock that serializes appends, setting their
	// indexes, and returns the first: writers sharing the storage never
	// race for an index. The log appends this way.
	AppendRecordsNext(ctx context.Context, recs []Record) (first uint64, err error)
	// AuditSize returns the number of records (the next index).
	AuditSize(ctx context.Context) (uint64, error)
	// LeafHashes returns the leaf hashes of records [from, to).
	LeafHashes(ctx context.Context, from, to uint64) ([][32]byte, error)
	// NodeHashes returns the hashes of the tree's nodes ids names, in
	// order: a leaf's hash (Level 0) or the root of a perfect subtree,
	// which the storage keeps as records are appended, so that a proof
	// reads O(log n) hashes. It returns an error wrapping
	// [ErrNodesMissing] if it holds some of them not (yet).
	NodeHashes(ctx context.Context, ids []NodeID) ([][32]byte, error)
	// Records returns the records matching f.
	Records(ctx context.Context, f Filter) ([]Record, error)
	// ExistingIDs returns which of ids are already stored.
	ExistingIDs(ctx context.Context, ids []string) (map[string]bool, error)
	// AddCheckpoint stores a checkpoint; sizes only grow.
	AddCheckpoint(ctx context.Context, c StoredCheckpoint) error
	// Checkpoints returns the checkpoints with fromSize <= Size <= toSize,
	// by size.
	Checkpoints(ctx context.Context, fromSize, toSize uint64) ([]StoredCheckpoint, error)
	// LatestCheckpoint returns the largest checkpoint; ok is false when
	// there is none.
	LatestCheckpoint(ctx context.Context) (c StoredCheckpoint, ok bool, err error)
	// AddCosignature stores a witness's cosignature; storing the same
	// (size, witness) twice keeps the first.
	AddCosignature(ctx context.Context, c Cosignature) error
	// Cosignatures returns cosignatures with fromSize <= Size <= toSize,
	// by size then witness.
	Cosignatures(ctx context.Context, fromSize, toSize uint64) ([]Cosignature, error)
}
