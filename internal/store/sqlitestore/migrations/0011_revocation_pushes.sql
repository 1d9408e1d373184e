-- Revocations an agent has not acknowledged yet. A row is written before
-- the broker pushes a revocation and deleted once the agent took it, so
-- that any broker sharing the store (or this one after a restart) pushes
-- it again until the grant would have expired anyway.
CREATE TABLE revocation_pushes (
	grant_id      TEXT PRIMARY KEY,
	deployment_id TEXT NOT NULL,
	expiry_ms     INTEGER NOT NULL, -- the grant's expiry: past it the agent refuses the grant by itself
	created_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX revocation_pushes_expiry ON revocation_pushes (expiry_ms);
