-- Agents' sessions with the broker, so that every broker sharing the
-- store honours a session another opened, a restart ends none, and
-- revoking an agent ends its sessions everywhere. Only the SHA-256 of a
-- session token is stored.
CREATE TABLE agent_sessions (
	token_hash    BLOB PRIMARY KEY,
	agent_id      TEXT NOT NULL,
	node_id       TEXT NOT NULL, -- the tailnet node the session is bound to
	expires_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX agent_sessions_agent ON agent_sessions (agent_id);
CREATE INDEX agent_sessions_expiry ON agent_sessions (expires_at_ms);
