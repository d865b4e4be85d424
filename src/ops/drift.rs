//! Drift: a scheduled reconciler compares every ACTIVE and SUSPENDED
//! tenant's schema and role with what its steps produced, records the
//! differences on the tenant (an event when they change, a gauge of
//! drifted tenants), and ReconcileTenant repairs what is safe to repair.

use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use uuid::Uuid;

use super::Ops;
use super::lifecycle::load;
use crate::db::drift::Found;
use crate::db::models::TenantRow;
use crate::db::{self};
use crate::domain::{Caller, EventKind, NewEvent, SYSTEM_ACTOR, Tenant, TenantState};
use crate::error::{Error, Result};
use crate::steps::{TenantNames, access};

/// What ReconcileTenant did: the tenant after, what was repaired, what
/// was left alone and why.
pub struct Reconciled {
    pub tenant: Tenant,
    pub repaired: Vec<String>,
    pub left: Vec<String>,
}

impl Ops {
    /// The reconciler's pass over every ACTIVE and SUSPENDED tenant; how
    /// many have drift.
    pub async fn reconcile_all(&self) -> Result<usize> {
        let ids = {
            let mut conn = db::conn(self.pool()).await?;
            db::drift::tenants_to_check(&mut conn).await?
        };
        for id in ids {
            if let Err(e) = self
                .check_and_record(id, &Caller::system(SYSTEM_ACTOR))
                .await
            {
                tracing::warn!(tenant = %id, error = %e, "drift not checked; the next pass tries again");
            }
        }
        let mut conn = db::conn(self.pool()).await?;
        let drifted = db::drift::drifted_count(&mut conn).await?;
        metrics::gauge!("tenantd_tenants_drifted").set(drifted as f64);
        Ok(drifted as usize)
    }

    /// Checks one tenant and records what differs; the differences.
    async fn check_and_record(&self, id: Uuid, caller: &Caller) -> Result<Vec<Found>> {
        let mut conn = db::conn(self.pool()).await?;
        let Some(row) = db::tenants::find(&mut conn, id).await? else {
            return Ok(Vec::new());
        };
        let Some((names, active, version)) = expectations(&row, &self.tenant_db.role_prefix)?
        else {
            return Ok(Vec::new());
        };
        let mut found = {
            let pool = self.tenant_db.fleet.pool(&row.database_server).await?;
            let mut tenant_db = db::conn(&pool).await?;
            db::drift::check(&mut tenant_db, &names.schema, &names.role, active, version).await?
        };
        found.extend(self.check_contract(&row).await);
        found.sort();
        let checked_on = row.database_server.clone();
        let changed = conn
            .transaction(async |conn| {
                let Some(row) = db::tenants::lock(conn, id).await? else {
                    return Ok(false);
                };
                if !matches!(row.state.as_str(), "ACTIVE" | "SUSPENDED") {
                    return Ok(false);
                }
                // What an operation in flight (a move, say) changes for a
                // while is not drift; nor is a look at a server the tenant
                // has left meanwhile.
                if row.database_server != checked_on
                    || super::lifecycle::running(conn, id).await?.is_some()
                {
                    return Ok(false);
                }
                if !db::drift::record(conn, id, &found).await? {
                    return Ok(false);
                }
                let state = db::models::parse_state(&row.state)?;
                let (kind, message) = if found.is_empty() {
                    (EventKind::TenantUpdated, "no drift any more".to_owned())
                } else {
                    (EventKind::DriftDetected, drift_message(&found))
                };
                db::events::append(
                    conn,
                    &NewEvent {
                        tenant_id: id,
                        kind,
                        step: None,
                        attempt: None,
                        state,
                        message,
                        actor: caller.subject.clone(),
                    },
                )
                .await?;
                Ok::<_, Error>(true)
            })
            .await?;
        if changed {
            self.wakeup.events_committed();
        }
        Ok(found)
    }

    /// The tenant's Soroban contract against the ledger: an instance at the
    /// recorded address, with the recorded Wasm. An unanswered ledger is
    /// no drift (logged; the next pass looks again).
    async fn check_contract(&self, row: &TenantRow) -> Option<Found> {
        let deployer = self.deployer.as_ref()?;
        let outputs = db::models::string_map(row.outputs.clone()).ok()?;
        let address = outputs.get(crate::db::soroban::CONTRACT_ADDRESS)?;
        let wasm = outputs.get("contract_wasm_hash")?;
        let resource = format!("contract {address}");
        let expected = format!("an instance with Wasm {wasm}");
        match deployer.instance_wasm(address).await {
            Ok(Some(found)) if &found == wasm => None,
            Ok(Some(found)) => Some(Found {
                resource,
                expected,
                found: format!("an instance with Wasm {found}"),
            }),
            Ok(None) => Some(Found {
                resource,
                expected,
                found: "no instance".into(),
            }),
            Err(e) => {
                tracing::warn!(tenant = %row.id, error = %e, "the contract was not checked; the next pass looks again");
                None
            }
        }
    }

