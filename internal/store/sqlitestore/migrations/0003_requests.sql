-- Access requests, and the deployments' settings the access policy reads.
-- A request's data, its JSON, is what the request holds; the other columns
-- are derived from the data on every write, to be filtered and sorted on.
-- Times are Unix milliseconds.

-- The deployment's settings (labels, approval mode, windows) as JSON.
ALTER TABLE deployments ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';

CREATE TABLE access_requests (
	id            TEXT PRIMARY KEY,
	deployment_id TEXT NOT NULL REFERENCES deployments (id),
	tenant        TEXT NOT NULL,
	requester     TEXT NOT NULL, -- the requester's subject
	state         TEXT NOT NULL,
	due_at_ms     INTEGER, -- NULL once the request is over
	created_at_ms INTEGER NOT NULL,
	updated_at_ms INTEGER NOT NULL,
	version       INTEGER NOT NULL,
	data          TEXT NOT NULL -- the whole request as JSON
) STRICT;

-- Requests are listed newest first, by created_at_ms then id: one index
-- for the list of all, one per equality filter, each in that order. Only
-- requests not yet over have a due time: that index leaves out the others.
CREATE INDEX access_requests_created ON access_requests (created_at_ms, id);
CREATE INDEX access_requests_tenant ON access_requests (tenant, created_at_ms, id);
CREATE INDEX access_requests_deployment ON access_requests (deployment_id, created_at_ms, id);
CREATE INDEX access_requests_requester ON access_requests (requester, created_at_ms, id);
CREATE INDEX access_requests_state ON access_requests (state, created_at_ms, id);
CREATE INDEX access_requests_due ON access_requests (due_at_ms) WHERE due_at_ms IS NOT NULL;
