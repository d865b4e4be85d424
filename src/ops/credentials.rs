//! GetTenantCredentials: a tenant's OpenID client at the identity
//! provider, and its client secret handed out once.

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use secrecy::SecretString;
use uuid::Uuid;

use super::Ops;
use crate::db;
use crate::domain::{Caller, EventKind, NewEvent};
use crate::error::{Error, Result};
use crate::steps::register_oidc_client::sealed_id;

/// A tenant's credentials at the identity provider.
pub struct Credentials {
    pub issuer: String,
    pub client_id: String,
    pub auth_method: String,
    /// On the first fetch only.
    pub client_secret: Option<SecretString>,
    pub secret_fetch_time: Option<DateTime<Utc>>,
    pub secret_fetched_by: Option<String>,
}

impl Ops {
    /// The tenant's OpenID client; its secret, if it has one nobody
    /// fetched yet, which is then forgotten and the fetch recorded.
    pub async fn tenant_credentials(&self, caller: &Caller, id: Uuid) -> Result<Credentials> {
        let no_client = || Error::NotFound {
            resource: "OpenID client of tenant",
            id: id.to_string(),
        };
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            // Under the tenant's lock, as every writer of its events.
            let tenant = db::tenants::lock(conn, id)
                .await?
                .ok_or_else(|| Error::tenant_not_found(id))?;
            let row = db::oidc::lock(conn, id).await?.ok_or_else(no_client)?;
            let client_id = row.client_id.clone().ok_or_else(no_client)?;
            let mut credentials = Credentials {
                issuer: row.issuer.clone(),
                client_id,
                auth_method: row.auth_method.clone(),
                client_secret: None,
                secret_fetch_time: row.secret_fetch_time,
                secret_fetched_by: row.secret_fetched_by.clone(),
            };
            let Some(sealed) = &row.client_secret else {
                return Ok(credentials);
            };
            let key = self.webhooks.secret_key.as_deref().ok_or_else(|| {
                Error::FailedPrecondition(
                    "the client secret is sealed, and TENANTD_SECRET_KEY is not set".into(),
                )
            })?;
            let secret = key
                .open_str(sealed, &sealed_id(id, "client_secret"))
                .map_err(|e| Error::Internal(e.to_string()))?;
            db::oidc::mark_secret_fetched(conn, id, &caller.subject).await?;
            db::events::append(
                conn,
                &NewEvent::about(id, EventKind::CredentialsFetched, db::models::parse_state(&tenant.state)?, format!(
                        "the client secret of OpenID client {} was fetched by {}; the server no longer holds it",
                        credentials.client_id, caller.subject
                    ), caller.subject.clone()),
            )
            .await?;
            credentials.client_secret = Some(secret);
            credentials.secret_fetch_time = Some(Utc::now());
            credentials.secret_fetched_by = Some(caller.subject.clone());
            Ok::<_, Error>(credentials)
        })
        .await
        .inspect(|c| {
            if c.client_secret.is_some() {
                self.wakeup.events_committed();
            }
        })
    }
}
