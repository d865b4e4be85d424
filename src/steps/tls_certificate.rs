//! `tls_certificate`: a certificate for the tenant's DNS name (from
//! `dns_records`) from the ACME certificate authority, by a DNS-01
//! challenge answered through the same signed DNS updates; and
//! `renew_certificate`, the same flow when the certificate is due.
//!
//! Each run is one short look at the tenant's order, and the step answers
//! "not yet" while the CA validates or issues, holding no worker or
//! connection meanwhile:
//!
//! ```text
//! no order        -> new order, recorded  -> (pending)
//! pending         -> answer each pending challenge (TXT), tell the CA -> not yet
//! ready           -> a fresh P-256 key, sealed and recorded, then the CSR -> (processing)
//! processing      -> not yet
//! valid           -> download, clear the challenge, record chain + key -> done
//! invalid / gone  -> clear the challenge, forget the order -> failed attempt
//! ```
//!
//! A crash anywhere resumes from the recorded order: a challenge answered
//! twice writes the same record, and the key is stored before the CSR is
//! sent, so a finalized order never loses its key.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use instant_acme::{AuthorizationStatus, ChallengeStatus, ChallengeType, Order, OrderStatus};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

use super::dns_records::DNS_NAME;
use super::{Output, Step, StepCtx, StepError};
use crate::acme::{Acme, describe, problem};
use crate::db::certificates::{CertificateRow, Issued};
use crate::db::{self, DbPool};
use crate::dns::Dns;

/// Output keys.
pub const TLS_NOT_AFTER: &str = "tls_not_after";
pub const TLS_SERIAL: &str = "tls_serial";

/// How soon to look again while the CA validates or issues: Let's Encrypt
/// and Pebble take about a second.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Everything the certificate steps use.
pub struct Certificates {
    pub acme: Acme,
    pub dns: Arc<Dns>,
    pool: DbPool,
    /// A certificate ending sooner than this is renewed.
    renew_before: Duration,
}

/// Where one look at the order got to.
enum Look {
    Issued(Issued),
    NotYet(String),
}

impl Certificates {
    pub fn new(acme: Acme, dns: Arc<Dns>, pool: DbPool, renew_before: Duration) -> Self {
        Certificates {
            acme,
            dns,
            pool,
            renew_before,
        }
    }

    async fn row(&self, tenant: Uuid) -> Result<Option<CertificateRow>, StepError> {
        let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
        db::certificates::find(&mut conn, tenant)
            .await
            .map_err(db_error)
    }

    /// Whether the certificate in force is due for renewal.
    fn due(&self, row: &CertificateRow) -> bool {
        let renew_before =
            chrono::Duration::from_std(self.renew_before).unwrap_or(chrono::Duration::MAX);
        row.not_after
            .is_none_or(|end| end - renew_before <= chrono::Utc::now())
    }

    /// One look: the certificate if the tenant has a good one, else the
    /// order moved on as far as it goes now.
    async fn look(&self, ctx: &StepCtx, renew: bool) -> Result<Look, StepError> {
        let dns_name = ctx.outputs.get(DNS_NAME).ok_or_else(|| {
            StepError::permanent("the tenant has no DNS name: its plan must run dns_records first")
        })?;
        let row = self.row(ctx.tenant_id).await?;
        if let Some(row) = &row
            && row.order_url.is_none()
            && row.dns_name == *dns_name
            && let Some(chain) = &row.chain_pem
            && !(renew && self.due(row))
        {
            return describe(chain).map(Look::Issued);
        }
        let order = match row.as_ref().and_then(|r| r.order_url.clone()) {
            Some(url) => match self.acme.order(&url).await? {
                Some(order) => order,
                None => {
                    return self
                        .abandon(ctx, &url, "the CA no longer has the order")
                        .await;
                }
            },
            None => {
                let order = self.acme.new_order(dns_name).await?;
                let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
                db::certificates::start_order(&mut conn, ctx.tenant_id, dns_name, order.url())
                    .await
                    .map_err(db_error)?;
                order
            }
        };
        let order_key = row.and_then(|r| r.order_key);
        self.advance(ctx, dns_name, order, order_key).await
    }

