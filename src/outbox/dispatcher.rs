//! The dispatcher: claims due outbox rows and runs them.
//!
//! ```text
//!        wake-ups: local signal | LISTEN tenantd_work | next due time | jittered poll
//!                                   │
//!                                   ▼
//!   ┌──────────── loop ─────────────────────────────────────────────┐
//!   │ claim(min(free permits, batch))  one statement, SKIP LOCKED   │
//!   │   └─ per row: spawn worker (holds a concurrency permit)       │
//!   │        ├─ run_external   no connection held; heartbeats;      │
//!   │        │                 timeout; panic = failed attempt      │
//!   │        └─ one transaction: lock tenant + row by claim token,  │
//!   │             run_in_db, step status + event, next outbox row   │
//!   │             (or retry with backoff, or saga, or ACTIVE)       │
//!   │ drained? wait for the next wake-up                            │
//!   └───────────────────────────────────────────────────────────────┘
//! ```
//!
//! One outbox row per tenant (unique index) keeps a tenant's steps in order;
//! different tenants run in parallel up to `concurrency`. Every write about
//! a claim (heartbeat, outcome, continuation, release) is fenced by the
//! claim's token: when a lease expires under a live worker and the row is
//! claimed again, the stale worker's writes are refused, logged and counted
//! (`tenantd_stale_outcomes_total`), and change nothing.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::FutureExt;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::batch::{Completer, Reply};
use super::hooks::{Hooks, Point};
use super::pipeline::{self, Outcome, Transition, TxError};
use super::store::{self, Claim};
use super::{Backoff, Wakeup};
use crate::db::outbox::Operation;
use crate::db::{self, DbPool};
use crate::error::{Error, Result};
use crate::steps::{Output, Registry, Step, StepCtx, StepError};
use crate::telemetry::metrics::{self, StepOutcome};

/// Largest batch one claim statement takes.
const MAX_CLAIM_BATCH: usize = 256;
/// Tries at recording an attempt's outcome while the database is
/// unavailable, and the first pause between them (doubled each time, about
/// 6 s in all): bridges a database restart without waiting out the lease.
const APPLY_TRIES: u32 = 7;
const APPLY_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pause after a failed claim (database down) before trying again.
const CLAIM_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Identifies this process in leases.
    pub owner: String,
    /// Steps of different tenants running at once.
    pub concurrency: usize,
    /// How long a claim is valid without a heartbeat; a dead replica's work
    /// is picked up after about this long.
    pub lease: Duration,
    /// Fallback poll when no wake-up arrives (jittered by +-20%).
    pub poll_interval: Duration,
    /// Retry policy for failed attempts.
    pub backoff: Backoff,
    /// Bound on one attempt's external work.
    pub step_timeout: Duration,
    /// Prefix of tenant role names.
    pub role_prefix: String,
    /// Whether tenant data lives in the control-plane database, so that
    /// database steps commit with their completion.
    pub same_database: bool,
    /// At shutdown, how long a running step may still finish before it is
    /// interrupted and its row released for another replica.
    pub shutdown_grace: Duration,
    /// Where tests may hold a worker; inert in every other build.
    pub hooks: Hooks,
}

/// Everything the dispatcher and its workers share.
pub struct Dispatcher {
    pub config: DispatcherConfig,
    /// The control-plane database.
    pub pool: DbPool,
    /// The tenant database (the same pool unless configured apart).
    pub tenant_pool: DbPool,
    pub registry: Registry,
    pub wakeup: Wakeup,
    /// Stops claiming; running steps get `shutdown_grace` to finish.
    pub shutdown: CancellationToken,
    /// Records successes of steps without database work in batches; set by
    /// `spawn`.
    pub completer: Option<Completer>,
}

type Shared = Dispatcher;

impl Dispatcher {
    /// Starts the loop on `tracker`; it stops claiming when `token` is
    /// cancelled, and in-flight attempts finish (they are tracked too).
    pub fn spawn(mut self, listening: tokio::sync::watch::Receiver<bool>, tracker: &TaskTracker) {
        // Stops after the workers: it is cancelled by the same token but
        // drains its queue first.
        self.completer = Some(Completer::spawn(
            self.pool.clone(),
            self.config.lease,
            self.shutdown.clone(),
            tracker,
        ));
        let workers = tracker.clone();
        let token = self.shutdown.clone();
        tracker.spawn(run(Arc::new(self), listening, token, workers));
    }
}

