//! `register_oidc_client`: the tenant's OpenID Connect client at the
//! identity provider, registered by RFC 7591 and managed by RFC 7592.
//!
//! Exactly one client per tenant: the provider's answer is recorded (the
//! registration access token and any client secret sealed) before the step
//! does anything else, and an attempt that finds a recorded registration
//! reads it instead of registering again. A row is also written before
//! each registration goes out, so an answer that never got recorded (a
//! crash between the provider's answer and the record) is known: the next
//! attempt registers again with the same `software_id` (the tenant id), and
//! a provider that derives the client from it (oidc-provider's `idFactory`,
//! a fixed client id in Keycloak) answers with the same client, so the
//! tenant still has one; with any other provider the step logs that an
//! earlier client may be left there, naming the tenant.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;

use super::{Output, Step, StepCtx, StepError};
use crate::db::{self, DbPool};
use crate::oidc::{Found, IdentityProvider, MaybeRegistered, OidcError};
use crate::secrets::SecretKey;

/// What the step, its compensation and deprovisioning share.
pub struct OidcClients {
    pool: DbPool,
    key: Option<Arc<SecretKey>>,
    provider: Arc<IdentityProvider>,
}

/// Associated data of a sealed column of a tenant's row.
pub fn sealed_id(tenant: uuid::Uuid, column: &str) -> Vec<u8> {
    format!("oidc_clients/{tenant}/{column}").into_bytes()
}

impl From<OidcError> for StepError {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Retry {
                message,
                retry_after,
            } => StepError::new(message).retry_after(retry_after),
            OidcError::Permanent(message) => StepError::permanent(message),
        }
    }
}

fn db_error(e: crate::error::Error) -> StepError {
    StepError::new(e.to_string())
}

impl OidcClients {
    pub fn new(pool: DbPool, key: Option<Arc<SecretKey>>, provider: Arc<IdentityProvider>) -> Self {
        OidcClients {
            pool,
            key,
            provider,
        }
    }

    fn key(&self) -> Result<&SecretKey, StepError> {
        self.key.as_deref().ok_or_else(|| {
            StepError::permanent(
                "register_oidc_client needs TENANTD_SECRET_KEY to keep the registration's token",
            )
        })
    }

    fn token(&self, row: &db::oidc::OidcClientRow) -> Result<SecretString, StepError> {
        let sealed = row
            .registration_access_token
            .as_deref()
            .ok_or_else(|| StepError::permanent("the registration has no access token"))?;
        self.key()?
            .open_str(
                sealed,
                &sealed_id(row.tenant_id, "registration_access_token"),
            )
            .map_err(|e| StepError::permanent(e.to_string()))
    }

    fn outputs(&self, client_id: &str) -> Output {
        let mut out = Output::from([("oidc_client_id".to_owned(), client_id.to_owned())]);
        let issuer = self.provider.issuer();
        if !issuer.is_empty() {
            out.insert("oidc_issuer".to_owned(), issuer);
        }
        out
    }

    /// The tenant's client: the recorded one if the provider still has
    /// it, else a new registration, recorded before anything else.
    async fn ensure(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let metadata = self
            .provider
            .metadata(ctx.tenant_id, &ctx.slug, &ctx.display_name)?;
        let key = self.key()?;
        let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
        let row = db::oidc::find(&mut conn, ctx.tenant_id)
            .await
            .map_err(db_error)?;
        if let Some(row) = &row
            && let (Some(client_id), Some(uri)) = (&row.client_id, &row.registration_client_uri)
        {
            let token = self.token(row)?;
            drop(conn);
            match self.provider.read(uri, &token).await? {
                Found::Exists { .. } => return Ok(self.outputs(client_id)),
                Found::Gone => tracing::warn!(
                    tenant = %ctx.tenant_id,
                    client_id = %client_id,
                    "the identity provider no longer knows the tenant's client; registering it again"
                ),
            }
            conn = db::conn(&self.pool).await.map_err(db_error)?;
        }
        let earlier = db::oidc::record_intent(
            &mut conn,
            ctx.tenant_id,
            &self.provider.issuer(),
            metadata.token_endpoint_auth_method,
        )
        .await
        .map_err(db_error)?;
        drop(conn);
        let registration = match self.provider.register(&metadata).await {
            Ok(registration) => registration,
            Err((e, MaybeRegistered(maybe))) => {
                if !maybe {
                    // The provider refused it: nothing was registered.
                    let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
                    db::oidc::refused(&mut conn, ctx.tenant_id)
                        .await
                        .map_err(db_error)?;
                }
                return Err(e.into());
            }
        };
        if earlier > 0 {
            tracing::warn!(
                tenant = %ctx.tenant_id,
                client_id = %registration.client_id,
                unanswered = earlier,
                "an earlier registration of this tenant got no recorded answer; unless the provider \
                 answered with the same client (by software_id), one with this tenant's software_id may remain there"
            );
        }
        let token = key.seal_str(
            &registration.registration_access_token,
            &sealed_id(ctx.tenant_id, "registration_access_token"),
        );
        let secret = registration
            .client_secret
            .as_ref()
            .map(|s| key.seal_str(s, &sealed_id(ctx.tenant_id, "client_secret")));
        let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
        db::oidc::record_answer(
            &mut conn,
            ctx.tenant_id,
            &registration.client_id,
            &registration.registration_client_uri,
            &token,
            secret.as_deref(),
        )
        .await
        .map_err(db_error)?;
        Ok(self.outputs(&registration.client_id))
    }

    /// Deletes the tenant's client at the provider (RFC 7592) and forgets
    /// it; nothing when it has none.
    pub async fn remove(&self, tenant: uuid::Uuid) -> Result<(), StepError> {
        let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
        let Some(row) = db::oidc::find(&mut conn, tenant).await.map_err(db_error)? else {
            return Ok(());
        };
        if let Some(uri) = &row.registration_client_uri {
            let token = self.token(&row)?;
            drop(conn);
            self.provider.delete(uri, &token).await?;
            conn = db::conn(&self.pool).await.map_err(db_error)?;
        } else if row.unanswered > 0 {
            tracing::warn!(
                %tenant,
                "a registration of this tenant got no recorded answer; a client with its software_id may remain at the identity provider"
            );
        }
        db::oidc::delete(&mut conn, tenant).await.map_err(db_error)
    }

    /// What a tenant's client is, for the leftovers of a compensation that
    /// gave up.
    fn describe(&self, ctx: &StepCtx) -> Vec<String> {
        let client = ctx
            .outputs
            .get("oidc_client_id")
            .map(|id| format!("client {id}"))
            .unwrap_or_else(|| format!("a client with software_id {}", ctx.tenant_id));
        vec![format!(
            "OpenID Connect {client} at {}",
            match self.provider.issuer() {
                issuer if issuer.is_empty() => "the identity provider".to_owned(),
                issuer => issuer,
            }
        )]
    }
}

/// The step.
pub struct RegisterOidcClient {
    clients: Arc<OidcClients>,
}

impl RegisterOidcClient {
    pub fn new(clients: Arc<OidcClients>) -> Self {
        RegisterOidcClient { clients }
    }
}

#[async_trait]
impl Step for RegisterOidcClient {
    fn name(&self) -> &'static str {
        "register_oidc_client"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        self.clients.ensure(ctx).await
    }

    async fn compensate_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        self.clients.remove(ctx.tenant_id).await?;
        Ok(Output::new())
    }

    fn database_work(&self) -> bool {
        false
    }

    fn resources(&self, ctx: &StepCtx) -> Vec<String> {
        self.clients.describe(ctx)
    }
}
