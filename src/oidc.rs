//! The identity provider side of `register_oidc_client`: OpenID Connect
//! Discovery, Dynamic Client Registration (RFC 7591) and its management
//! (RFC 7592), over HTTP to the operator's provider.
//!
//! Messages never carry the initial access token, a registration access
//! token or a client secret: the provider's `error` and
//! `error_description` are quoted, its other answers are not.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::config::oidc::{ClientAuthMethod, OidcConfig};

/// Most bytes of a provider's answer that are read.
const MAX_ANSWER: usize = 256 * 1024;

/// Why a call to the provider did not do its work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Another attempt may succeed (unreachable, 5xx, 429, timeout).
    #[error("{message}")]
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused the request itself; repeating it will not help.
    #[error("{0}")]
    Permanent(String),
}

impl OidcError {
    fn retry(message: impl Into<String>) -> Self {
        OidcError::Retry {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// What tenantd asks the provider to register for a tenant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientMetadata {
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<&'static str>,
    pub response_types: Vec<&'static str>,
    pub token_endpoint_auth_method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The tenant's id: a repeated registration of the same tenant carries
    /// the same value, which a provider may use to answer it with the same
    /// client.
    pub software_id: String,
}

/// A registration as the provider answered it.
pub struct Registration {
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub registration_client_uri: String,
    pub registration_access_token: SecretString,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("client_id", &self.client_id)
            .field("registration_client_uri", &self.registration_client_uri)
            .finish_non_exhaustive()
    }
}

/// Whether a failed registration may have registered a client all the
/// same: the request went out and no readable answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeRegistered(pub bool);

/// What a read of a recorded registration found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The client exists, with these redirect URIs.
    Exists { redirect_uris: Vec<String> },
    /// The provider no longer knows the client (or its token).
    Gone,
}

/// The provider, as configured; `None` inside when none is.
pub struct IdentityProvider {
    config: Option<OidcConfig>,
    http: reqwest::Client,
    /// The registration endpoint, discovered once.
    endpoint: OnceCell<reqwest::Url>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    registration_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct RegistrationAnswer {
    client_id: String,
    client_secret: Option<String>,
    registration_client_uri: Option<String>,
    registration_access_token: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
}

impl IdentityProvider {
    pub fn new(config: Option<OidcConfig>, timeout: Duration) -> Result<Self, String> {
        Ok(IdentityProvider {
            config,
            http: crate::outbound::client_builder(timeout)?
                .build()
                .map_err(|e| format!("HTTP client set-up: {e}"))?,
            endpoint: OnceCell::new(),
        })
    }

    fn config(&self) -> Result<&OidcConfig, OidcError> {
        self.config.as_ref().ok_or_else(|| {
            OidcError::Permanent(
                "no identity provider is configured (--oidc-issuer or --oidc-registration-endpoint)"
                    .into(),
            )
        })
    }

    /// Whether a provider is configured.
    pub fn configured(&self) -> bool {
        self.config.is_some()
    }

