-- The audit log: its records (the leaves of a Merkle tree, by index), the
-- checkpoints the broker signed over them and the witnesses' cosignatures.
-- Times are Unix milliseconds, as in SQLite; a record's exact time is in
-- its data, the event's canonical JSON. Witnesses sort byte by byte
-- (COLLATE "C"), as in SQLite.

CREATE TABLE audit_events (
	idx        BIGINT PRIMARY KEY,
	id         TEXT NOT NULL UNIQUE,
	time_ms    BIGINT NOT NULL,
	type       TEXT NOT NULL,
	subject    TEXT NOT NULL,
	deployment TEXT NOT NULL,
	request_id TEXT NOT NULL,
	grant_id   TEXT NOT NULL,
	data       BYTEA NOT NULL, -- the event's canonical JSON
	leaf_hash  BYTEA NOT NULL  -- SHA-256 of 0x00 || data (RFC 6962)
);

-- One index per filter of audit.Filter, each ending with idx so that it
-- lists its matches in index order, as searches return them. Few events
-- belong to a request or a grant: those indexes leave out the empty value,
-- and queries on them say "<> ''" to be able to use them.
CREATE INDEX audit_events_time ON audit_events (time_ms, idx);
CREATE INDEX audit_events_type ON audit_events (type, idx);
CREATE INDEX audit_events_subject ON audit_events (subject, idx);
CREATE INDEX audit_events_deployment ON audit_events (deployment, idx);
CREATE INDEX audit_events_request_id ON audit_events (request_id, idx) WHERE request_id <> '';
CREATE INDEX audit_events_grant_id ON audit_events (grant_id, idx) WHERE grant_id <> '';

CREATE TABLE audit_checkpoints (
	size    BIGINT PRIMARY KEY,
	root    BYTEA NOT NULL,
	time_ms BIGINT NOT NULL,
	note    TEXT NOT NULL -- the signed note
);

CREATE TABLE audit_cosignatures (
	size    BIGINT NOT NULL,
	witness TEXT COLLATE "C" NOT NULL, -- the witness's note key name
	note    TEXT NOT NULL, -- the checkpoint note with the witness's signature
	at_ms   BIGINT NOT NULL,
	PRIMARY KEY (size, witness)
);

-- One row, which transactions that append records or checkpoints lock
-- (FOR UPDATE) before they read what they check, so that brokers sharing
-- the database take turns: two appends cannot both find the log's end
-- free, nor two checkpoints both find theirs the largest.
CREATE TABLE audit_lock (
	id INTEGER PRIMARY KEY CHECK (id = 1)
);
INSERT INTO audit_lock (id) VALUES (1);
