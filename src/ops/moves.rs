//! MoveTenant: a tenant's data to another database server, through the
//! outbox like the other lifecycle operations (see `steps::moves` for the
//! steps and what each guarantees).

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::Ops;
use super::lifecycle::{load, refuse_if_running, start_pipeline};
use crate::db::outbox::Operation;
use crate::db::schema::tenants;
use crate::db::{self};
use crate::domain::{Caller, EventKind, NewEvent, Placement, Tenant, TenantState};
use crate::error::{Error, Result};
use crate::outbox::pipeline::MOVE_PHASE;

impl Ops {
    /// Starts moving an ACTIVE tenant to `target` (empty: the server
    /// placement would pick for it now, other than its own).
    pub async fn move_tenant(&self, caller: &Caller, id: Uuid, target: &str) -> Result<Tenant> {
        let mut conn = db::conn(self.pool()).await?;
        let tenant = conn
            .transaction(async |conn| {
                let row = db::tenants::lock(conn, id)
                    .await?
                    .ok_or_else(|| Error::tenant_not_found(id))?;
                let state = db::models::parse_state(&row.state)?;
                refuse_if_running(conn, id).await?;
                if state != TenantState::Active {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is {state}; only an ACTIVE tenant can move"
                    )));
                }
                let target = if target.is_empty() {
                    let placement = Placement::parse("placement", &row.placement)
                        .map_err(Error::InvalidArgument)?;
                    self.placement_except(conn, &placement, &row.database_server)
                        .await?
                } else {
                    let server = db::servers::candidates(conn)
                        .await?
                        .into_iter()
                        .find(|c| c.name == target)
                        .ok_or_else(|| Error::NotFound {
                            resource: "database server",
                            id: target.to_owned(),
                        })?;
                    if server.name == row.database_server {
                        return Err(Error::FailedPrecondition(format!(
                            "tenant {id} is on database server {target} already"
                        )));
                    }
                    if let Some(why) = super::placement::refuses_tenants(&server) {
                        return Err(Error::FailedPrecondition(format!(
                            "database server {target} takes no tenants: {why}"
                        )));
                    }
                    server.name
                };
                db::moves::start(conn, id, &row.database_server, &target, &caller.subject).await?;
                start_pipeline(
                    conn,
                    id,
                    &crate::domain::move_steps(),
                    MOVE_PHASE,
                    Operation::Move,
                )
                .await?;
                diesel::update(tenants::table.find(id))
                    .set((
                        tenants::revision.eq(tenants::revision + 1),
                        tenants::update_time.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                db::events::append(
                    conn,
                    &NewEvent::about(
                        id,
                        EventKind::TenantUpdated,
                        state,
                        format!(
                            "moving from database server {} to {target}",
                            row.database_server
                        ),
                        caller.subject.clone(),
                    ),
                )
                .await?;
                load(conn, id).await
            })
            .await?;
        self.wakeup.work_committed();
        Ok(tenant)
    }
}
