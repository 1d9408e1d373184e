-- Webhook and e-mail notifications not yet delivered, so that a delivery
-- one broker accepted is made by it after a restart, or by any other
-- broker sharing the store, if it dies first. lane names the webhook: a
-- hash of its tenant, URL and format (never its secret, which brokers
-- read from their configuration when they send, nor its URL, whose path
-- may hold a token). body is the request body as sent. A broker claims a
-- delivery by setting claimed_by and lease_until_ms; another may take it
-- once the lease has passed. Rows are deleted once delivered or given up.
CREATE TABLE webhook_deliveries (
	seq            INTEGER PRIMARY KEY AUTOINCREMENT,
	lane           TEXT NOT NULL,
	msg_id         TEXT NOT NULL,
	type           TEXT NOT NULL,
	body           BLOB NOT NULL,
	attempts       INTEGER NOT NULL DEFAULT 0,
	next_at_ms     INTEGER NOT NULL,
	claimed_by     TEXT NOT NULL DEFAULT '',
	lease_until_ms INTEGER NOT NULL DEFAULT 0,
	created_at_ms  INTEGER NOT NULL
) STRICT;
CREATE INDEX webhook_deliveries_lane ON webhook_deliveries (lane, seq);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at_ms);
