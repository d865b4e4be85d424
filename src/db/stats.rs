//! The statistics queries behind GetProvisioningStats. Each reads one
//! window of the event log (or the live tenants) and is meant to run in the
//! caller's read-only snapshot, so that the figures agree with one another.
//!
//! The window queries only touch events of a few kinds, through the partial
//! indexes `events_pipeline_end_idx` and `events_step_failure_idx`
//! (migration `stats_indexes`): their cost follows the events in the window,
//! not the size of the log. Their WHERE clauses repeat the indexes'
//! predicates so that the planner can prove it may use them.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Double, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::domain::TenantState;
use crate::error::Result;

/// Everything GetProvisioningStats returns, as read from one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisioningStats {
    /// The snapshot's time (the transaction's `now()`).
    pub as_of: DateTime<Utc>,
    /// Events from here to `as_of` count.
    pub window_start: DateTime<Utc>,
    /// Live tenants per state: every state, in declaration order.
    pub tenants_by_state: Vec<(TenantState, i64)>,
    pub pipelines: PipelineOutcomes,
    /// Per plan, by plan name.
    pub time_to_active: Vec<PlanTiming>,
    /// Most failed attempts first.
    pub step_failures: Vec<StepFailures>,
    pub oldest_running: Option<RunningPipeline>,
}

/// Provisioning pipelines that ended in the window, by outcome.
#[derive(Debug, Clone, Default, PartialEq, QueryableByName)]
pub struct PipelineOutcomes {
    #[diesel(sql_type = BigInt)]
    pub succeeded: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub cancelled: i64,
    #[diesel(sql_type = BigInt)]
    pub needs_attention: i64,
}

impl PipelineOutcomes {
    pub fn ended(&self) -> i64 {
        self.succeeded + self.failed + self.cancelled + self.needs_attention
    }

    /// `succeeded / ended`, 0 when none ended.
    pub fn success_rate(&self) -> f64 {
        match self.ended() {
            0 => 0.0,
            ended => self.succeeded as f64 / ended as f64,
        }
    }
}

/// Time from creation to ACTIVE of one plan's tenants, in seconds.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct PlanTiming {
    #[diesel(sql_type = Text)]
    pub plan: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    #[diesel(sql_type = Double)]
    pub p50_secs: f64,
    #[diesel(sql_type = Double)]
    pub p95_secs: f64,
}

/// Failed attempts of one step.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct StepFailures {
    #[diesel(sql_type = Text)]
    pub step: String,
    /// STEP_RETRYING, STEP_FAILED and STEP_WARNING events.
    #[diesel(sql_type = BigInt)]
    pub failed_attempts: i64,
    /// STEP_FAILED and STEP_WARNING events: the step ran out of attempts.
    #[diesel(sql_type = BigInt)]
    pub given_up: i64,
}

/// A running pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningPipeline {
    pub tenant_id: Uuid,
    pub slug: String,
    /// PROVISIONING or DEPROVISIONING.
    pub state: TenantState,
    /// The outbox row's step; empty if the tenant has no row.
    pub step: String,
    /// The outbox row undoes `step`.
    pub compensating: bool,
    /// The pipeline's first event: TENANT_CREATED, or the STATE_CHANGED of
    /// RetryProvisioning or Deprovision.
    pub start_time: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct RunningRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    slug: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    step: String,
    #[diesel(sql_type = Bool)]
    compensating: bool,
    #[diesel(sql_type = Timestamptz)]
    start_time: DateTime<Utc>,
}

/// The transaction's start time, which every window is measured from.
pub async fn now(conn: &mut AsyncPgConnection) -> Result<DateTime<Utc>> {
    #[derive(QueryableByName)]
    struct Now {
        #[diesel(sql_type = Timestamptz)]
        now: DateTime<Utc>,
    }
    let row: Now = diesel::sql_query("SELECT now() AS now")
        .get_result(conn)
        .await?;
    Ok(row.now)
}

