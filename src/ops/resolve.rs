//! ResolveTenant: the way out of NEEDS_ATTENTION. Either the failed
//! compensation (or teardown step) runs again through the outbox, or an
//! operator records that they cleaned up by hand and the tenant goes where
//! the interrupted operation would have ended.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Ops;
use super::lifecycle::{check_reason, load, refuse_if_running};
use crate::db::models::StepRow;
use crate::db::outbox::Operation;
use crate::db::schema::{events, tenant_steps, tenants};
use crate::db::{self};
use crate::domain::{Caller, EventKind, NewEvent, StepStatus, Tenant, TenantState};
use crate::error::{Error, Result};
use crate::outbox::pipeline::MOVE_PHASE;

/// What ResolveTenant does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveAction {
    /// Run the failed compensation (or teardown step) again.
    RetryCompensation,
    /// An operator cleaned up by hand: settle where the operation would
    /// have ended.
    MarkResolved,
}

/// Which pipeline stopped.
enum Stopped {
    /// The saga of a provisioning: this step's compensation gave up.
    Saga { step: String },
    /// A teardown: this step gave up.
    Teardown { step: String },
    /// A move: this step gave up after the switch (`forward`), or its
    /// compensation gave up before it.
    Move { step: String, forward: bool },
}

impl Ops {
    pub async fn resolve_tenant(
        &self,
        caller: &Caller,
        id: Uuid,
        action: ResolveAction,
        note: &str,
    ) -> Result<Tenant> {
        check_reason(note).map_err(|_| {
            Error::invalid(
                "note",
                "must be at most 1000 characters without control characters",
            )
        })?;
        if action == ResolveAction::MarkResolved && note.trim().is_empty() {
            return Err(Error::invalid(
                "note",
                "is required with MARK_RESOLVED: say what was cleaned up by hand",
            ));
        }
        let mut conn = db::conn(self.pool()).await?;
        let tenant = conn
            .transaction(async |conn| {
                let row = db::tenants::lock(conn, id)
                    .await?
                    .ok_or_else(|| Error::tenant_not_found(id))?;
                let state = db::models::parse_state(&row.state)?;
                if state != TenantState::NeedsAttention {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is {state}; only a NEEDS_ATTENTION tenant can be resolved"
                    )));
                }
                refuse_if_running(conn, id).await?;
                let steps: Vec<StepRow> = tenant_steps::table
                    .filter(tenant_steps::tenant_id.eq(id))
                    .order(tenant_steps::position)
                    .select(StepRow::as_select())
                    .load(conn)
                    .await?;
                let stopped = stopped(conn, id, &steps).await?;
                let leftovers = if row.leftover_resources.is_empty() {
                    "nothing listed".to_owned()
                } else {
                    row.leftover_resources.join(", ")
                };
                let noted = if note.is_empty() {
                    String::new()
                } else {
                    format!("; note: {note}")
                };
                let (to, step, message) = match (action, &stopped) {
                    (ResolveAction::RetryCompensation, Stopped::Saga { step }) => {
                        // Undone again: the step counts as done until its
                        // compensation succeeds.
                        set_status(conn, id, step, StepStatus::Succeeded).await?;
                        db::outbox::enqueue(conn, id, Operation::Compensate, step).await?;
                        (
                            TenantState::Provisioning,
                            Some(step.clone()),
                            format!("PROVISIONING: retrying the compensation of {step}{noted}"),
                        )
                    }
                    (ResolveAction::RetryCompensation, Stopped::Teardown { step }) => {
                        set_status(conn, id, step, StepStatus::Pending).await?;
                        db::outbox::enqueue(conn, id, Operation::Deprovision, step).await?;
                        (
                            TenantState::Deprovisioning,
                            Some(step.clone()),
                            format!("DEPROVISIONING: retrying {step}{noted}"),
                        )
                    }
                    (ResolveAction::MarkResolved, Stopped::Saga { step }) => {
                        // What the saga had still to undo (the step whose
                        // compensation gave up, and the compensable steps
                        // before it) was undone by hand.
                        for s in steps.iter().filter(|s| s.phase == "PROVISION") {
                            let undone = self
                                .steps
                                .resolve(&s.name, s.webhook().as_ref())
                                .is_none_or(|step| step.compensable());
                            let left = s.status == StepStatus::Succeeded.as_str() || &s.name == step;
                            if undone && left {
                                set_status(conn, id, &s.name, StepStatus::Compensated).await?;
                            }
                        }
                        let to = if row.cancel_requested {
                            TenantState::Cancelled
                        } else {
                            TenantState::Failed
                        };
                        (
                            to,
                            None,
                            format!("{to}: resolved by hand by {}; left behind: {leftovers}{noted}", caller.subject),
                        )
                    }
                    (ResolveAction::RetryCompensation, Stopped::Move { step, forward }) => {
                        let (status, operation, what) = if *forward {
                            (StepStatus::Pending, Operation::Move, "retrying")
                        } else {
                            (StepStatus::Succeeded, Operation::Compensate, "retrying the compensation of")
                        };
                        set_status(conn, id, step, status).await?;
                        db::outbox::enqueue(conn, id, operation, step).await?;
                        (
                            TenantState::Active,
                            Some(step.clone()),
                            format!("ACTIVE: the move goes on, {what} {step}{noted}"),
                        )
                    }
                    (ResolveAction::MarkResolved, Stopped::Move { forward, .. }) => {
                        // Forward, the tenant lives on the target already;
                        // back, on the source.
                        let outcome = if *forward { "MOVED" } else { "ROLLED_BACK" };
                        db::moves::finish(conn, id, outcome).await?;
                        (
                            TenantState::Active,
                            None,
                            format!(
                                "ACTIVE: the move ({outcome}) resolved by hand by {}; left behind: {leftovers}{noted}",
                                caller.subject
                            ),
                        )
                    }
                    (ResolveAction::MarkResolved, Stopped::Teardown { .. }) => {
                        diesel::sql_query(
                            "UPDATE tenants SET purge_time = now() + make_interval(secs => coalesce(grace_period_secs, 0))
                             WHERE id = $1",
                        )
                        .bind::<diesel::sql_types::Uuid, _>(id)
                        .execute(conn)
                        .await?;
                        (
                            TenantState::Deprovisioned,
                            None,
                            format!(
                                "DEPROVISIONED: resolved by hand by {}; left behind: {leftovers}{noted}",
                                caller.subject
                            ),
                        )
                    }
                };
                diesel::update(tenants::table.find(id))
                    .set((
                        tenants::state.eq(to.as_str()),
                        tenants::state_reason.eq(&message),
                        tenants::leftover_resources.eq(Vec::<String>::new()),
                        tenants::revision.eq(tenants::revision + 1),
                        tenants::update_time.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                db::events::append(
                    conn,
                    &NewEvent {
                        tenant_id: id,
                        kind: EventKind::StateChanged,
                        step,
                        attempt: None,
                        state: to,
                        message,
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

/// Sets a step's status; a step that runs again (PENDING, or SUCCEEDED
/// to be compensated again) starts counting its attempts afresh.
async fn set_status(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    step: &str,
    status: StepStatus,
) -> Result<()> {
    let again = matches!(status, StepStatus::Pending | StepStatus::Succeeded);
    diesel::update(
        tenant_steps::table
            .filter(tenant_steps::tenant_id.eq(id))
            .filter(tenant_steps::name.eq(step)),
    )
    .set((
        tenant_steps::status.eq(status.as_str()),
        tenant_steps::attempts.eq(diesel::dsl::sql::<diesel::sql_types::Integer>(if again {
            "0"
        } else {
            "attempts"
        })),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Which pipeline stopped, and at which step: a teardown's step that gave
/// up, or else the step whose compensation last gave up.
async fn stopped(conn: &mut AsyncPgConnection, id: Uuid, steps: &[StepRow]) -> Result<Stopped> {
    if let Some(s) = steps
        .iter()
        .find(|s| s.phase == "DEPROVISION" && s.status == StepStatus::Failed.as_str())
    {
        return Ok(Stopped::Teardown {
            step: s.name.clone(),
        });
    }
    if let Some(s) = steps
        .iter()
        .find(|s| s.phase == MOVE_PHASE && s.status == StepStatus::Failed.as_str())
    {
        return Ok(Stopped::Move {
            step: s.name.clone(),
            forward: true,
        });
    }
    let step: Option<Option<String>> = events::table
        .filter(events::tenant_id.eq(id))
        .filter(events::kind.eq(EventKind::CompensationFailed.as_str()))
        .order(events::id.desc())
        .select(events::step)
        .first(conn)
        .await
        .optional()?;
    let moving = |name: &str| {
        steps
            .iter()
            .any(|s| s.name == name && s.phase == MOVE_PHASE)
    };
    step.flatten()
        .map(|step| {
            if moving(&step) {
                Stopped::Move {
                    step,
                    forward: false,
                }
            } else {
                Stopped::Saga { step }
            }
        })
        .ok_or_else(|| {
            Error::Internal(format!(
                "tenant {id} is NEEDS_ATTENTION without a failed compensation or teardown step"
            ))
        })
}
