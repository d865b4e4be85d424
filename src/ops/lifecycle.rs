//! Lifecycle operations on a running or finished pipeline: cancel and retry.
//! One operation per tenant at a time: the tenant's outbox row (at most one,
//! by a unique index) is the running operation, and a conflicting call is
//! ABORTED naming it.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Ops;
use crate::db::outbox::Operation;
use crate::db::schema::{outbox, tenant_steps, tenants};
use crate::db::{self};
use crate::domain::{Caller, EventKind, NewEvent, StepStatus, Tenant, TenantState};
use crate::error::{Error, Result};

/// Longest `reason` a caller may give.
const MAX_REASON_CHARS: usize = 500;

impl Ops {
    /// Asks the running pipeline to stop before its next step and undo what
    /// it did. Idempotent: cancelling twice is not an error.
    pub async fn cancel_provisioning(
        &self,
        caller: &Caller,
        id: Uuid,
        reason: &str,
    ) -> Result<Tenant> {
        check_reason(reason)?;
        let mut conn = db::conn(self.pool()).await?;
        let tenant = conn
            .transaction(async |conn| {
                let row = db::tenants::lock(conn, id).await?.ok_or_else(|| Error::tenant_not_found(id))?;
                let state = db::models::parse_state(&row.state)?;
                if state != TenantState::Provisioning {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is {state}; only a PROVISIONING tenant can be cancelled"
                    )));
                }
                if row.cancel_requested {
                    return load(conn, id).await;
                }
                if let Some((operation, step)) = running(conn, id).await?
                    && operation == Operation::Compensate
                {
                    return Err(Error::Aborted(format!(
                        "tenant {id} is already being rolled back (undoing {step}); nothing left to cancel"
                    )));
                }
                let reason = if reason.is_empty() { "cancelled by request" } else { reason };
                diesel::update(tenants::table.find(id))
                    .set((
                        tenants::cancel_requested.eq(true),
                        tenants::state_reason.eq(reason),
                        tenants::revision.eq(tenants::revision + 1),
                        tenants::update_time.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                // A row waiting out a retry backoff is made due now, so the
                // cancellation is acted on at once; a leased row sees the flag
                // at its next heartbeat or at completion.
                diesel::update(outbox::table.filter(outbox::tenant_id.eq(id)).filter(outbox::lease_owner.is_null()))
                    .set(outbox::available_at.eq(diesel::dsl::now))
                    .execute(conn)
                    .await?;
                let message = format!("cancel requested: {reason}");
                let event =
                    NewEvent::about(id, EventKind::CancelRequested, state, message, &caller.subject);
                db::events::append(conn, &event).await?;
                load(conn, id).await
            })
            .await?;
        self.wakeup.work_committed();
        Ok(tenant)
    }

    /// Resumes a FAILED tenant's pipeline at its first step whose effect is
    /// not in place: compensated steps run again, steps that still stand
    /// (such as a welcome email already sent) do not.
    pub async fn retry_provisioning(&self, caller: &Caller, id: Uuid) -> Result<Tenant> {
        let mut conn = db::conn(self.pool()).await?;
        let tenant = conn
            .transaction(async |conn| {
                let row = db::tenants::lock(conn, id)
                    .await?
                    .ok_or_else(|| Error::tenant_not_found(id))?;
                refuse_if_running(conn, id).await?;
                let state = db::models::parse_state(&row.state)?;
                if state != TenantState::Failed {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is {state}; only a FAILED tenant can be retried"
                    )));
                }
                let first: Option<String> = tenant_steps::table
                    .filter(tenant_steps::tenant_id.eq(id))
                    .filter(tenant_steps::phase.eq("PROVISION"))
                    .filter(tenant_steps::status.ne(StepStatus::Succeeded.as_str()))
                    .order(tenant_steps::position)
                    .select(tenant_steps::name)
                    .first(conn)
                    .await
                    .optional()?;
                let Some(first) = first else {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} has no step left to run"
                    )));
                };
                diesel::update(
                    tenant_steps::table
                        .filter(tenant_steps::tenant_id.eq(id))
                        .filter(tenant_steps::phase.eq("PROVISION"))
                        .filter(tenant_steps::status.ne(StepStatus::Succeeded.as_str())),
                )
                .set((
                    tenant_steps::status.eq(StepStatus::Pending.as_str()),
                    tenant_steps::attempts.eq(0),
                    tenant_steps::last_error.eq(None::<String>),
                    tenant_steps::start_time.eq(None::<chrono::DateTime<chrono::Utc>>),
                    tenant_steps::finish_time.eq(None::<chrono::DateTime<chrono::Utc>>),
                ))
                .execute(conn)
                .await?;
                diesel::update(tenants::table.find(id))
                    .set((
                        tenants::state.eq(TenantState::Provisioning.as_str()),
                        tenants::state_reason.eq(""),
                        tenants::cancel_requested.eq(false),
                        tenants::revision.eq(tenants::revision + 1),
                        tenants::update_time.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                db::outbox::enqueue(conn, id, Operation::Provision, &first).await?;
                db::events::append(
                    conn,
                    &NewEvent {
                        tenant_id: id,
                        kind: EventKind::StateChanged,
                        step: Some(first.clone()),
                        attempt: None,
                        state: TenantState::Provisioning,
                        message: format!("PROVISIONING: retry requested, resuming at {first}"),
                        actor: caller.subject.clone(),
                    },
                )
                .await?;
                load(conn, id).await
            })
            .await?;
        self.wakeup.work_committed();
        Ok(tenant)
    }
}

