package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// What a stored record says outside its data — the columns searches
// filter on, its leaf hash — is not covered by any signature: someone
// with write access to the store could change them to hide an event from
// a search, or pass off other data under a signed leaf hash. The log
// therefore checks every record it hands out ([Log.Records]) against its
// data, checks at start the data of the newest events (and of every event
// not yet under a checkpoint) against the signed tree, and re-verifies the
// whole log in the background ([LogConfig.VerifyInterval]), so that a
// record edited to match no search is found too.

// VerifyFailed records that the stored log does not match what it
// signed: an event's data, a column searches read or a checkpoint's root
// was changed in the store. Details: index, checkpoint, found_by.
const VerifyFailed Type = "audit.verify_failed"

// ErrTampered reports that the store holds a record that does not match
// what the log signed. Errors wrapping it are [*TamperError].
var ErrTampered = errors.New("the audit store was modified outside the broker")

// TamperError names a stored record, or a checkpoint, that does not match
// what the log's hashes cover.
type TamperError struct {
	Index      uint64 // the event's index; for a checkpoint, its size
	Checkpoint bool   // the problem is the tree at checkpoint Index, not one event
	What       string // what does not match
}

// Error says which event and what, in words a reviewer can act on.
func (e *TamperError) Error() string {
	if e.Checkpoint {
		return fmt.Sprintf("%v: the stored events do not reproduce signed checkpoint %d: %s", ErrTampered, e.Index, e.What)
	}
	return fmt.Sprintf("%v: event %d: %s", ErrTampered, e.Index, e.What)
}

// Unwrap makes errors.Is(err, ErrTampered) true.
func (e *TamperError) Unwrap() error { return ErrTampered }

// indexed is what a record's columns repeat of its event.
type indexed struct {
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	Type       Type      `json:"type"`
	Actor      Actor     `json:"actor"`
	Deployment string    `json:"deployment"`
	RequestID  string    `json:"request_id"`
	GrantID    string    `json:"grant_id"`
}

// CheckRecord checks that a stored record's leaf hash is the hash of its
// data and that each column it is searched by says what its data says
// (its time to the millisecond, as stores keep it). A mismatch is a
// [*TamperError].
func CheckRecord(r Record) error {
	if LeafHash(r.Data) != r.LeafHash {
		return &TamperError{Index: r.Index, What: "its data does not hash to its stored leaf hash"}
	}
	var e indexed
	if err := json.Unmarshal(r.Data, &e); err != nil {
		return &TamperError{Index: r.Index, What: fmt.Sprintf("its data is not an event: %v", err)}
	}
	mismatch := func(column, stored, hashed string) error {
		return &TamperError{Index: r.Index, What: fmt.Sprintf("stored %s %q, but the signed event says %q", column, stored, hashed)}
	}
	switch {
	case r.ID != e.ID:
		return mismatch("id", r.ID, e.ID)
	case r.Type != e.Type:
		return mismatch("type", string(r.Type), string(e.Type))
	case r.Subject != e.Actor.Subject:
		return mismatch("subject", r.Subject, e.Actor.Subject)
	case r.Deployment != e.Deployment:
		return mismatch("deployment", r.Deployment, e.Deployment)
	case r.RequestID != e.RequestID:
		return mismatch("request_id", r.RequestID, e.RequestID)
	case r.GrantID != e.GrantID:
		return mismatch("grant_id", r.GrantID, e.GrantID)
	case r.ActorTenant != recordActorTenant(e.Deployment, e.Actor.Tenant):
		return mismatch("actor_tenant", r.ActorTenant, recordActorTenant(e.Deployment, e.Actor.Tenant))
	case r.Time.UnixMilli() != e.Time.UnixMilli():
		return mismatch("time", r.Time.UTC().Format(time.RFC3339Nano), e.Time.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// Records returns the stored records f selects, each checked with
// [CheckRecord]. A record that fails the check is reported (error log,
// tether_audit_verify_failures_total, an audit.verify_failed event) and
// fails the whole call with a [*TamperError]: a search never shows a
// record whose columns or data were changed.
func (l *Log) Records(ctx context.Context, f Filter) ([]Record, error) {
	recs, err := l.cfg.Storage.Records(ctx, f)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if err := CheckRecord(r); err != nil {
			l.reportTamper(ctx, err, "read")
			return nil, err
		}
	}
	return recs, nil
}

// maxTamperReports bounds how many distinct problems are logged and
// recorded as events; beyond it only the metric counts.
const maxTamperReports = 1000

// reportTamper logs a tamper error, counts it and records an
// audit.verify_failed event, once per problem per process. by names what
// found it: "read", "sweep".
func (l *Log) reportTamper(ctx context.Context, err error, by string) {
	var te *TamperError
	if !errors.As(err, &te) {
		return
	}
	l.tamperMu.Lock()
	key := *te
	_, seen := l.tampered[key]
	full := len(l.tampered) >= maxTamperReports
	if !seen && !full {
		l.tampered[key] = struct{}{}
	}
	l.tamperMu.Unlock()
	if seen {
		return
	}
	l.m.verifyFailures.Inc()
	if full {
		return
	}
	l.log.Error("audit log tampered with: the store holds a record that does not match what the log signed; investigate who wrote to the database",
		"index", te.Index, "checkpoint", te.Checkpoint, "found_by", by, "err", err)
	e := Event{
		Type: VerifyFailed, Outcome: Failure,
		Actor:  Actor{Subject: "broker:audit", Role: "system"},
		Reason: err.Error(),
		Details: map[string]any{
			"index": te.Index, "checkpoint": te.Checkpoint, "found_by": by,
		},
	}
	// The event goes through the writer; bound the wait so that a reader
	// is never held up for long by a slow store.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := l.Record(rctx, e); err != nil {
		l.log.Error("could not record the audit.verify_failed event", "index", te.Index, "err", err)
	}
}

// sweep is the background verifier's position: a tree rebuilt from the
// events' data, up to next.
type sweep struct {
	tree   *Tree
	next   uint64
	broken bool // a root did not match: check leaves only until the pass ends
}

// runVerifier re-verifies the whole log, VerifyStep events every
// VerifyInterval, pass after pass, until ctx ends.
func (l *Log) runVerifier(ctx context.Context) {
	t := time.NewTicker(l.cfg.VerifyInterval)
	defer t.Stop()
	s := &sweep{tree: NewTree()}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := l.verifyStep(sctx, s)
		cancel()
		if err != nil && ctx.Err() == nil {
			l.log.Warn("background audit verification could not read the store; will retry", "err", err)
		}
	}
}