    /// The issuer, as configured (empty when only the endpoint is).
    pub fn issuer(&self) -> String {
        self.config
            .as_ref()
            .and_then(|c| c.issuer.as_ref())
            .map(|i| i.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// What a tenant's client is registered with.
    pub fn metadata(
        &self,
        tenant_id: uuid::Uuid,
        slug: &str,
        display_name: &str,
    ) -> Result<ClientMetadata, OidcError> {
        let config = self.config()?;
        let redirect = config
            .redirect_uri_template
            .replace("{slug}", slug)
            .replace("{tenant_id}", &tenant_id.to_string());
        Ok(ClientMetadata {
            client_name: display_name.to_owned(),
            redirect_uris: vec![redirect],
            grant_types: vec!["authorization_code", "refresh_token"],
            response_types: vec!["code"],
            token_endpoint_auth_method: config.auth_method.as_str(),
            jwks_uri: (config.auth_method == ClientAuthMethod::PrivateKeyJwt)
                .then(|| config.jwks_uri.as_ref().map(|u| u.to_string()))
                .flatten(),
            software_id: tenant_id.to_string(),
        })
    }

    /// The registration endpoint: configured, or discovered from the
    /// issuer (whose discovery document must name the same issuer).
    async fn registration_endpoint(&self) -> Result<reqwest::Url, OidcError> {
        let config = self.config()?;
        if let Some(endpoint) = &config.registration_endpoint {
            return Ok(endpoint.clone());
        }
        let issuer = config
            .issuer
            .as_ref()
            .ok_or_else(|| OidcError::Permanent("no issuer is configured".into()))?;
        self.endpoint
            .get_or_try_init(|| async {
                let base = issuer.as_str().trim_end_matches('/');
                let url = format!("{base}/.well-known/openid-configuration");
                let answer = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| OidcError::retry(format!("discovery at {url}: {}", transport(&e))))?;
                let status = answer.status();
                let body = read(answer).await?;
                if !status.is_success() {
                    return Err(classify(status.as_u16(), None, &body, &format!("discovery at {url}")));
                }
                let doc: Discovery = serde_json::from_slice(&body).map_err(|e| {
                    OidcError::Permanent(format!("discovery at {url}: not a discovery document: {e}"))
                })?;
                if doc.issuer.trim_end_matches('/') != base {
                    return Err(OidcError::Permanent(format!(
                        "discovery at {url} names issuer {:?}, not {base:?}",
                        doc.issuer
                    )));
                }
                let endpoint = doc.registration_endpoint.ok_or_else(|| {
                    OidcError::Permanent(format!(
                        "the provider at {base} offers no registration_endpoint (dynamic client registration is off)"
                    ))
                })?;
                reqwest::Url::parse(&endpoint).map_err(|e| {
                    OidcError::Permanent(format!("registration_endpoint {endpoint:?}: {e}"))
                })
            })
            .await
            .cloned()
    }

    /// Registers a client (RFC 7591) with the initial access token. An
    /// error says whether the provider may have registered it all the same
    /// (no answer, or one that cannot be read).
    pub async fn register(
        &self,
        metadata: &ClientMetadata,
    ) -> Result<Registration, (OidcError, MaybeRegistered)> {
        let not_sent = |e| (e, MaybeRegistered(false));
        let config = self.config().map_err(not_sent)?;
        let endpoint = self.registration_endpoint().await.map_err(not_sent)?;
        let maybe = |e| (e, MaybeRegistered(true));
        let answer = self
            .http
            .post(endpoint.clone())
            .bearer_auth(config.initial_access_token.expose_secret())
            .json(metadata)
            .send()
            .await
            .map_err(|e| {
                maybe(OidcError::retry(format!(
                    "registration at {endpoint}: {}",
                    transport(&e)
                )))
            })?;
        let status = answer.status().as_u16();
        let retry_after = retry_after(&answer);
        let body = read(answer).await.map_err(maybe)?;
        if status != 201 && status != 200 {
            return Err(not_sent(classify(
                status,
                retry_after,
                &body,
                &format!("registration at {endpoint}"),
            )));
        }
        let answer: RegistrationAnswer = serde_json::from_slice(&body).map_err(|e| {
            maybe(OidcError::Permanent(format!(
                "registration at {endpoint}: unreadable answer: {e}"
            )))
        })?;
        let (Some(uri), Some(token)) = (
            answer.registration_client_uri,
            answer.registration_access_token,
        ) else {
            return Err(maybe(OidcError::Permanent(format!(
                "registration at {endpoint} registered client {} without registration_client_uri and \
                 registration_access_token; tenantd needs registration management (RFC 7592) to keep \
                 one client per tenant",
                answer.client_id
            ))));
        };
        Ok(Registration {
            client_id: answer.client_id,
            client_secret: answer.client_secret.map(SecretString::from),
            registration_client_uri: uri,
            registration_access_token: token.into(),
        })
    }

    /// Sends an RFC 7592 request for a registration with its token; the
    /// answer's status, Retry-After and body.
    async fn manage(
        &self,
        method: reqwest::Method,
        registration_client_uri: &str,
        token: &SecretString,
        what: &str,
    ) -> Result<(u16, Option<Duration>, Vec<u8>), OidcError> {
        self.config()?;
        let answer = self
            .http
            .request(method, registration_client_uri)
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(|e| {
                OidcError::retry(format!(
                    "{what} {registration_client_uri}: {}",
                    transport(&e)
                ))
            })?;
        let status = answer.status().as_u16();
        let retry_after = retry_after(&answer);
        Ok((status, retry_after, read(answer).await?))
    }

    /// Reads a recorded registration (RFC 7592 GET).
    pub async fn read(
        &self,
        registration_client_uri: &str,
        token: &SecretString,
    ) -> Result<Found, OidcError> {
        let what = "reading";
        let (status, retry_after, body) = self
            .manage(reqwest::Method::GET, registration_client_uri, token, what)
            .await?;
        match status {
            200 => {
                let answer: RegistrationAnswer = serde_json::from_slice(&body).map_err(|e| {
                    OidcError::Permanent(format!("{what} {registration_client_uri}: {e}"))
                })?;
                Ok(Found::Exists {
                    redirect_uris: answer.redirect_uris,
                })
            }
            // RFC 7592: an unknown client answers 401 (its token is invalid)
            // or 404.
            401 | 404 => Ok(Found::Gone),
            _ => Err(classify(
                status,
                retry_after,
                &body,
                &format!("{what} {registration_client_uri}"),
            )),
        }
    }

    /// Deletes a registration (RFC 7592 DELETE); one already gone (401,
    /// 404) counts as deleted.
    pub async fn delete(
        &self,
        registration_client_uri: &str,
        token: &SecretString,
    ) -> Result<(), OidcError> {
        let what = "deleting";
        let (status, retry_after, body) = self
            .manage(
                reqwest::Method::DELETE,
                registration_client_uri,
                token,
                what,
            )
            .await?;
        match status {
            200 | 204 | 401 | 404 => Ok(()),
            _ => Err(classify(
                status,
                retry_after,
                &body,
                &format!("{what} {registration_client_uri}"),
            )),
        }
    }
}

fn retry_after(answer: &reqwest::Response) -> Option<Duration> {
    answer
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::outbound::parse_retry_after)
}

/// A transport failure without the URL's query or anything else reqwest
/// may add.
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        // Only the kind: the error's text would repeat the URL.
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        let mut last = None;
        while let Some(inner) = source {
            last = Some(inner.to_string());
            source = inner.source();
        }
        last.unwrap_or_else(|| "the request failed".into())
    }
}

