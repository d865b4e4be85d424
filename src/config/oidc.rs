//! The identity provider at which `register_oidc_client` registers each
//! tenant's OpenID Connect client: the `--oidc-*` flags of `serve`. They are
//! the operator's configuration, so http and loopback issuers are accepted.

use std::fmt;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

/// How a registered client authenticates at the provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// Signed JWT assertions verified against `--oidc-jwks-uri`: no client
    /// secret exists anywhere.
    PrivateKeyJwt,
    /// A client secret the provider issues, kept encrypted until an admin
    /// fetches it once (GetTenantCredentials).
    ClientSecretBasic,
    /// A public client (authorization code with PKCE).
    None,
}

impl ClientAuthMethod {
    /// The `token_endpoint_auth_method` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::None => "none",
        }
    }
}

/// Flags of the identity provider.
#[derive(Clone, Args)]
pub struct OidcArgs {
    /// Issuer of the OpenID provider (e.g. `https://id.example.com/realms/saas`);
    /// its registration endpoint is discovered from
    /// `/.well-known/openid-configuration`, whose `issuer` must match.
    #[arg(long, env = "TENANTD_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The provider's client registration endpoint (RFC 7591), when it is
    /// not discovered from --oidc-issuer.
    #[arg(long, env = "TENANTD_OIDC_REGISTRATION_ENDPOINT")]
    pub oidc_registration_endpoint: Option<String>,
    /// Initial access token the registration endpoint requires; never
    /// logged.
    #[arg(
        long,
        env = "TENANTD_OIDC_INITIAL_ACCESS_TOKEN",
        hide_env_values = true
    )]
    pub oidc_initial_access_token: Option<String>,
    /// A tenant's redirect URI, with `{slug}` (and optionally `{tenant_id}`)
    /// filled in, e.g. `https://{slug}.app.example.com/auth/callback`.
    #[arg(long, env = "TENANTD_OIDC_REDIRECT_URI_TEMPLATE")]
    pub oidc_redirect_uri_template: Option<String>,
    /// How the clients authenticate at the token endpoint.
    #[arg(
        long,
        env = "TENANTD_OIDC_CLIENT_AUTH_METHOD",
        value_enum,
        default_value = "private_key_jwt"
    )]
    pub oidc_client_auth_method: ClientAuthMethod,
    /// The JWKS URL of the keys `private_key_jwt` clients sign with.
    #[arg(long, env = "TENANTD_OIDC_JWKS_URI")]
    pub oidc_jwks_uri: Option<String>,
}

impl fmt::Debug for OidcArgs {
    // The initial access token is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcArgs")
            .field("oidc_issuer", &self.oidc_issuer)
            .field(
                "oidc_registration_endpoint",
                &self.oidc_registration_endpoint,
            )
            .field("oidc_client_auth_method", &self.oidc_client_auth_method)
            .finish_non_exhaustive()
    }
}

/// Where the provider is and what tenantd registers there, checked.
#[derive(Clone)]
pub struct OidcConfig {
    /// The issuer, when given; the registration endpoint is then discovered
    /// unless `registration_endpoint` is set.
    pub issuer: Option<reqwest::Url>,
    pub registration_endpoint: Option<reqwest::Url>,
    pub initial_access_token: SecretString,
    pub redirect_uri_template: String,
    pub auth_method: ClientAuthMethod,
    pub jwks_uri: Option<reqwest::Url>,
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer.as_ref().map(|u| u.as_str()))
            .field(
                "registration_endpoint",
                &self.registration_endpoint.as_ref().map(|u| u.as_str()),
            )
            .field("auth_method", &self.auth_method)
            .finish_non_exhaustive()
    }
}

