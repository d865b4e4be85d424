//! Tenants' TLS certificates from an ACME certificate authority (RFC 8555),
//! through instant-acme: the server's account, orders, and revocation.
//! The flow of one certificate (order, DNS-01 answer, finalize, store)
//! is the `tls_certificate` step's (see `steps::tls_certificate`).
//!
//! The account is created once per directory and shared by every replica:
//! its credentials (the account key) are sealed under the secrets key in
//! `acme_accounts`; replicas that race to create it keep the first one
//! stored (an account created in vain is never used again).

use std::sync::Arc;

use instant_acme::{
    Account, AccountCredentials, Identifier, NewAccount, NewOrder, Order, RevocationReason,
    RevocationRequest,
};
use rustls::pki_types::CertificateDer;
use secrecy::ExposeSecret as _;

use crate::config::acme::AcmeConfig;
use crate::db::{self, DbPool};
use crate::secrets::SecretKey;
use crate::steps::StepError;

/// ACME problem types no retry cures (RFC 8555 6.7).
const PERMANENT_PROBLEMS: &[&str] = &[
    "accountDoesNotExist",
    "badCSR",
    "badRevocationReason",
    "caa",
    "externalAccountRequired",
    "invalidContact",
    "malformed",
    "rejectedIdentifier",
    "unauthorized",
    "unsupportedContact",
    "unsupportedIdentifier",
    "userActionRequired",
];

/// The certificate authority, as the server's account there.
pub struct Acme {
    config: AcmeConfig,
    pool: DbPool,
    key: Option<Arc<SecretKey>>,
    account: tokio::sync::OnceCell<Account>,
}

impl Acme {
    pub fn new(config: AcmeConfig, pool: DbPool, key: Option<Arc<SecretKey>>) -> Self {
        // instant-acme's HTTPS client takes the process's rustls provider;
        // this build has ring. Installing it is a no-op once one is.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Acme {
            config,
            pool,
            key,
            account: tokio::sync::OnceCell::new(),
        }
    }

    /// The secrets key; certificates' keys and the account key are sealed.
    pub fn secret_key(&self) -> Result<&SecretKey, StepError> {
        self.key.as_deref().ok_or_else(|| {
            StepError::permanent(
                "certificates need TENANTD_SECRET_KEY to keep their private keys and the ACME account key",
            )
        })
    }

    /// The server's account at the directory: the stored one, or a new one
    /// created and stored now.
    pub async fn account(&self) -> Result<&Account, StepError> {
        self.account
            .get_or_try_init(|| async {
                let url = &self.config.directory_url;
                let aad = account_aad(url);
                let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
                let sealed = match db::certificates::account(&mut conn, url)
                    .await
                    .map_err(db_error)?
                {
                    Some(sealed) => sealed,
                    None => {
                        drop(conn);
                        let contact: Vec<&str> =
                            self.config.contact.iter().map(String::as_str).collect();
                        let (_, credentials) = self
                            .builder()?
                            .create(
                                &NewAccount {
                                    contact: &contact,
                                    terms_of_service_agreed: true,
                                    only_return_existing: false,
                                },
                                url.clone(),
                                None,
                            )
                            .await
                            .map_err(|e| problem("creating the ACME account", e))?;
                        let json = secrecy::SecretBox::new(Box::new(
                            serde_json::to_vec(&credentials)
                                .map_err(|e| StepError::new(e.to_string()))?,
                        ));
                        let sealed = self.secret_key()?.seal(json.expose_secret(), &aad);
                        let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
                        let kept = db::certificates::keep_account(&mut conn, url, &sealed)
                            .await
                            .map_err(db_error)?;
                        tracing::info!(directory = %url, "created the ACME account");
                        kept
                    }
                };
                let json = self
                    .secret_key()?
                    .open(&sealed, &aad)
                    .map_err(|e| StepError::permanent(format!("the ACME account: {e}")))?;
                let credentials: AccountCredentials = serde_json::from_slice(json.expose_secret())
                    .map_err(|e| StepError::permanent(format!("the ACME account: {e}")))?;
                self.builder()?
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| problem("loading the ACME account", e))
            })
            .await
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, StepError> {
        match &self.config.ca_file {
            Some(file) => Account::builder_with_root(file),
            None => Account::builder(),
        }
        .map_err(|e| StepError::permanent(format!("the ACME client: {e}")))
    }

    /// A new order for `dns_name`.
    pub async fn new_order(&self, dns_name: &str) -> Result<Order, StepError> {
        let identifiers = [Identifier::Dns(dns_name.to_owned())];
        self.account()
            .await?
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| problem(&format!("ordering a certificate for {dns_name}"), e))
    }

    /// The order at `url`; `None` if the CA no longer has it.
    pub async fn order(&self, url: &str) -> Result<Option<Order>, StepError> {
        match self.account().await?.order(url.to_owned()).await {
            Ok(order) => Ok(Some(order)),
            Err(instant_acme::Error::Api(p)) if p.status == Some(404) => Ok(None),
            Err(e) => Err(problem("reading the order", e)),
        }
    }

    /// Revokes a certificate (its chain in PEM, the leaf first); one
    /// revoked already is fine.
    pub async fn revoke(&self, chain_pem: &str) -> Result<(), StepError> {
        let leaf = CertificateDer::from(leaf_der(chain_pem)?);
        let request = RevocationRequest {
            certificate: &leaf,
            reason: Some(RevocationReason::CessationOfOperation),
        };
        match self.account().await?.revoke(&request).await {
            Ok(()) => Ok(()),
            Err(instant_acme::Error::Api(p)) if problem_type(&p) == Some("alreadyRevoked") => {
                Ok(())
            }
            Err(e) => Err(problem("revoking the certificate", e)),
        }
    }
}

