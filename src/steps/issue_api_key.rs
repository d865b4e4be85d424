//! `issue_api_key`: the tenant's first API key, made at provisioning and
//! kept sealed until the welcome email has carried it (see
//! `send_welcome_email`). Only its hash stays once it is delivered.
//!
//! The key is made in a short transaction of its own; a retry (after a
//! crash between that commit and the step's record) finds it and makes no
//! second one. On a server without a secrets key no key can be made: the
//! step says so in its output and provisioning goes on.

use std::sync::Arc;

use async_trait::async_trait;
use diesel_async::AsyncConnection as _;

use super::{Output, Step, StepCtx, StepError};
use crate::api_keys::{ApiKeys, KeySpec};
use crate::db::{self, DbPool};

/// The name of the key made at provisioning.
pub const PROVISIONING_KEY: &str = "default";
/// Its maker, in the key's record.
const MAKER: &str = "system";
/// Output keys.
pub const API_KEY_ID: &str = "api_key_id";

pub struct IssueApiKey {
    keys: Arc<ApiKeys>,
    pool: DbPool,
}

impl IssueApiKey {
    pub fn new(keys: Arc<ApiKeys>, pool: DbPool) -> Self {
        Self { keys, pool }
    }
}

#[async_trait]
impl Step for IssueApiKey {
    fn name(&self) -> &'static str {
        "issue_api_key"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        if !self.keys.enabled() {
            return Ok(Output::from([(
                "api_key".to_owned(),
                "not issued: the server has no TENANTD_SECRET_KEY".to_owned(),
            )]));
        }
        let failed = |e: crate::error::Error| match e {
            crate::error::Error::FailedPrecondition(m) => StepError::permanent(m),
            other => StepError::new(other.to_string()),
        };
        let mut conn = db::conn(&self.pool).await.map_err(failed)?;
        let tenant = ctx.tenant_id;
        let keys = &self.keys;
        let id = conn
            .transaction(async |conn| {
                if let Some(key) = db::api_keys::first_of(conn, tenant, PROVISIONING_KEY).await? {
                    return Ok(key.id);
                }
                let spec = KeySpec {
                    name: PROVISIONING_KEY,
                    scopes: &[],
                    ttl: None,
                    actor: MAKER,
                };
                let (row, _) = keys.mint(conn, tenant, &spec, true).await?;
                Ok::<_, crate::error::Error>(row.id)
            })
            .await
            .map_err(failed)?;
        Ok(Output::from([(
            API_KEY_ID.to_owned(),
            id.simple().to_string(),
        )]))
    }

    fn database_work(&self) -> bool {
        false
    }

    /// A key of a tenant that is not ACTIVE verifies for nobody, and a
    /// retried pipeline finds it again.
    fn compensable(&self) -> bool {
        false
    }
}
