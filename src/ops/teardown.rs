//! Suspend, resume and deprovision: taking a tenant out of service and back,
//! or for good. Suspension is a database change done in the RPC's own
//! transaction; deprovisioning runs its steps through the outbox.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use uuid::Uuid;

use super::Ops;
use super::lifecycle::{check_reason, load, refuse_if_running};
use crate::db::models::TenantRow;
use crate::db::outbox::Operation;
use crate::db::schema::tenants;
use crate::db::{self};
use crate::domain::usage::Figure;
use crate::domain::{Caller, EventKind, NewEvent, Tenant, TenantState, deprovision_steps};
use crate::error::{Error, Result};
use crate::steps::{TenantNames, access};

/// Longest grace period Deprovision accepts.
pub const MAX_GRACE_PERIOD_SECS: i64 = 365 * 24 * 3600;
/// Grace period when the caller gives none.
pub const DEFAULT_GRACE_PERIOD_SECS: i64 = 30 * 24 * 3600;

/// How Deprovision disposes of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeprovisionMode {
    /// Keep it, renamed and unreachable, until the purge.
    Archive,
    /// Drop it now.
    Purge,
}

impl Ops {
    /// ACTIVE -> SUSPENDED: the tenant role loses its schema.
    pub async fn suspend_tenant(&self, caller: &Caller, id: Uuid, reason: &str) -> Result<Tenant> {
        check_reason(reason)?;
        let reason = if reason.is_empty() {
            "suspended by request"
        } else {
            reason
        };
        self.switch_access(
            caller,
            id,
            TenantState::Active,
            TenantState::Suspended,
            reason,
        )
        .await
    }

    /// SUSPENDED -> ACTIVE: the tenant role gets its schema back.
    pub async fn resume_tenant(&self, caller: &Caller, id: Uuid) -> Result<Tenant> {
        self.switch_access(
            caller,
            id,
            TenantState::Suspended,
            TenantState::Active,
            "resumed",
        )
        .await
    }

    async fn switch_access(
        &self,
        caller: &Caller,
        id: Uuid,
        from: TenantState,
        to: TenantState,
        reason: &str,
    ) -> Result<Tenant> {
        let mut conn = db::conn(self.pool()).await?;
        let tenant = conn
            .transaction(async |conn| {
                let row = db::tenants::lock(conn, id)
                    .await?
                    .ok_or_else(|| Error::tenant_not_found(id))?;
                self.switch_locked(conn, caller, &row, from, to, reason, None)
                    .await?;
                load(conn, id).await
            })
            .await?;
        self.wakeup.work_committed();
        Ok(tenant)
    }

