-- The reviewer's usual search, a type of event on one deployment: an
-- index of both that lists their matches in index order, as in SQLite.
CREATE INDEX audit_events_type_deployment ON audit_events (type, deployment, idx);
