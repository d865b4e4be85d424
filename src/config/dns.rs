//! A tenant's own DNS name: the `--dns-*` flags of `serve`, for the
//! `dns_records` step (RFC 2136 dynamic updates signed with TSIG). They are
//! the operator's configuration.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use clap::{Args, ValueEnum};
use secrecy::SecretString;

/// TSIG's HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// Flags of the DNS server tenants' names are written to.
#[derive(Clone, Args)]
pub struct DnsArgs {
    /// The primary DNS server that takes signed updates, `host:port`.
    #[arg(long, env = "TENANTD_DNS_SERVER")]
    pub dns_server: Option<String>,
    /// The zone the names are in (e.g. `example.com`).
    #[arg(long, env = "TENANTD_DNS_ZONE")]
    pub dns_zone: Option<String>,
    /// Tenants get `<slug>.<base domain>`; the zone or a domain inside it
    /// (default: the zone).
    #[arg(long, env = "TENANTD_DNS_BASE_DOMAIN")]
    pub dns_base_domain: Option<String>,
    /// Name of the TSIG key the server knows (e.g. `tenantd-key`).
    #[arg(long, env = "TENANTD_DNS_TSIG_KEY_NAME")]
    pub dns_tsig_key_name: Option<String>,
    /// The key's algorithm.
    #[arg(long, env = "TENANTD_DNS_TSIG_ALGORITHM", value_enum, default_value_t = TsigAlgorithm::HmacSha256)]
    pub dns_tsig_algorithm: TsigAlgorithm,
    /// The key's secret, base64 as `tsig-keygen` prints it; never logged.
    #[arg(long, env = "TENANTD_DNS_TSIG_SECRET", hide_env_values = true)]
    pub dns_tsig_secret: Option<String>,
    /// What a tenant's name points at: a host name (a CNAME) or an IPv4 or
    /// IPv6 address (an A or AAAA record).
    #[arg(long, env = "TENANTD_DNS_TARGET")]
    pub dns_target: Option<String>,
}

impl fmt::Debug for DnsArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsArgs")
            .field("dns_server", &self.dns_server)
            .field("dns_zone", &self.dns_zone)
            .field("dns_base_domain", &self.dns_base_domain)
            .field("dns_tsig_key_name", &self.dns_tsig_key_name)
            .field("dns_tsig_algorithm", &self.dns_tsig_algorithm)
            .field("dns_target", &self.dns_target)
            .finish_non_exhaustive()
    }
}

/// The DNS settings, checked.
#[derive(Clone)]
pub struct DnsConfig {
    pub server: SocketAddr,
    pub zone: String,
    pub base_domain: String,
    pub key_name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: SecretString,
    pub target: String,
}

impl fmt::Debug for DnsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsConfig")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("base_domain", &self.base_domain)
            .field("key_name", &self.key_name)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl DnsArgs {
    /// `None` without --dns-server; every other flag is then refused.
    pub fn resolve(&self) -> Result<Option<DnsConfig>, String> {
        let Some(server) = &self.dns_server else {
            if self.dns_zone.is_some()
                || self.dns_tsig_key_name.is_some()
                || self.dns_tsig_secret.is_some()
                || self.dns_target.is_some()
                || self.dns_base_domain.is_some()
            {
                return Err("the --dns-* flags need --dns-server".into());
            }
            return Ok(None);
        };
        let server = server
            .to_socket_addrs()
            .map_err(|e| format!("--dns-server {server}: {e}"))?
            .next()
            .ok_or_else(|| format!("--dns-server {server}: no address"))?;
        let need = |flag: &str, value: &Option<String>| {
            value
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("--{flag} is required with --dns-server"))
        };
        let zone = need("dns-zone", &self.dns_zone)?;
        let key_name = need("dns-tsig-key-name", &self.dns_tsig_key_name)?;
        let secret = need("dns-tsig-secret", &self.dns_tsig_secret)?;
        let target = need("dns-target", &self.dns_target)?;
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|_| "--dns-tsig-secret is not base64".to_owned())?;
        let base_domain = self.dns_base_domain.clone().unwrap_or_else(|| zone.clone());
        let (z, b) = (fqdn(&zone), fqdn(&base_domain));
        if !(b == z || b.ends_with(&format!(".{z}"))) {
            return Err(format!(
                "--dns-base-domain {base_domain} is not in --dns-zone {zone}"
            ));
        }
        Ok(Some(DnsConfig {
            server,
            zone: z,
            base_domain: b,
            key_name: fqdn(&key_name),
            algorithm: self.dns_tsig_algorithm,
            secret: SecretString::from(secret),
            target,
        }))
    }
}

/// A domain name with its final dot, lower case.
fn fqdn(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> DnsArgs {
        DnsArgs {
            dns_server: Some("127.0.0.1:5353".into()),
            dns_zone: Some("Example.com".into()),
            dns_base_domain: Some("t.example.com".into()),
            dns_tsig_key_name: Some("tenantd-key".into()),
            dns_tsig_algorithm: TsigAlgorithm::HmacSha256,
            dns_tsig_secret: Some("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0".into()),
            dns_target: Some("app.example.com".into()),
        }
    }

    #[test]
    fn good_flags_resolve_to_fully_qualified_names() {
        let config = args().resolve().unwrap().unwrap();
        assert_eq!(config.zone, "example.com.");
        assert_eq!(config.base_domain, "t.example.com.");
        assert_eq!(config.key_name, "tenantd-key.");
        assert_eq!(config.server.port(), 5353);
        assert!(!format!("{config:?}").contains("c2Vj"), "the secret shows");
        assert!(
            !format!("{:?}", args()).contains("c2Vj"),
            "the secret shows"
        );
    }

    #[test]
    fn bad_flags_are_named() {
        let none = DnsArgs {
            dns_server: None,
            dns_zone: None,
            dns_base_domain: None,
            dns_tsig_key_name: None,
            dns_tsig_secret: None,
            dns_target: None,
            ..args()
        };
        assert!(none.resolve().unwrap().is_none());
        let stray = DnsArgs {
            dns_server: None,
            ..args()
        };
        assert_eq!(
            stray.resolve().unwrap_err(),
            "the --dns-* flags need --dns-server"
        );
        let no_key = DnsArgs {
            dns_tsig_key_name: None,
            ..args()
        };
        assert_eq!(
            no_key.resolve().unwrap_err(),
            "--dns-tsig-key-name is required with --dns-server"
        );
        let not_base64 = DnsArgs {
            dns_tsig_secret: Some("not base64!".into()),
            ..args()
        };
        assert_eq!(
            not_base64.resolve().unwrap_err(),
            "--dns-tsig-secret is not base64"
        );
        let outside = DnsArgs {
            dns_base_domain: Some("example.org".into()),
            ..args()
        };
        assert!(
            outside
                .resolve()
                .unwrap_err()
                .contains("is not in --dns-zone")
        );
        let lookalike = DnsArgs {
            dns_base_domain: Some("badexample.com".into()),
            ..args()
        };
        assert!(lookalike.resolve().is_err());
    }
}
