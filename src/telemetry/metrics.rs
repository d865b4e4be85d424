//! Prometheus metrics: every name and label the service exports, recorded
//! through the `metrics` facade. Nothing is recorded until [`handle`]
//! installs the process-wide recorder (done when TENANTD_METRICS_LISTEN is
//! set); until then each call below is a no-op.
//!
//! Labels are bounded: RPC methods of the served services, step names of the
//! registry, plan names, tenant states. Tenant ids never become labels.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::TenantState;

/// Histogram buckets in seconds: from a sub-millisecond RPC to a slow
/// pipeline.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 900.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use and returns the handle that renders
/// it. Every server of the process shares it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(RPCS, "gRPC calls finished, by method and status code.");
    describe_histogram!(
        RPC_SECONDS,
        Unit::Seconds,
        "gRPC call duration, by method: to the last response byte (a stream's whole life)."
    );
    describe_counter!(CLAIMS, "Outbox rows claimed, by step and operation.");
    describe_counter!(
        ATTEMPTS,
        "Step attempts recorded, by step, operation and outcome (succeeded, failed, cancelled, compensated, compensation_failed)."
    );
    describe_counter!(
        STALE,
        "Writes refused because their claim was stale (its lease expired and the row was claimed again), by step, operation and action (heartbeat, release, or the outcome it would have recorded)."
    );
    describe_counter!(
        RETRIES,
        "Failed attempts that were scheduled to run again after a backoff, by step and operation."
    );
    describe_counter!(
        WAITS,
        "Steps that answered \"not yet\" and wait without a worker to be looked at again (a confirmation, a ledger close), by step and operation."
    );
    describe_histogram!(
        STEP_SECONDS,
        Unit::Seconds,
        "Duration of a step attempt, from claim to recorded outcome, by step and operation."
    );
    describe_counter!(
        SETTLED,
        "Pipelines that ended, by the state they left the tenant in."
    );
    describe_histogram!(
        TIME_TO_ACTIVE,
        Unit::Seconds,
        "Time from CreateTenant to ACTIVE, by plan."
    );
    describe_histogram!(
        BATCH,
        "Successful attempts recorded per batched transaction."
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        "Webhook delivery attempts recorded, by endpoint and outcome (delivered, retry, failed, gone)."
    );
    describe_gauge!(
        WEBHOOK_PENDING,
        "Webhook deliveries waiting for their first or next attempt, read at scrape time."
    );
    describe_counter!(
        LISTENER_RECONNECTS,
        "Times the LISTEN connection was lost and reopened."
    );
    describe_histogram!(
        POOL_WAIT,
        Unit::Seconds,
        "Time spent waiting for a pooled database connection."
    );
    describe_gauge!(
        TENANTS,
        "Tenants (not deleted) by state, read at scrape time."
    );
    describe_gauge!(
        OUTBOX_ROWS,
        "Outbox rows: pipelines in flight, read at scrape time."
    );
    describe_gauge!(OUTBOX_DUE, "Outbox rows due now and waiting for a worker.");
    describe_gauge!(
        OUTBOX_OLDEST_DUE,
        Unit::Seconds,
        "How long the oldest due outbox row has waited for a worker (0 when none)."
    );
    describe_gauge!(
        WATCHERS,
        "StreamProvisioningStatus streams open on this process."
    );
    describe_gauge!(
        POOL_SIZE,
        "Control-plane pool connections, by state (idle, in_use)."
    );
    describe_gauge!(POOL_MAX, "Control-plane pool size limit.");
    describe_gauge!(
        POOL_WAITING,
        "Tasks waiting for a control-plane connection right now."
    );
    describe_counter!(
        CHANNEL_SKIPS,
        "Soroban channel accounts passed over for a transaction, by channel and reason (low_balance, missing)."
    );
    describe_gauge!(
        CHANNEL_BALANCE,
        "Balance of each Soroban channel account when it was last read, in stroops."
    );
    describe_gauge!(
        DATABASE_UP,
        "1 if the control-plane database answered the last scrape."
    );
}

const RPCS: &str = "tenantd_rpc_requests_total";
const RPC_SECONDS: &str = "tenantd_rpc_duration_seconds";
const CLAIMS: &str = "tenantd_step_claims_total";
const ATTEMPTS: &str = "tenantd_step_attempts_total";
const RETRIES: &str = "tenantd_step_retries_total";
const WAITS: &str = "tenantd_step_waits_total";
const STALE: &str = "tenantd_stale_outcomes_total";
const STEP_SECONDS: &str = "tenantd_step_duration_seconds";
const SETTLED: &str = "tenantd_pipelines_settled_total";
const TIME_TO_ACTIVE: &str = "tenantd_time_to_active_seconds";
const BATCH: &str = "tenantd_completion_batch_size";
const LISTENER_RECONNECTS: &str = "tenantd_listener_reconnects_total";
const WEBHOOK_ATTEMPTS: &str = "tenantd_webhook_attempts_total";
const WEBHOOK_PENDING: &str = "tenantd_webhook_pending_deliveries";
const POOL_WAIT: &str = "tenantd_db_pool_wait_seconds";
const TENANTS: &str = "tenantd_tenants";
const OUTBOX_ROWS: &str = "tenantd_outbox_rows";
const OUTBOX_DUE: &str = "tenantd_outbox_due_rows";
const OUTBOX_OLDEST_DUE: &str = "tenantd_outbox_oldest_due_age_seconds";
const WATCHERS: &str = "tenantd_watchers";
const POOL_SIZE: &str = "tenantd_db_pool_connections";
const POOL_MAX: &str = "tenantd_db_pool_max_connections";
const POOL_WAITING: &str = "tenantd_db_pool_waiting";
const DATABASE_UP: &str = "tenantd_database_up";
const CHANNEL_SKIPS: &str = "tenantd_soroban_channel_skips_total";
const CHANNEL_BALANCE: &str = "tenantd_soroban_channel_balance_stroops";

