-- How far the agent's clock was from the broker's at its latest heartbeat
-- (offset, the round trip that bounds it, or a one-way estimate), as JSON;
-- empty until measured.
ALTER TABLE agents ADD COLUMN last_clock TEXT NOT NULL DEFAULT '';
