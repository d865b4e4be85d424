//! ApiKeyService: tenants' API keys (create, list, revoke, rotate) and
//! their verification for the SaaS's gateways, answered from memory (see
//! `api_keys::cache`). Key text and hashing are `domain::api_key`'s.
//!
//! What verification learns besides its answer (when each key was last
//! used, the `api_calls` it counts) is kept in memory and written in
//! batches every [`FLUSH_EVERY`], never on the call's path.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::Ops;
use crate::api_keys::KeySpec;
use crate::db;
use crate::db::api_keys::ApiKeyRow;
use crate::domain::api_key::{self, MAX_ROTATION_GRACE};
use crate::domain::usage::UsageInput;
use crate::domain::{Caller, EventKind, NewEvent, TenantState, validate_tenant_id};
use crate::error::{Error, Result};

/// How often last-used times and counted calls are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// The longest time to live a key may be given: ten years.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);
/// The meter a verification that asks for it counts.
const COUNTED_METER: &str = "api_calls";
/// The subject of the usage verification counts.
const VERIFY_ACTOR: &str = "api-key-verification";

/// A verified key.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key_id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_state: TenantState,
    pub scopes: Vec<String>,
    pub expire_time: Option<DateTime<Utc>>,
}

/// The answer for every key that is not a good one: nothing says which
/// part was wrong.
fn refused() -> Error {
    Error::Unauthenticated {
        message: "invalid API key".into(),
        tenant_state: None,
    }
}

impl Ops {
    /// Starts following the event stream and the periodic writes.
    pub fn start_api_key_tasks(&self, shutdown: CancellationToken, tracker: &TaskTracker) {
        let ops = self;
        let keys = ops.api_keys.clone();
        tracker.spawn(
            keys.cache
                .clone()
                .follow(ops.hub.subscribe_internal(), shutdown.clone()),
        );
        let ops = ops.clone();
        tracker.spawn(async move {
            loop {
                let stop = tokio::select! {
                    () = shutdown.cancelled() => true,
                    () = tokio::time::sleep(FLUSH_EVERY) => false,
                };
                if let Err(e) = ops.flush_key_use().await {
                    tracing::warn!(error = %e, "recording API key use failed; it is retried");
                }
                if stop {
                    return;
                }
            }
        });
    }