/// The tenant's running operation, if any.
pub(super) async fn running(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<(Operation, String)>> {
    let row: Option<(String, String)> = outbox::table
        .filter(outbox::tenant_id.eq(id))
        .select((outbox::operation, outbox::step))
        .first(conn)
        .await
        .optional()?;
    row.map(|(operation, step)| {
        let operation = operation
            .parse()
            .map_err(|_| Error::Internal(format!("unknown outbox operation {operation:?}")))?;
        Ok((operation, step))
    })
    .transpose()
}

/// ABORTED, naming it, if another lifecycle operation is running.
pub(super) async fn refuse_if_running(conn: &mut AsyncPgConnection, id: Uuid) -> Result<()> {
    if let Some((operation, step)) = running(conn, id).await? {
        let what = match operation {
            Operation::Provision => "provisioning",
            Operation::Compensate => "a rollback",
            Operation::Deprovision => "deprovisioning",
            Operation::Move => "a move to another database server",
            Operation::Renew => "the renewal of its certificate",
        };
        return Err(Error::Aborted(format!(
            "tenant {id}: {what} is running (step {step}); wait for it to end"
        )));
    }
    Ok(())
}

/// Replaces the tenant's step rows of `phase` (an earlier run's, whose
/// history is in the events) with `steps` and makes the first one due as
/// `operation`: how the lifecycle pipelines (a move, a renewal) start.
pub(super) async fn start_pipeline(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    steps: &[crate::domain::PlanStep],
    phase: &str,
    operation: Operation,
) -> Result<()> {
    diesel::delete(
        tenant_steps::table
            .filter(tenant_steps::tenant_id.eq(id))
            .filter(tenant_steps::phase.eq(phase)),
    )
    .execute(conn)
    .await?;
    db::tenants::append_steps(conn, id, steps, phase).await?;
    db::outbox::enqueue(conn, id, operation, &steps[0].name).await?;
    Ok(())
}

pub(super) async fn load(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Tenant> {
    db::tenants::load(conn, id)
        .await?
        .ok_or_else(|| Error::tenant_not_found(id))
}

pub(super) fn check_reason(reason: &str) -> Result<()> {
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(Error::invalid(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters without control characters"),
        ));
    }
    Ok(())
}
