//! The outbox's claim, heartbeat and release statements. Completion and
//! failure live in `pipeline.rs`, where they join the step's transaction.
//!
//! A claimed row's `available_at` is moved to its lease expiry, so one index
//! on `available_at` finds both due rows and rows whose lease expired: every
//! claim is also a sweep of dead replicas' work.
//!
//! Every claim draws a fencing token (`lease_token`), and every write that
//! acts on a claim names the row by id *and* token in the statement that
//! locks it. The lease owner names a process, which may hold the same row
//! twice in turn when a lease expires under a worker that is still alive;
//! the token tells those claims apart, so the stale one changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{
    BigInt, Bool, Double, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::outbox::Operation;
use crate::error::{Error, Result};
use crate::telemetry::metrics;

/// A row this worker holds a lease on.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct Claim {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// This claim's fencing token: every write that acts on the claim names
    /// it, so once the row is claimed again (the lease expired under a
    /// worker that is still alive, in this process or another) the earlier
    /// claim can change nothing.
    #[diesel(sql_type = BigInt)]
    pub lease_token: i64,
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub operation: String,
    #[diesel(sql_type = Text)]
    pub step: String,
    /// This attempt's number, counted at claim time.
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    /// The step's limit; a claim past it (its earlier attempts were lost
    /// with their workers) fails the step without running it.
    #[diesel(sql_type = Integer)]
    pub max_attempts: i32,
    #[diesel(sql_type = Bool)]
    pub cancel_requested: bool,
    /// The tenant, as steps need it (read under the claim's lock).
    #[diesel(sql_type = Text)]
    pub slug: String,
    #[diesel(sql_type = Text)]
    pub display_name: String,
    #[diesel(sql_type = Text)]
    pub admin_email: String,
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    pub outputs: serde_json::Value,
    #[diesel(sql_type = Nullable<Text>)]
    pub deprovision_mode: Option<String>,
    /// The tenant's plan and creation time, for the time-to-ACTIVE metric.
    #[diesel(sql_type = Text)]
    pub plan: String,
    #[diesel(sql_type = Timestamptz)]
    pub create_time: DateTime<Utc>,
    /// The step's own retry and timeout settings (from its plan).
    #[diesel(sql_type = Nullable<Integer>)]
    pub retry_base_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub retry_cap_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub timeout_ms: Option<i32>,
    /// A webhook step's endpoint, and whether the saga calls it to undo the
    /// step; `None` for built-in steps.
    #[diesel(sql_type = Nullable<Text>)]
    pub webhook_endpoint: Option<String>,
    #[diesel(sql_type = Bool)]
    pub webhook_compensate: bool,
    /// The plan version's `initial_data` and `limits`, for seeding.
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    pub plan_initial_data: serde_json::Value,
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    pub plan_limits: serde_json::Value,
    /// The server the tenant's data lives on.
    #[diesel(sql_type = Text)]
    pub database_server: String,
    /// The owner its Soroban contract records; empty: the deployer.
    #[diesel(sql_type = Text)]
    pub contract_owner: String,
    /// When this attempt began waiting (it answered "not yet" before);
    /// `None` for a fresh attempt.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub waiting_since: Option<DateTime<Utc>>,
}

impl Claim {
    pub fn operation(&self) -> Result<Operation> {
        self.operation
            .parse()
            .map_err(|_| Error::Internal(format!("unknown outbox operation {:?}", self.operation)))
    }

    /// The operation's name as a metric label.
    pub fn operation_label(&self) -> &'static str {
        self.operation().map_or("unknown", Operation::as_str)
    }

    /// The step's attempt timeout: its plan's, else `default`.
    pub fn timeout(&self, default: Duration) -> Duration {
        self.timeout_ms.map_or(default, |ms| {
            Duration::from_millis(ms.unsigned_abs().into())
        })
    }

    /// The webhook the claimed step calls, if it is a webhook step.
    pub fn webhook(&self) -> Option<crate::domain::WebhookStep> {
        self.webhook_endpoint
            .as_ref()
            .map(|endpoint| crate::domain::WebhookStep {
                endpoint: endpoint.clone(),
                compensate: self.webhook_compensate,
            })
    }

    /// Time since the tenant was created.
    pub fn tenant_age(&self) -> Duration {
        (Utc::now() - self.create_time)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }
}