fn http_url(flag: &str, text: &str) -> Result<reqwest::Url, String> {
    let url =
        reqwest::Url::parse(text).map_err(|e| format!("--{flag} {text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("--{flag} {text:?} must be an http(s) URL"));
    }
    Ok(url)
}

impl OidcArgs {
    /// The checked configuration; `None` when no provider is configured
    /// (then `register_oidc_client` fails, saying so).
    pub fn resolve(&self) -> Result<Option<OidcConfig>, String> {
        if self.oidc_issuer.is_none() && self.oidc_registration_endpoint.is_none() {
            let stray = [
                (
                    "oidc-initial-access-token",
                    self.oidc_initial_access_token.is_some(),
                ),
                (
                    "oidc-redirect-uri-template",
                    self.oidc_redirect_uri_template.is_some(),
                ),
                ("oidc-jwks-uri", self.oidc_jwks_uri.is_some()),
            ];
            if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "--{flag} needs --oidc-issuer or --oidc-registration-endpoint"
                ));
            }
            return Ok(None);
        }
        let issuer = self
            .oidc_issuer
            .as_deref()
            .map(|i| http_url("oidc-issuer", i))
            .transpose()?;
        let registration_endpoint = self
            .oidc_registration_endpoint
            .as_deref()
            .map(|e| http_url("oidc-registration-endpoint", e))
            .transpose()?;
        let initial_access_token = self
            .oidc_initial_access_token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or("--oidc-initial-access-token is required with an identity provider")?;
        let template = self
            .oidc_redirect_uri_template
            .clone()
            .ok_or("--oidc-redirect-uri-template is required with an identity provider")?;
        if !template.contains("{slug}") && !template.contains("{tenant_id}") {
            return Err(format!(
                "--oidc-redirect-uri-template {template:?} must contain {{slug}} or {{tenant_id}}"
            ));
        }
        http_url(
            "oidc-redirect-uri-template",
            &template
                .replace("{slug}", "slug")
                .replace("{tenant_id}", "00000000-0000-0000-0000-000000000000"),
        )?;
        let jwks_uri = self
            .oidc_jwks_uri
            .as_deref()
            .map(|u| http_url("oidc-jwks-uri", u))
            .transpose()?;
        if self.oidc_client_auth_method == ClientAuthMethod::PrivateKeyJwt && jwks_uri.is_none() {
            return Err(
                "--oidc-client-auth-method private_key_jwt (the default) needs --oidc-jwks-uri; \
                 or choose client_secret_basic or none"
                    .into(),
            );
        }
        Ok(Some(OidcConfig {
            issuer,
            registration_endpoint,
            initial_access_token: initial_access_token.into(),
            redirect_uri_template: template,
            auth_method: self.oidc_client_auth_method,
            jwks_uri,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> OidcArgs {
        OidcArgs {
            oidc_issuer: Some("http://127.0.0.1:9000".into()),
            oidc_registration_endpoint: None,
            oidc_initial_access_token: Some("tok-9f3a".into()),
            oidc_redirect_uri_template: Some("https://{slug}.app.example.com/cb".into()),
            oidc_client_auth_method: ClientAuthMethod::ClientSecretBasic,
            oidc_jwks_uri: None,
        }
    }

    #[test]
    fn a_provider_needs_its_token_template_and_keys() {
        assert!(args().resolve().unwrap().is_some());
        let none = OidcArgs {
            oidc_issuer: None,
            oidc_initial_access_token: None,
            oidc_redirect_uri_template: None,
            ..args()
        };
        assert!(none.resolve().unwrap().is_none());
        for (bad, says) in [
            (
                OidcArgs {
                    oidc_issuer: None,
                    ..args()
                },
                "needs --oidc-issuer",
            ),
            (
                OidcArgs {
                    oidc_initial_access_token: None,
                    ..args()
                },
                "--oidc-initial-access-token is required",
            ),
            (
                OidcArgs {
                    oidc_redirect_uri_template: Some("https://app.example.com/cb".into()),
                    ..args()
                },
                "must contain {slug}",
            ),
            (
                OidcArgs {
                    oidc_client_auth_method: ClientAuthMethod::PrivateKeyJwt,
                    ..args()
                },
                "needs --oidc-jwks-uri",
            ),
            (
                OidcArgs {
                    oidc_issuer: Some("ftp://id.example.com".into()),
                    ..args()
                },
                "must be an http(s) URL",
            ),
        ] {
            let e = bad.resolve().unwrap_err();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("tok-9f3a"), "{e}");
        }
    }
}