    /// Repairs what is safe to repair of an ACTIVE or SUSPENDED tenant's
    /// resources, and reports the rest.
    pub async fn reconcile_tenant(&self, caller: &Caller, id: Uuid) -> Result<Reconciled> {
        let mut conn = db::conn(self.pool()).await?;
        let row = db::tenants::find(&mut conn, id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(id))?;
        let Some((names, active, _)) = expectations(&row, &self.tenant_db.role_prefix)? else {
            return Err(Error::FailedPrecondition(format!(
                "tenant {id} is {}; only ACTIVE and SUSPENDED tenants are reconciled",
                row.state
            )));
        };
        let found = self.check_and_record(id, caller).await?;
        let mut repairs = Vec::new();
        let (mut repaired, mut left) = (Vec::new(), Vec::new());
        let schema_missing = found
            .iter()
            .any(|f| f.resource == format!("schema {}", names.schema));
        let role_missing = found
            .iter()
            .any(|f| f.resource == format!("role {}", names.role));
        let (schema, role) = (names.schema_ident(), names.role_ident());
        for f in &found {
            let what = format!("{}: expected {}, found {}", f.resource, f.expected, f.found);
            if f.resource.starts_with("contract ") {
                left.push(format!("{what} (a contract is not redeployed by hand)"));
                continue;
            }
            if schema_missing || f.resource.starts_with("table ") {
                left.push(format!("{what} (data is gone: restore the tenant instead)"));
                continue;
            }
            if f.resource.starts_with("role ") {
                repairs.push(format!(
                    "DO $$ BEGIN
                         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{}') THEN
                             CREATE ROLE {role} NOLOGIN;
                         END IF;
                     END $$;
                     GRANT {role} TO CURRENT_USER;",
                    names.role
                ));
            } else if f.resource.starts_with("owner of ") {
                // Done below with the owner of everything in the schema.
            } else if f.resource.starts_with("privileges of PUBLIC") {
                repairs.push(format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;"));
            } else if f.resource.starts_with("privileges of ") {
                repairs.push(format!("GRANT USAGE, CREATE ON SCHEMA {schema} TO {role};"));
            } else if f.resource.starts_with("tenant migrations") {
                // Run below, as the step does.
            }
            repaired.push(what);
        }
        let owner_wrong = found.iter().any(|f| f.resource.starts_with("owner of "));
        if owner_wrong || role_missing {
            if active {
                repairs.push(access::restore_sql(&names));
                // A role made again holds nothing; its owner's privileges
                // may have been taken before.
                repairs.push(format!("GRANT USAGE, CREATE ON SCHEMA {schema} TO {role};"));
            } else {
                repairs.push(access::revoke_sql(&names));
            }
        }
        let migrate = found
            .iter()
            .any(|f| f.resource.starts_with("tenant migrations"))
            && !schema_missing;
        let pool = self.tenant_db.fleet.pool(&row.database_server).await?;
        let mut tenant_db = db::conn(&pool).await?;
        if !repairs.is_empty() {
            let sql = repairs.join("\n");
            tenant_db
                .transaction(async |c| c.batch_execute(&sql).await.map_err(Error::from))
                .await?;
        }
        if migrate {
            let applied = tenant_db
                .transaction(async |c| {
                    crate::steps::migrate(c, &names)
                        .await
                        .map_err(|e| Error::Internal(e.message().to_owned()))
                })
                .await;
            if let Err(e) = applied {
                // Reported, not repaired: the schema holds what a missing
                // migration would create.
                let what = repaired
                    .iter()
                    .position(|r| r.starts_with("tenant migrations"))
                    .map(|i| repaired.remove(i))
                    .unwrap_or_default();
                left.push(format!("{what} (applying them again failed: {e})"));
            }
        }
        let remaining = self.check_and_record(id, caller).await?;
        if !repaired.is_empty() {
            let mut conn = db::conn(self.pool()).await?;
            conn.transaction(async |conn| {
                let row = db::tenants::lock(conn, id)
                    .await?
                    .ok_or_else(|| Error::tenant_not_found(id))?;
                db::events::append(
                    conn,
                    &NewEvent::about(
                        id,
                        EventKind::TenantUpdated,
                        db::models::parse_state(&row.state)?,
                        format!(
                            "reconciled: repaired {}; {} difference(s) left",
                            repaired.join("; "),
                            remaining.len()
                        ),
                        caller.subject.clone(),
                    ),
                )
                .await?;
                Ok::<_, Error>(())
            })
            .await?;
            self.wakeup.events_committed();
        }
        let mut conn = db::conn(self.pool()).await?;
        let tenant = load(&mut conn, id).await?;
        Ok(Reconciled {
            tenant,
            repaired,
            left,
        })
    }
}

/// What a tenant's steps produced, to check against: its names, whether
/// its role should own its schema (ACTIVE), its tenant migrations' version;
/// `None` for a tenant the reconciler leaves alone.
fn expectations(
    row: &TenantRow,
    role_prefix: &str,
) -> Result<Option<(TenantNames, bool, Option<i32>)>> {
    let state = db::models::parse_state(&row.state)?;
    if !matches!(state, TenantState::Active | TenantState::Suspended) || row.delete_time.is_some() {
        return Ok(None);
    }
    let outputs = db::models::string_map(row.outputs.clone())?;
    if !outputs.contains_key("schema_name") {
        // A plan without create_schema has nothing of this kind to check.
        return Ok(None);
    }
    let names = TenantNames::derive(&row.slug, role_prefix).map_err(Error::Internal)?;
    let version = outputs.get("schema_version").and_then(|v| v.parse().ok());
    Ok(Some((names, state == TenantState::Active, version)))
}

fn drift_message(found: &[Found]) -> String {
    let listed: Vec<String> = found
        .iter()
        .map(|f| {
            format!(
                "{} (expected {}, found {})",
                f.resource, f.expected, f.found
            )
        })
        .collect();
    format!("drift: {}", listed.join("; "))
}