/// A row that moves on to its tenant's next step under the same worker
/// keeps its lease expiry while more than this share of a lease is left.
/// The move then leaves `available_at` (indexed) as it was, so PostgreSQL
/// rewrites the row in place (a HOT update: no new entry in any of the
/// outbox's three indexes: 72% of the outbox updates in `tenantd bench`'s no-op
/// phase against none before); and the step's first
/// two heartbeats (at a third and two thirds of a lease) still come before
/// the expiry, as they do after a claim.
const LEASE_KEPT_WHILE_LEFT: f64 = 0.9;

/// The `SET` list that moves a leased row on to its next step: a fresh
/// fencing token, and the lease renewed only when less than
/// [`LEASE_KEPT_WHILE_LEFT`] of it is left. `lease` and `keep` name the
/// statement's parameters holding [`lease_params`].
pub fn continue_lease_sql(lease: &str, keep: &str) -> String {
    format!(
        "lease_token = nextval('outbox_lease_token_seq'),
         locked_until = CASE WHEN available_at >= now() + make_interval(secs => {keep})
                             THEN locked_until ELSE now() + make_interval(secs => {lease}) END,
         available_at = CASE WHEN available_at >= now() + make_interval(secs => {keep})
                             THEN available_at ELSE now() + make_interval(secs => {lease}) END"
    )
}

/// The lease and the part of it a continuation keeps, in seconds, for
/// [`continue_lease_sql`].
pub fn lease_params(lease: Duration) -> (f64, f64) {
    let secs = lease.as_secs_f64();
    (secs, secs * LEASE_KEPT_WHILE_LEFT)
}

/// Claims up to `limit` due rows in one statement: selects them with
/// `FOR UPDATE SKIP LOCKED` (so concurrent dispatchers never take the same
/// row), leases them to `owner` under a fresh fencing token each, counts the attempt, locks their tenants (so
/// the STARTED events commit in id order with every other writer's) and
/// marks their steps running.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    owner: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claim>> {
    let claims = diesel::sql_query(
        "WITH due AS MATERIALIZED (
             SELECT id FROM outbox
             WHERE available_at <= now()
             ORDER BY available_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE outbox o
             SET lease_owner = $2,
                 lease_token = nextval('outbox_lease_token_seq'),
                 locked_until = now() + make_interval(secs => $3),
                 available_at = now() + make_interval(secs => $3),
                 attempt = o.attempt + 1
             FROM due WHERE o.id = due.id
             RETURNING o.id, o.lease_token, o.tenant_id, o.operation, o.step, o.attempt,
                       o.waiting_since
         ), locked AS (
             SELECT t.id, t.state, t.cancel_requested, t.slug, t.display_name, t.admin_email, t.outputs,
                    t.deprovision_mode, t.plan, t.create_time,
                    coalesce(pv.initial_data, '{}') AS plan_initial_data,
                    coalesce(pv.limits, '{}') AS plan_limits, t.database_server, t.contract_owner
             FROM tenants t JOIN claimed c ON c.tenant_id = t.id
             LEFT JOIN plan_versions pv ON pv.name = t.plan AND pv.version = t.plan_version
             FOR UPDATE OF t
         ), started AS (
             UPDATE tenant_steps s
             SET status = CASE c.operation WHEN 'COMPENSATE' THEN 'COMPENSATING' ELSE 'RUNNING' END,
                 attempts = CASE c.operation WHEN 'COMPENSATE' THEN s.attempts ELSE c.attempt END,
                 start_time = coalesce(s.start_time, now())
             FROM claimed c
             WHERE s.tenant_id = c.tenant_id AND s.name = c.step
             RETURNING s.tenant_id, s.max_attempts, s.retry_base_ms, s.retry_cap_ms, s.timeout_ms,
                       s.webhook_endpoint, s.webhook_compensate
         ), logged AS (
             INSERT INTO events (tenant_id, kind, step, attempt, state, message, actor)
             SELECT c.tenant_id,
                    CASE c.operation WHEN 'COMPENSATE' THEN 'COMPENSATION_STARTED' ELSE 'STEP_STARTED' END,
                    c.step, c.attempt, l.state,
                    CASE c.operation WHEN 'COMPENSATE' THEN 'undoing ' ELSE 'running ' END || c.step
                        || ', attempt ' || c.attempt,
                    'system'
             FROM claimed c JOIN locked l ON l.id = c.tenant_id
             -- A step looking again after its 'not yet' goes on with its attempt.
             WHERE c.waiting_since IS NULL
         )
         SELECT c.id, c.lease_token, c.tenant_id, c.operation, c.step, c.attempt, coalesce(st.max_attempts, 1) AS max_attempts,
                l.cancel_requested, l.slug, l.display_name, l.admin_email, l.outputs, l.deprovision_mode,
                l.plan, l.create_time, st.retry_base_ms, st.retry_cap_ms, st.timeout_ms,
                st.webhook_endpoint, coalesce(st.webhook_compensate, false) AS webhook_compensate,
                l.plan_initial_data, l.plan_limits, l.database_server, l.contract_owner,
                c.waiting_since
         FROM claimed c JOIN locked l ON l.id = c.tenant_id
         LEFT JOIN started st ON st.tenant_id = c.tenant_id",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Text, _>(owner)
    .bind::<Double, _>(lease.as_secs_f64())
    .load(conn)
    .await?;
    Ok(claims)
}

