//! `tenantctl`: a small client for tenantd's TenantService.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tenantd::proto::stream_provisioning_status_response::Update;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{
    CancelProvisioningRequest, CreateTenantRequest, DeleteTenantRequest, DeprovisionMode,
    DeprovisionRequest, EventKind, GetTenantRequest, ListTenantsRequest, ResumeTenantRequest,
    RetryProvisioningRequest, StreamProvisioningStatusRequest, SuspendTenantRequest, Tenant,
    TenantState,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// Talk to a tenantd server.
#[derive(Debug, Parser)]
#[command(name = "tenantctl", version, about)]
struct Cli {
    /// The server's address.
    #[arg(
        long,
        env = "TENANTD_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    endpoint: String,
    /// Bearer token (see `tenantd token`); sent as `authorization: Bearer`.
    #[arg(long, env = "TENANTD_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
        /// Validate and show the tenant without creating it.
        #[arg(long)]
        validate_only: bool,
    },
    /// Show one tenant with its steps.
    Get {
        /// The tenant's id.
        tenant_id: String,
    },
    /// List tenants, one line each.
    List {
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
        /// Only this plan.
        #[arg(long, default_value = "")]
        plan: String,
        /// Only tenants carrying this key=value label; repeat for more.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Follow a tenant's provisioning: its steps, then every event until it
    /// settles. Exits non-zero if it ends FAILED, CANCELLED or NEEDS_ATTENTION.
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
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tenantctl: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let channel = Channel::from_shared(cli.endpoint.clone())
        .map_err(|e| format!("bad --endpoint {:?}: {e}", cli.endpoint))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", cli.endpoint))?;
    let bearer: Option<MetadataValue<Ascii>> = match &cli.token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse()
                .map_err(|_| "the token is not valid header text".to_owned())?,
        ),
        None => None,
    };
    let mut client =
        TenantServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            if let Some(bearer) = &bearer {
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
            }
            Ok(request)
        });
    match cli.command {
        Cmd::Create {
            slug,
            display_name,
            admin_email,
            plan,
            labels,
            request_id,
            validate_only,
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
            let created = client
                .create_tenant(request)
                .await
                .map_err(describe)?
                .into_inner();
            print_tenant(&created.tenant.unwrap_or_default());
        }
        Cmd::Get { tenant_id } => {
            let got = client
                .get_tenant(GetTenantRequest { tenant_id })
                .await
                .map_err(describe)?
                .into_inner();
            print_tenant(&got.tenant.unwrap_or_default());
        }
        Cmd::List {
            page_size,
            page_token,
            plan,
            labels,
        } => {
            let request = ListTenantsRequest {
                page_size,
                page_token,
                plan,
                labels: labels.into_iter().collect(),
                ..Default::default()
            };
            let page = client
                .list_tenants(request)
                .await
                .map_err(describe)?
                .into_inner();
            println!("{:<36}  {:<24}  {:<16}  PLAN", "ID", "SLUG", "STATE");
            for t in &page.tenants {
                println!(
                    "{:<36}  {:<24}  {:<16}  {}",
                    t.id,
                    t.slug,
                    state(t.state),
                    t.plan
                );
            }
            if !page.next_page_token.is_empty() {
                println!("next page: --page-token {}", page.next_page_token);
            }
        }
        Cmd::Watch {
            tenant,
            from_start,
            follow,
        } => {
            let request = StreamProvisioningStatusRequest {
                tenant_id: tenant,
                resume_after_event_id: from_start.then_some(0),
                follow,
            };
            let mut stream = client
                .stream_provisioning_status(request)
                .await
                .map_err(describe)?
                .into_inner();
            let mut last_state = TenantState::Unspecified as i32;
            while let Some(message) = stream.message().await.map_err(describe)? {
                match message.update {
                    Some(Update::Snapshot(snapshot)) => {
                        let t = snapshot.tenant.unwrap_or_default();
                        last_state = t.state;
                        print_tenant(&t);
                    }
                    Some(Update::Event(e)) => {
                        last_state = e.state;
                        let kind = EventKind::try_from(e.kind)
                            .map(|k| k.as_str_name().trim_start_matches("EVENT_KIND_"))
                            .unwrap_or("UNKNOWN");
                        println!("#{:<8} {:<24} {:<22} {}", e.id, kind, e.step, e.message);
                    }
                    None => {}
                }
            }
            let settled = TenantState::try_from(last_state).unwrap_or(TenantState::Unspecified);
            if matches!(
                settled,
                TenantState::Failed | TenantState::Cancelled | TenantState::NeedsAttention
            ) {
                return Err(format!("the tenant ended {}", state(last_state)));
            }
        }
        Cmd::Cancel { tenant_id, reason } => {
            let t = client
                .cancel_provisioning(CancelProvisioningRequest { tenant_id, reason })
                .await
                .map_err(describe)?;
            print_tenant(&t.into_inner().tenant.unwrap_or_default());
        }
        Cmd::Retry { tenant_id } => {
            let t = client
                .retry_provisioning(RetryProvisioningRequest { tenant_id })
                .await
                .map_err(describe)?;
            print_tenant(&t.into_inner().tenant.unwrap_or_default());
        }
        Cmd::Suspend { tenant_id, reason } => {
            let t = client
                .suspend_tenant(SuspendTenantRequest { tenant_id, reason })
                .await
                .map_err(describe)?;
            print_tenant(&t.into_inner().tenant.unwrap_or_default());
        }
        Cmd::Resume { tenant_id } => {
            let t = client
                .resume_tenant(ResumeTenantRequest { tenant_id })
                .await
                .map_err(describe)?;
            print_tenant(&t.into_inner().tenant.unwrap_or_default());
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
            let t = client.deprovision(request).await.map_err(describe)?;
            print_tenant(&t.into_inner().tenant.unwrap_or_default());
        }
        Cmd::Delete { tenant_id, etag } => {
            client
                .delete_tenant(DeleteTenantRequest { tenant_id, etag })
                .await
                .map_err(describe)?;
            println!("deleted");
        }
    }
    Ok(())
}

fn state(value: i32) -> &'static str {
    TenantState::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("TENANT_STATE_"))
        .unwrap_or("UNKNOWN")
}

fn print_tenant(t: &Tenant) {
    println!("id:           {}", t.id);
    println!("slug:         {}", t.slug);
    println!("display name: {}", t.display_name);
    println!("admin email:  {}", t.admin_email);
    println!("plan:         {}", t.plan);
    println!("state:        {}", state(t.state));
    println!("etag:         {}", t.etag);
    for (k, v) in &t.labels {
        println!("label:        {k}={v}");
    }
    for step in &t.steps {
        let status = tenantd::proto::StepStatus::try_from(step.status)
            .map(|s| s.as_str_name().trim_start_matches("STEP_STATUS_"))
            .unwrap_or("UNKNOWN");
        println!(
            "step:         {:<22} {:<12} attempts {}/{}",
            step.name, status, step.attempts, step.max_attempts
        );
    }
}

/// The status code, its message, and any field violations, one per line.
fn describe(status: tonic::Status) -> String {
    let mut message = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            message.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    message
}
