-- The broker's first schema. Times are Unix milliseconds, as in SQLite, so
-- that one set of queries serves both. Tenants and names sort byte by byte
-- (COLLATE "C"), as in SQLite, whatever the database's locale.

CREATE TABLE deployments (
	id         TEXT PRIMARY KEY,
	tenant     TEXT COLLATE "C" NOT NULL,
	name       TEXT COLLATE "C" NOT NULL,
	region     TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	UNIQUE (tenant, name)
);

CREATE TABLE pairing_tokens (
	hash          BYTEA PRIMARY KEY, -- SHA-256 of the token
	deployment_id TEXT NOT NULL REFERENCES deployments (id),
	created_at    BIGINT NOT NULL,
	expires_at    BIGINT NOT NULL,
	used_at       BIGINT
);

CREATE TABLE agents (
	id              TEXT PRIMARY KEY,
	deployment_id   TEXT NOT NULL REFERENCES deployments (id),
	public_key      BYTEA NOT NULL,
	node_id         TEXT NOT NULL,
	node_name       TEXT NOT NULL,
	paired_at       BIGINT NOT NULL,
	revoked_at      BIGINT,
	-- The latest heartbeat; last_seen_at is NULL before the first.
	last_seen_at    BIGINT,
	last_version    TEXT NOT NULL DEFAULT '',
	last_uptime_ms  BIGINT NOT NULL DEFAULT 0,
	last_tailnet_ip TEXT NOT NULL DEFAULT '',
	last_upstreams  TEXT -- JSON object of name to health; NULL if none reported
);

-- A deployment has at most one current agent.
CREATE UNIQUE INDEX agents_current ON agents (deployment_id) WHERE revoked_at IS NULL;
