-- GetProvisioningStats reads a window of recent events of a few kinds. These
-- partial indexes hold only those events, ordered by time, so a window is one
-- range scan however long the log grows; the INCLUDE columns let each query
-- read the index alone (the log is append-only, so autovacuum keeps its
-- pages all-visible).
--
-- The ends of provisioning pipelines: the dispatcher's STATE_CHANGED events
-- to ACTIVE, FAILED, CANCELLED or NEEDS_ATTENTION. Only the dispatcher sets
-- `attempt`, which leaves out ResumeTenant's ACTIVE.
CREATE INDEX events_pipeline_end_idx ON events (create_time) INCLUDE (tenant_id, state, id)
    WHERE kind = 'STATE_CHANGED' AND attempt IS NOT NULL
      AND state IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION');
-- Failed attempts of steps, and steps that ran out of attempts.
CREATE INDEX events_step_failure_idx ON events (create_time) INCLUDE (kind, step)
    WHERE kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING');
