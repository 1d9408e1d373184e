-- The audit log's Merkle tree above its leaves: the root of every perfect
-- subtree of two or more events, stored as the events are appended, so
-- that an inclusion or consistency proof reads O(log n) hashes instead of
-- every leaf hash (as Trillian and Tessera store tiles). id is the node's
-- in-order number: the node `level` levels above the leaves covering
-- events [i << level, (i + 1) << level) is (i << (level + 1)) + (1 << level) - 1.
-- Nothing signs these hashes: the log checks every proof it builds from
-- them against its signed checkpoint.
CREATE TABLE audit_nodes (
	id   BIGINT PRIMARY KEY,
	hash BYTEA NOT NULL
);

-- How many events the nodes cover: the store fills in the nodes of a log
-- written before this table existed when it opens, a bounded transaction
-- at a time, and every append extends them in its own transaction.
ALTER TABLE audit_lock ADD COLUMN tree_size BIGINT NOT NULL DEFAULT 0;
