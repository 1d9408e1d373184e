-- The AWS accounts registered to each tenant for network management, with
-- the role Tether assumes there and what it may touch. An account belongs
-- to one tenant at most (the unique account_id). The registration's data,
-- its JSON, is what it holds; the other columns are derived from it on
-- every write, to be filtered and sorted on. The role's external ID is
-- kept apart, sealed with the broker's key, and never in data.
CREATE TABLE network_registrations (
	id                 TEXT PRIMARY KEY,
	tenant             TEXT NOT NULL,
	account_id         TEXT NOT NULL UNIQUE,
	state              TEXT NOT NULL,
	version            INTEGER NOT NULL,
	data               TEXT NOT NULL,
	sealed_external_id BLOB -- NULL while pending
) STRICT;

CREATE INDEX network_registrations_tenant ON network_registrations (tenant, account_id);
