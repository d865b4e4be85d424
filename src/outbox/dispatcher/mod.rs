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
//!
//! This file holds the loop and the workers; [`attempt`] runs one attempt
//! and records its outcome, [`guard`] bounds external work (timeout,
//! heartbeat, shutdown).

mod attempt;
mod guard;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::batch::Completer;
use super::hooks::Hooks;
use super::store::{self, Claim};
use super::{Backoff, Wakeup};
use crate::db::{self, DbPool};
use crate::error::Result;
use crate::steps::Registry;
use crate::telemetry::metrics;
use attempt::attempt;

/// Largest batch one claim statement takes.
const MAX_CLAIM_BATCH: usize = 256;
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
    /// The tenants' database servers; steps on the control-plane database
    /// commit their database work with their completion.
    pub fleet: crate::db::fleet::Fleet,
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

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