    /// CreateApiKey: a new key for the tenant; its text is in the answer
    /// only.
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        tenant: &str,
        name: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<(ApiKeyRow, SecretString)> {
        let tenant =
            validate_tenant_id("tenant_id", tenant).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let mut violations = api_key::check(name, scopes);
        if let Some(ttl) = ttl
            && (ttl.is_zero() || ttl > MAX_TTL)
        {
            violations.push(crate::domain::FieldViolation::new(
                "ttl",
                "must be positive and at most ten years",
            ));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        if !caller.reaches(tenant) {
            return Err(Error::tenant_not_found(tenant));
        }
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            let state = lock_live_tenant(conn, tenant).await?;
            let spec = KeySpec {
                name,
                scopes,
                ttl,
                actor: &caller.subject,
            };
            let (row, text) = self.api_keys.mint(conn, tenant, &spec, false).await?;
            announce(
                conn,
                tenant,
                state,
                format!("API key {} ({name}) created by {}", row.id, caller.subject),
                caller,
            )
            .await?;
            Ok((row, text))
        })
        .await
        .inspect(|_| self.wakeup.events_committed())
    }

    /// ListApiKeys: the tenant's keys, oldest first.
    pub async fn list_api_keys(
        &self,
        caller: &Caller,
        tenant: &str,
        include_revoked: bool,
    ) -> Result<Vec<ApiKeyRow>> {
        let tenant =
            validate_tenant_id("tenant_id", tenant).map_err(|v| Error::InvalidArgument(vec![v]))?;
        if !caller.reaches(tenant) {
            return Err(Error::tenant_not_found(tenant));
        }
        let mut conn = db::conn(&self.pool).await?;
        if db::tenants::find(&mut conn, tenant).await?.is_none() {
            return Err(Error::tenant_not_found(tenant));
        }
        db::api_keys::list(&mut conn, tenant, include_revoked).await
    }

    /// RevokeApiKey: the key stops working now (a key revoked already is
    /// answered as it is).
    pub async fn revoke_api_key(&self, caller: &Caller, id: &str) -> Result<ApiKeyRow> {
        let id = key_id(id)?;
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            let key = self.locked_key(conn, caller, id).await?;
            if key.revoke_time.is_some_and(|t| t <= Utc::now()) {
                return Ok(key);
            }
            let state = lock_tenant_state(conn, key.tenant_id).await?;
            let row = db::api_keys::revoke(conn, id, Duration::ZERO, None).await?;
            announce(
                conn,
                key.tenant_id,
                state,
                format!("API key {id} ({}) revoked by {}", key.name, caller.subject),
                caller,
            )
            .await?;
            Ok(row)
        })
        .await
        .inspect(|_| self.wakeup.events_committed())
    }

    /// RotateApiKey: a new key with the old one's name, scopes and time to
    /// live; the old one keeps working for `grace` (at most a week).
    pub async fn rotate_api_key(
        &self,
        caller: &Caller,
        id: &str,
        grace: Duration,
    ) -> Result<(ApiKeyRow, SecretString, ApiKeyRow)> {
        let id = key_id(id)?;
        if grace > MAX_ROTATION_GRACE {
            return Err(Error::invalid("grace_period", "must be at most 7 days"));
        }
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            let old = self.locked_key(conn, caller, id).await?;
            let now = Utc::now();
            if old.revoke_time.is_some_and(|t| t <= now)
                || old.expire_time.is_some_and(|t| t <= now)
            {
                return Err(Error::FailedPrecondition(format!(
                    "API key {id} is revoked or expired; create a new one instead"
                )));
            }
            if old.replaced_by.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "API key {id} was rotated already; rotate its replacement"
                )));
            }
            let state = lock_live_tenant(conn, old.tenant_id).await?;
            let ttl = old
                .expire_time
                .and_then(|end| (end - old.create_time).to_std().ok());
            let spec = KeySpec {
                name: &old.name,
                scopes: &old.scopes,
                ttl,
                actor: &caller.subject,
            };
            let (new, text) = self
                .api_keys
                .mint(conn, old.tenant_id, &spec, false)
                .await?;
            let old = db::api_keys::revoke(conn, id, grace, Some(new.id)).await?;
            announce(
                conn,
                old.tenant_id,
                state,
                format!(
                    "API key {id} ({}) rotated by {}: {} replaces it; it works for {} more",
                    old.name,
                    caller.subject,
                    new.id,
                    humantime::format_duration(grace)
                ),
                caller,
            )
            .await?;
            Ok((new, text, old))
        })
        .await
        .inspect(|_| self.wakeup.events_committed())
    }

    /// The key `id`, locked, if the caller may see it.
    async fn locked_key(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        caller: &Caller,
        id: Uuid,
    ) -> Result<ApiKeyRow> {
        let missing = || Error::NotFound {
            resource: "API key",
            id: id.to_string(),
        };
        let key = db::api_keys::lock(conn, id).await?.ok_or_else(missing)?;
        if !caller.reaches(key.tenant_id) {
            return Err(missing());
        }
        Ok(key)
    }

    /// VerifyApiKey: the key's tenant, or UNAUTHENTICATED (with the
    /// tenant's state when the key is good but its tenant is not ACTIVE).
    pub async fn verify_api_key(&self, text: &str, count_usage: bool) -> Result<Verified> {
        let keys = &self.api_keys;
        let pepper = keys.pepper()?;
        let presented = api_key::parse(&keys.config.prefix, text).ok_or_else(refused)?;
        let entry = keys
            .cache
            .get(&self.pool, presented.id)
            .await?
            .ok_or_else(refused)?;
        if !presented.matches(pepper, &entry.hash) {
            return Err(refused());
        }
        let now = Utc::now();
        if entry.expire_time.is_some_and(|t| t <= now)
            || entry.revoke_time.is_some_and(|t| t <= now)
        {
            return Err(refused());
        }
        if entry.tenant_state != TenantState::Active {
            return Err(Error::Unauthenticated {
                message: format!("the key's tenant is {}", entry.tenant_state),
                tenant_state: Some(entry.tenant_state),
            });
        }
        if let Ok(mut used) = keys.used.lock() {
            used.insert(presented.id, now);
        }
        if count_usage && let Ok(mut counted) = keys.counted.lock() {
            *counted.entry(entry.tenant_id).or_default() += 1;
        }
        Ok(Verified {
            key_id: presented.id,
            tenant_id: entry.tenant_id,
            tenant_state: entry.tenant_state,
            scopes: entry.scopes.clone(),
            expire_time: entry.expire_time,
        })
    }

    /// Writes what verification kept: last-used times, and the counted
    /// calls as `api_calls` usage (one event per tenant and write, with an
    /// id of its own, so a write retried after a failure counts once).
    pub async fn flush_key_use(&self) -> Result<()> {
        let keys = &self.api_keys;
        let used: Vec<(Uuid, DateTime<Utc>)> = keys
            .used
            .lock()
            .map(|mut u| u.drain().collect())
            .unwrap_or_default();
        if !used.is_empty() {
            let mut conn = db::conn(&self.pool).await?;
            if let Err(e) = db::api_keys::touch(&mut conn, &used).await {
                // Put them back for the next write (a later use wins).
                if let Ok(mut u) = keys.used.lock() {
                    for (id, at) in used {
                        u.entry(id).or_insert(at);
                    }
                }
                return Err(e);
            }
        }
        let counted: Vec<(Uuid, u64)> = keys
            .counted
            .lock()
            .map(|mut c| c.drain().collect())
            .unwrap_or_default();
        if counted.is_empty() {
            return Ok(());
        }
        let flush = keys.flushes.fetch_add(1, Ordering::Relaxed);
        let inputs: Vec<UsageInput> = counted
            .iter()
            .map(|(tenant, calls)| UsageInput {
                id: format!("verify-{}-{flush}", keys.replica.simple()),
                tenant_id: tenant.to_string(),
                meter: COUNTED_METER.to_owned(),
                value: *calls as f64,
                time: None,
                subject: VERIFY_ACTOR.to_owned(),
            })
            .collect();
        let mut failed = Vec::new();
        for chunk in inputs.chunks(crate::domain::usage::MAX_EVENTS_PER_CALL) {
            match self
                .record_usage(&Caller::system(VERIFY_ACTOR), chunk.to_vec())
                .await
            {
                Ok(outcomes) => {
                    for (input, outcome) in chunk.iter().zip(outcomes) {
                        if let crate::domain::usage::UsageOutcome::Rejected(why) = outcome {
                            tracing::warn!(tenant = %input.tenant_id, reason = %why, "counted API calls were not recorded");
                        }
                    }
                }
                Err(e) => {
                    failed.extend(chunk.iter().cloned());
                    tracing::warn!(error = %e, "recording counted API calls failed; they are kept for the next write");
                }
            }
        }
        if !failed.is_empty()
            && let Ok(mut c) = keys.counted.lock()
        {
            for input in failed {
                if let Ok(tenant) = input.tenant_id.parse() {
                    *c.entry(tenant).or_default() += input.value as u64;
                }
            }
        }
        Ok(())
    }
}

