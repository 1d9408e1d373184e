-- A tenant's audit trail is the events about its deployments and the
-- events about no deployment whose actor is of the tenant (the approver's
-- sign-ins, say). This column holds the actor's tenant of an event about
-- no deployment (empty for one about a deployment, whose deployment
-- decides), and its partial index lists those events in index order, so
-- that a tenant's page reads only its own rows. The log's read check
-- holds the column to the signed data.
ALTER TABLE audit_events ADD COLUMN actor_tenant TEXT NOT NULL DEFAULT '';
UPDATE audit_events
	SET actor_tenant = COALESCE(convert_from(data, 'UTF8')::jsonb #>> '{actor,tenant}', '')
	WHERE deployment = '';
CREATE INDEX audit_events_actor_tenant ON audit_events (actor_tenant, idx) WHERE deployment = '';
