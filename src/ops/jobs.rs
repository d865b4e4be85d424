//! The work of the scheduled jobs, as use cases: reap stale pipelines, purge
//! tenants whose grace period ended, prune old events. Each is safe to run
//! twice; `run_exclusive` keeps two replicas from running one at once.

use std::future::Future;
use std::time::Duration;

use diesel::sql_types::{BigInt, Bool, Double, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use uuid::Uuid;

use super::Ops;
use crate::db::{self, DbPool};
use crate::domain::{Caller, EventKind, NewEvent, SYSTEM_ACTOR, TenantState};
use crate::error::{Error, Result};

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// Runs `job` while holding the session advisory lock `key`; `None` if
/// another session (another replica) holds it. The lock lives on one pooled
/// connection; if unlocking fails that connection is closed rather than
/// returned to the pool, so the lock never outlives the job.
pub async fn run_exclusive<T>(
    pool: &DbPool,
    key: i64,
    job: impl Future<Output = Result<T>>,
) -> Result<Option<T>> {
    let mut conn = db::conn(pool).await?;
    let got: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<BigInt, _>(key)
        .get_result(&mut conn)
        .await?;
    if !got.locked {
        return Ok(None);
    }
    let result = job.await;
    let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1) AS locked")
        .bind::<BigInt, _>(key)
        .get_result::<Locked>(&mut conn)
        .await;
    if !matches!(unlocked, Ok(Locked { locked: true })) {
        drop(db::PooledConn::take(conn));
    }
    result.map(Some)
}

