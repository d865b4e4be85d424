//! `dns_records`: the tenant's own name, `<slug>.<base domain>`, pointing at
//! `--dns-target`, with an ownership record beside it, written to the
//! configured zone by a TSIG-signed dynamic update (see [`crate::dns`]).
//! A name in use by anyone else fails the step for good and changes
//! nothing; a retry finds its own records and succeeds. Compensation and
//! deprovisioning delete exactly those records.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Output, Step, StepCtx, StepError};
use crate::dns::{Dns, DnsError};

/// The output key of the tenant's DNS name.
pub const DNS_NAME: &str = "dns_name";

pub struct DnsRecords {
    dns: Option<Arc<Dns>>,
}

impl DnsRecords {
    /// `None`: no DNS server is configured; a plan with the step fails it.
    pub fn new(dns: Option<Arc<Dns>>) -> Self {
        Self { dns }
    }

    fn dns(&self) -> Result<&Dns, StepError> {
        self.dns.as_deref().ok_or_else(|| {
            StepError::permanent("no DNS server is configured (--dns-server and the --dns-* flags)")
        })
    }
}

impl From<DnsError> for StepError {
    fn from(e: DnsError) -> Self {
        if e.is_permanent() {
            StepError::permanent(e.to_string())
        } else {
            StepError::new(e.to_string())
        }
    }
}

#[async_trait]
impl Step for DnsRecords {
    fn name(&self) -> &'static str {
        "dns_records"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let name = self.dns()?.ensure(&ctx.slug, ctx.tenant_id).await?;
        Ok(Output::from([(DNS_NAME.to_owned(), name)]))
    }

    async fn compensate_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        remove(self.dns.as_deref(), ctx).await?;
        Ok(Output::new())
    }

    fn database_work(&self) -> bool {
        false
    }

    fn resources(&self, ctx: &StepCtx) -> Vec<String> {
        ctx.outputs
            .get(DNS_NAME)
            .map(|name| vec![format!("DNS records of {name}")])
            .unwrap_or_default()
    }
}

/// Deletes the tenant's records if it has a name (compensation and
/// deprovisioning).
pub async fn remove(dns: Option<&Dns>, ctx: &StepCtx) -> Result<(), StepError> {
    if !ctx.outputs.contains_key(DNS_NAME) {
        return Ok(());
    }
    let dns = dns.ok_or_else(|| {
        StepError::permanent("the tenant has DNS records but no DNS server is configured")
    })?;
    dns.remove(&ctx.slug, ctx.tenant_id).await?;
    Ok(())
}
