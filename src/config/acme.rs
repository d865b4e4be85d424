//! Tenants' TLS certificates: the `--acme-*` flags of `serve`, for the
//! `tls_certificate` step and the renewal job. They are the operator's
//! configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Flags of the certificate authority tenants' certificates come from.
#[derive(Debug, Clone, Args)]
pub struct AcmeArgs {
    /// The ACME directory of the certificate authority (e.g.
    /// `https://acme-v02.api.letsencrypt.org/directory`).
    #[arg(long, env = "TENANTD_ACME_DIRECTORY_URL")]
    pub acme_directory_url: Option<String>,
    /// Contact URLs of the ACME account (e.g. `mailto:ops@example.com`);
    /// repeat or separate with commas.
    #[arg(long, env = "TENANTD_ACME_CONTACT", value_delimiter = ',')]
    pub acme_contact: Vec<String>,
    /// A PEM file of the root certificate that signs the ACME server's own
    /// HTTPS certificate, for a private or test CA (default: the system's
    /// roots).
    #[arg(long, env = "TENANTD_ACME_CA_FILE")]
    pub acme_ca_file: Option<PathBuf>,
    /// Certificates are renewed this long before they expire.
    #[arg(long, env = "TENANTD_ACME_RENEW_BEFORE", default_value = super::defaults::ACME_RENEW_BEFORE_TEXT, value_parser = humantime::parse_duration)]
    pub acme_renew_before: Duration,
    /// How often the renewal job looks for certificates to renew.
    #[arg(long, env = "TENANTD_ACME_RENEW_CHECK_INTERVAL", default_value = super::defaults::ACME_RENEW_CHECK_INTERVAL_TEXT, value_parser = humantime::parse_duration)]
    pub acme_renew_check_interval: Duration,
}

/// The ACME settings, checked.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub directory_url: String,
    pub contact: Vec<String>,
    pub ca_file: Option<PathBuf>,
}

impl AcmeArgs {
    /// `None` without --acme-directory-url; the other ACME flags are then
    /// refused.
    pub fn resolve(&self) -> Result<Option<AcmeConfig>, String> {
        let Some(url) = &self.acme_directory_url else {
            if !self.acme_contact.is_empty() || self.acme_ca_file.is_some() {
                return Err("the --acme-* flags need --acme-directory-url".into());
            }
            return Ok(None);
        };
        let parsed =
            url::Url::parse(url).map_err(|e| format!("--acme-directory-url {url}: {e}"))?;
        if parsed.scheme() != "https" {
            return Err(format!(
                "--acme-directory-url {url}: ACME is spoken over https only"
            ));
        }
        for contact in &self.acme_contact {
            if !contact.starts_with("mailto:") || contact.len() <= "mailto:".len() {
                return Err(format!(
                    "--acme-contact {contact}: a contact is a mailto: URL"
                ));
            }
        }
        if let Some(file) = &self.acme_ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| format!("--acme-ca-file {}: {e}", file.display()))?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "--acme-ca-file {}: no PEM certificate in it",
                    file.display()
                ));
            }
        }
        Ok(Some(AcmeConfig {
            directory_url: url.clone(),
            contact: self.acme_contact.clone(),
            ca_file: self.acme_ca_file.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AcmeArgs {
        AcmeArgs {
            acme_directory_url: Some("https://127.0.0.1:14000/dir".into()),
            acme_contact: vec!["mailto:ops@example.com".into()],
            acme_ca_file: None,
            acme_renew_before: Duration::from_secs(30 * 86_400),
            acme_renew_check_interval: Duration::from_secs(3600),
        }
    }

    #[test]
    fn good_flags_resolve() {
        let config = args().resolve().unwrap().unwrap();
        assert_eq!(config.directory_url, "https://127.0.0.1:14000/dir");
        assert_eq!(config.contact, vec!["mailto:ops@example.com".to_owned()]);
        let none = AcmeArgs {
            acme_directory_url: None,
            acme_contact: Vec::new(),
            ..args()
        };
        assert!(none.resolve().unwrap().is_none());
    }

    #[test]
    fn bad_flags_are_named() {
        let stray = AcmeArgs {
            acme_directory_url: None,
            ..args()
        };
        assert_eq!(
            stray.resolve().unwrap_err(),
            "the --acme-* flags need --acme-directory-url"
        );
        let http = AcmeArgs {
            acme_directory_url: Some("http://ca.example/dir".into()),
            ..args()
        };
        assert!(http.resolve().unwrap_err().contains("https only"));
        let contact = AcmeArgs {
            acme_contact: vec!["ops@example.com".into()],
            ..args()
        };
        assert!(contact.resolve().unwrap_err().contains("mailto:"));
        let missing = AcmeArgs {
            acme_ca_file: Some("/nonexistent/ca.pem".into()),
            ..args()
        };
        assert!(
            missing
                .resolve()
                .unwrap_err()
                .starts_with("--acme-ca-file /nonexistent/ca.pem")
        );
    }
}
