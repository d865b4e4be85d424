//! One attempt of a claimed row: run the step (external work under the
//! guard, then database work), and record how it ended in one transaction
//! fenced by the claim's token; consecutive database-only steps are chained
//! into that transaction.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use tracing::Instrument;

use super::super::batch::Reply;
use super::super::hooks::Point;
use super::super::pipeline::{self, Outcome, Transition, TxError};
use super::super::store::{self, Claim};
use super::guard::{Stop, guarded};
use super::{Shared, step_span};
use crate::db;
use crate::db::outbox::Operation;
use crate::domain::{EventKind, NewEvent, SYSTEM_ACTOR};
use crate::error::{Error, Result};
use crate::steps::{Output, Step, StepCtx, StepError};
use crate::telemetry::metrics::{self, StepOutcome};

/// Tries at recording an attempt's outcome while the database is
/// unavailable, and the first pause between them (doubled each time, about
/// 6 s in all): bridges a database restart without waiting out the lease.
const APPLY_TRIES: u32 = 7;
const APPLY_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long a step waits before it looks again at a tenant database server
/// that does not answer: its attempts are not spent meanwhile, so the
/// tenant's work resumes once the server is back, however long that takes.
const SERVER_DOWN_RETRY: Duration = Duration::from_secs(3);

/// When a step that answers "not yet" names no time, it is looked at again
/// after this.
const DEFAULT_LOOK_AGAIN: Duration = Duration::from_secs(1);

/// One attempt; returns the tenant's next step if this worker keeps going.
pub(super) async fn attempt(shared: &Shared, claim: &Claim) -> Result<Option<Claim>> {
    let operation = claim.operation()?;
    let step = shared
        .registry
        .resolve(&claim.step, claim.webhook().as_ref());
    let tenant_pool = shared.fleet.pool(&claim.database_server).await?;
    let ctx = pipeline::step_ctx(claim, &shared.config.role_prefix, &tenant_pool)?;
    let same_db = shared.fleet.same_database(&claim.database_server);
    let compensating = operation == Operation::Compensate;
    let failed: for<'e> fn(&'e StepError) -> Action<'e> = if compensating {
        |e| Action::CompensationFailed(e)
    } else {
        |e| Action::Failed(e)
    };
    if claim.attempt > claim.max_attempts {
        // Earlier attempts died with their workers (their leases expired).
        let error = StepError::new(format!(
            "attempt {} of {} was lost with its worker; no attempts left",
            claim.attempt - 1,
            claim.max_attempts
        ));
        return apply(shared, claim, failed(&error))
            .await
            .map_err(TxError::into_error);
    }
    if operation == Operation::Provision && claim.cancel_requested {
        return apply(shared, claim, Action::CancelledBeforeStep)
            .await
            .map_err(TxError::into_error);
    }
    // A deprovisioning step runs like a provisioning one (only the pipeline
    // it advances differs), a compensation like both but for what it calls
    // and records.
    let Some(step) = step else {
        let error = StepError::new(format!("this build has no step named {:?}", claim.step));
        return apply(shared, claim, failed(&error))
            .await
            .map_err(TxError::into_error);
    };
    // A tenant database apart from the control plane that does not answer
    // is waited for, not failed.
    if !same_db && let Err(e) = db::conn(&tenant_pool).await {
        let why = format!(
            "database server {} does not answer: {e}",
            claim.database_server
        );
        tracing::warn!(server = %claim.database_server, error = %e, "step postponed: its database server does not answer");
        let mut conn = db::conn(&shared.pool).await?;
        if !store::postpone(&mut conn, claim, SERVER_DOWN_RETRY, &why, false).await? {
            store::refused_stale(claim, "postpone");
        }
        return Ok(None);
    }
    let work = if compensating {
        step.compensate_external(&ctx)
    } else {
        step.run_external(&ctx)
    };
    let mut outcome = match guarded(shared, claim, work).await {
        Err(Stop::Interrupted) => return release(shared, claim).await.map(|()| None),
        Err(Stop::Stale) => return Ok(None),
        Err(Stop::Failed(error)) if error.not_yet => match wait(shared, claim, &error).await? {
            Some(gave_up) => Err(gave_up),
            None => return Ok(None),
        },
        Err(Stop::Failed(error)) => Err(error),
        Ok(output) => Ok(output),
    };
    shared.config.hooks.at(Point::BeforeRecord, claim).await;
    if let Ok(output) = &mut outcome
        && !same_db
    {
        match in_tenant_db(&ctx, step.as_ref(), compensating).await {
            Ok(more) => output.extend(more),
            Err(error) => outcome = Err(error),
        }
    }
    if compensating {
        let compensated = |output| Action::Compensated {
            step: step.as_ref(),
            ctx: &ctx,
            output,
        };
        return record(shared, claim, outcome, compensated, failed, "compensation").await;
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
    let succeeded = |output| Action::Succeeded {
        step: step.as_ref(),
        ctx: &ctx,
        output,
    };
    record(shared, claim, outcome, succeeded, failed, "step").await
}

