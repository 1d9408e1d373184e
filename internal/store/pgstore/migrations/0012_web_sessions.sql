-- The web console's sessions and pending logins, so that every broker on
-- the database honours them and a restart signs nobody out. key_hash is
-- the SHA-256 of the cookie naming the entry, never the cookie; value is
-- the entry as the web login encodes it (JSON, bounded); expires_at is
-- in Unix milliseconds. seq orders entries by insertion, to evict the
-- oldest past the configured maximum.
CREATE TABLE web_sessions (
	seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	key_hash   BYTEA NOT NULL UNIQUE,
	value      BYTEA NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);

CREATE TABLE web_pending (
	seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	key_hash   BYTEA NOT NULL UNIQUE,
	value      BYTEA NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX web_pending_expires ON web_pending (expires_at);