// verifyStep checks the next VerifyStep checkpointed events: each against
// its columns and leaf hash, and the tree rebuilt from their data against
// every signed checkpoint among them. A pass ends at the latest
// checkpoint; the next starts again from the first event.
func (l *Log) verifyStep(ctx context.Context, s *sweep) error {
	end := l.lastSize.Load()
	if s.next >= end {
		if s.next > 0 {
			l.m.verifyPasses.Inc()
			l.m.verifyPassTime.Set(float64(l.now().UnixNano()) / 1e9)
		}
		*s = sweep{tree: NewTree()}
		return nil
	}
	to := min(s.next+uint64(l.cfg.VerifyStep), end)
	recs, err := l.cfg.Storage.Records(ctx, Filter{FromIndex: s.next, ToIndex: to})
	if err != nil {
		return err
	}
	cps, err := l.cfg.Storage.Checkpoints(ctx, s.next+1, to)
	if err != nil {
		return err
	}
	ci := 0
	for _, r := range recs {
		if r.Index != s.next {
			// A record is missing: the tree cannot be rebuilt past it.
			l.reportTamper(ctx, &TamperError{Index: s.next, What: "the event is missing from the store"}, "sweep")
			*s = sweep{tree: NewTree()}
			return nil
		}
		if err := CheckRecord(r); err != nil {
			l.reportTamper(ctx, err, "sweep")
		}
		// The stored leaf hash, which the checkpoints cover: a record
		// whose data alone was changed is reported above, and the roots
		// still check every other.
		s.tree.Append(r.LeafHash)
		s.next++
		for ci < len(cps) && cps[ci].Size < s.next {
			ci++
		}
		if ci < len(cps) && cps[ci].Size == s.next && !s.broken {
			if err := l.checkRoot(cps[ci], s.tree.Root()); err != nil {
				l.reportTamper(ctx, err, "sweep")
				s.broken = true
			}
		}
	}
	if s.next < to {
		l.reportTamper(ctx, &TamperError{Index: s.next, What: "the event is missing from the store"}, "sweep")
		*s = sweep{tree: NewTree()}
	}
	return nil
}

// checkRoot checks root, of the tree of c.Size events, against stored
// checkpoint c: against the root its signed note holds when the log has
// a verifier, else against the stored root.
func (l *Log) checkRoot(c StoredCheckpoint, root [32]byte) error {
	want := c.Root
	if l.cfg.Verifier != nil {
		cp, err := OpenCheckpoint(c.Note, l.cfg.Verifier)
		if err != nil {
			return &TamperError{Index: c.Size, Checkpoint: true, What: fmt.Sprintf("its note does not verify: %v", err)}
		}
		if cp.Size != c.Size || cp.Root != c.Root {
			return &TamperError{Index: c.Size, Checkpoint: true, What: "its stored size or root is not the one its note signs"}
		}
		want = cp.Root
	}
	if root != want {
		return &TamperError{Index: c.Size, Checkpoint: true, What: "the root of the stored events differs from the signed root"}
	}
	return nil
}
