//! The row writes of pipeline transitions: step status, tenant state,
//! events, and moving the outbox row along. Each runs inside the caller's
//! transaction, after the tenant lock.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::super::store::Claim;
use crate::db::models::json_map;
use crate::db::outbox::Operation;
use crate::db::schema::{outbox, tenants};
use crate::db::{self};
use crate::domain::{EventKind, NewEvent, SYSTEM_ACTOR, StepStatus, TenantState};
use crate::error::Result;

/// Turns the claimed row into the next piece of work, due now, lease freed.
pub(super) async fn requeue(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    operation: Operation,
    step: &str,
) -> Result<()> {
    let operation: &'static str = operation.into();
    diesel::update(outbox::table.find(claim.id))
        .set((
            outbox::operation.eq(operation),
            outbox::step.eq(step),
            outbox::attempt.eq(0),
            outbox::available_at.eq(diesel::dsl::now),
            outbox::lease_owner.eq(None::<String>),
            outbox::lease_token.eq(None::<i64>),
            outbox::locked_until.eq(None::<chrono::DateTime<chrono::Utc>>),
            outbox::last_error.eq(None::<String>),
            outbox::waiting_since.eq(None::<chrono::DateTime<chrono::Utc>>),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn retry_later(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    delay: Duration,
    error: &str,
) -> Result<()> {
    diesel::sql_query(
        "UPDATE outbox SET available_at = now() + make_interval(secs => $2), lease_owner = NULL,
             lease_token = NULL, locked_until = NULL, last_error = $3, waiting_since = NULL
         WHERE id = $1",
    )
    .bind::<BigInt, _>(claim.id)
    .bind::<Double, _>(delay.as_secs_f64())
    .bind::<Text, _>(error)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn delete_row(conn: &mut AsyncPgConnection, claim: &Claim) -> Result<()> {
    diesel::delete(outbox::table.find(claim.id))
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn set_step(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    name: &str,
    status: StepStatus,
    error: Option<&str>,
    output: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let finished = matches!(
        status,
        StepStatus::Succeeded
            | StepStatus::Failed
            | StepStatus::Cancelled
            | StepStatus::Compensated
    );
    diesel::sql_query(
        "UPDATE tenant_steps
         SET status = $3, last_error = $4, output = coalesce($6, output),
             finish_time = CASE WHEN $5 THEN now() END
         WHERE tenant_id = $1 AND name = $2",
    )
    .bind::<diesel::sql_types::Uuid, _>(tenant_id)
    .bind::<Text, _>(name)
    .bind::<Text, _>(status.as_str())
    .bind::<diesel::sql_types::Nullable<Text>, _>(error)
    .bind::<diesel::sql_types::Bool, _>(finished)
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Jsonb>, _>(output.map(json_map))
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn set_state(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    state: TenantState,
    message: &str,
) -> Result<()> {
    diesel::update(tenants::table.find(claim.tenant_id))
        .set((
            tenants::state.eq(state.as_str()),
            tenants::revision.eq(tenants::revision + 1),
            tenants::update_time.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    event(
        conn,
        claim,
        EventKind::StateChanged,
        state,
        format!("{state}: {message}"),
    )
    .await
}

pub(super) async fn set_reason(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    reason: &str,
) -> Result<()> {
    diesel::update(tenants::table.find(tenant_id))
        .set(tenants::state_reason.eq(reason))
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn event(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    kind: EventKind,
    state: TenantState,
    message: String,
) -> Result<()> {
    db::events::append(
        conn,
        &NewEvent {
            tenant_id: claim.tenant_id,
            kind,
            step: Some(claim.step.clone()),
            attempt: Some(claim.attempt),
            state,
            message,
            actor: SYSTEM_ACTOR.to_owned(),
        },
    )
    .await?;
    Ok(())
}

/// Error texts go into rows and events; keep them bounded.
pub(super) fn bounded(message: &str) -> String {
    const MAX: usize = 1000;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// Merges `output` into the tenant's outputs and, when `step` is given,
/// into that step's output.
pub(super) async fn merge_outputs(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    step: Option<&str>,
    output: &BTreeMap<String, String>,
) -> Result<()> {
    diesel::sql_query(
        "UPDATE tenants SET outputs = outputs || $2, revision = revision + 1, update_time = now() WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(tenant_id)
    .bind::<diesel::sql_types::Jsonb, _>(json_map(output))
    .execute(conn)
    .await?;
    if let Some(step) = step {
        diesel::sql_query(
            "UPDATE tenant_steps SET output = output || $3 WHERE tenant_id = $1 AND name = $2",
        )
        .bind::<diesel::sql_types::Uuid, _>(tenant_id)
        .bind::<Text, _>(step)
        .bind::<diesel::sql_types::Jsonb, _>(json_map(output))
        .execute(conn)
        .await?;
    }
    Ok(())
}
