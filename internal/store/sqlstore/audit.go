package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
)

// The audit log's tables are audit_events, audit_checkpoints and
// audit_cosignatures. Its times are stored in milliseconds, like the rest
// of the schema: a record's Time comes back truncated to the millisecond,
// in UTC, while its Data keeps the event's time exactly.

// existingIDsChunk is how many IDs one ExistingIDs query looks up. SQLite
// looks every named parameter ($1, $2, …) up in a list of them all, when
// it parses a query and when modernc.org/sqlite binds it, so that a query
// costs the square of its parameters: 100 at a time is about the fastest
// in both databases, 500 at a time some 70% slower in SQLite.
const existingIDsChunk = 100

const insertRecordColumns = `idx, id, time_ms, type, subject, deployment, request_id, grant_id, actor_tenant, data, leaf_hash`

// recordColumns is how many columns insertRecordColumns names.
const recordColumns = 11

// maxScopeBranches bounds the branches of a tenant-scoped search (one per
// deployment, and one for the tenant's events about no deployment);
// beyond it the search is one query with IN, which the databases may
// answer less directly.
const maxScopeBranches = 64

// insertRecordsSQL returns an INSERT statement for n records.
func insertRecordsSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO audit_events (` + insertRecordColumns + `) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j := range recordColumns {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(i*recordColumns + j + 1))
		}
		b.WriteByte(')')
	}
	return b.String()
}

// AppendRecords implements [audit.Storage]. It checks, in the transaction
// that stores them, that recs continue the log: that their indexes follow
// each other and the first is the log's size. Otherwise, or if an event's
// ID is stored already (an error wrapping [store.ErrConflict]), it stores
// nothing.
func (s *Store) AppendRecords(ctx context.Context, recs []audit.Record) error {
	_, err := s.appendRecords(ctx, recs, false)
	return err
}

// AppendRecordsNext implements [audit.Storage]: it numbers recs after
// the records stored, under the lock that serializes appends, so that
// writers sharing the store never race for an index.
func (s *Store) AppendRecordsNext(ctx context.Context, recs []audit.Record) (uint64, error) {
	return s.appendRecords(ctx, recs, true)
}

func (s *Store) appendRecords(ctx context.Context, recs []audit.Record, renumber bool) (uint64, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	first := recs[0].Index
	if renumber {
		for i := range recs {
			recs[i].Index = uint64(i)
		}
	}
	if err := checkBatch(recs); err != nil {
		return 0, fmt.Errorf("append audit records from %d: %w", first, err)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		covered, err := s.lockAuditTree(ctx, tx)
		if err != nil {
			return err
		}
		size, err := auditSize(ctx, tx)
		if err != nil {
			return err
		}
		if renumber {
			if size > math.MaxInt64-uint64(len(recs)) {
				return fmt.Errorf("index %d out of range", size)
			}
			for i := range recs {
				recs[i].Index = size + uint64(i)
			}
			first = size
		}
		if first != size {
			return fmt.Errorf("the first index does not continue the log, whose size is %d: %w", size, audit.ErrNotContinuing)
		}
		err = s.insertRecords(ctx, tx, recs)
		if err != nil && s.d.IsUniqueViolation(err) {
			return store.ErrConflict
		}
		if err != nil {
			return err
		}
		// The tree's nodes, in the same transaction: a proof never
		// sees records without them. Nodes said to cover more than the
		// log holds are of events deleted since: those of the events
		// still there stand, and the rest are written anew (the log's
		// checkpoints and its witnesses are what tell of the deletion).
		covered = min(covered, size)
		if size-covered <= maxCatchUp {
			known := make([][32]byte, len(recs))
			for i := range recs {
				known[i] = recs[i].LeafHash
			}
			return s.growTree(ctx, tx, covered, size+uint64(len(recs)), known)
		}
		return nil
	})
	if errors.Is(err, store.ErrConflict) {
		err = s.whichConflict(ctx, recs)
	}
	if err != nil {
		return 0, fmt.Errorf("append audit records %d to %d: %w", first, first+uint64(len(recs))-1, err)
	}
	return first, nil
}

