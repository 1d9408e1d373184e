-- Challenges the brokers gave agents to sign, to open a session, so that
-- an agent may ask one broker and answer another. Only the SHA-256 of a
-- challenge is stored. A tailnet node holds at most one per agent: a
-- peer asking for challenges of agents it is not cannot fill the table.
-- A challenge is taken (deleted) when answered, right or wrong.
CREATE TABLE agent_challenges (
	challenge_hash BLOB PRIMARY KEY,
	agent_id       TEXT NOT NULL,
	node_id        TEXT NOT NULL, -- the tailnet node that asked for it
	expires_at_ms  INTEGER NOT NULL,
	UNIQUE (agent_id, node_id)
) STRICT;
CREATE INDEX agent_challenges_expiry ON agent_challenges (expires_at_ms);
