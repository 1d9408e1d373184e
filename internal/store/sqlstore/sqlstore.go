// Package sqlstore implements [store.Store], the audit log's storage
// included, once, on database/sql, for every SQL database the broker
// supports. What differs between databases — how a unique-constraint
// violation is reported, how migrations, pairings and audit appends are
// serialised, the schema's column types — is described by a [Dialect]; the
// queries are shared. The backends
// [github.com/tetherhq/tether/internal/store/sqlitestore] and
// [github.com/tetherhq/tether/internal/store/pgstore] open the database and
// call [New].
//
// Queries use PostgreSQL's $1 placeholders, which SQLite also reads: to it
// "$1" is a named parameter, and modernc.org/sqlite binds it to the first
// argument. Times are stored as BIGINT Unix milliseconds in every database,
// so that the SQL needs no per-database date handling; they come back in UTC
// with millisecond precision. A heartbeat's uptime is kept in milliseconds
// too. Deployments' settings and access requests are stored as JSON, whose
// times are truncated to the millisecond and in UTC as well.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// Dialect is what [Store] needs to know about the database it runs on.
type Dialect struct {
	// Name names the database in errors, e.g. "sqlite" or "postgres".
	Name string
	// Migrations holds the schema as SQL files at its root, named by a
	// version number and a description and applied in version order:
	// 0001_init.sql, 0002_agent_labels.sql, … Versions start at 1 and leave
	// no gaps. A migration, once released, never changes.
	Migrations fs.FS
	// IsUniqueViolation reports whether err, returned by the driver, is a
	// violation of a primary key or unique constraint.
	IsUniqueViolation func(err error) bool
	// MigrationLock, if not empty, is executed first in every migration
	// transaction to serialise brokers migrating one database at once. It
	// may be empty where beginning a transaction already takes the
	// database's write lock.
	MigrationLock string
	// ForUpdate is appended to a SELECT to lock the rows it reads until the
	// end of the transaction, e.g. " FOR UPDATE". It may be empty where a
	// transaction holds the database's write lock from its start.
	ForUpdate string
	// InsertRows is how many audit records one INSERT statement stores;
	// zero means one. One, the statement prepared once per append, suits
	// an embedded database, where a statement costs no round trip: SQLite
	// appends fastest so, half as fast again as with 100, since it
	// journals what a statement of several rows changes to be able to undo
	// the statement alone. A server wants many, to save round trips:
	// PostgreSQL appends two to three times as fast with 100 as with one.
	// Each record takes ten parameters, which must stay within the
	// database's limit.
	InsertRows int
	// ListTables, if set, is a query of the names of the tables in the
	// database the store uses. New refuses a database that holds tables
	// but not Tether's schema_migrations: someone else's database, which
	// migrating would mix Tether's tables into.
	ListTables string
}

// Store is a [store.Store] on a SQL database. Create it with [New].
type Store struct {
	db *sql.DB
	d  Dialect
}

var _ store.Store = (*Store)(nil)