    async fn advance(
        &self,
        ctx: &StepCtx,
        dns_name: &str,
        mut order: Order,
        order_key: Option<Vec<u8>>,
    ) -> Result<Look, StepError> {
        let url = order.url().to_owned();
        match order.state().status {
            OrderStatus::Pending => {
                self.answer_challenges(ctx, &mut order).await?;
                Ok(Look::NotYet(format!(
                    "the CA is validating the DNS-01 challenge of {dns_name}"
                )))
            }
            OrderStatus::Ready => {
                let key = match order_key {
                    Some(sealed) => self.open_key(ctx.tenant_id, &sealed)?,
                    None => self.new_key(ctx.tenant_id, &url).await?,
                };
                let csr = csr(dns_name, key.expose_secret())?;
                order
                    .finalize_csr(&csr)
                    .await
                    .map_err(|e| problem("finalizing the order", e))?;
                self.fetch(ctx, &mut order).await
            }
            OrderStatus::Processing | OrderStatus::Valid => self.fetch(ctx, &mut order).await,
            OrderStatus::Invalid => {
                let why = order
                    .state()
                    .error
                    .as_ref()
                    .map_or_else(|| "no reason given".to_owned(), ToString::to_string);
                self.abandon(ctx, &url, &format!("the order failed: {why}"))
                    .await
            }
        }
    }

    /// Writes the answer of every challenge the CA still waits for and
    /// tells it to validate.
    async fn answer_challenges(&self, ctx: &StepCtx, order: &mut Order) -> Result<(), StepError> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|e| problem("reading the authorization", e))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(StepError::new(format!(
                        "the authorization of {} is {other:?}",
                        authorization.identifier()
                    )));
                }
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Dns01)
                .ok_or_else(|| StepError::permanent("the CA offers no dns-01 challenge"))?;
            if challenge.status != ChallengeStatus::Pending {
                continue;
            }
            let value = challenge.key_authorization().dns_value();
            self.dns
                .set_challenge(&ctx.slug, ctx.tenant_id, &value)
                .await?;
            challenge
                .set_ready()
                .await
                .map_err(|e| problem("asking the CA to validate", e))?;
        }
        Ok(())
    }

    /// The certificate of a finalized order once the CA has issued it.
    async fn fetch(&self, ctx: &StepCtx, order: &mut Order) -> Result<Look, StepError> {
        let url = order.url().to_owned();
        let Some(chain) = order
            .certificate()
            .await
            .map_err(|e| problem("downloading the certificate", e))?
        else {
            return Ok(Look::NotYet("the CA is issuing the certificate".into()));
        };
        let issued = describe(&chain)?;
        // Before the certificate is recorded: a crash in between downloads
        // it again and clears again.
        self.dns.clear_challenge(&ctx.slug, ctx.tenant_id).await?;
        let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
        if !db::certificates::issue(&mut conn, ctx.tenant_id, &url, &issued)
            .await
            .map_err(db_error)?
        {
            return Err(StepError::new(
                "the order was replaced while it was issued; looking again",
            ));
        }
        Ok(Look::Issued(issued))
    }

    /// Forgets an order that cannot go on (and its challenge record); the
    /// next attempt places a new one.
    async fn abandon(&self, ctx: &StepCtx, url: &str, why: &str) -> Result<Look, StepError> {
        self.dns.clear_challenge(&ctx.slug, ctx.tenant_id).await?;
        let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
        db::certificates::drop_order(&mut conn, ctx.tenant_id, url)
            .await
            .map_err(db_error)?;
        Err(StepError::new(format!(
            "{why}; a new order is placed at the next attempt"
        )))
    }

    /// A fresh ECDSA P-256 key for the order, sealed and recorded before
    /// any CSR carries it.
    async fn new_key(
        &self,
        tenant: Uuid,
        order_url: &str,
    ) -> Result<secrecy::SecretString, StepError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| StepError::new(format!("generating a key: {e}")))?;
        let pem = secrecy::SecretString::from(pair.serialize_pem());
        let sealed = self.acme.secret_key()?.seal_str(&pem, &key_aad(tenant));
        let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
        if !db::certificates::set_order_key(&mut conn, tenant, order_url, &sealed)
            .await
            .map_err(db_error)?
        {
            return Err(StepError::new(
                "the order changed while its key was made; looking again",
            ));
        }
        Ok(pem)
    }

    fn open_key(&self, tenant: Uuid, sealed: &[u8]) -> Result<secrecy::SecretString, StepError> {
        self.acme
            .secret_key()?
            .open_str(sealed, &key_aad(tenant))
            .map_err(|e| StepError::permanent(format!("the certificate's key: {e}")))
    }

    /// Revokes the tenant's certificate, clears its challenge record and
    /// forgets both (compensation and deprovisioning).
    pub async fn remove(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let Some(row) = self.row(ctx.tenant_id).await? else {
            return Ok(());
        };
        if let Some(chain) = &row.chain_pem {
            self.acme.revoke(chain).await?;
        }
        self.dns.clear_challenge(&ctx.slug, ctx.tenant_id).await?;
        let mut conn = db::conn(&self.pool).await.map_err(db_error)?;
        db::certificates::delete(&mut conn, ctx.tenant_id)
            .await
            .map_err(db_error)
    }
}

