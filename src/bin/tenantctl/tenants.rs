//! The tenant commands (TenantService): create, get, list, update, watch,
//! cancel, retry, suspend, resume, deprovision and delete. They sit at the
//! top level of the command line, flattened into `tenantctl`'s own
//! subcommands.

use clap::Subcommand;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{
    CancelProvisioningRequest, CreateTenantRequest, DeleteTenantRequest, DeprovisionMode,
    DeprovisionRequest, GetTenantCredentialsRequest, GetTenantRequest, ListTenantsRequest,
    ReconcileTenantRequest, ResolveAction, ResolveTenantRequest, RestoreTenantRequest,
    ResumeTenantRequest, RetryProvisioningRequest, StreamProvisioningStatusRequest,
    SuspendTenantRequest, Tenant, TenantState, UpdateTenantRequest,
};

use crate::Connection;
use crate::errors::Failure;
use crate::output::{self, Format};
use crate::watch;

/// What `resolve` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ResolveWith {
    RetryCompensation,
    MarkResolved,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
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
        /// Which database servers may hold its data: a label selector such
        /// as `region=eu` (`server=NAME` names one, as an admin).
        #[arg(long, default_value = "")]
        placement: String,
        /// The owner its Soroban contract records (`G...` or `C...`); the
        /// server's deployer when omitted.
        #[arg(long, default_value = "")]
        contract_owner: String,
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
        /// Only tenants whose data lives on this database server.
        #[arg(long, default_value = "")]
        database_server: String,
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
    /// Take a NEEDS_ATTENTION tenant out of it: run the compensation that
    /// gave up again, or record a cleanup by hand (with --note).
    Resolve {
        tenant_id: String,
        #[arg(long, value_enum)]
        action: ResolveWith,
        /// What was done by hand, or why; required with mark-resolved.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Bring a DEPROVISIONED tenant back from its archive or its export.
    Restore {
        tenant_id: String,
        /// Restore it SUSPENDED (its role without access) instead of ACTIVE.
        #[arg(long)]
        suspended: bool,
    },
    /// Set a legal hold (nothing purges or deletes the tenant's data), or
    /// lift it.
    LegalHold {
        tenant_id: String,
        /// Why the hold is set; required unless --lift.
        #[arg(long, default_value = "", required_unless_present = "lift")]
        reason: String,
        /// Lift the hold.
        #[arg(long, conflicts_with = "reason")]
        lift: bool,
    },
    /// Check a tenant against what its steps produced and repair what is
    /// safe to repair.
    Reconcile { tenant_id: String },
    /// Show the tenant's OpenID client at the identity provider; with
    /// `client_secret_basic`, its secret, which the server hands out once.
    Credentials { tenant_id: String },
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

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
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

type Client = TenantServiceClient<Connection>;

/// Prints a tenant in the chosen format.
fn print_tenant(format: Format, message: &impl prost::Message, name: &str, tenant: &Tenant) {
    match format {
        Format::Json => println!("{}", output::json(message, name)),
        Format::Table => println!("{}", output::tenant_text(tenant)),
    }
}

pub async fn run(connection: Connection, format: Format, cmd: Cmd) -> Result<(), Failure> {
    let mut client = TenantServiceClient::new(connection);
    match cmd {
        Cmd::Create {
            slug,
            display_name,
            admin_email,
            plan,
            labels,
            placement,
            contract_owner,
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
                placement,
                contract_owner,
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
            database_server,
            all,
        } => loop {
            let request = ListTenantsRequest {
                page_size,
                page_token: page_token.clone(),
                state: state.map_or(0, |s| s as i32),
                plan: plan.clone(),
                labels: labels.iter().cloned().collect(),
                database_server: database_server.clone(),
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
        Cmd::Resolve {
            tenant_id,
            action,
            note,
        } => {
            let action = match action {
                ResolveWith::RetryCompensation => ResolveAction::RetryCompensation,
                ResolveWith::MarkResolved => ResolveAction::MarkResolved,
            };
            let r = client
                .resolve_tenant(ResolveTenantRequest {
                    tenant_id,
                    action: action as i32,
                    note,
                })
                .await?
                .into_inner();
            let tenant = r.tenant.clone().unwrap_or_default();
            print_tenant(format, &r, "ResolveTenantResponse", &tenant);
        }
        Cmd::Restore {
            tenant_id,
            suspended,
        } => {
            let target_state = if suspended {
                TenantState::Suspended
            } else {
                TenantState::Active
            };
            let r = client
                .restore_tenant(RestoreTenantRequest {
                    tenant_id,
                    target_state: target_state as i32,
                })
                .await?
                .into_inner();
            let tenant = r.tenant.clone().unwrap_or_default();
            print_tenant(format, &r, "RestoreTenantResponse", &tenant);
        }
        Cmd::LegalHold {
            tenant_id,
            reason,
            lift,
        } => {
            let r = client
                .update_tenant(UpdateTenantRequest {
                    tenant_id,
                    tenant: Some(Tenant {
                        legal_hold: !lift,
                        legal_hold_reason: reason,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["legal_hold".into(), "legal_hold_reason".into()],
                    }),
                })
                .await?
                .into_inner();
            let tenant = r.tenant.clone().unwrap_or_default();
            print_tenant(format, &r, "UpdateTenantResponse", &tenant);
        }
        Cmd::Reconcile { tenant_id } => {
            let r = client
                .reconcile_tenant(ReconcileTenantRequest { tenant_id })
                .await?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&r, "ReconcileTenantResponse")),
                Format::Table => {
                    for line in &r.repaired {
                        println!("repaired: {line}");
                    }
                    for line in &r.left {
                        println!("left:     {line}");
                    }
                    let drift = r.tenant.as_ref().map_or(0, |t| t.drift.len());
                    println!("{drift} difference(s) remain");
                }
            }
        }
        Cmd::Credentials { tenant_id } => {
            let r = client
                .get_tenant_credentials(GetTenantCredentialsRequest { tenant_id })
                .await?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&r, "GetTenantCredentialsResponse")),
                Format::Table => {
                    println!("issuer:       {}", r.oidc_issuer);
                    println!("client id:    {}", r.oidc_client_id);
                    println!("auth method:  {}", r.oidc_token_endpoint_auth_method);
                    if !r.oidc_client_secret.is_empty() {
                        println!("secret:       {}", r.oidc_client_secret);
                        println!("(shown once: the server no longer holds it)");
                    } else if !r.secret_fetched_by.is_empty() {
                        let at = output::time(r.secret_fetch_time.as_ref());
                        println!("secret:       fetched by {} at {at}", r.secret_fetched_by);
                    }
                }
            }
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
