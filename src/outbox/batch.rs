//! Batched completion: successful attempts of steps without database work
//! (no-op, email, RPC) from many workers are recorded in one transaction of
//! three statements, instead of one transaction each. The rules are those of
//! `pipeline` (each claim's fencing token checked under the tenant lock, step
//! SUCCEEDED, events in order, next step kept leased under a new token or the
//! tenant settled); a stale claim is refused and changes nothing; anything
//! unusual (cancellation, an error) goes back to the worker, which takes the
//! one-row path.
//!
//! ```text
//! worker ─┐                      one transaction (up to IN_FLIGHT at once):
//! worker ─┼─> completer ──────>   lock tenants + outbox rows by (id, token)
//! worker ─┘   (drains queue)      one statement: steps, events, next rows, settled tenants
//!     ^                           commit
//!     └──── next step (still leased) or "done" ──┘
//! ```
//!
//! Batches in flight together never hold the same tenant (a claim is in one
//! batch), and each locks its tenants in id order.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Untyped;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Integer, Jsonb, Nullable, Text, Uuid as SqlUuid,
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::store::{self, Claim};
use crate::db::outbox::Operation;
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

#[derive(diesel::QueryableByName)]
struct Held {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Bool)]
    cancel_requested: bool,
    #[diesel(sql_type = Text)]
    state: String,
}

#[derive(diesel::QueryableByName)]
struct Next {
    #[diesel(sql_type = BigInt)]
    outbox_id: i64,
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

/// One transaction for the whole batch; replies by outbox id.
async fn record(
    pool: &DbPool,
    lease: Duration,
    batch: &[Completion],
) -> Result<HashMap<i64, Reply>> {
    let ids: Vec<i64> = batch.iter().map(|c| c.claim.id).collect();
    let tokens: Vec<i64> = batch.iter().map(|c| c.claim.lease_token).collect();
    let mut conn = db::conn(pool).await?;
    // Outbox ids recorded, and whether their pipeline ended.
    let mut recorded: Vec<(i64, bool)> = Vec::new();
    // Claims whose row was claimed again: refused.
    let mut stale: Vec<&Claim> = Vec::new();
    let replies = conn.transaction(async |conn| {
        // Only rows still held by these very claims; tenants in id order,
        // so concurrent batches never deadlock.
        let held: Vec<Held> = diesel::sql_query(
            "SELECT o.id, t.cancel_requested, t.state FROM outbox o JOIN tenants t ON t.id = o.tenant_id
             WHERE (o.id, o.lease_token) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))
             ORDER BY t.id FOR UPDATE OF t, o",
        )
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<BigInt>, _>(&tokens)
        .load(conn)
        .await?;
        let mut replies: HashMap<i64, Reply> = ids.iter().map(|id| (*id, Reply::Done)).collect();
        let states: HashMap<i64, &Held> = held.iter().map(|h| (h.id, h)).collect();
        let mut go = Vec::new();
        for completion in batch {
            match states.get(&completion.claim.id) {
                None => stale.push(&completion.claim),
                Some(h) if h.cancel_requested => {
                    replies.insert(completion.claim.id, Reply::Fallback);
                }
                Some(h) => go.push((completion, h.state.clone())),
            }
        }
        if go.is_empty() {
            return Ok(replies);
        }
        let outbox_ids: Vec<i64> = go.iter().map(|(c, _)| c.claim.id).collect();
        let tenant_ids: Vec<Uuid> = go.iter().map(|(c, _)| c.claim.tenant_id).collect();
        let steps: Vec<&str> = go.iter().map(|(c, _)| c.claim.step.as_str()).collect();
        let attempts: Vec<i32> = go.iter().map(|(c, _)| c.claim.attempt).collect();
        let tenant_states: Vec<&str> = go.iter().map(|(_, s)| s.as_str()).collect();
        let outputs: Vec<serde_json::Value> = go.iter().map(|(c, _)| db::models::json_map(&c.output)).collect();
        let messages: Vec<String> = go
            .iter()
            .map(|(c, _)| super::pipeline::succeeded_message(&c.claim.step, &c.output))
            .collect();
        let (lease, keep) = store::lease_params(lease);
        let next: Vec<Next> = BatchStatement {
            outbox_ids: &outbox_ids,
            tenant_ids: &tenant_ids,
            steps: &steps,
            attempts: &attempts,
            states: &tenant_states,
            outputs: &outputs,
            messages: &messages,
            lease,
            keep,
        }
        .load(conn)
        .await?;
        metrics::completion_batch(next.len());
        let by_id: HashMap<i64, (&Completion, &String)> = go.iter().map(|(c, s)| (c.claim.id, (*c, s))).collect();
        for n in next {
            let Some((completion, _)) = by_id.get(&n.outbox_id) else { continue };
            recorded.push((n.outbox_id, n.next_step.is_none()));
            let reply = match (n.next_step, n.next_lease_token) {
                (Some(step), Some(lease_token)) => {
                    let mut outputs = completion.claim.outputs.clone();
                    if let Some(map) = outputs.as_object_mut() {
                        map.extend(completion.output.iter().map(|(k, v)| (k.clone(), v.clone().into())));
                    }
                    Reply::Continue(Box::new(Claim {
                        step,
                        lease_token,
                        attempt: 1,
                        max_attempts: n.next_max_attempts.unwrap_or(1),
                        retry_base_ms: n.next_retry_base_ms,
                        retry_cap_ms: n.next_retry_cap_ms,
                        timeout_ms: n.next_timeout_ms,
                        webhook_endpoint: n.next_webhook_endpoint,
                        webhook_compensate: n.next_webhook_compensate.unwrap_or(false),
                        outputs,
                        ..completion.claim.clone()
                    }))
                }
                _ => Reply::Done,
            };
            replies.insert(n.outbox_id, reply);
        }
        Ok::<_, crate::error::Error>(replies)
    })
    .await?;
    // Committed: report the stale claims and count what it recorded.
    for claim in stale {
        super::store::refused_stale(claim, StepOutcome::Succeeded.into());
    }
    let claims: HashMap<i64, &Claim> = batch.iter().map(|c| (c.claim.id, &c.claim)).collect();
    for (id, settled) in recorded {
        let Some(claim) = claims.get(&id) else {
            continue;
        };
        let operation = claim.operation_label();
        metrics::step_recorded(&claim.step, operation, StepOutcome::Succeeded);
        if settled {
            let state = if operation == Operation::Deprovision.as_str() {
                TenantState::Deprovisioned
            } else {
                TenantState::Active
            };
            metrics::pipeline_settled(state, &claim.plan, claim.tenant_age());
        }
    }
    Ok(replies)
}

