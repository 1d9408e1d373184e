-- The audit log: its records (the leaves of a Merkle tree, by index), the
-- checkpoints the broker signed over them and the witnesses' cosignatures.
-- Times are Unix milliseconds; a record's exact time is in its data, the
-- event's canonical JSON.

-- idx is the rowid: appends go to the end of the table's B-tree and need
-- no separate primary-key index.
CREATE TABLE audit_events (
	idx        INTEGER PRIMARY KEY,
	id         TEXT NOT NULL UNIQUE,
	time_ms    INTEGER NOT NULL,
	type       TEXT NOT NULL,
	subject    TEXT NOT NULL,
	deployment TEXT NOT NULL,
	request_id TEXT NOT NULL,
	grant_id   TEXT NOT NULL,
	data       BLOB NOT NULL, -- the event's canonical JSON
	leaf_hash  BLOB NOT NULL  -- SHA-256 of 0x00 || data (RFC 6962)
) STRICT;

-- One index per filter of audit.Filter. An index of SQLite ends with the
-- rowid, so each lists its matches in index order, as searches return
-- them. Few events belong to a request or a grant: those indexes leave out
-- the empty value, and queries on them say "<> ''" to be able to use them.
CREATE INDEX audit_events_time ON audit_events (time_ms);
CREATE INDEX audit_events_type ON audit_events (type);
CREATE INDEX audit_events_subject ON audit_events (subject);
CREATE INDEX audit_events_deployment ON audit_events (deployment);
CREATE INDEX audit_events_request_id ON audit_events (request_id) WHERE request_id <> '';
CREATE INDEX audit_events_grant_id ON audit_events (grant_id) WHERE grant_id <> '';

CREATE TABLE audit_checkpoints (
	size    INTEGER PRIMARY KEY,
	root    BLOB NOT NULL,
	time_ms INTEGER NOT NULL,
	note    TEXT NOT NULL -- the signed note
) STRICT;

CREATE TABLE audit_cosignatures (
	size    INTEGER NOT NULL,
	witness TEXT NOT NULL, -- the witness's note key name
	note    TEXT NOT NULL, -- the checkpoint note with the witness's signature
	at_ms   INTEGER NOT NULL,
	PRIMARY KEY (size, witness)
) STRICT;

-- One row, which transactions that append records or checkpoints lock
-- first, to take turns where the database does not make every transaction
-- take one lock (PostgreSQL). It is here so that both schemas match.
CREATE TABLE audit_lock (
	id INTEGER PRIMARY KEY CHECK (id = 1)
) STRICT;
INSERT INTO audit_lock (id) VALUES (1);
