package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// An access request is stored in access_requests as its JSON, the data
// column, which is all a read decodes. The other columns — deployment_id,
// tenant, requester, state, due_at_ms, created_at_ms, updated_at_ms and
// version — are derived from the request on every write, for filtering,
// ordering and the compare-and-swap of [Store.UpdateRequest]. Its times are
// stored as everywhere else: truncated to the millisecond, in UTC, in the
// data as in the columns.

// maxRequests is the default and maximum of [store.RequestFilter.Limit].
const maxRequests = 1000

// CreateRequest implements [store.Store].
func (s *Store) CreateRequest(ctx context.Context, r store.AccessRequest) error {
	row, err := newRequestRow(r, r.Version)
	if err != nil {
		return fmt.Errorf("create access request %s: %w", r.ID, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// Asked first, in the transaction, rather than told by the
		// foreign key, which every database reports differently.
		var n int
		err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployments WHERE id = $1`, r.DeploymentID).Scan(&n)
		if err != nil {
			return fmt.Errorf("look up deployment %s: %w", r.DeploymentID, err)
		}
		if n == 0 {
			return fmt.Errorf("deployment %s: %w", r.DeploymentID, store.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `
			INSERT INTO access_requests (id, deployment_id, tenant, requester, state, due_at_ms,
				created_at_ms, updated_at_ms, version, data)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			row.id, row.deploymentID, row.tenant, row.requester, row.state, row.dueAt,
			row.createdAt, row.updatedAt, row.version, row.data)
		if err != nil && s.d.IsUniqueViolation(err) {
			return store.ErrConflict
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create access request %s: %w", r.ID, err)
	}
	return nil
}

// GetRequest implements [store.Store].
func (s *Store) GetRequest(ctx context.Context, id string) (store.AccessRequest, error) {
	var data string
	err := s.db.QueryRowContext(ctx, `SELECT data FROM access_requests WHERE id = $1`, id).Scan(&data)
	if err != nil {
		return store.AccessRequest{}, fmt.Errorf("get access request %s: %w", id, notFound(err))
	}
	r, err := parseRequest(data)
	if err != nil {
		return store.AccessRequest{}, fmt.Errorf("get access request %s: %w", id, err)
	}
	return r, nil
}

// ListRequests implements [store.Store]. Requests created in the same
// millisecond are listed by descending ID. A negative limit is an error.
func (s *Store) ListRequests(ctx context.Context, f store.RequestFilter) ([]store.AccessRequest, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("list access requests: negative limit %d", f.Limit)
	}
	limit := f.Limit
	if limit == 0 || limit > maxRequests {
		limit = maxRequests
	}
	var where []string
	var args []any
	// param adds v to the arguments and returns its placeholder.
	param := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Tenant != "" {
		where = append(where, "tenant = "+param(f.Tenant))
	}
	if f.DeploymentID != "" {
		where = append(where, "deployment_id = "+param(f.DeploymentID))
	}
	if f.Requester != "" {
		where = append(where, "requester = "+param(f.Requester))
	}
	if len(f.States) > 0 {
		ps := make([]string, len(f.States))
		for i, st := range f.States {
			ps[i] = param(st)
		}
		where = append(where, "state IN ("+strings.Join(ps, ", ")+")")
	}
	if !f.DueBefore.IsZero() {
		// A NULL due_at_ms, a zero DueAt, compares as neither true nor
		// false: no row without one matches.
		where = append(where, "due_at_ms < "+param(millisCeil(f.DueBefore)))
	}
	query := `SELECT data FROM access_requests`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, ` AND `)
	}
	query += ` ORDER BY created_at_ms DESC, id DESC LIMIT ` + param(limit)

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list access requests: %w", err)
	}
	defer rows.Close()
	var all []store.AccessRequest
	for rows.Next() {
		var data string
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("list access requests: %w", err)
		}
		r, err := parseRequest(data)
		if err != nil {
			return nil, fmt.Errorf("list access requests: %w", err)
		}
		all = append(all, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list access requests: %w", err)
	}
	return all, nil
}

