-- A tenant's audit trail is the events about its deployments and the
-- events about no deployment whose actor is of the tenant (the approver's
-- sign-ins, say). The second half was found by decoding every candidate
-- event's data, which made a tenant's page of 50 read thousands of rows;
-- this column holds the actor's tenant of an event about no deployment
-- (empty for one about a deployment, whose deployment decides), and its
-- partial index lists those events in index order (it ends with the
-- rowid). The log's read check holds the column to the signed data.
ALTER TABLE audit_events ADD COLUMN actor_tenant TEXT NOT NULL DEFAULT '';
UPDATE audit_events
	SET actor_tenant = COALESCE(json_extract(CAST(data AS TEXT), '$.actor.tenant'), '')
	WHERE deployment = '';
CREATE INDEX audit_events_actor_tenant ON audit_events (actor_tenant) WHERE deployment = '';
