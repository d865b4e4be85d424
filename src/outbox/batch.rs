//! Batched completion: successful attempts of steps without database work
//! (no-op, email, RPC) from many workers are recorded in one statement (one
//! transaction, one round trip), instead of one transaction each. The rules
//! are those of `pipeline` (each claim's fencing token checked under the
//! tenant lock, step SUCCEEDED, events in order, next step kept leased under
//! a new token or the tenant settled); a stale claim is refused and changes
//! nothing; anything unusual (cancellation, an error) goes back to the
//! worker, which takes the one-row path.
//!
//! ```text
//! worker ─┐                      one statement (up to IN_FLIGHT at once):
//! worker ─┼─> completer ──────>   lock tenants + outbox rows by (id, token), then
//! worker ─┘   (drains queue)      steps, events, next rows, settled tenants; commit
//!     ^
//!     └──── next step (still leased), "done" or "take the one-row path" ──┘
//! ```
//!
//! Batches in flight together never hold the same tenant (a claim is in one
//! batch), and each locks its tenants in id order.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use diesel::sql_types::{
    Array, BigInt, Bool, Double, Integer, Jsonb, Nullable, Text, Uuid as SqlUuid,
};
use diesel_async::RunQueryDsl;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::store::{self, Claim};
use crate::db::outbox::Operation;
use crate::db::prepared::prepared_statement;
use crate::db::{self, DbPool};
use crate::domain::TenantState;
use crate::error::Result;
use crate::steps::Output;
use crate::telemetry::metrics::{self, StepOutcome};

/// Most completions in one transaction.
const MAX_BATCH: usize = 512;
/// Batch transactions in flight at once: while one waits for its commit
/// to be flushed, the next is already executing, and completions that
/// arrive meanwhile gather into the batch after.
const IN_FLIGHT: usize = 3;
/// Completions waiting for the completer.
const QUEUE: usize = 4096;

/// What the worker should do after handing over a completion.
#[derive(Debug)]
pub enum Reply {
    /// Recorded; the tenant's next step, still leased to the worker.
    Continue(Box<Claim>),
    /// Recorded; the pipeline is over (tenant settled) or the claim was
    /// stale (refused, nothing changed).
    Done,
    /// Not recorded: take the one-row path.
    Fallback,
}

struct Completion {
    claim: Claim,
    output: Output,
    reply: oneshot::Sender<Reply>,
}

/// Hands completions to the completer task.
#[derive(Clone)]
pub struct Completer {
    queue: mpsc::Sender<Completion>,
}

impl Completer {
    /// Starts the completer; it stops when `token` is cancelled and the
    /// queue is empty.
    pub fn spawn(
        pool: DbPool,
        lease: Duration,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tracker.spawn(run(pool, lease, rx, token));
        Completer { queue }
    }

    /// Records a successful attempt; `Fallback` if the completer is gone.
    pub async fn complete(&self, claim: Claim, output: Output) -> Reply {
        let (reply, answer) = oneshot::channel();
        if self
            .queue
            .send(Completion {
                claim,
                output,
                reply,
            })
            .await
            .is_err()
        {
            return Reply::Fallback;
        }
        answer.await.unwrap_or(Reply::Fallback)
    }
}

