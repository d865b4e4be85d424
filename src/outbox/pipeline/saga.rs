//! The way back: a failed attempt retries or gives up; a critical step
//! out of attempts (or a cancellation) starts the saga, which undoes the
//! steps that succeeded in reverse order; a compensation that gives up
//! leaves the tenant NEEDS_ATTENTION with what is left behind.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::rows::{
    bounded, delete_row, event, merge_outputs, requeue, retry_later, set_reason, set_step,
};
use super::*;

impl Transition<'_> {
    /// An attempt failed: retry after a backoff, or give up on the step
    /// (warning for a non-critical step, saga for a critical one).
    pub async fn step_failed(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        error: &StepError,
    ) -> Result<()> {
        let claim = self.claim;
        let state = locked.state()?;
        let step = locked.step(&claim.step)?;
        let message = bounded(error.message());
        if locked.tenant.cancel_requested {
            set_step(
                conn,
                claim.tenant_id,
                &claim.step,
                StepStatus::Cancelled,
                Some(&message),
                None,
            )
            .await?;
            return self
                .start_saga(conn, locked, step.position - 1, StepStatus::Cancelled)
                .await;
        }
        if claim.attempt < step.max_attempts && !error.permanent {
            diesel::update(tenant_steps::table.find((claim.tenant_id, step.position)))
                .set(tenant_steps::last_error.eq(&message))
                .execute(conn)
                .await?;
            return self
                .retry(conn, locked, error, &message, EventKind::StepRetrying)
                .await;
        }
        set_step(
            conn,
            claim.tenant_id,
            &claim.step,
            StepStatus::Failed,
            Some(&message),
            None,
        )
        .await?;
        let text = gave_up(&claim.step, claim.attempt, error, &message);
        let past_return = self.past_point_of_no_return(locked, step.position)?;
        if step.critical && (claim.operation()? == Operation::Deprovision || past_return) {
            // Nothing undoes a teardown, nor a move that switched servers:
            // stop and say what is left.
            event(conn, claim, EventKind::StepFailed, state, text.clone()).await?;
            self.needs_attention(conn, locked, step.position, &text)
                .await
        } else if step.critical {
            event(conn, claim, EventKind::StepFailed, state, text.clone()).await?;
            set_reason(conn, claim.tenant_id, &text).await?;
            self.start_saga(conn, locked, step.position - 1, StepStatus::Failed)
                .await
        } else {
            event(
                conn,
                claim,
                EventKind::StepWarning,
                state,
                format!("{text}; not critical, continuing"),
            )
            .await?;
            self.advance(conn, locked, step.position, locked.tenant.outputs.clone())
                .await
        }
    }

    /// Cancellation seen before the step started: the step is CANCELLED and
    /// the saga undoes what came before it.
    pub async fn cancelled_before_step(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
    ) -> Result<()> {
        let claim = self.claim;
        let position = locked.step(&claim.step)?.position;
        set_step(
            conn,
            claim.tenant_id,
            &claim.step,
            StepStatus::Cancelled,
            None,
            None,
        )
        .await?;
        self.start_saga(conn, locked, position - 1, StepStatus::Cancelled)
            .await
    }

    /// A compensation succeeded: compensate the previous step, or finish.
    pub async fn compensation_succeeded(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        output: &BTreeMap<String, String>,
    ) -> Result<()> {
        let claim = self.claim;
        let state = locked.state()?;
        let position = locked.step(&claim.step)?.position;
        set_step(
            conn,
            claim.tenant_id,
            &claim.step,
            StepStatus::Compensated,
            None,
            None,
        )
        .await?;
        let message = if output.is_empty() {
            format!("{} undone", claim.step)
        } else {
            // What could not be undone stays on record, on the step, the
            // tenant and this event.
            merge_outputs(conn, claim.tenant_id, Some(&claim.step), output).await?;
            bounded(&format!(
                "{} compensated, recorded: {}",
                claim.step,
                listed(output)
            ))
        };
        event(
            conn,
            claim,
            EventKind::CompensationSucceeded,
            state,
            message,
        )
        .await?;
        self.next_compensation(conn, locked, position - 1).await
    }

    /// A compensation failed: retry it, or stop with NEEDS_ATTENTION and the
    /// list of what is left behind.
    pub async fn compensation_failed(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        error: &StepError,
    ) -> Result<()> {
        let claim = self.claim;
        let state = locked.state()?;
        let step = locked.step(&claim.step)?;
        let message = bounded(error.message());
        if claim.attempt < step.max_attempts && !error.permanent {
            return self
                .retry(conn, locked, error, &message, EventKind::CompensationFailed)
                .await;
        }
        set_step(
            conn,
            claim.tenant_id,
            &claim.step,
            StepStatus::Failed,
            Some(&message),
            None,
        )
        .await?;
        let text = format!(
            "undoing {}",
            gave_up(&claim.step, claim.attempt, error, &message)
        );
        event(
            conn,
            claim,
            EventKind::CompensationFailed,
            state,
            text.clone(),
        )
        .await?;
        self.needs_attention(conn, locked, step.position, &text)
            .await
    }

    /// Makes the row due again after a backoff (or the wait the other side
    /// asked for, if longer) and says so in an event of `kind`.
    pub(super) async fn retry(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        error: &StepError,
        message: &str,
        kind: EventKind,
    ) -> Result<()> {
        let claim = self.claim;
        let step = locked.step(&claim.step)?;
        let backoff = self.backoff.for_step(step).delay(claim.attempt);
        let delay = error
            .retry_after
            .map_or(backoff, |asked| asked.max(backoff));
        retry_later(conn, claim, delay, message).await?;
        self.note(|n| n.retried = true);
        let what = if kind == EventKind::CompensationFailed {
            "undoing "
        } else {
            ""
        };
        let text = format!(
            "{what}{} attempt {}/{} failed: {message}; retrying in {} ms",
            claim.step,
            claim.attempt,
            step.max_attempts,
            delay.as_millis()
        );
        event(conn, claim, kind, locked.state()?, text).await
    }

    /// Gives up (the caller has marked the step FAILED): the tenant becomes NEEDS_ATTENTION, listing what the steps
    /// up to `position` of the claim's pipeline may have left behind.
    pub(super) async fn needs_attention(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        position: i32,
        reason: &str,
    ) -> Result<()> {
        let claim = self.claim;
        let ctx = step_ctx(claim, self.role_prefix, self.tenant_db)?;
        let phase = locked.phase(claim)?;
        let mut leftovers = Vec::new();
        for s in locked
            .steps
            .iter()
            .filter(|s| s.phase == phase && s.position <= position)
            .rev()
        {
            let pending = s.position == position || s.status == StepStatus::Succeeded.as_str();
            if let Some(step) = self.registry.resolve(&s.name, s.webhook().as_ref())
                && pending
                && step.compensable()
            {
                leftovers.extend(step.resources(&ctx));
            }
        }
        if phase == DEPROVISION_PHASE {
            // A teardown that stopped leaves whatever it had not removed.
            leftovers = locked
                .steps
                .iter()
                .filter(|s| {
                    s.phase == PROVISION_PHASE && s.status == StepStatus::Succeeded.as_str()
                })
                .filter_map(|s| self.registry.resolve(&s.name, s.webhook().as_ref()))
                .flat_map(|step| step.resources(&ctx))
                .collect();
        }
        delete_row(conn, claim).await?;
        diesel::update(tenants::table.find(claim.tenant_id))
            .set((
                tenants::state.eq(TenantState::NeedsAttention.as_str()),
                tenants::state_reason.eq(reason),
                tenants::leftover_resources.eq(&leftovers),
                tenants::revision.eq(tenants::revision + 1),
                tenants::update_time.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        self.note(|n| n.settled = Some(TenantState::NeedsAttention));
        let message = format!("NEEDS_ATTENTION: left behind {}", leftovers.join(", "));
        event(
            conn,
            claim,
            EventKind::StateChanged,
            TenantState::NeedsAttention,
            message,
        )
        .await?;
        Ok(())
    }

    /// Whether a step of the claim's phase before `position` succeeded and
    /// cannot be undone by walking back (a move's switch of servers).
    fn past_point_of_no_return(&self, locked: &Locked, position: i32) -> Result<bool> {
        let phase = locked.phase(self.claim)?;
        Ok(locked.steps.iter().any(|s| {
            s.phase == phase
                && s.position < position
                && s.status == StepStatus::Succeeded.as_str()
                && self
                    .registry
                    .resolve(&s.name, s.webhook().as_ref())
                    .is_some_and(|step| step.point_of_no_return())
        }))
    }

    /// Starts undoing steps `..= from` in reverse. `outcome` is the final
    /// state's reason: FAILED or CANCELLED.
    pub(super) async fn start_saga(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        from: i32,
        outcome: StepStatus,
    ) -> Result<()> {
        if outcome == StepStatus::Cancelled {
            // Steps that never ran will not run.
            diesel::update(
                tenant_steps::table
                    .filter(tenant_steps::tenant_id.eq(self.claim.tenant_id))
                    .filter(tenant_steps::status.eq(StepStatus::Pending.as_str())),
            )
            .set(tenant_steps::status.eq(StepStatus::Cancelled.as_str()))
            .execute(conn)
            .await?;
        }
        self.next_compensation(conn, locked, from).await
    }

    /// Queues the compensation of the last succeeded, compensable step at or
    /// before `from`; with none left, the tenant is FAILED or CANCELLED.
    pub(super) async fn next_compensation(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        from: i32,
    ) -> Result<()> {
        let claim = self.claim;
        let phase = locked.phase(claim)?;
        let target = locked.steps.iter().rev().find(|s| {
            s.phase == phase
                && s.position <= from
                && s.status == StepStatus::Succeeded.as_str()
                && self
                    .registry
                    .resolve(&s.name, s.webhook().as_ref())
                    .is_some_and(|step| step.compensable())
        });
        if let Some(step) = target {
            return requeue(conn, claim, Operation::Compensate, &step.name).await;
        }
        delete_row(conn, claim).await?;
        if phase == MOVE_PHASE {
            // Undone before the switch: the tenant stays where it was.
            self.note(|n| n.moved = true);
            self.settle(
                conn,
                TenantState::Active,
                &format!(
                    "the move was rolled back; the data stays on {}",
                    locked.tenant.database_server
                ),
            )
            .await
        } else if locked.tenant.cancel_requested {
            self.settle(
                conn,
                TenantState::Cancelled,
                "cancelled; compensations done",
            )
            .await
        } else {
            self.settle(conn, TenantState::Failed, "failed; compensations done")
                .await
        }
    }
}

/// The message of a step that ran out of attempts, or met a failure no
/// attempt can get past.
fn gave_up(step: &str, attempt: i32, error: &StepError, message: &str) -> String {
    if error.permanent {
        format!("{step} failed for good at attempt {attempt}: {message}")
    } else {
        format!("{step} failed after {attempt} attempts: {message}")
    }
}
