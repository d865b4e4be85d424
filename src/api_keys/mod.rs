//! Tenants' API keys below the use cases: the server's settings (prefix,
//! rate limit, the pepper derived from the secrets key), minting a key in
//! the caller's transaction (for CreateApiKey, RotateApiKey and the
//! `issue_api_key` step alike), and the verification memory (`cache`).
//! Key text and hashing are `domain::api_key`'s; the use cases are
//! `ops::api_keys`.

pub mod cache;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use uuid::Uuid;

use crate::config::api_keys::{ApiKeyConfig, KeyRateLimit};
use crate::db;
use crate::db::api_keys::{ApiKeyRow, NewApiKey};
use crate::domain::api_key;
use crate::error::{Error, Result};
use crate::secrets::SecretKey;
use cache::KeyCache;

/// The purpose the pepper is derived for.
const PEPPER_PURPOSE: &str = "api-keys/pepper/v1";

/// The keys' settings and what verification keeps in memory.
pub struct ApiKeys {
    pub config: ApiKeyConfig,
    /// `None` without a secrets key: keys cannot be made or checked.
    pepper: Option<SecretBox<[u8; 32]>>,
    /// Seals a provisioning key until the welcome email carries it.
    secret_key: Option<Arc<SecretKey>>,
    pub cache: Arc<KeyCache>,
    /// Keys verified since the last write, and when.
    pub used: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    /// Calls counted per tenant since the last write.
    pub counted: Mutex<HashMap<Uuid, u64>>,
    /// Makes the ids of counted usage unique across writes and replicas.
    pub flushes: AtomicU64,
    pub replica: Uuid,
}

impl ApiKeys {
    pub fn new(config: ApiKeyConfig, secret_key: Option<Arc<SecretKey>>) -> Self {
        ApiKeys {
            config,
            pepper: secret_key.as_ref().map(|k| k.derive(PEPPER_PURPOSE)),
            secret_key,
            cache: Arc::default(),
            used: Mutex::default(),
            counted: Mutex::default(),
            flushes: AtomicU64::new(0),
            replica: Uuid::now_v7(),
        }
    }

    /// Whether keys can be made and checked (a secrets key is set).
    pub fn enabled(&self) -> bool {
        self.pepper.is_some()
    }

    pub fn pepper(&self) -> Result<&[u8; 32]> {
        self.pepper
            .as_ref()
            .map(|p| p.expose_secret())
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "API keys need TENANTD_SECRET_KEY (their hashes are keyed with it)".into(),
                )
            })
    }

    /// Makes a key of `tenant` in the caller's transaction: checked, rate
    /// limited, stored (sealed for delivery too, if asked), and announced
    /// in the tenant's log. Returns the row and the key's text.
    pub async fn mint(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        tenant: Uuid,
        spec: &KeySpec<'_>,
        deliver: bool,
    ) -> Result<(ApiKeyRow, SecretString)> {
        let pepper = self.pepper()?;
        check_rate(conn, tenant, self.config.rate_limit).await?;
        let key = api_key::generate(&self.config.prefix, pepper);
        let delivery = if deliver {
            let sealer = self.secret_key.as_deref().ok_or_else(|| {
                Error::FailedPrecondition("API keys need TENANTD_SECRET_KEY".into())
            })?;
            Some(sealer.seal_str(&key.text, &delivery_aad(key.id)))
        } else {
            None
        };
        let row = db::api_keys::insert(
            conn,
            &NewApiKey {
                id: key.id,
                tenant_id: tenant,
                name: spec.name,
                prefix: &self.config.prefix,
                scopes: spec.scopes,
                secret_hash: &key.hash,
                created_by: spec.actor,
                ttl: spec.ttl,
                delivery: delivery.as_deref(),
            },
        )
        .await?;
        Ok((row, key.text))
    }

    /// Opens a key sealed for delivery.
    pub fn open_delivery(&self, id: Uuid, sealed: &[u8]) -> Result<SecretString> {
        self.secret_key
            .as_deref()
            .ok_or_else(|| Error::FailedPrecondition("API keys need TENANTD_SECRET_KEY".into()))?
            .open_str(sealed, &delivery_aad(id))
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

/// What a new key is.
pub struct KeySpec<'a> {
    pub name: &'a str,
    pub scopes: &'a [String],
    pub ttl: Option<Duration>,
    pub actor: &'a str,
}

fn delivery_aad(id: Uuid) -> Vec<u8> {
    format!("api_keys/{id}/delivery").into_bytes()
}

/// RESOURCE_EXHAUSTED, with the time until the oldest key of the window
/// leaves it, when the tenant made its allowance of keys already.
async fn check_rate(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant: Uuid,
    limit: KeyRateLimit,
) -> Result<()> {
    let (made, oldest) = db::api_keys::created_within(conn, tenant, limit.per).await?;
    if made < i64::from(limit.keys) {
        return Ok(());
    }
    let window = chrono::Duration::from_std(limit.per).unwrap_or(chrono::Duration::MAX);
    let retry_after = oldest
        .map(|t| t + window - Utc::now())
        .and_then(|d| d.to_std().ok())
        .unwrap_or(limit.per)
        .max(Duration::from_secs(1));
    Err(Error::RateLimited {
        message: format!(
            "tenant {tenant} made {made} keys in the last {}; at most {} (--api-key-rate-limit)",
            humantime::format_duration(limit.per),
            limit.keys
        ),
        retry_after,
    })
}