// insertRecords inserts recs, [Dialect.InsertRows] at a time.
func (s *Store) insertRecords(ctx context.Context, tx *sql.Tx, recs []audit.Record) error {
	n := max(s.d.InsertRows, 1)
	// The statement for n records, prepared once, serves all but the
	// last few.
	var full *sql.Stmt
	if len(recs) >= n {
		var err error
		if full, err = tx.PrepareContext(ctx, insertRecordsSQL(n)); err != nil {
			return err
		}
		defer full.Close()
	}
	args := make([]any, 0, recordColumns*min(len(recs), n))
	for len(recs) > 0 {
		chunk := recs[:min(len(recs), n)]
		recs = recs[len(chunk):]
		args = args[:0]
		for i := range chunk {
			r := &chunk[i]
			args = append(args, int64(r.Index), r.ID, millis(r.Time), string(r.Type), r.Subject,
				r.Deployment, r.RequestID, r.GrantID, r.ActorTenant, r.Data, r.LeafHash[:])
		}
		var err error
		if len(chunk) == n {
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, insertRecordsSQL(len(chunk)), args...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkBatch checks that the indexes of recs follow each other and that
// every record has an ID and data.
func checkBatch(recs []audit.Record) error {
	first := recs[0].Index
	if first > math.MaxInt64-uint64(len(recs)) {
		return fmt.Errorf("index %d out of range", first)
	}
	for i := range recs {
		r := &recs[i]
		if r.Index != first+uint64(i) {
			return fmt.Errorf("record %d of the batch has index %d, want %d: indexes must follow each other", i, r.Index, first+uint64(i))
		}
		if r.ID == "" {
			return fmt.Errorf("record %d has no ID", r.Index)
		}
		if len(r.Data) == 0 {
			return fmt.Errorf("record %d (event %s) has no data", r.Index, r.ID)
		}
	}
	return nil
}

// whichConflict returns an error wrapping [store.ErrConflict] that names
// an event of recs whose ID is stored already or that recs hold twice.
func (s *Store) whichConflict(ctx context.Context, recs []audit.Record) error {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	existing, err := s.ExistingIDs(ctx, ids)
	if err != nil {
		return fmt.Errorf("an event ID is stored already or repeated (looking it up: %v): %w", err, store.ErrConflict)
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if existing[id] {
			return fmt.Errorf("event %s is stored already: %w", id, store.ErrConflict)
		}
		if seen[id] {
			return fmt.Errorf("event %s is in the batch twice: %w", id, store.ErrConflict)
		}
		seen[id] = true
	}
	// Unreachable unless the events were deleted since.
	return fmt.Errorf("an event ID is stored already: %w", store.ErrConflict)
}

// lockAudit makes tx wait for, then hold until it ends, the lock that
// transactions appending records or checkpoints take turns with.
func (s *Store) lockAudit(ctx context.Context, tx *sql.Tx) error {
	var id int
	if err := tx.QueryRowContext(ctx, `SELECT id FROM audit_lock WHERE id = 1`+s.d.ForUpdate).Scan(&id); err != nil {
		return fmt.Errorf("lock audit log: %w", err)
	}
	return nil
}

// querier is what *sql.DB and *sql.Tx have in common for reading.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// auditSize returns the number of records, the index of the next.
func auditSize(ctx context.Context, q querier) (uint64, error) {
	// Not MAX(idx) + 1: SQLite reads the last row of the table directly
	// for this query, but may scan the table for an expression of MAX.
	var last int64
	err := q.QueryRowContext(ctx, `SELECT idx FROM audit_events ORDER BY idx DESC LIMIT 1`).Scan(&last)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read audit log size: %w", err)
	}
	return uint64(last) + 1, nil
}

// AuditSize implements [audit.Storage].
func (s *Store) AuditSize(ctx context.Context) (uint64, error) {
	return auditSize(ctx, s.db)
}

// LeafHashes implements [audit.Storage]. Where to is beyond the log's
// size, it returns the hashes of [from, size): fewer than to - from.
func (s *Store) LeafHashes(ctx context.Context, from, to uint64) ([][32]byte, error) {
	return leafHashes(ctx, s.db, from, to)
}

func leafHashes(ctx context.Context, q rowsQuerier, from, to uint64) ([][32]byte, error) {
	if from >= to {
		return nil, nil
	}
	rows, err := q.QueryContext(ctx,
		`SELECT idx, leaf_hash FROM audit_events WHERE idx >= $1 AND idx < $2 ORDER BY idx`,
		clampInt64(from), clampInt64(to))
	if err != nil {
		return nil, fmt.Errorf("read audit leaf hashes [%d, %d): %w", from, to, err)
	}
	defer rows.Close()
	// Callers ask for up to the log's size, but to may be far beyond it:
	// allocate for all at once only if they are few.
	hs := make([][32]byte, 0, min(to-from, 1<<16))
	var idx int64
	var h sql.RawBytes // not copied: it is copied into hs
	for rows.Next() {
		if err := rows.Scan(&idx, &h); err != nil {
			return nil, fmt.Errorf("read audit leaf hashes [%d, %d): %w", from, to, err)
		}
		want := from + uint64(len(hs))
		if uint64(idx) != want {
			return nil, fmt.Errorf("read audit leaf hashes [%d, %d): record %d is missing", from, to, want)
		}
		if len(h) != 32 {
			return nil, fmt.Errorf("read audit leaf hashes [%d, %d): record %d has a leaf hash of %d bytes, want 32", from, to, idx, len(h))
		}
		hs = append(hs, [32]byte(h))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit leaf hashes [%d, %d): %w", from, to, err)
	}
	return hs, nil
}

// Records implements [audit.Storage]. Since and Until are compared with
// the records' times at millisecond precision: all three are truncated to
// the millisecond.
//
// A tenant-scoped search is a UNION ALL of one branch per deployment of
// the scope and one for its events about no deployment, each ordered by
// index and limited, so that every branch reads its own index
// ((deployment, idx) or (actor_tenant, idx)) only as far as the page
// needs: a tenant's page of 50 reads at most 50 rows per branch, however
// big the log and however rare the tenant's events in it.
func (s *Store) Records(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("read audit records: negative limit %d", f.Limit)
	}
	var args []any
	// placeholder adds v to args and returns its placeholder.
	placeholder := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	order := ` ORDER BY idx`
	if f.Descending {
		order = ` ORDER BY idx DESC`
	}
	limit := func() string {
		if f.Limit > 0 {
			return ` LIMIT ` + placeholder(f.Limit)
		}
		return ""
	}
	// branch is the query of the records matching f and extra.
	branch := func(extra ...string) string {
		where := extra
		add := func(cond string, v any) {
			where = append(where, fmt.Sprintf(cond, placeholder(v)))
		}
		if f.Subject != "" {
			add("subject = %s", f.Subject)
		}
		if f.Deployment != "" {
			add("deployment = %s", f.Deployment)
		}
		if f.Type != "" {
			add("type = %s", string(f.Type))
		}
		// "<> ''", true here, lets the databases use the partial indexes,
		// which leave out the empty value.
		if f.GrantID != "" {
			add("grant_id = %s AND grant_id <> ''", f.GrantID)
		}
		if f.RequestID != "" {
			add("request_id = %s AND request_id <> ''", f.RequestID)
		}
		if !f.Since.IsZero() {
			add("time_ms >= %s", millis(f.Since))
		}
		if !f.Until.IsZero() {
			add("time_ms < %s", millis(f.Until))
		}
		if f.FromIndex > 0 {
			add("idx >= %s", clampInt64(f.FromIndex))
		}
		if f.ToIndex > 0 {
			add("idx < %s", clampInt64(f.ToIndex))
		}
		q := `SELECT ` + insertRecordColumns + ` FROM audit_events`
		if len(where) > 0 {
			q += ` WHERE ` + strings.Join(where, ` AND `)
		}
		return q + order + limit()
	}
	var query string
	switch sc := f.Tenant; {
	case sc == nil:
		query = branch()
	case sc.Tenant == "":
		return nil, nil
	default:
		// The deployment-less branch's literal "deployment = ''" lets
		// the databases use the partial (actor_tenant) index.
		var branches []string
		if f.Deployment == "" || slices.Contains(sc.Deployments, f.Deployment) {
			if f.Deployment == "" && len(sc.Deployments) > maxScopeBranches {
				in := make([]string, len(sc.Deployments))
				for i, d := range sc.Deployments {
					in[i] = placeholder(d)
				}
				branches = append(branches, branch(`deployment IN (`+strings.Join(in, ", ")+`)`))
			} else if f.Deployment == "" {
				for _, d := range sc.Deployments {
					branches = append(branches, branch(`deployment = `+placeholder(d)))
				}
			} else {
				branches = append(branches, branch())
			}
		}
		if f.Deployment == "" {
			branches = append(branches, branch(`deployment = ''`, `actor_tenant = `+placeholder(sc.Tenant)))
		}
		switch len(branches) {
		case 0:
			return nil, nil
		case 1:
			query = branches[0]
		default:
			for i, b := range branches {
				branches[i] = `SELECT * FROM (` + b + `) AS b` + strconv.Itoa(i)
			}
			query = strings.Join(branches, ` UNION ALL `) + order + limit()
		}
	}

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read audit records: %w", err)
	}
	defer rows.Close()
	var recs []audit.Record
	for rows.Next() {
		var r audit.Record
		var idx, timeMS int64
		var typ string
		var leafHash sql.RawBytes
		err := rows.Scan(&idx, &r.ID, &timeMS, &typ, &r.Subject, &r.Deployment, &r.RequestID, &r.GrantID, &r.ActorTenant, &r.Data, &leafHash)
		if err != nil {
			return nil, fmt.Errorf("read audit records: %w", err)
		}
		if len(leafHash) != 32 {
			return nil, fmt.Errorf("read audit records: record %d has a leaf hash of %d bytes, want 32", idx, len(leafHash))
		}
		r.Index, r.Time, r.Type, r.LeafHash = uint64(idx), fromMillis(timeMS), audit.Type(typ), [32]byte(leafHash)
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit records: %w", err)
	}
	return recs, nil
}

