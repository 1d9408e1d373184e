-- The broker's first schema. Times are Unix milliseconds. STRICT tables
-- make SQLite enforce the column types, as PostgreSQL does.

CREATE TABLE deployments (
	id         TEXT PRIMARY KEY,
	tenant     TEXT NOT NULL,
	name       TEXT NOT NULL,
	region     TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	UNIQUE (tenant, name)
) STRICT;

CREATE TABLE pairing_tokens (
	hash          BLOB PRIMARY KEY, -- SHA-256 of the token
	deployment_id TEXT NOT NULL REFERENCES deployments (id),
	created_at    INTEGER NOT NULL,
	expires_at    INTEGER NOT NULL,
	used_at       INTEGER
) STRICT;

CREATE TABLE agents (
	id              TEXT PRIMARY KEY,
	deployment_id   TEXT NOT NULL REFERENCES deployments (id),
	public_key      BLOB NOT NULL,
	node_id         TEXT NOT NULL,
	node_name       TEXT NOT NULL,
	paired_at       INTEGER NOT NULL,
	revoked_at      INTEGER,
	-- The latest heartbeat; last_seen_at is NULL before the first.
	last_seen_at    INTEGER,
	last_version    TEXT NOT NULL DEFAULT '',
	last_uptime_ms  INTEGER NOT NULL DEFAULT 0,
	last_tailnet_ip TEXT NOT NULL DEFAULT '',
	last_upstreams  TEXT -- JSON object of name to health; NULL if none reported
) STRICT;

-- A deployment has at most one current agent.
CREATE UNIQUE INDEX agents_current ON agents (deployment_id) WHERE revoked_at IS NULL;