    /// Moves a tenant whose row the caller has locked from `from` to `to`,
    /// taking its role's access away or giving it back; nothing if it is
    /// already `to`. `quota` is the figure that makes the quota suspend
    /// it; any other switch (an operator's, or the quota's resumption)
    /// ends what the quota holds, so the quota never undoes an operator.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn switch_locked(
        &self,
        conn: &mut AsyncPgConnection,
        caller: &Caller,
        row: &TenantRow,
        from: TenantState,
        to: TenantState,
        reason: &str,
        quota: Option<&Figure>,
    ) -> Result<()> {
        if quota.is_none() {
            db::usage::end_quota_suspension(conn, row.id).await?;
        }
        let state = db::models::parse_state(&row.state)?;
        if state == to {
            return Ok(());
        }
        let id = row.id;
        refuse_if_running(conn, id).await?;
        if state != from {
            return Err(Error::FailedPrecondition(format!(
                "tenant {id} is {state}; only a {from} tenant can become {to}"
            )));
        }
        let names =
            TenantNames::derive(&row.slug, &self.tenant_db.role_prefix).map_err(Error::Internal)?;
        let sql = if to == TenantState::Suspended {
            access::revoke_sql(&names)
        } else {
            access::restore_sql(&names)
        };
        let fleet = &self.tenant_db.fleet;
        if fleet.same_database(&row.database_server) {
            conn.batch_execute(&sql).await?;
        } else {
            // Idempotent, so committing it first is safe to repeat.
            let pool = fleet.pool(&row.database_server).await?;
            let mut tenant_conn = db::conn(&pool).await?;
            tenant_conn.batch_execute(&sql).await?;
        }
        set_state(conn, row, to, reason, caller).await?;
        if let Some(figure) = quota {
            db::usage::begin_quota_suspension(conn, id, figure).await?;
        }
        Ok(())
    }

    /// Starts tearing the tenant down through the outbox: revoke access,
    /// archive or drop the data, tell the admin; DEPROVISIONED with a
    /// `purge_time` after `grace_period_secs`. Idempotent: a tenant already
    /// deprovisioning or deprovisioned is returned as it is.
    pub async fn deprovision(
        &self,
        caller: &Caller,
        id: Uuid,
        grace_period_secs: Option<i64>,
        mode: DeprovisionMode,
        reason: &str,
    ) -> Result<Tenant> {
        check_reason(reason)?;
        let grace = grace_period_secs.unwrap_or(DEFAULT_GRACE_PERIOD_SECS);
        if !(0..=MAX_GRACE_PERIOD_SECS).contains(&grace) {
            return Err(Error::invalid(
                "grace_period",
                "must be between 0 and 365 days",
            ));
        }
        let reason = if reason.is_empty() {
            "deprovisioned by request"
        } else {
            reason
        };
        let mut conn = db::conn(self.pool()).await?;
        let tenant = conn
            .transaction(async |conn| {
                let row = db::tenants::lock(conn, id).await?.ok_or_else(|| Error::tenant_not_found(id))?;
                let state = db::models::parse_state(&row.state)?;
                if state == TenantState::Deprovisioned
                    && let Some(wanted) = grace_period_secs
                {
                    extend_grace(conn, &row, wanted, caller).await?;
                    return load(conn, id).await;
                }
                if matches!(state, TenantState::Deprovisioning | TenantState::Deprovisioned) {
                    return load(conn, id).await;
                }
                if row.legal_hold && mode == DeprovisionMode::Purge {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is under legal hold ({}); its data cannot be purged",
                        row.legal_hold_reason
                    )));
                }
                refuse_if_running(conn, id).await?;
                if !state.can_become(TenantState::Deprovisioning) {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is {state}; only ACTIVE, SUSPENDED or FAILED tenants can be deprovisioned"
                    )));
                }
                let mode_name = match mode {
                    DeprovisionMode::Archive => "ARCHIVE",
                    DeprovisionMode::Purge => "PURGE",
                };
                diesel::update(tenants::table.find(id))
                    .set((
                        tenants::deprovision_mode.eq(mode_name),
                        tenants::grace_period_secs.eq(grace),
                    ))
                    .execute(conn)
                    .await?;
                let steps = deprovision_steps();
                db::tenants::append_steps(conn, id, &steps, "DEPROVISION").await?;
                db::outbox::enqueue(conn, id, Operation::Deprovision, &steps[0].name).await?;
                let message = format!("{reason} ({mode_name}, grace period {grace} s)");
                set_state(conn, &row, TenantState::Deprovisioning, &message, caller).await?;
                load(conn, id).await
            })
            .await?;
        self.wakeup.work_committed();
        Ok(tenant)
    }
}

/// A DEPROVISIONED tenant's grace period made longer (its purge time
/// moves by the difference); the same one changes nothing; a shorter one,
/// or any after the purge, is refused.
async fn extend_grace(
    conn: &mut AsyncPgConnection,
    row: &TenantRow,
    wanted: i64,
    caller: &Caller,
) -> Result<()> {
    let id = row.id;
    let current = row.grace_period_secs.unwrap_or(0);
    let purged = row.outputs.get("purged_at").is_some() || row.outputs.get("purged").is_some();
    if wanted == current {
        return Ok(());
    }
    if purged {
        return Err(Error::FailedPrecondition(format!(
            "tenant {id}'s data was purged already; there is no grace period to extend"
        )));
    }
    if wanted < current {
        return Err(Error::FailedPrecondition(format!(
            "tenant {id} has a grace period of {current} s; it can be extended, not shortened (asked {wanted} s)"
        )));
    }
    diesel::sql_query(
        "UPDATE tenants SET grace_period_secs = $2,
             purge_time = purge_time + make_interval(secs => $3),
             revision = revision + 1, update_time = now()
         WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<diesel::sql_types::BigInt, _>(wanted)
    .bind::<diesel::sql_types::Double, _>((wanted - current) as f64)
    .execute(conn)
    .await?;
    db::events::append(
        conn,
        &NewEvent::about(
            id,
            EventKind::TenantUpdated,
            TenantState::Deprovisioned,
            format!("grace period extended from {current} s to {wanted} s"),
            caller.subject.clone(),
        ),
    )
    .await?;
    Ok(())
}

async fn set_state(
    conn: &mut AsyncPgConnection,
    row: &TenantRow,
    to: TenantState,
    reason: &str,
    caller: &Caller,
) -> Result<()> {
    diesel::update(tenants::table.find(row.id))
        .set((
            tenants::state.eq(to.as_str()),
            tenants::state_reason.eq(reason),
            tenants::revision.eq(tenants::revision + 1),
            tenants::update_time.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    db::events::append(
        conn,
        &NewEvent::about(
            row.id,
            EventKind::StateChanged,
            to,
            format!("{to}: {reason}"),
            caller.subject.clone(),
        ),
    )
    .await?;
    Ok(())
}