impl Ops {
    /// Cancels (and so compensates) PROVISIONING tenants whose last event is
    /// older than `stale_after`. Returns how many.
    pub async fn reap_stale(&self, stale_after: Duration) -> Result<usize> {
        let stale: Vec<Id> = {
            let mut conn = db::conn(self.pool()).await?;
            diesel::sql_query(
                "SELECT t.id FROM tenants t
                 WHERE t.state = 'PROVISIONING' AND NOT t.cancel_requested AND t.delete_time IS NULL
                   AND (SELECT max(e.create_time) FROM events e WHERE e.tenant_id = t.id)
                       < now() - make_interval(secs => $1)",
            )
            .bind::<Double, _>(stale_after.as_secs_f64())
            .load(&mut conn)
            .await?
        };
        let caller = Caller::system(SYSTEM_ACTOR);
        let reason = format!(
            "no progress for {}",
            humantime::format_duration(stale_after)
        );
        let mut reaped = 0;
        for Id { id } in stale {
            match self.cancel_provisioning(&caller, id, &reason).await {
                Ok(_) => reaped += 1,
                // It moved on meanwhile; nothing to reap.
                Err(Error::FailedPrecondition(_) | Error::Aborted(_) | Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(reaped)
    }

    /// Drops the archived data of DEPROVISIONED tenants whose grace period
    /// ended, deleted ones included. The tenant record stays, marked
    /// `purged`, for audit.
    pub async fn purge_due(&self) -> Result<usize> {
        let due: Vec<Id> = {
            let mut conn = db::conn(self.pool()).await?;
            diesel::sql_query(
                "SELECT id FROM tenants
                 WHERE state = 'DEPROVISIONED' AND purge_time <= now() AND NOT outputs ? 'purged_at'",
            )
            .load(&mut conn)
            .await?
        };
        let mut purged = 0;
        for Id { id } in due {
            if !self.purge_allowed(id).await? {
                continue;
            }
            let mut conn = db::conn(self.pool()).await?;
            let done = conn
                .transaction(async |conn| {
                    let Some(row) = db::tenants::lock_including_deleted(conn, id).await? else {
                        return Ok(false);
                    };
                    let outputs = db::models::string_map(row.outputs.clone())?;
                    if outputs.contains_key("purged_at") || row.legal_hold {
                        return Ok(false);
                    }
                    if let Some(schema) = outputs.get("archived_schema") {
                        // `purge_allowed` found a verified export (or no
                        // archived data) just before.
                        let valid = schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                            && schema.starts_with("archived_");
                        if !valid {
                            return Err(Error::Internal(format!("tenant {id} has a malformed archive name")));
                        }
                        // Same database only; a separate tenant database is
                        // purged by the same statement on its own pool.
                        let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                        let fleet = &self.tenant_db.fleet;
                        if fleet.same_database(&row.database_server) {
                            conn.batch_execute(&drop).await?;
                        } else {
                            let pool = fleet.pool(&row.database_server).await?;
                            db::conn(&pool).await?.batch_execute(&drop).await?;
                        }
                    }
                    diesel::sql_query(
                        "UPDATE tenants SET outputs = outputs || jsonb_build_object('purged_at', now()::text),
                             revision = revision + 1, update_time = now()
                         WHERE id = $1",
                    )
                    .bind::<SqlUuid, _>(id)
                    .execute(conn)
                    .await?;
                    let purged = NewEvent::about(
                        id,
                        EventKind::StateChanged,
                        TenantState::Deprovisioned,
                        "DEPROVISIONED: grace period over, data purged",
                        SYSTEM_ACTOR,
                    );
                    db::events::append(conn, &purged).await?;
                    Ok::<_, Error>(true)
                })
                .await?;
            if done {
                purged += 1;
                self.wakeup.events_committed();
            }
        }
        Ok(purged)
    }

    /// Whether a due tenant may be purged now: not under legal hold (the
    /// first refusal is an event), and, if it was archived, with an export
    /// that still matches its checksum (made now if it has none; a failure
    /// is an event once and is tried again at the next run).
    async fn purge_allowed(&self, id: Uuid) -> Result<bool> {
        let mut conn = db::conn(self.pool()).await?;
        let Some(row) = db::tenants::find_including_deleted(&mut conn, id).await? else {
            return Ok(false);
        };
        let outputs = db::models::string_map(row.outputs.clone())?;
        if row.legal_hold {
            self.note_once(
                id,
                super::tenants::PURGE_HELD,
                format!(
                    "DEPROVISIONED: the purge is held back by a legal hold ({})",
                    row.legal_hold_reason
                ),
            )
            .await?;
            return Ok(false);
        }
        let Some(schema) = outputs.get("archived_schema") else {
            return Ok(true);
        };
        let Some(archives) = self.archives.clone() else {
            return Ok(false);
        };
        let verified = match db::exports::find(&mut conn, id).await? {
            Some(export) => {
                archives
                    .verify(std::path::Path::new(&export.path), &export.sha256)
                    .await
            }
            None => Err("no export was made".to_owned()),
        };
        let pool = self.tenant_db.fleet.pool(&row.database_server).await?;
        let mut tenant_db = db::conn(&pool).await?;
        if verified.is_err()
            && db::exports::schema_tables(&mut tenant_db, schema)
                .await?
                .is_none()
        {
            // No schema was archived (the tenant never had one): there is
            // no data to keep.
            return Ok(true);
        }
        let outcome = match verified {
            Ok(()) => Ok(()),
            Err(_) => crate::steps::deprovision::export_verified(
                &archives,
                &self.tenant_db.fleet.target(&row.database_server).await?,
                &mut conn,
                &mut tenant_db,
                id,
                schema,
            )
            .await
            .map(|_| ()),
        };
        match outcome {
            Ok(()) => Ok(true),
            Err(why) => {
                tracing::warn!(tenant = %id, %why, "not purged: no verified export");
                self.note_once(
                    id,
                    "purge_blocked",
                    format!("DEPROVISIONED: not purged without a verified export: {why}"),
                )
                .await?;
                Ok(false)
            }
        }
    }

    /// Appends a system event about a DEPROVISIONED tenant once, marked by
    /// the output `key`.
    async fn note_once(&self, id: Uuid, key: &str, message: String) -> Result<()> {
        let mut conn = db::conn(self.pool()).await?;
        let noted = conn
            .transaction(async |conn| {
                let Some(row) = db::tenants::lock_including_deleted(conn, id).await? else {
                    return Ok(false);
                };
                if row.outputs.get(key).is_some() {
                    return Ok(false);
                }
                diesel::sql_query(
                    "UPDATE tenants SET outputs = outputs || jsonb_build_object($2::text, now()::text)
                     WHERE id = $1",
                )
                .bind::<SqlUuid, _>(id)
                .bind::<diesel::sql_types::Text, _>(key)
                .execute(conn)
                .await?;
                db::events::append(
                    conn,
                    &NewEvent::about(id, EventKind::TenantUpdated, TenantState::Deprovisioned, message, SYSTEM_ACTOR),
                )
                .await?;
                Ok::<_, Error>(true)
            })
            .await?;
        if noted {
            self.wakeup.events_committed();
        }
        Ok(())
    }

    /// Deletes events older than `retention` of tenants that were deleted;
    /// live tenants keep their whole log. Finished outbox rows are deleted
    /// when they finish, so the outbox keeps no history to prune.
    pub async fn prune_events(&self, retention: Duration) -> Result<usize> {
        let mut conn = db::conn(self.pool()).await?;
        let deleted = diesel::sql_query(
            "DELETE FROM events e USING tenants t
             WHERE e.tenant_id = t.id AND t.delete_time IS NOT NULL
               AND e.create_time < now() - make_interval(secs => $1)",
        )
        .bind::<Double, _>(retention.as_secs_f64())
        .execute(&mut conn)
        .await?;
        Ok(deleted)
    }
}