/// How a recorded step attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum StepOutcome {
    Succeeded,
    Failed,
    Cancelled,
    Compensated,
    CompensationFailed,
}

/// A gRPC call ended with `code` after `elapsed`.
pub fn rpc_finished(method: &'static str, code: &'static str, elapsed: Duration) {
    counter!(RPCS, "method" => method, "code" => code).increment(1);
    histogram!(RPC_SECONDS, "method" => method).record(elapsed);
}

pub fn step_claimed(step: &str, operation: &'static str) {
    counter!(CLAIMS, "step" => step.to_owned(), "operation" => operation).increment(1);
}

/// An attempt's outcome, once its transaction committed.
pub fn step_recorded(step: &str, operation: &'static str, outcome: StepOutcome) {
    let outcome: &'static str = outcome.into();
    counter!(ATTEMPTS, "step" => step.to_owned(), "operation" => operation, "outcome" => outcome)
        .increment(1);
}

/// A stale claim's write was refused; `action` is what it tried to do.
pub fn stale_outcome(step: &str, operation: &'static str, action: &'static str) {
    counter!(STALE, "step" => step.to_owned(), "operation" => operation, "action" => action)
        .increment(1);
}

pub fn step_retry(step: &str, operation: &'static str) {
    counter!(RETRIES, "step" => step.to_owned(), "operation" => operation).increment(1);
}

/// A Soroban channel account was passed over for `reason`.
pub fn channel_skipped(channel: &str, reason: &'static str) {
    counter!(CHANNEL_SKIPS, "channel" => channel.to_owned(), "reason" => reason).increment(1);
}

/// A Soroban channel account's balance as just read.
pub fn channel_balance(channel: &str, stroops: i64) {
    gauge!(CHANNEL_BALANCE, "channel" => channel.to_owned()).set(stroops as f64);
}

pub fn step_waiting(step: &str, operation: &'static str) {
    counter!(WAITS, "step" => step.to_owned(), "operation" => operation).increment(1);
}

pub fn step_duration(step: &str, operation: &'static str, elapsed: Duration) {
    histogram!(STEP_SECONDS, "step" => step.to_owned(), "operation" => operation).record(elapsed);
}

/// A pipeline left the tenant in `state`; `age` is the tenant's age then.
pub fn pipeline_settled(state: TenantState, plan: &str, age: Duration) {
    counter!(SETTLED, "state" => state.as_str()).increment(1);
    if state == TenantState::Active {
        histogram!(TIME_TO_ACTIVE, "plan" => plan.to_owned()).record(age);
    }
}

pub fn completion_batch(size: usize) {
    histogram!(BATCH).record(size as f64);
}

/// A webhook attempt's outcome, once recorded. Endpoint names are few:
/// operators create them.
pub fn webhook_attempt(endpoint: &str, outcome: &'static str) {
    counter!(WEBHOOK_ATTEMPTS, "endpoint" => endpoint.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub fn listener_reconnect() {
    counter!(LISTENER_RECONNECTS).increment(1);
}

pub fn pool_wait(elapsed: Duration) {
    histogram!(POOL_WAIT).record(elapsed);
}

/// Point-in-time values read when `/metrics` is scraped.
pub struct Sample {
    /// `None` when the database did not answer.
    pub database: Option<DatabaseSample>,
    pub watchers: usize,
    pub pool: deadpool::Status,
}

pub struct DatabaseSample {
    /// Every state, zeros included.
    pub tenants_by_state: Vec<(TenantState, i64)>,
    pub outbox_rows: i64,
    pub outbox_due: i64,
    pub oldest_due_age: Duration,
    pub webhook_pending: i64,
}

/// Sets the gauges from `sample`.
pub fn record_sample(sample: &Sample) {
    gauge!(WATCHERS).set(sample.watchers as f64);
    let pool = &sample.pool;
    let idle = pool.available;
    gauge!(POOL_SIZE, "state" => "idle").set(idle as f64);
    gauge!(POOL_SIZE, "state" => "in_use").set(pool.size.saturating_sub(idle) as f64);
    gauge!(POOL_MAX).set(pool.max_size as f64);
    gauge!(POOL_WAITING).set(pool.waiting as f64);
    gauge!(DATABASE_UP).set(if sample.database.is_some() { 1.0 } else { 0.0 });
    if let Some(db) = &sample.database {
        for (state, count) in &db.tenants_by_state {
            gauge!(TENANTS, "state" => state.as_str()).set(*count as f64);
        }
        gauge!(OUTBOX_ROWS).set(db.outbox_rows as f64);
        gauge!(OUTBOX_DUE).set(db.outbox_due as f64);
        gauge!(OUTBOX_OLDEST_DUE).set(db.oldest_due_age.as_secs_f64());
        gauge!(WEBHOOK_PENDING).set(db.webhook_pending as f64);
    }
}
