//! The statistics queries behind GetProvisioningStats. Each reads one
//! window of the event log (or the live tenants) and is meant to run in the
//! caller's read-only snapshot, so that the figures agree with one another.
//!
//! The window figures come from a rollup of the event log (migration
//! `stats_rollup`) that triggers on `events` keep in the statement that
//! writes or deletes the events, so it never disagrees with the log. A
//! window `[start, ...)` reads the rollup's buckets that begin at `start`
//! or later, and the events of the one bucket that `start` cuts, through
//! the partial indexes of migration `stats_indexes`: the cost follows the
//! number of buckets, not the number of events. Counts add up across
//! buckets; percentiles do not, see [`time_to_active`].
//!
//! | file | figures | reads |
//! |------|---------|-------|
//! | `live.rs` | tenants by state, the oldest running pipeline | `tenants`, `outbox`, `events` |
//! | `window.rs` | pipeline outcomes, step failures | hourly counters |
//! | `time_to_active.rs` | time to ACTIVE per plan | a daily histogram, then single bins of the values |

mod live;
mod time_to_active;
mod window;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

pub use self::live::{Backlog, backlog, oldest_running, tenants_by_state};
pub use self::time_to_active::time_to_active;
pub use self::window::{pipeline_outcomes, step_failures};
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
    pub outbox: Backlog,
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