async fn read(mut answer: reqwest::Response) -> Result<Vec<u8>, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| OidcError::retry(format!("reading the answer: {}", transport(&e))))?
    {
        let room = MAX_ANSWER.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(body)
}

/// A non-success answer: the provider's OAuth error, quoted; whether
/// another attempt may help (408, 425, 429 and 5xx) or not (the rest:
/// `invalid_client_metadata`, a wrong initial access token, ...).
fn classify(status: u16, retry_after: Option<Duration>, body: &[u8], what: &str) -> OidcError {
    let error: ErrorAnswer = serde_json::from_slice(body).unwrap_or_default();
    let mut message = format!("{what} answered {status}");
    if let Some(code) = &error.error {
        message.push_str(&format!(": {}", printable(code)));
        if let Some(description) = &error.error_description {
            message.push_str(&format!(" ({})", printable(description)));
        }
    }
    if matches!(status, 408 | 425 | 429) || status >= 500 {
        OidcError::Retry {
            message,
            retry_after,
        }
    } else {
        OidcError::Permanent(message)
    }
}

/// A provider's text, bounded and without control characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_and_quoted() {
        let body = br#"{"error":"invalid_client_metadata","error_description":"redirect_uris must be https"}"#;
        assert_eq!(
            classify(400, None, body, "registration"),
            OidcError::Permanent(
                "registration answered 400: invalid_client_metadata (redirect_uris must be https)"
                    .into()
            )
        );
        let e = classify(401, None, br#"{"error":"invalid_token"}"#, "registration");
        assert_eq!(
            e,
            OidcError::Permanent("registration answered 401: invalid_token".into())
        );
        for status in [408, 429, 500, 503] {
            assert!(matches!(
                classify(status, Some(Duration::from_secs(3)), b"<html>", "x"),
                OidcError::Retry {
                    retry_after: Some(_),
                    ..
                }
            ));
        }
        assert!(matches!(
            classify(403, None, b"", "x"),
            OidcError::Permanent(_)
        ));
        let noisy = classify(400, None, "{\"error\":\"bad\\u0007\\n\"}".as_bytes(), "x");
        assert_eq!(noisy, OidcError::Permanent("x answered 400: bad".into()));
    }
}