fn key_id(id: &str) -> Result<Uuid> {
    Uuid::try_parse(id).map_err(|_| Error::invalid("id", "must be an API key id (a UUID)"))
}

/// Locks the tenant and returns its state; NOT_FOUND if it does not exist.
async fn lock_tenant_state(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant: Uuid,
) -> Result<TenantState> {
    let row = db::tenants::lock(conn, tenant)
        .await?
        .ok_or_else(|| Error::tenant_not_found(tenant))?;
    db::models::parse_state(&row.state)
}

/// [`lock_tenant_state`], refusing a tenant that is gone or on its way
/// out: its keys could never verify.
async fn lock_live_tenant(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant: Uuid,
) -> Result<TenantState> {
    let state = lock_tenant_state(conn, tenant).await?;
    match state {
        TenantState::Active | TenantState::Suspended | TenantState::Provisioning => Ok(state),
        other => Err(Error::FailedPrecondition(format!(
            "tenant {tenant} is {other}; keys are made for live tenants only"
        ))),
    }
}

/// The tenant's log records the change, which also makes every replica
/// forget what it kept of the tenant's keys.
async fn announce(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant: Uuid,
    state: TenantState,
    message: String,
    caller: &Caller,
) -> Result<()> {
    db::events::append(
        conn,
        &NewEvent::about(
            tenant,
            EventKind::TenantUpdated,
            state,
            message,
            caller.subject.clone(),
        ),
    )
    .await?;
    Ok(())
}