async fn run(
    pool: DbPool,
    lease: Duration,
    mut rx: mpsc::Receiver<Completion>,
    token: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        // A free slot first: while every slot is busy, completions queue
        // up and the next batch is larger.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let first = tokio::select! {
            first = rx.recv() => first,
            () = token.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        in_flight.spawn(async move {
            let mut replies = match record(&pool, lease, &batch).await {
                Ok(replies) => replies,
                Err(e) => {
                    tracing::warn!(error = %e, size = batch.len(), "batched completion failed; the workers take the one-row path");
                    HashMap::new()
                }
            };
            drop(slot);
            for completion in batch {
                let reply = replies
                    .remove(&completion.claim.id)
                    .unwrap_or(Reply::Fallback);
                let _ = completion.reply.send(reply);
            }
        });
        // Reap finished batches so the set does not grow.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// What the batch statement did with one completion.
#[derive(diesel::QueryableByName)]
struct Outcome {
    #[diesel(sql_type = BigInt)]
    outbox_id: i64,
    /// The row was still held by this very claim; if not, nothing changed.
    #[diesel(sql_type = Bool)]
    held: bool,
    /// Cancellation was asked: nothing changed, the worker takes the
    /// one-row path, which compensates.
    #[diesel(sql_type = Bool)]
    cancel_requested: bool,
    /// The step's success was recorded.
    #[diesel(sql_type = Bool)]
    recorded: bool,
    #[diesel(sql_type = Nullable<Text>)]
    next_step: Option<String>,
    /// The continuation's fencing token, with `next_step`.
    #[diesel(sql_type = Nullable<BigInt>)]
    next_lease_token: Option<i64>,
    #[diesel(sql_type = Nullable<Integer>)]
    next_max_attempts: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    next_retry_base_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    next_retry_cap_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    next_timeout_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    next_webhook_endpoint: Option<String>,
    #[diesel(sql_type = Nullable<Bool>)]
    next_webhook_compensate: Option<bool>,
}

/// One statement (so one transaction and one round trip) for the whole
/// batch; replies by outbox id.
async fn record(
    pool: &DbPool,
    lease: Duration,
    batch: &[Completion],
) -> Result<HashMap<i64, Reply>> {
    let outbox_ids: Vec<i64> = batch.iter().map(|c| c.claim.id).collect();
    let lease_tokens: Vec<i64> = batch.iter().map(|c| c.claim.lease_token).collect();
    let tenant_ids: Vec<Uuid> = batch.iter().map(|c| c.claim.tenant_id).collect();
    let steps: Vec<&str> = batch.iter().map(|c| c.claim.step.as_str()).collect();
    let attempts: Vec<i32> = batch.iter().map(|c| c.claim.attempt).collect();
    let outputs: Vec<serde_json::Value> = batch
        .iter()
        .map(|c| db::models::json_map(&c.output))
        .collect();
    let messages: Vec<String> = batch
        .iter()
        .map(|c| super::pipeline::succeeded_message(&c.claim.step, &c.output))
        .collect();
    let (lease, keep) = store::lease_params(lease);
    let mut conn = db::conn(pool).await?;
    let outcomes: Vec<Outcome> = BatchStatement {
        outbox_ids: &outbox_ids,
        lease_tokens: &lease_tokens,
        tenant_ids: &tenant_ids,
        steps: &steps,
        attempts: &attempts,
        outputs: &outputs,
        messages: &messages,
        lease,
        keep,
    }
    .load(&mut conn)
    .await?;
    // Committed: reply, report the stale claims and count what it recorded.
    let completions: HashMap<i64, &Completion> = batch.iter().map(|c| (c.claim.id, c)).collect();
    let mut replies = HashMap::with_capacity(batch.len());
    let mut recorded = 0;
    for outcome in outcomes {
        let Some(completion) = completions.get(&outcome.outbox_id) else {
            continue;
        };
        let claim = &completion.claim;
        let reply = if !outcome.held {
            super::store::refused_stale(claim, StepOutcome::Succeeded.into());
            Reply::Done
        } else if outcome.cancel_requested || !outcome.recorded {
            Reply::Fallback
        } else {
            recorded += 1;
            let operation = claim.operation_label();
            metrics::step_recorded(&claim.step, operation, StepOutcome::Succeeded);
            match (outcome.next_step, outcome.next_lease_token) {
                (Some(step), Some(lease_token)) => {
                    let mut outputs = claim.outputs.clone();
                    if let Some(map) = outputs.as_object_mut() {
                        map.extend(
                            completion
                                .output
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone().into())),
                        );
                    }
                    Reply::Continue(Box::new(Claim {
                        step,
                        lease_token,
                        attempt: 1,
                        max_attempts: outcome.next_max_attempts.unwrap_or(1),
                        retry_base_ms: outcome.next_retry_base_ms,
                        retry_cap_ms: outcome.next_retry_cap_ms,
                        timeout_ms: outcome.next_timeout_ms,
                        webhook_endpoint: outcome.next_webhook_endpoint,
                        webhook_compensate: outcome.next_webhook_compensate.unwrap_or(false),
                        outputs,
                        waiting_since: None,
                        ..claim.clone()
                    }))
                }
                _ => {
                    let state = if operation == Operation::Deprovision.as_str() {
                        TenantState::Deprovisioned
                    } else {
                        TenantState::Active
                    };
                    metrics::pipeline_settled(state, &claim.plan, claim.tenant_age());
                    Reply::Done
                }
            }
        };
        replies.insert(claim.id, reply);
    }
    metrics::completion_batch(recorded);
    Ok(replies)
}

