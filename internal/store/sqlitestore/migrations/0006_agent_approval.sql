-- The customer's approval authority the agent enforces (issuer, audience,
-- group, approvals required, break-glass), as JSON, as its latest heartbeat
-- said; empty while it enforces none.
ALTER TABLE agents ADD COLUMN last_approval TEXT NOT NULL DEFAULT '';