/// Live tenants in each of `states`, in that order, zeros included. One
/// count per state, each an index-only range scan of `tenants_state_id_idx`:
/// about half the time of one GROUP BY over the whole table at 100k tenants.
pub async fn tenants_by_state(
    conn: &mut AsyncPgConnection,
    states: &[TenantState],
) -> Result<Vec<(TenantState, i64)>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }
    let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT (SELECT count(*) FROM tenants t
                 WHERE t.state = s.state AND t.delete_time IS NULL) AS count
         FROM unnest($1::text[]) WITH ORDINALITY s(state, n)
         ORDER BY s.n",
    )
    .bind::<Array<Text>, _>(&names)
    .load(conn)
    .await?;
    Ok(states
        .iter()
        .copied()
        .zip(rows.into_iter().map(|r| r.count))
        .collect())
}

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
        "SELECT count(*) FILTER (WHERE e.state = 'ACTIVE') AS succeeded,
                count(*) FILTER (WHERE e.state = 'FAILED') AS failed,
                count(*) FILTER (WHERE e.state = 'CANCELLED') AS cancelled,
                count(*) FILTER (WHERE e.state = 'NEEDS_ATTENTION') AS needs_attention
         FROM events e
         WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL
           AND e.state IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION')
           AND e.create_time >= $1
           AND (e.state <> 'NEEDS_ATTENTION'
                OR (SELECT p.state FROM events p
                    WHERE p.tenant_id = e.tenant_id AND p.id < e.id
                    ORDER BY p.id DESC LIMIT 1) = 'PROVISIONING')",
    )
    .bind::<Timestamptz, _>(since)
    .get_result(conn)
    .await?;
    Ok(row)
}

/// Per plan, the median and 95th percentile of the time from a tenant's
/// creation to its pipeline's ACTIVE event, for the events from `since` on.
/// The percentiles sort intervals, which is cheaper than sorting the
/// numeric seconds `extract` returns.
pub async fn time_to_active(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<PlanTiming>> {
    let rows = diesel::sql_query(
        "SELECT t.plan, count(*) AS count,
                extract(epoch FROM percentile_cont(0.5)
                    WITHIN GROUP (ORDER BY e.create_time - t.create_time))::float8 AS p50_secs,
                extract(epoch FROM percentile_cont(0.95)
                    WITHIN GROUP (ORDER BY e.create_time - t.create_time))::float8 AS p95_secs
         FROM events e
         JOIN tenants t ON t.id = e.tenant_id
         WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL AND e.state = 'ACTIVE'
           AND e.create_time >= $1
         GROUP BY t.plan
         ORDER BY t.plan",
    )
    .bind::<Timestamptz, _>(since)
    .load(conn)
    .await?;
    Ok(rows)
}

/// Failed attempts per step from `since` on, most first.
pub async fn step_failures(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<StepFailures>> {
    let rows = diesel::sql_query(
        "SELECT coalesce(e.step, '') AS step, count(*) AS failed_attempts,
                count(*) FILTER (WHERE e.kind <> 'STEP_RETRYING') AS given_up
         FROM events e
         WHERE e.kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
           AND e.create_time >= $1
         GROUP BY 1
         ORDER BY failed_attempts DESC, step",
    )
    .bind::<Timestamptz, _>(since)
    .load(conn)
    .await?;
    Ok(rows)
}

/// The live PROVISIONING or DEPROVISIONING tenant whose pipeline started
/// first (ties by id). Running tenants are found through
/// `tenants_state_id_idx`, each one's start through `events_tenant_id_idx`,
/// read backwards from its last event.
pub async fn oldest_running(conn: &mut AsyncPgConnection) -> Result<Option<RunningPipeline>> {
    let rows: Vec<RunningRow> = diesel::sql_query(
        "SELECT t.id AS tenant_id, t.slug, t.state, coalesce(o.step, '') AS step,
                coalesce(o.operation = 'COMPENSATE', false) AS compensating, s.start_time
         FROM tenants t
         LEFT JOIN outbox o ON o.tenant_id = t.id
         CROSS JOIN LATERAL (
             SELECT coalesce(
                 (SELECT e.create_time FROM events e
                  WHERE e.tenant_id = t.id
                    AND (e.kind = 'TENANT_CREATED'
                         OR (e.kind = 'STATE_CHANGED' AND e.state IN ('PROVISIONING', 'DEPROVISIONING')))
                  ORDER BY e.id DESC LIMIT 1),
                 t.create_time) AS start_time
         ) s
         WHERE t.delete_time IS NULL AND t.state IN ('PROVISIONING', 'DEPROVISIONING')
         ORDER BY s.start_time, t.id
         LIMIT 1",
    )
    .load(conn)
    .await?;
    rows.into_iter()
        .next()
        .map(|r| {
            Ok(RunningPipeline {
                state: super::models::parse_state(&r.state)?,
                tenant_id: r.tenant_id,
                slug: r.slug,
                step: r.step,
                compensating: r.compensating,
                start_time: r.start_time,
            })
        })
        .transpose()
}
