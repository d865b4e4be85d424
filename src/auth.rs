//! Bearer-token authentication: JWTs (HS256 with a shared secret, or RS256 /
//! EdDSA with a public key), expiry always checked, issuer and audience when
//! configured, scopes in the standard space-separated `scope` claim.
//!
//! Scopes nest: `tenants.admin` includes `tenants.write`, which includes
//! `tenants.read`. `tenants.verify` (gateways checking API keys) stands
//! apart: it grants nothing else, and only `tenants.admin` includes it. A
//! `tenant_id` claim limits the caller to that tenant (see
//! [`Caller::tenant`]).

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::Caller;

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Get, List, Stream.
    Read,
    /// Create, Update, Cancel, Retry, Suspend, Resume.
    Write,
    /// Deprovision, Delete.
    Admin,
    /// VerifyApiKey, for gateways.
    Verify,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "tenants.read",
            Scope::Write => "tenants.write",
            Scope::Admin => "tenants.admin",
            Scope::Verify => "tenants.verify",
        }
    }

    /// Whether holding `self` grants `wanted`.
    pub fn includes(self, wanted: Scope) -> bool {
        match (self, wanted) {
            (Scope::Admin, _) => true,
            (Scope::Verify, w) => w == Scope::Verify,
            (_, Scope::Verify) => false,
            (granted, w) => granted >= w,
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "tenants.read" => Some(Scope::Read),
            "tenants.write" => Some(Scope::Write),
            "tenants.admin" => Some(Scope::Admin),
            "tenants.verify" => Some(Scope::Verify),
            _ => None,
        }
    }
}

/// Why a token was refused; the text is safe to send to the caller.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid bearer token: {0}")]
    Invalid(String),
}

/// How tokens are checked.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    // The key is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
}

impl Verifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Self {
        Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
            issuer,
            audience,
        )
    }

    /// RS256 or EdDSA with a PEM public key (whichever the key is).
    pub fn public_key(
        pem: &[u8],
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256, issuer, audience));
        }
        DecodingKey::from_ed_pem(pem)
            .map(|key| Self::new(key, Algorithm::EdDSA, issuer, audience))
            .map_err(|_| "the public key is neither an RSA nor an Ed25519 PEM key".to_owned())
    }

    fn new(
        key: DecodingKey,
        algorithm: Algorithm,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        match issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Verifier { key, validation }
    }

    /// The caller a bearer token stands for.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(kind_name(&e)))?;
        let scopes: BTreeSet<Scope> = data
            .claims
            .scope
            .split_whitespace()
            .filter_map(Scope::parse)
            .collect();
        // A claim that names no tenant must not widen the token to all.
        let tenant = data
            .claims
            .tenant_id
            .map(|id| {
                uuid::Uuid::try_parse(&id)
                    .map_err(|_| AuthError::Invalid("the tenant_id claim is not a UUID".into()))
            })
            .transpose()?;
        Ok(Caller {
            subject: data.claims.sub,
            scopes: Some(scopes),
            tenant,
        })
    }
}

/// A token for `subject` with `scopes`, valid for `ttl`, signed with the
/// HS256 secret: what `tenantd token` prints.
pub fn mint_hs256(
    secret: &[u8],
    subject: &str,
    scopes: &[Scope],
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, String> {
    mint_hs256_for(secret, subject, scopes, ttl, issuer, audience, None)
}

/// [`mint_hs256`], limited to `tenant` when given (the `tenant_id` claim).
pub fn mint_hs256_for(
    secret: &[u8],
    subject: &str,
    scopes: &[Scope],
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
    tenant: Option<uuid::Uuid>,
) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let claims = Claims {
        sub: subject.to_owned(),
        exp: (now + ttl).as_secs(),
        scope: scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        iss: issuer.map(str::to_owned),
        aud: audience.map(str::to_owned),
        tenant_id: tenant.map(|t| t.to_string()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// Parses `tenants.read tenants.write` (or comma-separated) into scopes.
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            Scope::parse(s).ok_or_else(|| {
                format!(
                    "unknown scope {s:?} (tenants.read, tenants.write, tenants.admin, tenants.verify)"
                )
            })
        })
        .collect()
}

/// The error's kind, without any token content.
fn kind_name(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidAlgorithm => "wrong algorithm".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        _ => "malformed".into(),
    }
}
