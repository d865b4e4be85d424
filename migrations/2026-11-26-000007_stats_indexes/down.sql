DROP INDEX events_step_failure_idx;
DROP INDEX events_pipeline_end_idx;
