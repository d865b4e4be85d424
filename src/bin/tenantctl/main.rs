//! `tenantctl`: a client for tenantd's TenantService.
//!
//! Exit status: 0 on success, 1 when the server refuses or fails the call
//! (the reason on stderr), 2 for a usage error, 3 when `watch` sees the
//! tenant end FAILED, CANCELLED or NEEDS_ATTENTION.

mod config;
mod errors;
mod output;
mod plans;
mod stats;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{
    CancelProvisioningRequest, CreateTenantRequest, DeleteTenantRequest, DeprovisionMode,
    DeprovisionRequest, GetTenantRequest, ListTenantsRequest, ResumeTenantRequest,
    RetryProvisioningRequest, StreamProvisioningStatusRequest, SuspendTenantRequest, Tenant,
    TenantState, UpdateTenantRequest,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use errors::Failure;
use output::Format;

/// Talk to a tenantd server.
#[derive(Debug, Parser)]
#[command(name = "tenantctl", version, about)]
struct Cli {
    /// The server's address; `https://` uses TLS.
    #[arg(
        long,
        env = "TENANTD_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    endpoint: String,
    /// Bearer token (see `tenantd token`); sent as `authorization: Bearer`.
    #[arg(long, env = "TENANTD_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// PEM CA certificate(s) to trust for an `https://` endpoint (else the
    /// system's roots).
    #[arg(long, env = "TENANTD_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS.
    #[arg(long, env = "TENANTD_CERT_FILE", requires = "key_file", global = true)]
    cert_file: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long, env = "TENANTD_KEY_FILE", requires = "cert_file", global = true)]
    key_file: Option<PathBuf>,
    /// How results are printed.
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a tenant and start provisioning it.
    Create {
        /// Short name, `^[a-z][a-z0-9-]{2,39}$`.
        slug: String,
        #[arg(long)]
        display_name: String,
        #[arg(long)]
        admin_email: String,
        /// Plan name; the server's `default` when omitted.
        #[arg(long, default_value = "")]
        plan: String,
        /// A label as key=value; repeat for more.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Idempotency key: the same key returns the same tenant.
        #[arg(long, default_value = "")]
        request_id: String,
        /// Validate and show the tenant and its planned steps without
        /// creating it.
        #[arg(long)]
        validate_only: bool,
        /// Then follow provisioning as `watch` does.
        #[arg(long)]
        watch: bool,
    },
    /// Show one tenant with its steps.
    Get {
        /// The tenant's id.
        tenant_id: String,
    },
    /// List tenants in creation order.
    List {
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
        /// Only tenants in this state (e.g. ACTIVE, FAILED).
        #[arg(long, value_parser = parse_state)]
        state: Option<TenantState>,
        /// Only this plan.
        #[arg(long, default_value = "")]
        plan: String,
        /// Only tenants carrying this key=value label; repeat for more.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Follow next-page tokens and print every page.
        #[arg(long)]
        all: bool,
    },
    /// Change a tenant's display name, admin email or labels; only the
    /// fields given change.
    Update {
        tenant_id: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        admin_email: Option<String>,
        /// Replace the labels with these key=value pairs; repeat for more.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Remove every label.
        #[arg(long, conflicts_with = "labels")]
        clear_labels: bool,
        /// Only if the tenant still has this etag (from `get`).
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Follow a tenant's provisioning: its steps, then every event until it
    /// settles. Exits 3 if it ends FAILED, CANCELLED or NEEDS_ATTENTION.
    Watch {
        /// The tenant's id or slug.
        tenant: String,
        /// Replay the whole event log first.
        #[arg(long)]
        from_start: bool,
        /// Keep following after the tenant settles.
        #[arg(long)]
        follow: bool,
    },
    /// Stop a provisioning pipeline and undo what it did.
    Cancel {
        tenant_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a FAILED tenant's pipeline.
    Retry { tenant_id: String },
    /// Take an ACTIVE tenant's access away.
    Suspend {
        tenant_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Give a SUSPENDED tenant its access back.
    Resume { tenant_id: String },
    /// Tear a tenant down (archive by default, purged after the grace period).
    Deprovision {
        tenant_id: String,
        /// How long the archive is kept (e.g. `30days`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
        /// Drop the data now instead of archiving it.
        #[arg(long)]
        purge: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Remove a DEPROVISIONED, FAILED or CANCELLED tenant.
    Delete {
        tenant_id: String,
        /// Only if the tenant still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Manage plans: the templates tenants are provisioned from.
    Plan {
        #[command(subcommand)]
        cmd: plans::Cmd,
    },
    /// Provisioning statistics: tenants by state, pipeline outcomes, time
    /// to ACTIVE per plan, step failures and the oldest running pipeline.
    Stats(stats::Args),
    /// Show or change a tenant's configuration: typed settings seeded
    /// from its plan.
    Config {
        #[command(subcommand)]
        cmd: config::Cmd,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn parse_state(s: &str) -> Result<TenantState, String> {
    let name = format!("TENANT_STATE_{}", s.to_ascii_uppercase().replace('-', "_"));
    TenantState::from_str_name(&name)
        .filter(|state| *state != TenantState::Unspecified)
        .ok_or_else(|| format!("{s:?} is not a tenant state (ACTIVE, PROVISIONING, FAILED, ...)"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Rpc(message)) => {
            eprintln!("tenantctl: {message}");
            ExitCode::from(errors::RPC_FAILED)
        }
        Err(Failure::Settled(message)) => {
            eprintln!("tenantctl: {message}");
            ExitCode::from(3)
        }
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// The connection every service's client is built on.
pub type Connection = tonic::service::interceptor::InterceptedService<Channel, Bearer>;
type Client = TenantServiceClient<Connection>;

async fn connect(cli: &Cli) -> Result<Connection, Failure> {
    let mut endpoint = Channel::from_shared(cli.endpoint.clone())
        .map_err(|e| Failure::Rpc(format!("bad --endpoint {:?}: {e}", cli.endpoint)))?;
    if cli.endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match &cli.ca_file {
            Some(path) => tls = tls.ca_certificate(Certificate::from_pem(read(path)?)),
            None => tls = tls.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&cli.cert_file, &cli.key_file) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Failure::Rpc(format!("TLS settings: {e}")))?;
    } else if cli.ca_file.is_some() || cli.cert_file.is_some() {
        return Err(Failure::Rpc(
            "--ca-file and --cert-file need an https:// --endpoint".to_owned(),
        ));
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Failure::Rpc(format!("cannot reach {}: {e}", cli.endpoint)))?;
    let bearer: Option<MetadataValue<Ascii>> = match &cli.token {
        Some(token) => Some(
            format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| Failure::Rpc("the token is not valid header text".to_owned()))?,
        ),
        None => None,
    };
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer(bearer),
    ))
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Rpc(format!("reading {}: {e}", path.display())))
}

/// Prints a tenant in the chosen format.
fn print_tenant(format: Format, message: &impl prost::Message, name: &str, tenant: &Tenant) {
    match format {
        Format::Json => println!("{}", output::json(message, name)),
        Format::Table => println!("{}", output::tenant_text(tenant)),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let connection = connect(&cli).await?;
    let mut client = TenantServiceClient::new(connection.clone());
    let format = cli.output;
    match cli.command {
        Cmd::Create {
            slug,
            display_name,
            admin_email,
            plan,
            labels,
            request_id,
            validate_only,
            watch,
        } => {
            let tenant = Tenant {
                slug,
                display_name,
                admin_email,
                plan,
                labels: labels.into_iter().collect(),
                ..Default::default()
            };
            let request = CreateTenantRequest {
                tenant: Some(tenant),
                request_id,
                validate_only,
            };
            let created = client.create_tenant(request).await?.into_inner();
            let tenant = created.tenant.clone().unwrap_or_default();
            print_tenant(format, &created, "CreateTenantResponse", &tenant);
            if watch && !validate_only {
                return follow(&mut client, format, tenant.id, false, false).await;
            }
        }
        Cmd::Get { tenant_id } => {
            let got = client
                .get_tenant(GetTenantRequest { tenant_id })
                .await?
                .into_inner();
            let tenant = got.tenant.clone().unwrap_or_default();
            print_tenant(format, &got, "GetTenantResponse", &tenant);
        }
        Cmd::List {
            page_size,
            mut page_token,
            state,
            plan,
            labels,
            all,
        } => loop {
            let request = ListTenantsRequest {
                page_size,
                page_token: page_token.clone(),
                state: state.map_or(0, |s| s as i32),
                plan: plan.clone(),
                labels: labels.iter().cloned().collect(),
            };
            let page = client.list_tenants(request).await?.into_inner();
            match format {
                Format::Json => println!("{}", output::json(&page, "ListTenantsResponse")),
                Format::Table => {
                    println!("{}", output::tenant_table(&page.tenants));
                    if !all && !page.next_page_token.is_empty() {
                        println!("next page: --page-token {}", page.next_page_token);
                    }
                }
            }
            if !all || page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        },
        Cmd::Update {
            tenant_id,
            display_name,
            admin_email,
            labels,
            clear_labels,
            etag,
        } => {
            let mut paths = Vec::new();
            let mut tenant = Tenant {
                etag,
                ..Default::default()
            };
            if let Some(name) = display_name {
                tenant.display_name = name;
                paths.push("display_name".to_owned());
            }
            if let Some(email) = admin_email {
                tenant.admin_email = email;
                paths.push("admin_email".to_owned());
            }
            if !labels.is_empty() || clear_labels {
                tenant.labels = labels.into_iter().collect();
                paths.push("labels".to_owned());
            }
            if paths.is_empty() {
                return Err(Failure::Rpc(
                    "nothing to update: give --display-name, --admin-email, --label or --clear-labels"
                        .to_owned(),
                ));
            }
            let request = UpdateTenantRequest {
                tenant_id,
                tenant: Some(tenant),
                update_mask: Some(prost_types::FieldMask { paths }),
            };
            let updated = client.update_tenant(request).await?.into_inner();
            let tenant = updated.tenant.clone().unwrap_or_default();
            print_tenant(format, &updated, "UpdateTenantResponse", &tenant);
        }
        Cmd::Watch {
            tenant,
            from_start,
            follow: keep_following,
        } => return follow(&mut client, format, tenant, from_start, keep_following).await,
        Cmd::Cancel { tenant_id, reason } => {
            let r = client
                .cancel_provisioning(CancelProvisioningRequest { tenant_id, reason })
                .await?
                .into_inner();
            let tenant = r.tenant.clone().unwrap_or_default();
            print_tenant(format, &r, "CancelProvisioningResponse", &tenant);
        }
        Cmd::Retry { tenant_id } => {
            let r = client
                .retry_provisioning(RetryProvisioningRequest { tenant_id })
                .await?
                .into_inner();
            let tenant = r.tenant.clone().unwrap_or_default();
            print_tenant(format, &r, "RetryProvisioningResponse", &tenant);
        }
        Cmd::Suspend { tenant_id, reason } => {
            let r = client
                .suspend_tenant(SuspendTenantRequest { tenant_id, reason })
                .await?
                .into_inner();
            let tenant = r.tenant.clone().unwrap_or_default();
            print_tenant(format, &r, "SuspendTenantResponse", &tenant);
        }
        Cmd::Resume { tenant_id } => {
            let r = client
                .resume_tenant(ResumeTenantRequest { tenant_id })
                .await?
                .into_inner();
            let tenant = r.tenant.clone().unwrap_or_default();
            print_tenant(format, &r, "ResumeTenantResponse", &tenant);
        }
        Cmd::Deprovision {
            tenant_id,
            grace,
            purge,
            reason,
        } => {
            let request = DeprovisionRequest {
                tenant_id,
                grace_period: grace.map(|g| prost_types::Duration {
                    seconds: g.as_secs() as i64,
                    nanos: 0,
                }),
                mode: if purge {
                    DeprovisionMode::Purge
                } else {
                    DeprovisionMode::Archive
                } as i32,
                reason,
            };
            let r = client.deprovision(request).await?.into_inner();
            let tenant = r.tenant.clone().unwrap_or_default();
            print_tenant(format, &r, "DeprovisionResponse", &tenant);
        }
        Cmd::Delete { tenant_id, etag } => {
            let r = client
                .delete_tenant(DeleteTenantRequest { tenant_id, etag })
                .await?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&r, "DeleteTenantResponse")),
                Format::Table => println!("deleted"),
            }
        }
        Cmd::Plan { cmd } => return plans::run(connection.clone(), format, cmd).await,
        Cmd::Config { cmd } => return config::run(connection.clone(), format, cmd).await,
        Cmd::Stats(args) => return stats::run(connection, format, args).await,
    }
    Ok(())
}

/// Follows the stream until it ends; fails if the tenant ended badly.
async fn follow(
    client: &mut Client,
    format: Format,
    tenant: String,
    from_start: bool,
    keep_following: bool,
) -> Result<(), Failure> {
    let request = StreamProvisioningStatusRequest {
        tenant_id: tenant,
        resume_after_event_id: from_start.then_some(0),
        follow: keep_following,
    };
    let mut stream = client
        .stream_provisioning_status(request)
        .await?
        .into_inner();
    let mut display = watch::Display::new(format);
    let mut watched = watch::Watched {
        state: TenantState::Unspecified as i32,
    };
    let ended = loop {
        match stream.message().await {
            Ok(Some(message)) => display.show(&message, &mut watched),
            Ok(None) => break Ok(()),
            Err(status) => break Err(Failure::from(status)),
        }
    };
    display.finish();
    ended?;
    if watched.failed() {
        return Err(Failure::Settled(format!(
            "the tenant ended {}",
            output::state(watched.state)
        )));
    }
    Ok(())
}
