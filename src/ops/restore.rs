//! RestoreTenant: a DEPROVISIONED tenant back in service, from its archived
//! schema during the grace period, or from its verified export after the
//! purge.

use std::path::Path;

use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use uuid::Uuid;

use super::Ops;
use super::lifecycle::load;
use crate::db;
use crate::domain::{Caller, EventKind, NewEvent, Tenant, TenantState};
use crate::error::{Error, Result};
use crate::steps::{TenantNames, access};

impl Ops {
    pub async fn restore_tenant(
        &self,
        caller: &Caller,
        id: Uuid,
        target: TenantState,
    ) -> Result<Tenant> {
        if !matches!(target, TenantState::Active | TenantState::Suspended) {
            return Err(Error::invalid(
                "target_state",
                "must be ACTIVE or SUSPENDED",
            ));
        }
        let mut conn = db::conn(self.pool()).await?;
        let row = db::tenants::find(&mut conn, id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(id))?;
        let state = db::models::parse_state(&row.state)?;
        if state != TenantState::Deprovisioned {
            return Err(Error::FailedPrecondition(format!(
                "tenant {id} is {state}; only a DEPROVISIONED tenant can be restored"
            )));
        }
        let outputs = db::models::string_map(row.outputs.clone())?;
        let names =
            TenantNames::derive(&row.slug, &self.tenant_db.role_prefix).map_err(Error::Internal)?;
        let server = row.database_server.clone();
        let pool = self.tenant_db.fleet.pool(&server).await?;
        let mut tenant_db = db::conn(&pool).await?;
        if db::exports::schema_tables(&mut tenant_db, &names.schema)
            .await?
            .is_some()
        {
            return Err(Error::FailedPrecondition(format!(
                "schema {} exists (a new tenant may have taken the slug {}); the tenant cannot get it back",
                names.schema, row.slug
            )));
        }
        let export = db::exports::find(&mut conn, id).await?;
        let archived = match (outputs.get("archived_schema"), &export) {
            (Some(schema), _) => schema.clone(),
            (None, Some(export)) => export.schema_name.clone(),
            (None, None) => {
                return Err(Error::FailedPrecondition(format!(
                    "tenant {id}'s data was purged and it has no export to restore from"
                )));
            }
        };
        let from_export = db::exports::schema_tables(&mut tenant_db, &archived)
            .await?
            .is_none();
        if from_export {
            let (Some(export), Some(archives)) = (&export, &self.archives) else {
                return Err(Error::FailedPrecondition(format!(
                    "tenant {id}'s data was purged and it has no export to restore from"
                )));
            };
            let path = Path::new(&export.path);
            archives.verify(path, &export.sha256).await.map_err(|why| {
                Error::FailedPrecondition(format!("{why}; refusing to restore it"))
            })?;
            self.restore_event(
                caller,
                id,
                format!(
                    "RESTORING: export {} verified (SHA-256 {})",
                    export.path, export.sha256
                ),
            )
            .await?;
            let target = self.tenant_db.fleet.target(&server).await?;
            archives
                .restore(&target, path)
                .await
                .map_err(|why| Error::Internal(format!("restoring tenant {id}: {why}")))?;
            self.restore_event(
                caller,
                id,
                format!("RESTORING: export restored as schema {archived}"),
            )
            .await?;
        }
        let tenant = conn
            .transaction(async |conn| {
                let row = db::tenants::lock(conn, id)
                    .await?
                    .ok_or_else(|| Error::tenant_not_found(id))?;
                if row.state != TenantState::Deprovisioned.as_str() {
                    return Err(Error::Aborted(format!(
                        "tenant {id} changed while it was restored; try again"
                    )));
                }
                let (schema, role) = (names.schema_ident(), names.role_ident());
                let mut sql = format!(
                    "ALTER SCHEMA \"{archived}\" RENAME TO {schema};
                     DO $$ BEGIN
                         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{}') THEN
                             CREATE ROLE {role} NOLOGIN;
                         END IF;
                     END $$;
                     GRANT {role} TO CURRENT_USER;
                     REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;",
                    names.role
                );
                if target == TenantState::Active {
                    sql.push_str(&access::restore_sql(&names));
                }
                if self.tenant_db.fleet.same_database(&server) {
                    conn.batch_execute(&sql).await?;
                } else {
                    tenant_db.batch_execute(&sql).await?;
                }
                // The teardown's steps are done with; a later Deprovision
                // runs them afresh (their history stays in the events).
                diesel::sql_query(
                    "DELETE FROM tenant_steps WHERE tenant_id = $1 AND phase = 'DEPROVISION'",
                )
                .bind::<diesel::sql_types::Uuid, _>(id)
                .execute(conn)
                .await?;
                let source = if from_export {
                    "its export"
                } else {
                    "its archived schema"
                };
                let reason = format!("restored from {source}");
                diesel::sql_query(
                    "UPDATE tenants
                     SET state = $2, state_reason = $3, purge_time = NULL, deprovision_mode = NULL,
                         grace_period_secs = NULL, leftover_resources = '{}',
                         outputs = (outputs - 'archived_schema' - 'purged' - 'purged_at' - 'purge_held'
                                    - 'purge_blocked') || jsonb_build_object('restored_at', now()::text),
                         revision = revision + 1, update_time = now()
                     WHERE id = $1",
                )
                .bind::<diesel::sql_types::Uuid, _>(id)
                .bind::<diesel::sql_types::Text, _>(target.as_str())
                .bind::<diesel::sql_types::Text, _>(&reason)
                .execute(conn)
                .await?;
                db::events::append(
                    conn,
                    &NewEvent::about(id, EventKind::StateChanged, target, format!(
                            "{target}: {reason}; schema {} and role {} are back{}",
                            names.schema,
                            names.role,
                            if target == TenantState::Active {
                                " with the role's access"
                            } else {
                                ", the role without access"
                            }
                        ), caller.subject.clone()),
                )
                .await?;
                load(conn, id).await
            })
            .await?;
        self.wakeup.work_committed();
        Ok(tenant)
    }

    /// One step of a restore, as an event of the tenant (still
    /// DEPROVISIONED).
    async fn restore_event(&self, caller: &Caller, id: Uuid, message: String) -> Result<()> {
        let mut conn = db::conn(self.pool()).await?;
        conn.transaction(async |conn| {
            db::tenants::lock(conn, id)
                .await?
                .ok_or_else(|| Error::tenant_not_found(id))?;
            db::events::append(
                conn,
                &NewEvent::about(
                    id,
                    EventKind::TenantUpdated,
                    TenantState::Deprovisioned,
                    message,
                    caller.subject.clone(),
                ),
            )
            .await?;
            Ok::<_, Error>(())
        })
        .await?;
        self.wakeup.events_committed();
        Ok(())
    }
}