fn account_aad(directory_url: &str) -> Vec<u8> {
    format!("acme_accounts/{directory_url}/credentials").into_bytes()
}

fn db_error(e: crate::error::Error) -> StepError {
    StepError::new(e.to_string())
}

/// The short problem type (`rejectedIdentifier`) of an ACME problem.
fn problem_type(p: &instant_acme::Problem) -> Option<&str> {
    p.r#type
        .as_deref()
        .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
}

/// An instant-acme error as a step's failure: the CA's own refusals of
/// the request are permanent; rate limits, server errors, bad nonces and
/// the network are worth another attempt.
pub fn problem(doing: &str, e: instant_acme::Error) -> StepError {
    match &e {
        instant_acme::Error::Api(p) => {
            let kind = problem_type(p).unwrap_or("");
            let message = format!("{doing}: the CA answered {e}");
            if PERMANENT_PROBLEMS.contains(&kind) {
                StepError::permanent(message)
            } else {
                StepError::new(message)
            }
        }
        _ => StepError::new(format!("{doing}: {e}")),
    }
}

/// What an issued chain says about its leaf certificate.
pub fn describe(chain_pem: &str) -> Result<db::certificates::Issued, StepError> {
    let leaf = leaf_der(chain_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| StepError::new(format!("the CA's certificate does not parse: {e}")))?;
    let time = |t: x509_parser::time::ASN1Time| {
        chrono::DateTime::from_timestamp(t.timestamp(), 0)
            .ok_or_else(|| StepError::new("the CA's certificate has a date out of range"))
    };
    Ok(db::certificates::Issued {
        chain_pem: chain_pem.to_owned(),
        serial: format!("{:x}", cert.serial),
        not_before: time(cert.validity().not_before)?,
        not_after: time(cert.validity().not_after)?,
    })
}

/// The DER of a chain's first (leaf) certificate.
pub fn leaf_der(chain_pem: &str) -> Result<Vec<u8>, StepError> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|der| der.to_vec())
        .ok_or_else(|| StepError::new("the certificate chain holds no certificate"))
}