/// Records an attempt's outcome: its success, or its failure when the
/// attempt failed or when recording the success failed at the step's level
/// (the step's database work in the recording transaction).
async fn record<'a>(
    shared: &Shared,
    claim: &Claim,
    outcome: Result<Output, StepError>,
    succeeded: impl FnOnce(Output) -> Action<'a>,
    failed: for<'e> fn(&'e StepError) -> Action<'e>,
    what: &str,
) -> Result<Option<Claim>> {
    let done = match outcome {
        Ok(output) => apply(shared, claim, succeeded(output)).await,
        Err(error) => Err(TxError::Step(error)),
    };
    match done {
        Err(TxError::Step(error)) => {
            tracing::warn!(%error, "{what} attempt failed");
            apply(shared, claim, failed(&error))
                .await
                .map_err(TxError::into_error)
        }
        other => other.map_err(TxError::into_error),
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
    let tenant_pool = shared
        .fleet
        .pool(&claim.database_server)
        .await
        .map_err(TxError::Db)?;
    let t = Transition {
        claim,
        role_prefix: &shared.config.role_prefix,
        tenant_db: &tenant_pool,
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
    let same_db = shared.fleet.same_database(&claim.database_server);
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
                    step.run_in_control_plane(conn, ctx)
                        .await
                        .map_err(TxError::Step)?;
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
            // A tenant's time to ACTIVE is its provisioning's, not a move's.
            if let Some(state) = notes.settled
                && !notes.moved
            {
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
        let Ok(ctx) = pipeline::step_ctx(&next, &shared.config.role_prefix, t.tenant_db) else {
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

/// The step answered "not yet": the row waits without this worker, its
/// attempt not counted, and is due again when the step asked (at most
/// when the step's timeout, counted from the wait's start, runs out). Past
/// that timeout the answer is a failure, returned to be recorded.
async fn wait(shared: &Shared, claim: &Claim, answer: &StepError) -> Result<Option<StepError>> {
    let timeout = claim.timeout(shared.config.step_timeout);
    let waited = claim
        .waiting_since
        .and_then(|since| (chrono::Utc::now() - since).to_std().ok())
        .unwrap_or_default();
    if waited >= timeout {
        return Ok(Some(StepError::new(format!(
            "still not done after waiting {timeout:?}: {}",
            answer.message()
        ))));
    }
    let delay = answer
        .retry_after
        .unwrap_or(DEFAULT_LOOK_AGAIN)
        .min(timeout - waited);
    metrics::step_waiting(&claim.step, claim.operation_label());
    tracing::debug!(why = %answer.message(), ?delay, "not yet; looking again later");
    let mut conn = db::conn(&shared.pool).await?;
    let postponed = if answer.warnings.is_empty() {
        store::postpone(&mut conn, claim, delay, answer.message(), true).await?
    } else {
        // The warnings are the tenant's events: written with the wait, under
        // the tenant's lock, or not at all.
        let postponed = conn
            .transaction(async |conn| {
                let Some(tenant) = db::tenants::lock(conn, claim.tenant_id).await? else {
                    return Ok::<_, Error>(false);
                };
                if !store::postpone(conn, claim, delay, answer.message(), true).await? {
                    return Ok(false);
                }
                let state = db::models::parse_state(&tenant.state)?;
                for warning in &answer.warnings {
                    let event = NewEvent {
                        step: Some(claim.step.clone()),
                        attempt: Some(claim.attempt),
                        ..NewEvent::about(
                            claim.tenant_id,
                            EventKind::StepWarning,
                            state,
                            warning.as_str(),
                            SYSTEM_ACTOR,
                        )
                    };
                    db::events::append(conn, &event).await?;
                }
                Ok(true)
            })
            .await?;
        if postponed {
            shared.wakeup.events_committed();
        }
        postponed
    };
    if !postponed {
        store::refused_stale(claim, "wait");
    }
    Ok(None)
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
    ctx: &StepCtx,
    step: &dyn Step,
    compensate: bool,
) -> Result<Output, StepError> {
    let mut conn = db::conn(&ctx.tenant_db)
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
