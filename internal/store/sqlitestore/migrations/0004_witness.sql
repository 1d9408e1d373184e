-- Why the agent, as the customer's witness of the audit log, refuses every
-- data-plane call (it found the log smaller than, or forking from, the one
-- it cosigned), as its latest heartbeat said; empty while it does not.
ALTER TABLE agents ADD COLUMN last_witness_refusal TEXT NOT NULL DEFAULT '';
