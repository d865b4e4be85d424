//! Tenants' TLS certificates: GetTenantCertificate (the chain for readers,
//! the private key once for an admin), and the renewal job, which starts a
//! renewal pipeline through the outbox for each certificate close to its
//! end.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use secrecy::SecretString;
use uuid::Uuid;

use super::Ops;
use super::lifecycle::{refuse_if_running, start_pipeline};
use crate::db::outbox::Operation;
use crate::db::schema::tenants;
use crate::db::{self};
use crate::domain::{Caller, EventKind, NewEvent, SYSTEM_ACTOR, TenantState};
use crate::error::{Error, Result};
use crate::outbox::pipeline::RENEW_PHASE;
use crate::steps::tls_certificate::key_aad;

/// Renewals one run of the job starts at most; the rest wait for the next
/// run (soonest expiry first), so a fleet issued on one day is not all sent
/// to the CA at once.
const RENEWALS_PER_RUN: i64 = 100;

/// A tenant's certificate.
pub struct Certificate {
    pub dns_name: String,
    pub chain_pem: String,
    pub serial: String,
    pub not_before: Option<DateTime<Utc>>,
    pub not_after: Option<DateTime<Utc>>,
    pub issue_time: Option<DateTime<Utc>>,
    /// When asked for and nobody took it yet.
    pub private_key: Option<SecretString>,
    pub key_fetch_time: Option<DateTime<Utc>>,
    pub key_fetched_by: Option<String>,
}

impl Ops {
    /// The tenant's certificate; with `include_key`, its private key too,
    /// once: the server then forgets it and the tenant's log records who
    /// took it. The caller's scope is checked by the transport.
    pub async fn tenant_certificate(
        &self,
        caller: &Caller,
        id: Uuid,
        include_key: bool,
    ) -> Result<Certificate> {
        let no_certificate = || Error::NotFound {
            resource: "TLS certificate of tenant",
            id: id.to_string(),
        };
        let mut conn = db::conn(&self.pool).await?;
        let fetched = conn
            .transaction(async |conn| {
                // Under the tenant's lock, as every writer of its events.
                let tenant = db::tenants::lock(conn, id)
                    .await?
                    .ok_or_else(|| Error::tenant_not_found(id))?;
                let row = db::certificates::lock(conn, id)
                    .await?
                    .ok_or_else(no_certificate)?;
                let (Some(chain_pem), Some(serial)) = (row.chain_pem.clone(), row.serial.clone())
                else {
                    return Err(no_certificate());
                };
                let mut certificate = Certificate {
                    dns_name: row.dns_name.clone(),
                    chain_pem,
                    serial,
                    not_before: row.not_before,
                    not_after: row.not_after,
                    issue_time: row.issue_time,
                    private_key: None,
                    key_fetch_time: row.key_fetch_time,
                    key_fetched_by: row.key_fetched_by.clone(),
                };
                if !include_key {
                    return Ok(certificate);
                }
                let Some(sealed) = &row.private_key else {
                    return Err(Error::FailedPrecondition(format!(
                        "the private key of certificate {} was handed out already ({}); it is given once, and a renewal brings a new one",
                        certificate.serial,
                        match (&row.key_fetched_by, row.key_fetch_time) {
                            (Some(who), Some(when)) => format!("to {who} at {}", when.to_rfc3339()),
                            _ => "to someone".to_owned(),
                        }
                    )));
                };
                let key = self.webhooks.secret_key.as_deref().ok_or_else(|| {
                    Error::FailedPrecondition(
                        "the private key is sealed, and TENANTD_SECRET_KEY is not set".into(),
                    )
                })?;
                let private_key = key
                    .open_str(sealed, &key_aad(id))
                    .map_err(|e| Error::Internal(e.to_string()))?;
                db::certificates::mark_key_fetched(conn, id, &caller.subject).await?;
                db::events::append(
                    conn,
                    &NewEvent::about(
                        id,
                        EventKind::CredentialsFetched,
                        db::models::parse_state(&tenant.state)?,
                        format!(
                            "the private key of TLS certificate {} ({}) was fetched by {}; the server no longer holds it",
                            certificate.serial, certificate.dns_name, caller.subject
                        ),
                        caller.subject.clone(),
                    ),
                )
                .await?;
                certificate.private_key = Some(private_key);
                certificate.key_fetch_time = Some(Utc::now());
                certificate.key_fetched_by = Some(caller.subject.clone());
                Ok::<_, Error>(certificate)
            })
            .await?;
        if fetched.private_key.is_some() {
            self.wakeup.events_committed();
        }
        Ok(fetched)
    }

    /// The renewal job: a renewal pipeline for every ACTIVE tenant whose
    /// certificate ends within `renew_before` and that runs no other
    /// pipeline (it is looked at again at the next run). Returns how many
    /// started.
    pub async fn renew_certificates(&self, renew_before: Duration) -> Result<usize> {
        let mut conn = db::conn(&self.pool).await?;
        let due =
            db::certificates::due_for_renewal(&mut conn, renew_before, RENEWALS_PER_RUN).await?;
        let mut started = 0;
        for id in due {
            let begun = conn
                .transaction(async |conn| start_renewal(conn, id, renew_before).await)
                .await;
            match begun {
                Ok(true) => started += 1,
                Ok(false) => {}
                // Something else started meanwhile; the next run looks again.
                Err(Error::Aborted(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if started > 0 {
            self.wakeup.work_committed();
        }
        Ok(started)
    }
}

/// Starts the tenant's renewal if it is still due, ACTIVE and idle.
async fn start_renewal(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    renew_before: Duration,
) -> Result<bool> {
    let Some(row) = db::tenants::lock(conn, id).await? else {
        return Ok(false);
    };
    let state = db::models::parse_state(&row.state)?;
    if state != TenantState::Active {
        return Ok(false);
    }
    refuse_if_running(conn, id).await?;
    let Some(certificate) = db::certificates::find(conn, id).await? else {
        return Ok(false);
    };
    let renew_before = chrono::Duration::from_std(renew_before).unwrap_or(chrono::Duration::MAX);
    let Some(not_after) = certificate
        .not_after
        .filter(|end| *end - renew_before <= Utc::now())
    else {
        return Ok(false);
    };
    start_pipeline(
        conn,
        id,
        &crate::domain::renew_steps(),
        RENEW_PHASE,
        Operation::Renew,
    )
    .await?;
    diesel::update(tenants::table.find(id))
        .set(tenants::update_time.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    db::events::append(
        conn,
        &NewEvent::about(
            id,
            EventKind::TenantUpdated,
            state,
            format!(
                "renewing TLS certificate {} of {}, which ends at {}",
                certificate.serial.as_deref().unwrap_or("?"),
                certificate.dns_name,
                not_after.to_rfc3339()
            ),
            SYSTEM_ACTOR.to_owned(),
        ),
    )
    .await?;
    Ok(true)
}
