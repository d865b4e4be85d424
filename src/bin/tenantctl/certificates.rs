//! `tenantctl certificate`: GetTenantCertificate. The chain is printed or
//! written to a file; the private key, which the server hands out once, is
//! only ever written to a new file readable by its owner alone.

use std::path::PathBuf;

use tenantd::proto::GetTenantCertificateRequest;
use tenantd::proto::tenant_service_client::TenantServiceClient;

use crate::errors::Failure;
use crate::output::{self, Format};

/// A tenant's TLS certificate for its DNS name.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub tenant_id: String,
    /// Write the chain (PEM, leaf first) to this file instead of printing
    /// it.
    #[arg(long)]
    pub chain_out: Option<PathBuf>,
    /// Fetch the private key (once; needs `tenants.admin`) into this new
    /// file, created with mode 0600.
    #[arg(long)]
    pub key_out: Option<PathBuf>,
}

pub async fn run(connection: crate::Connection, format: Format, args: Args) -> Result<(), Failure> {
    // Refuse a key file that exists before the key is taken: the server
    // gives it once.
    if let Some(path) = &args.key_out
        && path.exists()
    {
        return Err(Failure::Rpc(format!(
            "{} exists; the key is written to a new file only",
            path.display()
        )));
    }
    let r = TenantServiceClient::new(connection)
        .get_tenant_certificate(GetTenantCertificateRequest {
            tenant_id: args.tenant_id,
            include_private_key: args.key_out.is_some(),
        })
        .await?
        .into_inner();
    if let Some(path) = &args.key_out {
        tenantd::secrets::write_private(path, r.private_key_pem.as_bytes())
            .map_err(|e| Failure::Rpc(format!("{}: {e}", path.display())))?;
    }
    if let Some(path) = &args.chain_out {
        std::fs::write(path, &r.certificate_chain_pem)
            .map_err(|e| Failure::Rpc(format!("{}: {e}", path.display())))?;
    }
    match format {
        Format::Json => {
            // The key went to its file; it is not printed.
            let shown = tenantd::proto::GetTenantCertificateResponse {
                private_key_pem: String::new(),
                ..r
            };
            println!("{}", output::json(&shown, "GetTenantCertificateResponse"));
        }
        Format::Table => {
            println!("name:        {}", r.dns_name);
            println!("serial:      {}", r.serial);
            println!("not before:  {}", output::time(r.not_before.as_ref()));
            println!("not after:   {}", output::time(r.not_after.as_ref()));
            println!("issued:      {}", output::time(r.issue_time.as_ref()));
            match &args.key_out {
                Some(path) => println!(
                    "key:         written to {} (the server no longer holds it)",
                    path.display()
                ),
                None if !r.key_fetched_by.is_empty() => println!(
                    "key:         fetched by {} at {}",
                    r.key_fetched_by,
                    output::time(r.key_fetch_time.as_ref())
                ),
                None => println!("key:         not fetched yet (--key-out FILE)"),
            }
            match &args.chain_out {
                Some(path) => println!("chain:       written to {}", path.display()),
                None => print!("{}", r.certificate_chain_pem),
            }
        }
    }
    Ok(())
}