/// Associated data of a tenant's sealed certificate keys.
pub fn key_aad(tenant: Uuid) -> Vec<u8> {
    format!("tls_certificates/{tenant}/key").into_bytes()
}

/// A CSR for `dns_name` signed by `key_pem`, in DER.
fn csr(dns_name: &str, key_pem: &str) -> Result<Vec<u8>, StepError> {
    let pair = rcgen::KeyPair::from_pem(key_pem)
        .map_err(|e| StepError::permanent(format!("the certificate's key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(vec![dns_name.to_owned()])
        .map_err(|e| StepError::permanent(format!("{dns_name}: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let request = params
        .serialize_request(&pair)
        .map_err(|e| StepError::permanent(format!("the CSR: {e}")))?;
    Ok(request.der().to_vec())
}

fn db_error(e: crate::error::Error) -> StepError {
    StepError::new(e.to_string())
}

fn outputs(issued: &Issued) -> Output {
    Output::from([
        (TLS_NOT_AFTER.to_owned(), issued.not_after.to_rfc3339()),
        (TLS_SERIAL.to_owned(), issued.serial.clone()),
    ])
}

/// The step: `tls_certificate` in plans, `renew_certificate` in the
/// renewal pipeline.
pub struct TlsCertificate {
    certificates: Option<Arc<Certificates>>,
    renew: bool,
}

impl TlsCertificate {
    /// `None`: no CA (or no DNS server) is configured; a plan with the
    /// step fails it.
    pub fn new(certificates: Option<Arc<Certificates>>) -> Self {
        TlsCertificate {
            certificates,
            renew: false,
        }
    }

    /// The renewal pipeline's step.
    pub fn renewal(certificates: Option<Arc<Certificates>>) -> Self {
        TlsCertificate {
            certificates,
            renew: true,
        }
    }

    fn certificates(&self) -> Result<&Certificates, StepError> {
        self.certificates.as_deref().ok_or_else(|| {
            StepError::permanent(
                "no certificate authority is configured (--acme-directory-url, with --dns-server)",
            )
        })
    }
}

#[async_trait]
impl Step for TlsCertificate {
    fn name(&self) -> &'static str {
        if self.renew {
            crate::domain::RENEW_STEP
        } else {
            "tls_certificate"
        }
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        match self.certificates()?.look(ctx, self.renew).await? {
            Look::Issued(issued) => Ok(outputs(&issued)),
            Look::NotYet(why) => Err(StepError::not_yet(why, LOOK_AGAIN)),
        }
    }

    async fn compensate_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        // A failed renewal leaves the certificate in force alone.
        if !self.renew {
            remove(self.certificates.as_deref(), ctx).await?;
        }
        Ok(Output::new())
    }

    /// The renewal's completion settles its own pipeline, which the
    /// batched completion of provisioning steps does not know.
    fn database_work(&self) -> bool {
        self.renew
    }

    fn compensable(&self) -> bool {
        !self.renew
    }

    fn resources(&self, ctx: &StepCtx) -> Vec<String> {
        ctx.outputs
            .get(TLS_SERIAL)
            .map(|serial| vec![format!("TLS certificate {serial} (not revoked)")])
            .unwrap_or_default()
    }
}

/// Revokes and forgets the tenant's certificate if it has one
/// (compensation and deprovisioning).
pub async fn remove(certificates: Option<&Certificates>, ctx: &StepCtx) -> Result<(), StepError> {
    match certificates {
        Some(certificates) => certificates.remove(ctx).await,
        None if ctx.outputs.contains_key(TLS_SERIAL) => Err(StepError::permanent(
            "the tenant has a TLS certificate but no certificate authority is configured",
        )),
        None => Ok(()),
    }
}