/// Everything `pipeline::Transition::step_succeeded` + `advance` write, for
/// many tenants at once, as one statement that each connection prepares
/// once: planning it anew took about as long as a tenth of a batch.
/// Inputs are parallel arrays: outbox id, tenant id, step, attempt, the
/// tenant's state, the step's output and the STEP_SUCCEEDED event's
/// message; then the lease and the part of it a continuation keeps.
/// Events are inserted per tenant in order (succeeded, started or settled).
struct BatchStatement<'a> {
    outbox_ids: &'a [i64],
    tenant_ids: &'a [Uuid],
    steps: &'a [&'a str],
    attempts: &'a [i32],
    states: &'a [&'a str],
    outputs: &'a [serde_json::Value],
    messages: &'a [String],
    lease: f64,
    keep: f64,
}

impl QueryFragment<Pg> for BatchStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // The statement's text between its parameters, which come in the
        // order of the fields.
        let mut parts = BATCH_SQL.split(BIND);
        let mut text =
            |out: &mut AstPass<'_, 'b, Pg>| out.push_sql(parts.next().unwrap_or_default());
        text(&mut out);
        out.push_bind_param::<Array<BigInt>, _>(self.outbox_ids)?;
        text(&mut out);
        out.push_bind_param::<Array<SqlUuid>, _>(self.tenant_ids)?;
        text(&mut out);
        out.push_bind_param::<Array<Text>, _>(self.steps)?;
        text(&mut out);
        out.push_bind_param::<Array<Integer>, _>(self.attempts)?;
        text(&mut out);
        out.push_bind_param::<Array<Text>, _>(self.states)?;
        text(&mut out);
        out.push_bind_param::<Array<Jsonb>, _>(self.outputs)?;
        text(&mut out);
        out.push_bind_param::<Array<Text>, _>(self.messages)?;
        text(&mut out);
        out.push_bind_param::<Double, _>(&self.lease)?;
        text(&mut out);
        out.push_bind_param::<Double, _>(&self.keep)?;
        text(&mut out);
        Ok(())
    }
}

impl QueryId for BatchStatement<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for BatchStatement<'_> {
    type SqlType = Untyped;
}

/// Where [`BATCH_SQL`] takes a parameter.
const BIND: &str = "{bind}";

static BATCH_SQL: LazyLock<String> = LazyLock::new(|| {
    BATCH_SQL_TEMPLATE.replace(
        "{continue_lease}",
        &store::continue_lease_sql("p.lease", "p.keep"),
    )
});

const BATCH_SQL_TEMPLATE: &str = "
WITH input AS (
    SELECT * FROM unnest({bind}::bigint[], {bind}::uuid[], {bind}::text[], {bind}::int[], {bind}::text[],
                         {bind}::jsonb[], {bind}::text[])
        AS i(outbox_id, tenant_id, step, attempt, state, output, message)
), p AS (
    SELECT {bind}::float8 AS lease, {bind}::float8 AS keep
), cur AS (
    SELECT i.*, s.position, s.phase, o.operation
    FROM input i
    JOIN tenant_steps s ON s.tenant_id = i.tenant_id AND s.name = i.step
    JOIN outbox o ON o.id = i.outbox_id
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
    SET step = n.next_step, attempt = 1, last_error = NULL, {continue_lease}
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
SELECT n.outbox_id, n.next_step, m.lease_token AS next_lease_token, s.max_attempts AS next_max_attempts,
       s.retry_base_ms AS next_retry_base_ms, s.retry_cap_ms AS next_retry_cap_ms,
       s.timeout_ms AS next_timeout_ms, s.webhook_endpoint AS next_webhook_endpoint,
       s.webhook_compensate AS next_webhook_compensate
FROM nxt n
LEFT JOIN moved m ON m.id = n.outbox_id
LEFT JOIN tenant_steps s ON s.tenant_id = n.tenant_id AND s.name = n.next_step";
