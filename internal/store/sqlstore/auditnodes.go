package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/tetherhq/tether/audit"
)

// The audit log's interior nodes live in audit_nodes, keyed by their
// in-order number (nodeKey); audit_lock.tree_size says how many events
// they cover. AppendRecords extends them in the transaction that stores
// the records; New fills them in for a log written before they existed,
// fillChunk events per transaction, so that a broker killed part way
// resumes where it stopped.

// fillChunk bounds the events whose nodes one transaction fills in.
const fillChunk = 1 << 16

// maxCatchUp bounds the events behind whose nodes an append fills in
// besides its own (written by a broker that kept no nodes); beyond it
// the next New does.
const maxCatchUp = 1 << 12

// hasTreeNodes reports whether migrations create audit_nodes: all but
// the tests of upgrades from older schemas.
func hasTreeNodes(migrations fs.FS) bool {
	ms, err := fs.Glob(migrations, "*_audit_nodes.sql")
	return err == nil && len(ms) > 0
}

// nodeKey returns the in-order number of a node above the leaves.
func nodeKey(id audit.NodeID) (int64, error) {
	if id.Level < 1 || id.Level > 61 || id.Index >= 1<<(61-id.Level) {
		return 0, fmt.Errorf("tree node %d/%d out of range", id.Level, id.Index)
	}
	return int64(id.Index<<(id.Level+1) + 1<<id.Level - 1), nil
}

// rowsQuerier is what *sql.DB and *sql.Tx have in common for queries.
type rowsQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// NodeHashes implements [audit.Storage].
func (s *Store) NodeHashes(ctx context.Context, ids []audit.NodeID) ([][32]byte, error) {
	hs, err := nodeHashes(ctx, s.db, ids)
	if err != nil {
		return nil, fmt.Errorf("read audit tree nodes: %w", err)
	}
	return hs, nil
}

// nodeHashes reads the hashes of ids: leaves from audit_events, the
// nodes above them from audit_nodes, existingIDsChunk keys a query.
func nodeHashes(ctx context.Context, q rowsQuerier, ids []audit.NodeID) ([][32]byte, error) {
	var leaves, nodes []int64
	for _, id := range ids {
		if id.Level == 0 {
			leaves = append(leaves, clampInt64(id.Index))
			continue
		}
		k, err := nodeKey(id)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, k)
	}
	got := make(map[[2]int64][32]byte, len(ids))
	read := func(level int64, query string, keys []int64) error {
		for len(keys) > 0 {
			chunk := keys[:min(len(keys), existingIDsChunk)]
			keys = keys[len(chunk):]
			args := make([]any, len(chunk))
			ph := make([]string, len(chunk))
			for i, k := range chunk {
				args[i], ph[i] = k, "$"+strconv.Itoa(i+1)
			}
			rows, err := q.QueryContext(ctx, query+` IN (`+strings.Join(ph, ", ")+`)`, args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var k int64
				var h sql.RawBytes
				if err := rows.Scan(&k, &h); err != nil {
					rows.Close()
					return err
				}
				if len(h) != 32 {
					rows.Close()
					return fmt.Errorf("tree node %d has a hash of %d bytes, want 32", k, len(h))
				}
				got[[2]int64{level, k}] = [32]byte(h)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return nil
	}
	if err := read(0, `SELECT idx, leaf_hash FROM audit_events WHERE idx`, leaves); err != nil {
		return nil, err
	}
	if err := read(1, `SELECT id, hash FROM audit_nodes WHERE id`, nodes); err != nil {
		return nil, err
	}
	out := make([][32]byte, len(ids))
	li, ni := 0, 0
	for i, id := range ids {
		key := [2]int64{0, 0}
		if id.Level == 0 {
			key[1] = leaves[li]
			li++
		} else {
			key = [2]int64{1, nodes[ni]}
			ni++
		}
		h, ok := got[key]
		if !ok {
			return nil, fmt.Errorf("node %d/%d: %w", id.Level, id.Index, audit.ErrNodesMissing)
		}
		out[i] = h
	}
	return out, nil
}

// lockAuditTree is lockAudit that also reads how many events the stored
// nodes cover.
func (s *Store) lockAuditTree(ctx context.Context, tx *sql.Tx) (uint64, error) {
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT tree_size FROM audit_lock WHERE id = 1`+s.d.ForUpdate).Scan(&n); err != nil {
		return 0, fmt.Errorf("lock audit log: %w", err)
	}
	return uint64(n), nil
}

// growTree stores the nodes that events [from, to) complete, where the
// stored nodes cover [0, from): the leaf hashes of [from, to-len(known))
// are read from audit_events, known are those of the rest. It sets
// tree_size to to.
func (s *Store) growTree(ctx context.Context, tx *sql.Tx, from, to uint64, known [][32]byte) error {
	prefix, err := nodeHashes(ctx, tx, audit.PrefixNodes(from))
	if err != nil {
		return fmt.Errorf("read audit tree prefix of size %d: %w", from, err)
	}
	leaves, err := leafHashes(ctx, tx, from, to-uint64(len(known)))
	if err != nil {
		return err
	}
	if uint64(len(leaves)) != to-uint64(len(known))-from {
		return fmt.Errorf("grow audit tree to %d: the store has %d leaf hashes from %d", to, len(leaves), from)
	}
	leaves = append(leaves, known...)
	n := max(s.d.InsertRows, 1)
	var full *sql.Stmt
	args := make([]any, 0, 2*n)
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		var err error
		if len(args) == 2*n {
			if full == nil {
				if full, err = tx.PrepareContext(ctx, insertNodesSQL(n)); err != nil {
					return err
				}
			}
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, insertNodesSQL(len(args)/2), args...)
		}
		args = args[:0]
		return err
	}
	defer func() {
		if full != nil {
			full.Close()
		}
	}()
	err = audit.AppendNodes(from, prefix, leaves, func(id audit.NodeID, h [32]byte) error {
		k, err := nodeKey(id)
		if err != nil {
			return err
		}
		args = append(args, k, h[:])
		if len(args) == 2*n {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("store audit tree nodes of events %d to %d: %w", from, to, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_lock SET tree_size = $1 WHERE id = 1`, clampInt64(to)); err != nil {
		return fmt.Errorf("store audit tree size %d: %w", to, err)
	}
	return nil
}

// insertNodesSQL returns an INSERT of n nodes. A node stored again (after
// tree_size was reset to rebuild the nodes) takes the new hash.
func insertNodesSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO audit_nodes (id, hash) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($%d, $%d)", 2*i+1, 2*i+2)
	}
	b.WriteString(` ON CONFLICT (id) DO UPDATE SET hash = excluded.hash`)
	return b.String()
}

// fillTree stores the nodes of events appended before the store kept
// them, fillChunk events a transaction.
func (s *Store) fillTree(ctx context.Context) error {
	for {
		done := false
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			covered, err := s.lockAuditTree(ctx, tx)
			if err != nil {
				return err
			}
			size, err := auditSize(ctx, tx)
			if err != nil {
				return err
			}
			if covered >= size {
				done = true
				return nil
			}
			return s.growTree(ctx, tx, covered, min(covered+fillChunk, size), nil)
		})
		if err != nil {
			return fmt.Errorf("fill in the audit tree's nodes: %w", err)
		}
		if done {
			return nil
		}
	}
}
