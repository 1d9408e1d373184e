-- The reviewer's usual search, a type of event on one deployment. With an
-- index per column SQLite, which keeps no statistics here, takes either
-- one and reads the other column row by row: a rare type on a busy
-- deployment read some 50,000 events of 1,000,000 for a page of 50. This
-- index lists the matches of both, in index order (it ends with the
-- rowid), so a page reads only its own rows.
CREATE INDEX audit_events_type_deployment ON audit_events (type, deployment);