prepared_statement! {
    /// Everything `pipeline::Transition::step_succeeded` + `advance` write, for
    /// many tenants at once, as one statement that each connection prepares
    /// once: planning it anew took about as long as a tenth of a batch.
    /// Inputs are parallel arrays: outbox id, the claim's fencing token,
    /// tenant id, step, attempt, the step's output and the STEP_SUCCEEDED
    /// event's message; then the lease and the part of it a continuation
    /// keeps. The tenants' states come from their locked rows.
    /// Events are inserted per tenant in order (succeeded, started or settled).
    struct BatchStatement<'a> {
        outbox_ids: &'a [i64],
        lease_tokens: &'a [i64],
        tenant_ids: &'a [Uuid],
        steps: &'a [&'a str],
        attempts: &'a [i32],
        outputs: &'a [serde_json::Value],
        messages: &'a [String],
        lease: f64,
        keep: f64,
    }
    sql = BATCH_SQL;
    binds = [
        outbox_ids: Array<BigInt>,
        lease_tokens: Array<BigInt>,
        tenant_ids: Array<SqlUuid>,
        steps: Array<Text>,
        attempts: Array<Integer>,
        outputs: Array<Jsonb>,
        messages: Array<Text>,
        lease: Double,
        keep: Double,
    ];
}

pub(crate) static BATCH_SQL: LazyLock<String> = LazyLock::new(|| {
    BATCH_SQL_TEMPLATE.replace(
        "{continue_lease}",
        &store::continue_lease_sql("p.lease", "p.keep"),
    )
});