async fn run(
    shared: Arc<Shared>,
    mut listening: tokio::sync::watch::Receiver<bool>,
    token: CancellationToken,
    workers: TaskTracker,
) {
    // Register for notifications before the first query, so that a NOTIFY
    // sent meanwhile is not lost.
    let _ = tokio::time::timeout(Duration::from_secs(5), listening.wait_for(|ready| *ready)).await;
    let permits = Arc::new(Semaphore::new(shared.config.concurrency));
    tracing::info!(owner = %shared.config.owner, concurrency = shared.config.concurrency, "dispatcher started");
    loop {
        if token.is_cancelled() {
            break;
        }
        let free = permits.available_permits().min(MAX_CLAIM_BATCH);
        if free == 0 {
            tokio::select! {
                () = token.cancelled() => break,
                permit = permits.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        let claims = match claim(&shared, free).await {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(error = %e, "claiming outbox rows failed");
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(CLAIM_ERROR_PAUSE) => continue,
                }
            }
        };
        let claimed = claims.len();
        if claimed > 0 {
            // The claim wrote STARTED events.
            shared.wakeup.events_committed();
        }
        for claim in claims {
            // Only this loop acquires permits, and `free` were available.
            let permit = permits
                .clone()
                .try_acquire_owned()
                .expect("a free permit was counted");
            workers.spawn(work(shared.clone(), claim, permit));
        }
        if claimed == free {
            continue; // more may be due
        }
        let wait = idle_wait(&shared).await;
        tokio::select! {
            () = token.cancelled() => break,
            () = shared.wakeup.local_signal() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("dispatcher stopped claiming");
}

async fn claim(shared: &Shared, limit: usize) -> Result<Vec<Claim>> {
    let mut conn = db::conn(&shared.pool).await?;
    store::claim(
        &mut conn,
        &shared.config.owner,
        shared.config.lease,
        limit as i64,
    )
    .await
}

/// Until the next row is due, at most the jittered poll interval.
async fn idle_wait(shared: &Shared) -> Duration {
    let poll = shared
        .config
        .poll_interval
        .mul_f64(rand::rng().random_range(0.8..1.2));
    let next = match db::conn(&shared.pool).await {
        Ok(mut conn) => store::next_due(&mut conn).await.ok().flatten(),
        Err(_) => None,
    };
    match next {
        Some(at) => (at - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(poll),
        None => poll,
    }
}

/// Runs one claimed row to the end of its attempt, then the tenant's next
/// steps as long as the completion hands them back still leased.
async fn work(shared: Arc<Shared>, claim: Claim, _permit: OwnedSemaphorePermit) {
    let mut next = Some(claim);
    while let Some(claim) = next.take() {
        let span = step_span(&claim);
        metrics::step_claimed(&claim.step, claim.operation_label());
        let started = Instant::now();
        next = async {
            match AssertUnwindSafe(attempt(&shared, &claim)).catch_unwind().await {
                Ok(Ok(next)) => next,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "attempt failed outside the step; it runs again when its lease expires");
                    None
                }
                Err(panic) => {
                    let error = panic_message(&panic);
                    tracing::error!(%error, "attempt panicked outside the step; it runs again when its lease expires");
                    None
                }
            }
        }
        .instrument(span)
        .await;
        metrics::step_duration(&claim.step, claim.operation_label(), started.elapsed());
        // Events were committed (and maybe work for other replicas).
        shared.wakeup.work_committed();
    }
}

/// The span of one step attempt, named for trace views.
fn step_span(claim: &Claim) -> tracing::Span {
    tracing::info_span!(
        "step",
        otel.name = format!("{} {}", claim.operation_label(), claim.step),
        tenant_id = %claim.tenant_id,
        step = %claim.step,
        attempt = claim.attempt,
        operation = %claim.operation
    )
}

/// One attempt; returns the tenant's next step if this worker keeps going.
async fn attempt(shared: &Shared, claim: &Claim) -> Result<Option<Claim>> {
    let operation = claim.operation()?;
    let step = shared
        .registry
        .resolve(&claim.step, claim.webhook().as_ref());
    let ctx = pipeline::step_ctx(claim, &shared.config.role_prefix, &shared.tenant_pool)?;
    let same_db = shared.config.same_database;
    if claim.attempt > claim.max_attempts {
        // Earlier attempts died with their workers (their leases expired).
        let error = StepError::new(format!(
            "attempt {} of {} was lost with its worker; no attempts left",
            claim.attempt - 1,
            claim.max_attempts
        ));
        let action = if operation == Operation::Compensate {
            Action::CompensationFailed(&error)
        } else {
            Action::Failed(&error)
        };
        return apply(shared, claim, action)
            .await
            .map_err(TxError::into_error);
    }
    match operation {
        Operation::Provision if claim.cancel_requested => {
            apply(shared, claim, Action::CancelledBeforeStep)
                .await
                .map_err(TxError::into_error)
        }
        // A deprovisioning step runs like a provisioning one; only the
        // pipeline it advances differs.
        Operation::Provision | Operation::Deprovision => {
            let Some(step) = step else {
                let error =
                    StepError::new(format!("this build has no step named {:?}", claim.step));
                return apply(shared, claim, Action::Failed(&error))
                    .await
                    .map_err(TxError::into_error);
            };
            let mut outcome = match guarded(shared, claim, step.run_external(&ctx)).await {
                Err(Stop::Interrupted) => return release(shared, claim).await.map(|()| None),
                Err(Stop::Stale) => return Ok(None),
                Err(Stop::Failed(error)) => Err(error),
                Ok(output) => Ok(output),
            };
            shared.config.hooks.at(Point::BeforeRecord, claim).await;
            if let Ok(output) = &mut outcome
                && !same_db
            {
                match in_tenant_db(shared, &ctx, step.as_ref(), false).await {
                    Ok(more) => output.extend(more),
                    Err(error) => outcome = Err(error),
                }
            }
            if let Ok(output) = &outcome
                && !step.database_work()
                && !shared.shutdown.is_cancelled()
                && let Some(completer) = &shared.completer
            {
                match completer.complete(claim.clone(), output.clone()).await {
                    Reply::Continue(next) => return Ok(Some(*next)),
                    Reply::Done => return Ok(None),
                    Reply::Fallback => {}
                }
            }
            let done = match outcome {
                Ok(output) => {
                    apply(
                        shared,
                        claim,
                        Action::Succeeded {
                            step: step.as_ref(),
                            ctx: &ctx,
                            output,
                        },
                    )
                    .await
                }
                Err(error) => Err(TxError::Step(error)),
            };
            match done {
                Err(TxError::Step(error)) => {
                    tracing::warn!(%error, "step attempt failed");
                    apply(shared, claim, Action::Failed(&error))
                        .await
                        .map_err(TxError::into_error)
                }
                other => other.map_err(TxError::into_error),
            }
        }
        Operation::Compensate => {
            let Some(step) = step else {
                let error =
                    StepError::new(format!("this build has no step named {:?}", claim.step));
                return apply(shared, claim, Action::CompensationFailed(&error))
                    .await
                    .map_err(TxError::into_error);
            };
            let mut outcome = match guarded(shared, claim, step.compensate_external(&ctx)).await {
                Err(Stop::Interrupted) => return release(shared, claim).await.map(|()| None),
                Err(Stop::Stale) => return Ok(None),
                Err(Stop::Failed(error)) => Err(error),
                Ok(output) => Ok(output),
            };
            shared.config.hooks.at(Point::BeforeRecord, claim).await;
            if let (Ok(_), false) = (&outcome, same_db)
                && let Err(error) = in_tenant_db(shared, &ctx, step.as_ref(), true).await
            {
                outcome = Err(error);
            }
            let done = match outcome {
                Ok(output) => {
                    apply(
                        shared,
                        claim,
                        Action::Compensated {
                            step: step.as_ref(),
                            ctx: &ctx,
                            output,
                        },
                    )
                    .await
                }
                Err(error) => Err(TxError::Step(error)),
            };
            match done {
                Err(TxError::Step(error)) => {
                    tracing::warn!(%error, "compensation attempt failed");
                    apply(shared, claim, Action::CompensationFailed(&error))
                        .await
                        .map_err(TxError::into_error)
                }
                other => other.map_err(TxError::into_error),
            }
        }
    }
}

/// How an attempt ended, to be recorded in one transaction.
#[derive(Clone)]
enum Action<'a> {
    /// External work succeeded; database work (same database) runs now.
    Succeeded {
        step: &'a dyn Step,
        ctx: &'a StepCtx,
        output: Output,
    },
    Failed(&'a StepError),
    CancelledBeforeStep,
    /// External undo succeeded; database undo (same database) runs now.
    Compensated {
        step: &'a dyn Step,
        ctx: &'a StepCtx,
        /// What the undo left on record (an orphaned resource).
        output: Output,
    },
    CompensationFailed(&'a StepError),
}

/// Records `action` in one transaction after locking the tenant and its row
/// by the claim's token (a stale claim is refused before anything runs). A
/// step's own database error rolls it back and is returned as
/// `TxError::Step`, to be recorded as a failed attempt.
async fn apply(
    shared: &Shared,
    claim: &Claim,
    action: Action<'_>,
) -> Result<Option<Claim>, TxError> {
    // The transaction is all or nothing, so a database that went away
    // meanwhile is retried here rather than left to the lease's expiry.
    let mut pause = APPLY_RETRY_PAUSE;
    for _ in 1..APPLY_TRIES {
        match apply_once(shared, claim, action.clone()).await {
            Err(TxError::Db(Error::Unavailable(e))) => {
                tracing::warn!(error = %e, retry_in = ?pause, "recording the attempt failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    apply_once(shared, claim, action).await
}

async fn apply_once(
    shared: &Shared,
    claim: &Claim,
    action: Action<'_>,
) -> Result<Option<Claim>, TxError> {
    let t = Transition {
        claim,
        role_prefix: &shared.config.role_prefix,
        tenant_db: &shared.tenant_pool,
        registry: &shared.registry,
        backoff: shared.config.backoff,
        lease: shared.config.lease,
        may_continue: !shared.shutdown.is_cancelled(),
        continued: std::sync::Mutex::new(None),
        notes: std::sync::Mutex::default(),
    };
    let recorded = match &action {
        Action::Succeeded { .. } => StepOutcome::Succeeded,
        Action::Failed(_) => StepOutcome::Failed,
        Action::CancelledBeforeStep => StepOutcome::Cancelled,
        Action::Compensated { .. } => StepOutcome::Compensated,
        Action::CompensationFailed(_) => StepOutcome::CompensationFailed,
    };
    let same_db = shared.config.same_database;
    // Steps run and recorded in this transaction after the claim's own.
    let mut chained: Vec<Claim> = Vec::new();
    let mut conn = db::conn(&shared.pool).await.map_err(TxError::Db)?;
    let outcome = conn
        .transaction(async |conn| {
            let Some(locked) = pipeline::lock(conn, claim).await? else {
                return Ok::<_, TxError>(Outcome::Stale);
            };
            match action {
                Action::Succeeded {
                    step,
                    ctx,
                    mut output,
                } => {
                    if same_db {
                        output.extend(step.run_in_db(conn, ctx).await.map_err(TxError::Step)?);
                    }
                    t.step_succeeded(conn, &locked, &output).await?;
                    if same_db {
                        chain(shared, conn, &t, &mut chained).await;
                    }
                }
                Action::Failed(error) => t.step_failed(conn, &locked, error).await?,
                Action::CancelledBeforeStep => t.cancelled_before_step(conn, &locked).await?,
                Action::Compensated { step, ctx, output } => {
                    if same_db {
                        step.compensate_in_db(conn, ctx)
                            .await
                            .map_err(TxError::Step)?;
                    }
                    t.compensation_succeeded(conn, &locked, &output).await?;
                }
                Action::CompensationFailed(error) => {
                    t.compensation_failed(conn, &locked, error).await?
                }
            }
            Ok(Outcome::Applied)
        })
        .await;
    match outcome? {
        Outcome::Applied => {
            let operation = claim.operation_label();
            metrics::step_recorded(&claim.step, operation, recorded);
            for ran in &chained {
                metrics::step_claimed(&ran.step, operation);
                metrics::step_recorded(&ran.step, operation, StepOutcome::Succeeded);
            }
            let notes = t.notes.into_inner().unwrap_or_default();
            if notes.retried {
                metrics::step_retry(&claim.step, operation);
            }
            if let Some(state) = notes.settled {
                metrics::pipeline_settled(state, &claim.plan, claim.tenant_age());
            }
            Ok(t.continued.into_inner().ok().flatten())
        }
        Outcome::Stale => {
            store::refused_stale(claim, recorded.into());
            Ok(None)
        }
    }
}

/// Runs the steps that follow a success and have only database work (see
/// [`Step::external_work`]) in the same transaction, each under a savepoint
/// and recorded as if it had been claimed: its own STEP_STARTED (written by
/// the continuation) and STEP_SUCCEEDED events, its own outputs. One commit
/// then covers several steps. A step that fails is rolled back to its
/// savepoint and left to the worker, which runs it on its own and records
/// the failure; what succeeded before it stands.
async fn chain(
    shared: &Shared,
    conn: &mut AsyncPgConnection,
    t: &Transition<'_>,
    ran: &mut Vec<Claim>,
) {
    loop {
        let Some(next) = t.continued.lock().ok().and_then(|c| c.clone()) else {
            return;
        };
        let Some(step) = shared
            .registry
            .resolve(&next.step, next.webhook().as_ref())
            .filter(|step| !step.external_work())
        else {
            return;
        };
        let Ok(ctx) = pipeline::step_ctx(&next, &shared.config.role_prefix, &shared.tenant_pool)
        else {
            return;
        };
        let t2 = Transition {
            claim: &next,
            continued: std::sync::Mutex::new(None),
            notes: std::sync::Mutex::default(),
            ..*t
        };
        // Its own span, like a claimed attempt's (inside the one before).
        let span = step_span(&next);
        let done = conn
            .transaction(async |conn| {
                let locked = pipeline::lock(conn, &next)
                    .await?
                    .ok_or_else(|| Error::Internal("the continuation is not held".to_owned()))?;
                let output = step.run_in_db(conn, &ctx).await.map_err(TxError::Step)?;
                t2.step_succeeded(conn, &locked, &output).await?;
                Ok::<_, TxError>(())
            })
            .instrument(span)
            .await;
        if let Err(e) = done {
            let error = match e {
                TxError::Step(e) => e.to_string(),
                TxError::Db(e) => e.to_string(),
            };
            tracing::debug!(step = %next.step, %error, "a chained step failed; it runs on its own");
            return;
        }
        let after = t2.continued.into_inner().ok().flatten();
        let settled = t2.notes.into_inner().ok().and_then(|n| n.settled);
        if let Ok(mut slot) = t.continued.lock() {
            *slot = after;
        }
        if settled.is_some()
            && let Ok(mut notes) = t.notes.lock()
        {
            notes.settled = settled;
        }
        ran.push(next);
    }
}

/// Gives an interrupted row back: due now, for any replica.
async fn release(shared: &Shared, claim: &Claim) -> Result<()> {
    let mut conn = db::conn(&shared.pool).await?;
    if store::release(&mut conn, claim).await? {
        tracing::info!("shutting down: released the row for another replica");
    } else {
        store::refused_stale(claim, "release");
    }
    Ok(())
}

/// Database work in a separate tenant database: its own transaction,
/// committed before the completion (at least once; steps are idempotent).
async fn in_tenant_db(
    shared: &Shared,
    ctx: &StepCtx,
    step: &dyn Step,
    compensate: bool,
) -> Result<Output, StepError> {
    let mut conn = db::conn(&shared.tenant_pool)
        .await
        .map_err(|e| StepError::new(e.to_string()))?;
    conn.transaction(async |conn| {
        if compensate {
            step.compensate_in_db(conn, ctx)
                .await
                .map(|()| Output::new())
        } else {
            step.run_in_db(conn, ctx).await
        }
    })
    .await
}

/// Why guarded work did not produce a value.
enum Stop {
    /// The attempt failed (error, panic, timeout, lost lease, cancellation).
    Failed(StepError),
    /// Shutdown interrupted it; the row is released, the attempt not counted.
    Interrupted,
    /// A heartbeat found the claim stale (the row was claimed again): the
    /// attempt is abandoned, nothing recorded.
    Stale,
}

/// Runs external work with a timeout and a heartbeat that keeps the lease;
/// stops early if the claim turns out stale or cancellation is asked for,
/// and at shutdown after the grace period.
async fn guarded<T>(
    shared: &Shared,
    claim: &Claim,
    work: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, Stop> {
    let lease = shared.config.lease;
    let mut beat = tokio::time::interval(lease / 3);
    beat.tick().await; // the first tick is immediate
    let timeout = claim.timeout(shared.config.step_timeout);
    let work = tokio::time::timeout(timeout, AssertUnwindSafe(work).catch_unwind());
    tokio::pin!(work);
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let mut stopping = false;
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled(), if !stopping => {
                stopping = true;
                grace.as_mut().reset(tokio::time::Instant::now() + shared.config.shutdown_grace);
            }
            () = &mut grace, if stopping => return Err(Stop::Interrupted),
            done = &mut work => {
                return match done {
                    Ok(Ok(result)) => result.map_err(Stop::Failed),
                    Ok(Err(panic)) => Err(Stop::Failed(StepError::new(format!(
                        "step panicked: {}",
                        panic_message(&panic)
                    )))),
                    Err(_) => Err(Stop::Failed(StepError::new(format!(
                        "timed out after {timeout:?}"
                    )))),
                };
            }
            _ = beat.tick() => {
                shared.config.hooks.at(Point::BeforeHeartbeat, claim).await;
                let Ok(mut conn) = db::conn(&shared.pool).await else { continue };
                match store::heartbeat(&mut conn, claim, lease).await {
                    Ok(Some(true)) if claim.operation == "PROVISION" => {
                        return Err(Stop::Failed(StepError::new("cancelled while running")));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        store::refused_stale(claim, "heartbeat");
                        return Err(Stop::Stale);
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