// ExistingIDs implements [audit.Storage]. The map it returns holds the IDs
// that are stored, and only those.
func (s *Store) ExistingIDs(ctx context.Context, ids []string) (map[string]bool, error) {
	existing := make(map[string]bool)
	args := make([]any, 0, min(len(ids), existingIDsChunk))
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), existingIDsChunk)]
		ids = ids[len(chunk):]
		var b strings.Builder
		b.WriteString(`SELECT id FROM audit_events WHERE id IN (`)
		args = args[:0]
		for i, id := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(i + 1))
			args = append(args, id)
		}
		b.WriteByte(')')
		if err := s.existingIDs(ctx, existing, b.String(), args); err != nil {
			return nil, fmt.Errorf("look up audit event IDs: %w", err)
		}
	}
	return existing, nil
}

// existingIDs runs query, which selects IDs, and adds them to existing.
func (s *Store) existingIDs(ctx context.Context, existing map[string]bool, query string, args []any) error {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		existing[id] = true
	}
	return rows.Err()
}

// AddCheckpoint implements [audit.Storage]. Storing a checkpoint again,
// the latest or an earlier one, is a no-op if it is the same (root, note
// and time to the millisecond); another of a stored size is an error
// wrapping [store.ErrConflict]. A checkpoint smaller than the latest is an
// error.
func (s *Store) AddCheckpoint(ctx context.Context, c audit.StoredCheckpoint) error {
	if c.Size > math.MaxInt64 {
		return fmt.Errorf("add audit checkpoint %d: size out of range", c.Size)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.lockAudit(ctx, tx); err != nil {
			return err
		}
		stored, ok, err := scanCheckpoint(tx.QueryRowContext(ctx,
			`SELECT size, root, time_ms, note FROM audit_checkpoints WHERE size = $1`, int64(c.Size)))
		if err != nil {
			return err
		}
		if ok {
			if stored.Root == c.Root && stored.Note == c.Note && millis(stored.Time) == millis(c.Time) {
				return nil
			}
			return fmt.Errorf("a different checkpoint of this size is stored: %w", store.ErrConflict)
		}
		latest, ok, err := scanCheckpoint(tx.QueryRowContext(ctx,
			`SELECT size, root, time_ms, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`))
		if err != nil {
			return err
		}
		if ok && c.Size < latest.Size {
			return fmt.Errorf("the latest checkpoint is larger, of size %d: sizes only grow", latest.Size)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO audit_checkpoints (size, root, time_ms, note) VALUES ($1, $2, $3, $4)`,
			int64(c.Size), c.Root[:], millis(c.Time), c.Note)
		return err
	})
	if err != nil {
		return fmt.Errorf("add audit checkpoint %d: %w", c.Size, err)
	}
	return nil
}

// scanCheckpoint scans a row of size, root, time_ms and note; ok is false
// if there was none.
func scanCheckpoint(row rowScanner) (c audit.StoredCheckpoint, ok bool, err error) {
	var size, timeMS int64
	var root []byte
	err = row.Scan(&size, &root, &timeMS, &c.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.StoredCheckpoint{}, false, nil
	}
	if err != nil {
		return audit.StoredCheckpoint{}, false, err
	}
	if len(root) != 32 {
		return audit.StoredCheckpoint{}, false, fmt.Errorf("checkpoint %d has a root of %d bytes, want 32", size, len(root))
	}
	c.Size, c.Root, c.Time = uint64(size), [32]byte(root), fromMillis(timeMS)
	return c, true, nil
}

// Checkpoints implements [audit.Storage].
func (s *Store) Checkpoints(ctx context.Context, fromSize, toSize uint64) ([]audit.StoredCheckpoint, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT size, root, time_ms, note FROM audit_checkpoints WHERE size >= $1 AND size <= $2 ORDER BY size`,
		clampInt64(fromSize), clampInt64(toSize))
	if err != nil {
		return nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	defer rows.Close()
	var cs []audit.StoredCheckpoint
	for rows.Next() {
		c, _, err := scanCheckpoint(rows)
		if err != nil {
			return nil, fmt.Errorf("read audit checkpoints: %w", err)
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	return cs, nil
}

// LatestCheckpoint implements [audit.Storage].
func (s *Store) LatestCheckpoint(ctx context.Context) (audit.StoredCheckpoint, bool, error) {
	c, ok, err := scanCheckpoint(s.db.QueryRowContext(ctx,
		`SELECT size, root, time_ms, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`))
	if err != nil {
		return audit.StoredCheckpoint{}, false, fmt.Errorf("read latest audit checkpoint: %w", err)
	}
	return c, ok, nil
}

// addCosignatureSQL stores a cosignature, keeping the first of a
// (size, witness).
const addCosignatureSQL = `
	INSERT INTO audit_cosignatures (size, witness, note, at_ms) VALUES ($1, $2, $3, $4)
	ON CONFLICT (size, witness) DO NOTHING`

// AddCosignature implements [audit.Storage]. It does not check that a
// checkpoint of c.Size is stored, nor the signature: the caller does.
func (s *Store) AddCosignature(ctx context.Context, c audit.Cosignature) error {
	if c.Size > math.MaxInt64 {
		return fmt.Errorf("add cosignature of audit checkpoint %d by %s: size out of range", c.Size, c.Witness)
	}
	_, err := s.db.ExecContext(ctx, addCosignatureSQL, int64(c.Size), c.Witness, c.Note, millis(c.At))
	if err != nil {
		return fmt.Errorf("add cosignature of audit checkpoint %d by %s: %w", c.Size, c.Witness, err)
	}
	return nil
}

// AddCosignatures stores cs in one transaction, each as
// [Store.AddCosignature] would: many agents' cosignatures of a checkpoint
// cost one write.
func (s *Store) AddCosignatures(ctx context.Context, cs []audit.Cosignature) error {
	for _, c := range cs {
		if c.Size > math.MaxInt64 {
			return fmt.Errorf("add cosignature of audit checkpoint %d by %s: size out of range", c.Size, c.Witness)
		}
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, addCosignatureSQL)
		if err != nil {
			return fmt.Errorf("add %d cosignatures: %w", len(cs), err)
		}
		defer stmt.Close()
		for _, c := range cs {
			if _, err := stmt.ExecContext(ctx, int64(c.Size), c.Witness, c.Note, millis(c.At)); err != nil {
				return fmt.Errorf("add cosignature of audit checkpoint %d by %s: %w", c.Size, c.Witness, err)
			}
		}
		return nil
	})
}

// Cosignatures implements [audit.Storage]. Witnesses are ordered byte by
// byte, whatever the database's collation.
func (s *Store) Cosignatures(ctx context.Context, fromSize, toSize uint64) ([]audit.Cosignature, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT size, witness, note, at_ms FROM audit_cosignatures
		WHERE size >= $1 AND size <= $2 ORDER BY size, witness`,
		clampInt64(fromSize), clampInt64(toSize))
	if err != nil {
		return nil, fmt.Errorf("read audit cosignatures: %w", err)
	}
	defer rows.Close()
	var cs []audit.Cosignature
	for rows.Next() {
		var c audit.Cosignature
		var size, atMS int64
		if err := rows.Scan(&size, &c.Witness, &c.Note, &atMS); err != nil {
			return nil, fmt.Errorf("read audit cosignatures: %w", err)
		}
		c.Size, c.At = uint64(size), fromMillis(atMS)
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit cosignatures: %w", err)
	}
	return cs, nil
}

// clampInt64 converts u to the int64 the databases store, replacing values
// beyond its range, which no index or size reaches, with the largest.
func clampInt64(u uint64) int64 {
	return int64(min(u, math.MaxInt64))
}