const BATCH_SQL_TEMPLATE: &str = "
WITH input AS (
    SELECT * FROM unnest({bind}::bigint[], {bind}::bigint[], {bind}::uuid[], {bind}::text[], {bind}::int[],
                         {bind}::jsonb[], {bind}::text[])
        AS i(outbox_id, lease_token, tenant_id, step, attempt, output, message)
), p AS (
    SELECT {bind}::float8 AS lease, {bind}::float8 AS keep
), held AS MATERIALIZED (
    -- Only rows still held by these very claims, locked with their tenants
    -- before anything is written (so the events of a tenant commit in id
    -- order with every other writer's); tenants in id order.
    SELECT o.id, o.operation, t.cancel_requested, t.state
    FROM outbox o JOIN tenants t ON t.id = o.tenant_id
    WHERE (o.id, o.lease_token) IN (SELECT outbox_id, lease_token FROM input)
    ORDER BY t.id
    FOR UPDATE OF t, o
), cur AS (
    SELECT i.outbox_id, i.tenant_id, i.step, i.attempt, h.state, i.output, i.message,
           s.position, s.phase, h.operation
    FROM input i
    JOIN held h ON h.id = i.outbox_id AND NOT h.cancel_requested
    JOIN tenant_steps s ON s.tenant_id = i.tenant_id AND s.name = i.step
), nxt AS (
    SELECT c.*,
        (SELECT s.name FROM tenant_steps s
         WHERE s.tenant_id = c.tenant_id AND s.phase = c.phase AND s.position > c.position
           AND s.status <> 'SUCCEEDED'
         ORDER BY s.position LIMIT 1) AS next_step
    FROM cur c
), done AS (
    UPDATE tenant_steps s
    SET status = 'SUCCEEDED', last_error = NULL, output = n.output, finish_time = now()
    FROM nxt n WHERE s.tenant_id = n.tenant_id AND s.name = n.step
), started AS (
    UPDATE tenant_steps s
    SET status = 'RUNNING', attempts = 1, start_time = coalesce(s.start_time, now())
    FROM nxt n WHERE s.tenant_id = n.tenant_id AND s.name = n.next_step
), moved AS (
    UPDATE outbox o
    SET step = n.next_step, attempt = 1, last_error = NULL, waiting_since = NULL, {continue_lease}
    FROM nxt n, p WHERE o.id = n.outbox_id AND n.next_step IS NOT NULL
    RETURNING o.id, o.lease_token
), removed AS (
    DELETE FROM outbox o USING nxt n WHERE o.id = n.outbox_id AND n.next_step IS NULL
), settled AS (
    UPDATE tenants t
    SET state = CASE n.operation WHEN 'DEPROVISION' THEN 'DEPROVISIONED' ELSE 'ACTIVE' END,
        purge_time = CASE n.operation
            WHEN 'DEPROVISION' THEN now() + make_interval(secs => coalesce(t.grace_period_secs, 0))
            ELSE t.purge_time END,
        outputs = t.outputs || n.output, revision = t.revision + 1, update_time = now()
    FROM nxt n WHERE t.id = n.tenant_id AND n.next_step IS NULL
), merged AS (
    UPDATE tenants t
    SET outputs = t.outputs || n.output, revision = t.revision + 1, update_time = now()
    FROM nxt n WHERE t.id = n.tenant_id AND n.next_step IS NOT NULL AND n.output <> '{}'::jsonb
), logged AS (
    INSERT INTO events (tenant_id, kind, step, attempt, state, message, actor)
    SELECT tenant_id, kind, step, attempt, state, message, 'system' FROM (
        SELECT n.tenant_id, 1 AS ord, 'STEP_SUCCEEDED' AS kind, n.step, n.attempt, n.state,
               n.message
        FROM nxt n
        UNION ALL
        SELECT n.tenant_id, 2, 'STEP_STARTED', n.next_step, 1, n.state,
               'running ' || n.next_step || ', attempt 1'
        FROM nxt n WHERE n.next_step IS NOT NULL
        UNION ALL
        SELECT n.tenant_id, 2, 'STATE_CHANGED', n.step, n.attempt,
               CASE n.operation WHEN 'DEPROVISION' THEN 'DEPROVISIONED' ELSE 'ACTIVE' END,
               CASE n.operation WHEN 'DEPROVISION' THEN 'DEPROVISIONED: deprovisioning complete'
                                ELSE 'ACTIVE: provisioning complete' END
        FROM nxt n WHERE n.next_step IS NULL
    ) e ORDER BY tenant_id, ord
)
SELECT i.outbox_id, h.id IS NOT NULL AS held, coalesce(h.cancel_requested, false) AS cancel_requested,
       n.outbox_id IS NOT NULL AS recorded, n.next_step, m.lease_token AS next_lease_token,
       s.max_attempts AS next_max_attempts, s.retry_base_ms AS next_retry_base_ms,
       s.retry_cap_ms AS next_retry_cap_ms, s.timeout_ms AS next_timeout_ms,
       s.webhook_endpoint AS next_webhook_endpoint, s.webhook_compensate AS next_webhook_compensate
FROM input i
LEFT JOIN held h ON h.id = i.outbox_id
LEFT JOIN nxt n ON n.outbox_id = i.outbox_id
LEFT JOIN moved m ON m.id = i.outbox_id
LEFT JOIN tenant_steps s ON s.tenant_id = n.tenant_id AND s.name = n.next_step";