// New brings the schema of db up to date with d.Migrations and returns a
// Store on it. The Store owns db from then on and closes it in
// [Store.Close]; if New fails, db stays the caller's to close.
//
// db must enforce foreign keys. Where d leaves MigrationLock or ForUpdate
// empty, every transaction db begins must hold the database's write lock
// from its start, as SQLite's BEGIN IMMEDIATE does.
func New(ctx context.Context, db *sql.DB, d Dialect) (*Store, error) {
	if d.IsUniqueViolation == nil {
		return nil, fmt.Errorf("%s dialect: no IsUniqueViolation", d.Name)
	}
	if err := checkTether(ctx, db, d); err != nil {
		return nil, err
	}
	if err := migrate(ctx, db, d); err != nil {
		return nil, fmt.Errorf("migrate %s schema: %w", d.Name, err)
	}
	s := &Store{db: db, d: d}
	if hasTreeNodes(d.Migrations) {
		if err := s.fillTree(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// ErrForeignDatabase reports a database that holds tables, none of them
// Tether's schema_migrations: not a Tether store.
var ErrForeignDatabase = errors.New("the database holds tables but no Tether schema")

// checkTether refuses a database holding tables but no schema_migrations.
func checkTether(ctx context.Context, db *sql.DB, d Dialect) error {
	if d.ListTables == "" {
		return nil
	}
	tables, err := TableNames(ctx, db, d.ListTables)
	if err != nil {
		return fmt.Errorf("list the %s database's tables: %w", d.Name, err)
	}
	if len(tables) == 0 || slices.Contains(tables, "schema_migrations") {
		return nil
	}
	if len(tables) > 5 {
		tables = append(tables[:5], "…")
	}
	return fmt.Errorf("%w (it has %s): point the broker at its own, empty database, or restore Tether's database from a backup", ErrForeignDatabase, strings.Join(tables, ", "))
}

// TableNames runs query, which lists table names, and returns them.
func TableNames(ctx context.Context, db *sql.DB, query string) ([]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// Close closes the database.
func (s *Store) Close() error {
	return s.db.Close()
}

// CreateDeployment implements [store.Store]. A deployment whose ID is
// already taken is a conflict too. tok.DeploymentID may be left empty; if
// set, it must be d.ID.
func (s *Store) CreateDeployment(ctx context.Context, d store.Deployment, tok store.PairingToken) error {
	if tok.DeploymentID != "" && tok.DeploymentID != d.ID {
		return fmt.Errorf("create deployment %s/%s: first pairing token is for deployment %s, not %s", d.Tenant, d.Name, tok.DeploymentID, d.ID)
	}
	tok.DeploymentID = d.ID
	settings, err := settingsJSON(d.Settings)
	if err != nil {
		return fmt.Errorf("create deployment %s/%s: %w", d.Tenant, d.Name, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO deployments (id, tenant, name, region, created_at, settings) VALUES ($1, $2, $3, $4, $5, $6)`,
			d.ID, d.Tenant, d.Name, d.Region, millis(d.CreatedAt), settings)
		if err != nil {
			if s.d.IsUniqueViolation(err) {
				return store.ErrConflict
			}
			return err
		}
		return s.insertToken(ctx, tx, tok)
	})
	if err != nil {
		return fmt.Errorf("create deployment %s/%s: %w", d.Tenant, d.Name, err)
	}
	return nil
}

// execer is what *sql.DB and *sql.Tx have in common.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *Store) insertToken(ctx context.Context, e execer, tok store.PairingToken) error {
	_, err := e.ExecContext(ctx,
		`INSERT INTO pairing_tokens (hash, deployment_id, created_at, expires_at) VALUES ($1, $2, $3, $4)`,
		tok.Hash, tok.DeploymentID, millis(tok.CreatedAt), millis(tok.ExpiresAt))
	if err != nil {
		return fmt.Errorf("store pairing token: %w", err)
	}
	return nil
}

// deploymentStatusQuery selects deployments joined with their current
// agent; the schema allows at most one unrevoked agent per deployment.
const deploymentStatusQuery = `
SELECT d.id, d.tenant, d.name, d.region, d.created_at, d.settings,
	a.id, a.deployment_id, a.public_key, a.node_id, a.node_name, a.paired_at, a.revoked_at,
	a.last_seen_at, a.last_version, a.last_uptime_ms, a.last_tailnet_ip, a.last_upstreams, a.last_witness_refusal, a.last_approval,
	a.last_clock
FROM deployments d
LEFT JOIN agents a ON a.deployment_id = d.id AND a.revoked_at IS NULL`

// GetDeployment implements [store.Store].
func (s *Store) GetDeployment(ctx context.Context, id string) (store.DeploymentStatus, error) {
	row := s.db.QueryRowContext(ctx, deploymentStatusQuery+` WHERE d.id = $1`, id)
	ds, err := scanDeploymentStatus(row)
	if err != nil {
		return store.DeploymentStatus{}, fmt.Errorf("get deployment %s: %w", id, notFound(err))
	}
	return ds, nil
}

// GetDeploymentByName implements [store.Store].
func (s *Store) GetDeploymentByName(ctx context.Context, tenant, name string) (store.DeploymentStatus, error) {
	row := s.db.QueryRowContext(ctx, deploymentStatusQuery+` WHERE d.tenant = $1 AND d.name = $2`, tenant, name)
	ds, err := scanDeploymentStatus(row)
	if err != nil {
		return store.DeploymentStatus{}, fmt.Errorf("get deployment %s/%s: %w", tenant, name, notFound(err))
	}
	return ds, nil
}

// ListDeployments implements [store.Store]. Tenants and names are compared
// byte by byte, whatever the database's collation.
func (s *Store) ListDeployments(ctx context.Context) ([]store.DeploymentStatus, error) {
	rows, err := s.db.QueryContext(ctx, deploymentStatusQuery+` ORDER BY d.tenant, d.name`)
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	defer rows.Close()
	var all []store.DeploymentStatus
	for rows.Next() {
		ds, err := scanDeploymentStatus(rows)
		if err != nil {
			return nil, fmt.Errorf("list deployments: %w", err)
		}
		all = append(all, ds)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	return all, nil
}

// AddPairingToken implements [store.Store].
func (s *Store) AddPairingToken(ctx context.Context, tok store.PairingToken) error {
	err := s.insertToken(ctx, s.db, tok)
	if err == nil {
		return nil
	}
	// A missing deployment fails the foreign key, which every database
	// reports differently: ask instead of parsing the error.
	var n int
	if qerr := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployments WHERE id = $1`, tok.DeploymentID).Scan(&n); qerr == nil && n == 0 {
		err = store.ErrNotFound
	}
	return fmt.Errorf("add pairing token to deployment %s: %w", tok.DeploymentID, err)
}

// RedeemPairingToken implements [store.Store]. a.RevokedAt is ignored: the
// new agent is the deployment's current one. An agent whose ID is already
// taken is an error wrapping [store.ErrConflict].
func (s *Store) RedeemPairingToken(ctx context.Context, hash []byte, now time.Time, a store.Agent) (store.Deployment, error) {
	var d store.Deployment
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Marking the token used first, conditionally, is what makes
		// redemption one-time: of two transactions racing here, the
		// second either waits for the first's row lock and then finds
		// used_at set (PostgreSQL), or does not start before the first
		// ends (SQLite's write lock).
		err := tx.QueryRowContext(ctx, `
			UPDATE pairing_tokens SET used_at = $1
			WHERE hash = $2 AND used_at IS NULL AND expires_at > $1
			RETURNING deployment_id`,
			millis(now), hash).Scan(&a.DeploymentID)
		if errors.Is(err, sql.ErrNoRows) {
			return whyUnredeemable(ctx, tx, hash)
		}
		if err != nil {
			return err
		}

		// Locking the deployment serialises redemptions of different
		// tokens of one deployment, so that each revokes the agent the
		// previous one stored.
		var created int64
		var settings string
		err = tx.QueryRowContext(ctx,
			`SELECT id, tenant, name, region, created_at, settings FROM deployments WHERE id = $1`+s.d.ForUpdate,
			a.DeploymentID).Scan(&d.ID, &d.Tenant, &d.Name, &d.Region, &created, &settings)
		if err != nil {
			return fmt.Errorf("get deployment %s: %w", a.DeploymentID, err)
		}
		d.CreatedAt = fromMillis(created)
		if d.Settings, err = parseSettings(settings); err != nil {
			return fmt.Errorf("get deployment %s: %w", a.DeploymentID, err)
		}

		_, err = tx.ExecContext(ctx,
			`UPDATE agents SET revoked_at = $1 WHERE deployment_id = $2 AND revoked_at IS NULL`,
			millis(now), a.DeploymentID)
		if err != nil {
			return fmt.Errorf("revoke previous agent: %w", err)
		}

		_, err = tx.ExecContext(ctx, `
			INSERT INTO agents (id, deployment_id, public_key, node_id, node_name, paired_at,
				last_seen_at, last_version, last_uptime_ms, last_tailnet_ip, last_upstreams, last_witness_refusal, last_approval)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			a.ID, a.DeploymentID, a.PublicKey, a.NodeID, a.NodeName, millis(a.PairedAt),
			nullMillis(a.Last.At), a.Last.Version, a.Last.Uptime.Milliseconds(), a.Last.TailnetIP, upstreamsJSON(a.Last.Upstreams),
			a.Last.WitnessRefusal, approvalJSON(a.Last.Approval))
		if err != nil && s.d.IsUniqueViolation(err) {
			return fmt.Errorf("store agent %s: %w", a.ID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("store agent %s: %w", a.ID, err)
		}
		return nil
	})
	if err != nil {
		return store.Deployment{}, fmt.Errorf("redeem pairing token: %w", err)
	}
	return d, nil
}

// whyUnredeemable returns the sentinel error saying why the token with the
// given hash could not be marked used.
func whyUnredeemable(ctx context.Context, tx *sql.Tx, hash []byte) error {
	var usedAt sql.NullInt64
	var expiresAt int64
	err := tx.QueryRowContext(ctx, `SELECT used_at, expires_at FROM pairing_tokens WHERE hash = $1`, hash).Scan(&usedAt, &expiresAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.ErrTokenUnknown
	case err != nil:
		return err
	case usedAt.Valid:
		return fmt.Errorf("%w at %s", store.ErrTokenUsed, fromMillis(usedAt.Int64).Format(time.RFC3339))
	default:
		return fmt.Errorf("%w at %s", store.ErrTokenExpired, fromMillis(expiresAt).Format(time.RFC3339))
	}
}

// GetAgent implements [store.Store].
func (s *Store) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	var r agentRow
	err := s.db.QueryRowContext(ctx, `
		SELECT id, deployment_id, public_key, node_id, node_name, paired_at, revoked_at,
			last_seen_at, last_version, last_uptime_ms, last_tailnet_ip, last_upstreams, last_witness_refusal, last_approval,
			last_clock
		FROM agents WHERE id = $1`, id).Scan(r.dest()...)
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, notFound(err))
	}
	a, err := r.agent()
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return *a, nil
}

// RevokeAgent implements [store.Store].
func (s *Store) RevokeAgent(ctx context.Context, id string, now time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE agents SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, millis(now), id)
	if err != nil {
		return fmt.Errorf("revoke agent %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("revoke agent %s: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	return s.revokedOrMissing(ctx, "revoke agent", id, "already revoked")
}

// revokedOrMissing explains why an update of agent id that must find it
// unrevoked changed no row: an error wrapping ErrNotFound if there is no
// such agent, else one wrapping ErrConflict saying revoked.
func (s *Store) revokedOrMissing(ctx context.Context, what, id, revoked string) error {
	var one int
	switch err := s.db.QueryRowContext(ctx, `SELECT 1 FROM agents WHERE id = $1`, id).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s %s: %w", what, id, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	return fmt.Errorf("%s %s: %s: %w", what, id, revoked, store.ErrConflict)
}

// MoveAgent implements [store.Store]. Any other agent recorded on nodeID
// is recorded on no node: its node ID went to another machine (a
// re-created control server hands IDs out again), and it is reached
// nowhere until it proves its key from wherever it is now.
func (s *Store) MoveAgent(ctx context.Context, id, nodeID, nodeName string) error {
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET node_id = $1, node_name = $2 WHERE id = $3 AND revoked_at IS NULL`, nodeID, nodeName, id)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil || n != 1 {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE agents SET node_id = '' WHERE node_id = $1 AND id <> $2`, nodeID, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("move agent %s to node %s: %w", id, nodeID, err)
	}
	if n == 1 {
		return nil
	}
	return s.revokedOrMissing(ctx, "move agent", id, "it is revoked")
}

// recordHeartbeatSQL stores an agent's latest heartbeat; its arguments
// are heartbeatArgs'.
const recordHeartbeatSQL = `
	UPDATE agents SET last_seen_at = $1, last_version = $2, last_uptime_ms = $3,
		last_tailnet_ip = $4, last_upstreams = $5, last_witness_refusal = $6, last_approval = $7, last_clock = $8
	WHERE id = $9`

func heartbeatArgs(agentID string, hb store.Heartbeat) []any {
	return []any{nullMillis(hb.At), hb.Version, hb.Uptime.Milliseconds(), hb.TailnetIP, upstreamsJSON(hb.Upstreams), hb.WitnessRefusal,
		approvalJSON(hb.Approval), clockJSON(hb.Clock), agentID}
}

// RecordHeartbeat implements [store.Store]. It records heartbeats of
// revoked agents too: refusing them is up to the caller.
func (s *Store) RecordHeartbeat(ctx context.Context, agentID string, hb store.Heartbeat) error {
	res, err := s.db.ExecContext(ctx, recordHeartbeatSQL, heartbeatArgs(agentID, hb)...)
	if err != nil {
		return fmt.Errorf("record heartbeat of agent %s: %w", agentID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("record heartbeat of agent %s: %w", agentID, err)
	}
	if n == 0 {
		return fmt.Errorf("record heartbeat of agent %s: %w", agentID, store.ErrNotFound)
	}
	return nil
}

// RecordHeartbeats implements [store.Store]: one transaction for many
// agents' heartbeats, so that the broker's store cost of heartbeats is a
// commit per batch, not per agent.
func (s *Store) RecordHeartbeats(ctx context.Context, hbs []store.AgentHeartbeat) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, recordHeartbeatSQL)
		if err != nil {
			return fmt.Errorf("record %d heartbeats: %w", len(hbs), err)
		}
		defer stmt.Close()
		for _, h := range hbs {
			if _, err := stmt.ExecContext(ctx, heartbeatArgs(h.AgentID, h.Heartbeat)...); err != nil {
				return fmt.Errorf("record heartbeat of agent %s: %w", h.AgentID, err)
			}
		}
		return nil
	})
}

// PutAgentSession implements [store.Store].
func (s *Store) PutAgentSession(ctx context.Context, as store.AgentSession, now time.Time) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM agent_sessions WHERE agent_id = $1 OR expires_at_ms <= $2`, as.AgentID, millis(now)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO agent_sessions (token_hash, agent_id, node_id, expires_at_ms) VALUES ($1, $2, $3, $4)`,
			as.TokenHash[:], as.AgentID, as.NodeID, millis(as.Expires))
		return err
	})
	if err != nil {
		return fmt.Errorf("store session of agent %s: %w", as.AgentID, err)
	}
	return nil
}

// GetAgentSession implements [store.Store].
func (s *Store) GetAgentSession(ctx context.Context, tokenHash [32]byte, now time.Time) (store.AgentSession, error) {
	as := store.AgentSession{TokenHash: tokenHash}
	var exp int64
	err := s.db.QueryRowContext(ctx, `SELECT agent_id, node_id, expires_at_ms FROM agent_sessions WHERE token_hash = $1 AND expires_at_ms > $2`,
		tokenHash[:], millis(now)).Scan(&as.AgentID, &as.NodeID, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return store.AgentSession{}, fmt.Errorf("agent session: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.AgentSession{}, fmt.Errorf("agent session: %w", err)
	}
	as.Expires = fromMillis(exp)
	return as, nil
}

// DeleteAgentSessions implements [store.Store].
func (s *Store) DeleteAgentSessions(ctx context.Context, agentID string) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM agent_sessions WHERE agent_id = $1`, agentID)
	if err != nil {
		return 0, fmt.Errorf("end sessions of agent %s: %w", agentID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("end sessions of agent %s: %w", agentID, err)
	}
	return int(n), nil
}

// AddRevocationPush implements [store.Store].
func (s *Store) AddRevocationPush(ctx context.Context, p store.RevocationPush) error {
	_, err := s.db.ExecContext(ctx, `
		INSERT INTO revocation_pushes (grant_id, deployment_id, expiry_ms, created_at_ms) VALUES ($1, $2, $3, $4)
		ON CONFLICT (grant_id) DO NOTHING`, p.GrantID, p.DeploymentID, millis(p.Expiry), millis(p.CreatedAt))
	if err != nil {
		return fmt.Errorf("record revocation push of grant %s: %w", p.GrantID, err)
	}
	return nil
}

// RevocationPushes implements [store.Store].
func (s *Store) RevocationPushes(ctx context.Context, now time.Time, limit int) ([]store.RevocationPush, error) {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM revocation_pushes WHERE expiry_ms <= $1`, millis(now)); err != nil {
		return nil, fmt.Errorf("forget expired revocation pushes: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `
		SELECT grant_id, deployment_id, expiry_ms, created_at_ms FROM revocation_pushes
		ORDER BY created_at_ms, grant_id LIMIT $1`, max(limit, 1))
	if err != nil {
		return nil, fmt.Errorf("read revocation pushes: %w", err)
	}
	defer rows.Close()
	var out []store.RevocationPush
	for rows.Next() {
		var p store.RevocationPush
		var exp, created int64
		if err := rows.Scan(&p.GrantID, &p.DeploymentID, &exp, &created); err != nil {
			return nil, fmt.Errorf("read revocation pushes: %w", err)
		}
		p.Expiry, p.CreatedAt = fromMillis(exp), fromMillis(created)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read revocation pushes: %w", err)
	}
	return out, nil
}

// DeleteRevocationPush implements [store.Store].
func (s *Store) DeleteRevocationPush(ctx context.Context, grantID string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM revocation_pushes WHERE grant_id = $1`, grantID); err != nil {
		return fmt.Errorf("forget revocation push of grant %s: %w", grantID, err)
	}
	return nil
}

// SetDeploymentSettings implements [store.Store].
func (s *Store) SetDeploymentSettings(ctx context.Context, id string, settings store.DeploymentSettings) error {
	js, err := settingsJSON(settings)
	if err != nil {
		return fmt.Errorf("set settings of deployment %s: %w", id, err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE deployments SET settings = $1 WHERE id = $2`, js, id)
	if err != nil {
		return fmt.Errorf("set settings of deployment %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("set settings of deployment %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("set settings of deployment %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// settingsJSON encodes a deployment's settings for its settings column,
// with the windows' times as stored: in UTC, to the millisecond.
func settingsJSON(s store.DeploymentSettings) (string, error) {
	s.FreezeWindows = storedWindows(s.FreezeWindows)
	s.MaintenanceWindows = storedWindows(s.MaintenanceWindows)
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode settings: %w", err)
	}
	return string(b), nil
}

// parseSettings decodes a deployment's settings column.
func parseSettings(js string) (store.DeploymentSettings, error) {
	var s store.DeploymentSettings
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		return store.DeploymentSettings{}, fmt.Errorf("decode settings: %w", err)
	}
	return s, nil
}

// storedWindows returns a copy of ws with their times as stored.
func storedWindows(ws []store.Window) []store.Window {
	if ws == nil {
		return nil
	}
	out := make([]store.Window, len(ws))
	for i, w := range ws {
		w.Start, w.End = storedTime(w.Start), storedTime(w.End)
		out[i] = w
	}
	return out
}

// inTx runs f in a transaction, committed if f returns nil and rolled back
// otherwise.
func (s *Store) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := f(tx); err != nil {
		// The rollback error, if any, says less than err: the driver
		// discards the connection if it cannot roll back.
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// rowScanner is what *sql.Row and *sql.Rows have in common.
type rowScanner interface {
	Scan(dest ...any) error
}

// scanDeploymentStatus scans a row of [deploymentStatusQuery].
func scanDeploymentStatus(row rowScanner) (store.DeploymentStatus, error) {
	var ds store.DeploymentStatus
	var created int64
	var settings string
	var r agentRow
	dest := append([]any{&ds.ID, &ds.Tenant, &ds.Name, &ds.Region, &created, &settings}, r.dest()...)
	if err := row.Scan(dest...); err != nil {
		return store.DeploymentStatus{}, err
	}
	ds.CreatedAt = fromMillis(created)
	var err error
	if ds.Settings, err = parseSettings(settings); err != nil {
		return store.DeploymentStatus{}, fmt.Errorf("deployment %s: %w", ds.ID, err)
	}
	a, err := r.agent()
	if err != nil {
		return store.DeploymentStatus{}, fmt.Errorf("deployment %s: %w", ds.ID, err)
	}
	ds.Agent = a
	return ds, nil
}

// agentRow receives the columns of an agent, which are all NULL when it
// comes from an outer join that found no agent.
type agentRow struct {
	id, deploymentID, nodeID, nodeName        sql.NullString
	version, tailnetIP, upstreams             sql.NullString
	witnessRefusal, approval, clock           sql.NullString
	publicKey                                 []byte
	pairedAt, revokedAt, lastSeenAt, uptimeMS sql.NullInt64
}

// dest returns the scan destinations for the columns id, deployment_id,
// public_key, node_id, node_name, paired_at, revoked_at, last_seen_at,
// last_version, last_uptime_ms, last_tailnet_ip, last_upstreams,
// last_witness_refusal, last_approval and last_clock.
func (r *agentRow) dest() []any {
	return []any{&r.id, &r.deploymentID, &r.publicKey, &r.nodeID, &r.nodeName, &r.pairedAt, &r.revokedAt,
		&r.lastSeenAt, &r.version, &r.uptimeMS, &r.tailnetIP, &r.upstreams, &r.witnessRefusal, &r.approval, &r.clock}
}

// agent returns the agent scanned, or nil if there was none.
func (r *agentRow) agent() (*store.Agent, error) {
	if !r.id.Valid {
		return nil, nil
	}
	a := &store.Agent{
		ID:           r.id.String,
		DeploymentID: r.deploymentID.String,
		PublicKey:    r.publicKey,
		NodeID:       r.nodeID.String,
		NodeName:     r.nodeName.String,
		PairedAt:     fromMillis(r.pairedAt.Int64),
		RevokedAt:    fromNullMillis(r.revokedAt),
		Last: store.Heartbeat{
			At:        fromNullMillis(r.lastSeenAt),
			Version:   r.version.String,
			Uptime:    time.Duration(r.uptimeMS.Int64) * time.Millisecond,
			TailnetIP: r.tailnetIP.String,

			WitnessRefusal: r.witnessRefusal.String,
		},
	}
	if r.upstreams.Valid {
		if err := json.Unmarshal([]byte(r.upstreams.String), &a.Last.Upstreams); err != nil {
			return nil, fmt.Errorf("agent %s: decode upstreams: %w", a.ID, err)
		}
	}
	if r.approval.String != "" {
		a.Last.Approval = new(store.AgentApproval)
		if err := json.Unmarshal([]byte(r.approval.String), a.Last.Approval); err != nil {
			return nil, fmt.Errorf("agent %s: decode approval authority: %w", a.ID, err)
		}
	}
	if r.clock.String != "" {
		a.Last.Clock = new(store.ClockSkew)
		if err := json.Unmarshal([]byte(r.clock.String), a.Last.Clock); err != nil {
			return nil, fmt.Errorf("agent %s: decode clock skew: %w", a.ID, err)
		}
	}
	return a, nil
}

// clockJSON encodes an agent's clock skew for its last_clock column:
// empty for none.
func clockJSON(c *store.ClockSkew) string {
	if c == nil {
		return ""
	}
	b, err := json.Marshal(c)
	if err != nil {
		// Unreachable: the struct holds two integers and a bool.
		panic(fmt.Sprintf("encode clock skew: %v", err))
	}
	return string(b)
}

// approvalJSON encodes an agent's approval authority for its
// last_approval column: empty for none.
func approvalJSON(a *store.AgentApproval) string {
	if a == nil {
		return ""
	}
	b, err := json.Marshal(a)
	if err != nil {
		// Unreachable: the struct holds strings, an int and a bool.
		panic(fmt.Sprintf("encode approval authority: %v", err))
	}
	return string(b)
}

// notFound turns sql.ErrNoRows into store.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// upstreamsJSON encodes m as a JSON object, or NULL if m is nil, so that
// nil and empty maps survive a round trip.
func upstreamsJSON(m map[string]string) sql.NullString {
	if m == nil {
		return sql.NullString{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		// Unreachable: every map[string]string encodes.
		panic(fmt.Sprintf("encode upstreams: %v", err))
	}
	return sql.NullString{String: string(b), Valid: true}
}

// storedTime returns t as the store returns it: truncated to the
// millisecond, in UTC, without a monotonic clock reading. The zero time
// stays zero.
func storedTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Truncate(time.Millisecond).UTC()
}

func millis(t time.Time) int64 {
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	return time.UnixMilli(ms).UTC()
}

// nullMillis stores the zero time as NULL.
func nullMillis(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
}

func fromNullMillis(ms sql.NullInt64) time.Time {
	if !ms.Valid {
		return time.Time{}
	}
	return fromMillis(ms.Int64)
}