// UpdateRequest implements [store.Store]. Every field but the ID may
// change; a DeploymentID must name an existing deployment.
func (s *Store) UpdateRequest(ctx context.Context, r store.AccessRequest) error {
	row, err := newRequestRow(r, r.Version+1)
	if err != nil {
		return fmt.Errorf("update access request %s: %w", r.ID, err)
	}
	// One statement, so no transaction: the database lets one update of
	// the row through at a time, and those after it find the version
	// changed. PostgreSQL, at READ COMMITTED, re-reads the row an update
	// waited for before it checks the WHERE clause again.
	res, err := s.db.ExecContext(ctx, `
		UPDATE access_requests SET deployment_id = $1, tenant = $2, requester = $3, state = $4,
			due_at_ms = $5, created_at_ms = $6, updated_at_ms = $7, version = $8, data = $9
		WHERE id = $10 AND version = $11`,
		row.deploymentID, row.tenant, row.requester, row.state,
		row.dueAt, row.createdAt, row.updatedAt, row.version, row.data,
		row.id, r.Version)
	if err != nil {
		return fmt.Errorf("update access request %s: %w", r.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update access request %s: %w", r.ID, err)
	}
	if n > 0 {
		return nil
	}
	// Requests are never deleted: one that exists now existed at the
	// update, with another version.
	var stored int64
	err = s.db.QueryRowContext(ctx, `SELECT version FROM access_requests WHERE id = $1`, r.ID).Scan(&stored)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("update access request %s: %w", r.ID, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("update access request %s: read stored version: %w", r.ID, err)
	default:
		return fmt.Errorf("update access request %s: version %d is not the stored %d: %w", r.ID, r.Version, stored, store.ErrConflict)
	}
}

// requestRow is an access request as its columns hold it.
type requestRow struct {
	id, deploymentID, tenant, requester, state string
	dueAt                                      sql.NullInt64
	createdAt, updatedAt, version              int64
	data                                       string
}

// newRequestRow returns the columns storing r with the given version.
func newRequestRow(r store.AccessRequest, version int64) (requestRow, error) {
	if r.ID == "" {
		return requestRow{}, fmt.Errorf("request has no ID")
	}
	r = storedRequest(r)
	r.Version = version
	b, err := json.Marshal(r)
	if err != nil {
		return requestRow{}, fmt.Errorf("encode request: %w", err)
	}
	return requestRow{
		id:           r.ID,
		deploymentID: r.DeploymentID,
		tenant:       r.Tenant,
		requester:    r.Requester.Subject,
		state:        r.State,
		dueAt:        nullMillis(r.DueAt()),
		createdAt:    millis(r.CreatedAt),
		updatedAt:    millis(r.UpdatedAt),
		version:      version,
		data:         string(b),
	}, nil
}

// storedRequest returns r with its times as stored. It copies what r
// shares with the caller's request before changing it.
func storedRequest(r store.AccessRequest) store.AccessRequest {
	r.PendingUntil = storedTime(r.PendingUntil)
	r.CreatedAt = storedTime(r.CreatedAt)
	r.UpdatedAt = storedTime(r.UpdatedAt)
	r.EndedAt = storedTime(r.EndedAt)
	if r.Reviews != nil {
		reviews := make([]store.Review, len(r.Reviews))
		for i, rv := range r.Reviews {
			rv.At = storedTime(rv.At)
			reviews[i] = rv
		}
		r.Reviews = reviews
	}
	if r.Grant != nil {
		g := *r.Grant
		g.NotBefore = storedTime(g.NotBefore)
		g.Expiry = storedTime(g.Expiry)
		g.IssuedAt = storedTime(g.IssuedAt)
		r.Grant = &g
	}
	return r
}

// parseRequest decodes an access request's data column.
func parseRequest(data string) (store.AccessRequest, error) {
	var r store.AccessRequest
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		return store.AccessRequest{}, fmt.Errorf("decode request: %w", err)
	}
	return r, nil
}

// millisCeil returns t in Unix milliseconds, rounded up: a time stored to
// the millisecond is before t if and only if its milliseconds are before
// millisCeil(t).
func millisCeil(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		ms++
	}
	return ms
}
