-- EvoForge schema, version 5: priors a task's notes no longer hold. When a task's cognition files are edited, the
-- passages they held before are retired (kept for the provenance of the nodes that saw them, never retrieved
-- again); a passage that comes back is un-retired.

ALTER TABLE cognition ADD COLUMN retired_at timestamptz;
