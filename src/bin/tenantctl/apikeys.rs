//! `tenantctl apikey`: tenants' API keys (ApiKeyService).

use std::time::Duration;

use tenantd::proto::api_key_service_client::ApiKeyServiceClient;
use tenantd::proto::{
    ApiKey, CreateApiKeyRequest, ListApiKeysRequest, RevokeApiKeyRequest, RotateApiKeyRequest,
    VerifyApiKeyRequest,
};

use crate::errors::Failure;
use crate::output::{self, Format};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Make a key for a tenant; the key is printed once.
    Create {
        tenant_id: String,
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// The SaaS's own scopes (repeat, or comma-separated).
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        /// How long it works (e.g. `90days`); no end when omitted.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// A tenant's keys.
    List {
        tenant_id: String,
        /// Also the keys that stopped working.
        #[arg(long)]
        all: bool,
    },
    /// Stop a key now.
    Revoke { key_id: String },
    /// Make a new key in a key's place; the old one works for `--grace`.
    Rotate {
        key_id: String,
        /// How long the old key keeps working (at most 7 days).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        grace: Duration,
    },
    /// Whose key this is, as a gateway asks (scope `tenants.verify`).
    Verify {
        key: String,
        /// Count one `api_calls` for the tenant.
        #[arg(long)]
        count_usage: bool,
    },
}

fn pb_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

pub async fn run(connection: crate::Connection, format: Format, cmd: Cmd) -> Result<(), Failure> {
    let mut client = ApiKeyServiceClient::new(connection);
    match cmd {
        Cmd::Create {
            tenant_id,
            name,
            scope,
            ttl,
        } => {
            let r = client
                .create_api_key(CreateApiKeyRequest {
                    tenant_id,
                    name,
                    scopes: scope,
                    ttl: ttl.map(pb_duration),
                })
                .await?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&r, "CreateApiKeyResponse")),
                Format::Table => {
                    print_key(r.api_key.as_ref());
                    println!("key:         {}", r.key);
                    println!("(shown once: the server keeps only its hash)");
                }
            }
        }
        Cmd::List { tenant_id, all } => {
            let r = client
                .list_api_keys(ListApiKeysRequest {
                    tenant_id,
                    include_revoked: all,
                })
                .await?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&r, "ListApiKeysResponse")),
                Format::Table => {
                    println!(
                        "{:<32}  {:<20}  {:<20}  {:<20}  {:<20}",
                        "ID", "NAME", "CREATED", "LAST USED", "REVOKED"
                    );
                    for k in &r.api_keys {
                        println!(
                            "{:<32}  {:<20}  {:<20}  {:<20}  {:<20}",
                            k.id,
                            k.name,
                            output::time(k.create_time.as_ref()),
                            output::time(k.last_used_time.as_ref()),
                            output::time(k.revoke_time.as_ref()),
                        );
                    }
                }
            }
        }
        Cmd::Revoke { key_id } => {
            let r = client
                .revoke_api_key(RevokeApiKeyRequest { id: key_id })
                .await?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&r, "RevokeApiKeyResponse")),
                Format::Table => print_key(r.api_key.as_ref()),
            }
        }
        Cmd::Rotate { key_id, grace } => {
            let r = client
                .rotate_api_key(RotateApiKeyRequest {
                    id: key_id,
                    grace_period: Some(pb_duration(grace)),
                })
                .await?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&r, "RotateApiKeyResponse")),
                Format::Table => {
                    print_key(r.api_key.as_ref());
                    println!("key:         {}", r.key);
                    println!("(shown once: the server keeps only its hash)");
                    if let Some(old) = &r.previous {
                        println!(
                            "previous:    {} works until {}",
                            old.id,
                            output::time(old.revoke_time.as_ref())
                        );
                    }
                }
            }
        }
        Cmd::Verify { key, count_usage } => {
            let r = client
                .verify_api_key(VerifyApiKeyRequest { key, count_usage })
                .await?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&r, "VerifyApiKeyResponse")),
                Format::Table => {
                    println!("tenant:      {}", r.tenant_id);
                    println!("key:         {}", r.key_id);
                    println!("scopes:      {}", r.scopes.join(" "));
                    println!("expires:     {}", output::time(r.expire_time.as_ref()));
                }
            }
        }
    }
    Ok(())
}

fn print_key(k: Option<&ApiKey>) {
    let Some(k) = k else { return };
    println!("id:          {}", k.id);
    println!("tenant:      {}", k.tenant_id);
    println!("name:        {}", k.name);
    println!("scopes:      {}", k.scopes.join(" "));
    println!("created:     {}", output::time(k.create_time.as_ref()));
    println!("expires:     {}", output::time(k.expire_time.as_ref()));
    println!("revoked:     {}", output::time(k.revoke_time.as_ref()));
}