#[derive(diesel::QueryableByName)]
struct Heartbeat {
    #[diesel(sql_type = Bool)]
    cancel_requested: bool,
}

/// Extends the lease of a running row. `None` if the claim is stale (its
/// lease expired and the row was claimed again); otherwise whether
/// cancellation was asked.
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    lease: Duration,
) -> Result<Option<bool>> {
    let beat: Option<Heartbeat> = diesel::sql_query(
        "UPDATE outbox o
         SET locked_until = now() + make_interval(secs => $3), available_at = now() + make_interval(secs => $3)
         FROM tenants t
         WHERE o.id = $1 AND o.lease_token = $2 AND t.id = o.tenant_id
         RETURNING t.cancel_requested",
    )
    .bind::<BigInt, _>(claim.id)
    .bind::<BigInt, _>(claim.lease_token)
    .bind::<Double, _>(lease.as_secs_f64())
    .get_result(conn)
    .await
    .optional()?;
    Ok(beat.map(|b| b.cancel_requested))
}

/// Gives a claimed row back untouched (graceful shutdown interrupted the
/// attempt): due now, attempt not counted. `false` if the claim is stale.
pub async fn release(conn: &mut AsyncPgConnection, claim: &Claim) -> Result<bool> {
    let n = diesel::sql_query(
        "UPDATE outbox
         SET lease_owner = NULL, lease_token = NULL, locked_until = NULL, available_at = now(),
             attempt = attempt - 1
         WHERE id = $1 AND lease_token = $2",
    )
    .bind::<BigInt, _>(claim.id)
    .bind::<BigInt, _>(claim.lease_token)
    .execute(conn)
    .await?;
    Ok(n == 1)
}

/// Gives a claimed row back for `delay` without counting the attempt, with
/// why in its `last_error`: the tenant's database server does not answer
/// (not the step's failure), or with `waiting` the step answered "not yet"
/// (its wait's start is kept, or set now). `false` if the claim is stale.
pub async fn postpone(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    delay: Duration,
    why: &str,
    waiting: bool,
) -> Result<bool> {
    let n = diesel::sql_query(
        "UPDATE outbox
         SET lease_owner = NULL, lease_token = NULL, locked_until = NULL,
             available_at = now() + make_interval(secs => $3), attempt = attempt - 1,
             last_error = $4,
             waiting_since = CASE WHEN $5 THEN coalesce(waiting_since, now()) ELSE waiting_since END
         WHERE id = $1 AND lease_token = $2",
    )
    .bind::<BigInt, _>(claim.id)
    .bind::<BigInt, _>(claim.lease_token)
    .bind::<Double, _>(delay.as_secs_f64())
    .bind::<Text, _>(why)
    .bind::<Bool, _>(waiting)
    .execute(conn)
    .await?;
    Ok(n == 1)
}

/// A write that acted on `claim` found its lease passed to another claim
/// and changed nothing: say so, with what it was about to do.
pub fn refused_stale(claim: &Claim, action: &'static str) {
    tracing::warn!(
        tenant_id = %claim.tenant_id,
        step = %claim.step,
        operation = %claim.operation,
        attempt = claim.attempt,
        lease_token = claim.lease_token,
        action,
        "stale claim refused: its lease expired and the row was claimed again; this {action} changed nothing"
    );
    metrics::stale_outcome(&claim.step, claim.operation_label(), action);
}

#[derive(diesel::QueryableByName)]
struct NextDue {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<DateTime<Utc>>,
}

/// When the earliest row becomes due (a retry's backoff or a lease expiry).
pub async fn next_due(conn: &mut AsyncPgConnection) -> Result<Option<DateTime<Utc>>> {
    let next: NextDue = diesel::sql_query("SELECT min(available_at) AS at FROM outbox")
        .get_result(conn)
        .await?;
    Ok(next.at)
}

use diesel::OptionalExtension as _;
