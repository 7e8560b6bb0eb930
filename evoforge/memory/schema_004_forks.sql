-- EvoForge schema, version 4: where a fork came from. A fork re-runs a past step of another run under a run id
-- of its own; its node memory is its own nodes plus the nodes its origin had recorded when that step ran
-- (NodeStore.memory_scope), so the Novelty-Checker of a fork compares with what the original step saw.

ALTER TABLE runs ADD COLUMN forked_from text REFERENCES runs (id) ON DELETE SET NULL;
ALTER TABLE runs ADD COLUMN forked_at timestamptz;
