//! The counts of a window: provisioning pipelines by outcome, and failed
//! attempts per step. Each is the sum of the hourly counters
//! (`stats_pipeline_ends`, `stats_step_failures`) of the hours that begin
//! at the window's start or later, plus the events of the hour the start
//! cuts, from that start to the hour's end. The two parts split the events
//! by `stats_hour(create_time)`, the function the triggers bucket with, so
//! no event is counted twice or missed. Neither part has an upper bound:
//! like the event log, the window reaches whatever the snapshot sees.
//!
//! The events' part repeats the predicates of the partial indexes of
//! migration `stats_indexes`, so that the planner can prove it may use
//! them, and the bound `stats_hour($1) + 1 hour` gives the index scan its
//! end.

use chrono::{DateTime, Utc};
use diesel::sql_types::Timestamptz;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{PipelineOutcomes, StepFailures};
use crate::error::Result;

/// Provisioning pipelines that ended from `since` on. A pipeline ends with
/// the dispatcher's STATE_CHANGED event (the only one with an `attempt`) to
/// ACTIVE, FAILED, CANCELLED or NEEDS_ATTENTION. A deprovisioning pipeline
/// can end NEEDS_ATTENTION too; the tenant's previous event tells them apart
/// (its state is the one the tenant left), looked up only for those rare
/// events, through `events_tenant_id_idx`.
pub async fn pipeline_outcomes(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<PipelineOutcomes> {
    let row = diesel::sql_query(
        "SELECT coalesce(sum(w.n) FILTER (WHERE w.outcome = 'ACTIVE'), 0)::int8 AS succeeded,
                coalesce(sum(w.n) FILTER (WHERE w.outcome = 'FAILED'), 0)::int8 AS failed,
                coalesce(sum(w.n) FILTER (WHERE w.outcome = 'CANCELLED'), 0)::int8 AS cancelled,
                coalesce(sum(w.n) FILTER (WHERE w.outcome = 'NEEDS_ATTENTION'), 0)::int8
                    AS needs_attention
         FROM (
             SELECT r.outcome, r.pipelines AS n
             FROM stats_pipeline_ends r
             WHERE r.hour >= $1
             UNION ALL
             SELECT e.state, 1
             FROM events e
             WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL
               AND e.state IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION')
               AND e.create_time >= $1 AND e.create_time < stats_hour($1) + interval '1 hour'
               AND stats_hour(e.create_time) < $1
               AND (e.state <> 'NEEDS_ATTENTION'
                    OR stats_state_before(e.tenant_id, e.id) = 'PROVISIONING')
         ) w",
    )
    .bind::<Timestamptz, _>(since)
    .get_result(conn)
    .await?;
    Ok(row)
}

/// Failed attempts per step from `since` on, most first.
pub async fn step_failures(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<StepFailures>> {
    let rows = diesel::sql_query(
        "SELECT w.step, sum(w.failed_attempts)::int8 AS failed_attempts,
                sum(w.given_up)::int8 AS given_up
         FROM (
             SELECT r.step, r.failed_attempts, r.given_up
             FROM stats_step_failures r
             WHERE r.hour >= $1
             UNION ALL
             SELECT coalesce(e.step, ''), 1::int8, (e.kind <> 'STEP_RETRYING')::int::int8
             FROM events e
             WHERE e.kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
               AND e.create_time >= $1 AND e.create_time < stats_hour($1) + interval '1 hour'
               AND stats_hour(e.create_time) < $1
         ) w
         GROUP BY w.step
         HAVING sum(w.failed_attempts) > 0
         ORDER BY failed_attempts DESC, step",
    )
    .bind::<Timestamptz, _>(since)
    .load(conn)
    .await?;
    Ok(rows)
}
