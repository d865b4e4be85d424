//! Bearer tokens: how `serve` checks them and how `tenantd token` signs
//! them, from the same flags.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// How bearer tokens are checked.
#[derive(Clone, Default, Args)]
pub struct AuthArgs {
    /// HS256 shared secret of bearer JWTs (at least 32 bytes).
    #[arg(long, env = "TENANTD_AUTH_HS256_SECRET", hide_env_values = true)]
    pub auth_hs256_secret: Option<String>,
    /// PEM public key of bearer JWTs: RSA (RS256) or Ed25519 (EdDSA).
    #[arg(long, env = "TENANTD_AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<PathBuf>,
    /// Required `iss` claim, if set.
    #[arg(long, env = "TENANTD_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[arg(long, env = "TENANTD_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
}

/// Shortest HS256 secret accepted: as many bytes as the hash.
const MIN_SECRET_LEN: usize = 32;

impl AuthArgs {
    /// The verifier these settings describe; `None` if none is configured.
    pub fn verifier(&self) -> Result<Option<crate::auth::Verifier>, String> {
        let (iss, aud) = (self.auth_issuer.as_deref(), self.auth_audience.as_deref());
        match (&self.auth_hs256_secret, &self.auth_public_key_file) {
            (Some(_), Some(_)) => Err(
                "set TENANTD_AUTH_HS256_SECRET or TENANTD_AUTH_PUBLIC_KEY_FILE, not both".into(),
            ),
            (Some(secret), None) if secret.len() < MIN_SECRET_LEN => Err(format!(
                "TENANTD_AUTH_HS256_SECRET must be at least {MIN_SECRET_LEN} bytes"
            )),
            (Some(secret), None) => Ok(Some(crate::auth::Verifier::hs256(
                secret.as_bytes(),
                iss,
                aud,
            ))),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!(
                        "reading TENANTD_AUTH_PUBLIC_KEY_FILE {}: {e}",
                        path.display()
                    )
                })?;
                crate::auth::Verifier::public_key(&pem, iss, aud).map(Some)
            }
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for AuthArgs {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthArgs")
            .field(
                "auth_hs256_secret",
                &self.auth_hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("auth_public_key_file", &self.auth_public_key_file)
            .field("auth_issuer", &self.auth_issuer)
            .field("auth_audience", &self.auth_audience)
            .finish()
    }
}

/// Settings of `tenantd token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Scopes to grant: tenants.read, tenants.write, tenants.admin.
    #[arg(long, required = true)]
    pub scopes: String,
    /// The token's subject, recorded as the actor of what it does.
    #[arg(long, default_value = "operator")]
    pub subject: String,
    /// How long the token is valid (e.g. `1h`, `30m`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Limit the token to this tenant (its `tenant_id` claim): it then
    /// reads that tenant, its configuration and its usage, and nothing else.
    #[arg(long)]
    pub tenant_id: Option<uuid::Uuid>,
}
