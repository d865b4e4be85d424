//! `tenantctl server`: the PostgreSQL servers of tenants' data.

use tenantd::proto::placement_service_client::PlacementServiceClient;
use tenantd::proto::{
    DatabaseServer, DeregisterDatabaseServerRequest, ListDatabaseServersRequest, MoveTenantRequest,
    RegisterDatabaseServerRequest, UpdateDatabaseServerRequest,
};

use crate::Connection;
use crate::errors::Failure;
use crate::output::{self, Format};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List the servers with their tenants and load.
    List,
    /// Register a server (tenantd connects to it first).
    Register {
        name: String,
        /// `postgres://user:password@host:port/database`; the password is
        /// stored encrypted.
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "")]
        region: String,
        /// Relative share of new tenants (1 to 1000).
        #[arg(long, default_value_t = 1)]
        weight: i32,
        /// Most tenants it takes; 0 for no limit.
        #[arg(long, default_value_t = 0)]
        max_tenants: i32,
        /// A label as key=value; repeat for more.
        #[arg(long = "label", value_parser = crate::tenants::parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Change a server's weight or tenant limit.
    Update {
        name: String,
        #[arg(long)]
        weight: Option<i32>,
        #[arg(long)]
        max_tenants: Option<i32>,
        /// Only if the server still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Stop placing new tenants on a server (`--undo` to place again);
    /// with `--move`, then move its ACTIVE tenants away one at a time.
    Drain {
        name: String,
        #[arg(long, conflicts_with = "move_tenants")]
        undo: bool,
        /// Move each ACTIVE tenant off the server (MoveTenant), waiting for
        /// each move to end before the next, with progress.
        #[arg(long = "move")]
        move_tenants: bool,
        /// Where they go; by default where placement puts each.
        #[arg(long, requires = "move_tenants")]
        to: Option<String>,
    },
    /// Move one ACTIVE tenant's data to another server.
    Move {
        tenant_id: String,
        /// The server; by default where placement would put the tenant.
        #[arg(long)]
        to: Option<String>,
        /// Wait for the move to end, with its steps as they go.
        #[arg(long)]
        wait: bool,
    },
    /// Remove a server that holds no tenant.
    Deregister { name: String },
}

fn print(format: Format, servers: &[DatabaseServer], message: &impl prost::Message, name: &str) {
    match format {
        Format::Json => println!("{}", output::json(message, name)),
        Format::Table => {
            println!(
                "{:<20}  {:>6}  {:>7}  {:>7}  {:<8}  {:<9}  URL",
                "NAME", "WEIGHT", "TENANTS", "MAX", "DRAINING", "REACHABLE"
            );
            for s in servers {
                println!(
                    "{:<20}  {:>6}  {:>7}  {:>7}  {:<8}  {:<9}  {}",
                    s.name,
                    s.weight,
                    s.tenant_count,
                    if s.max_tenants == 0 {
                        "-".to_owned()
                    } else {
                        s.max_tenants.to_string()
                    },
                    if s.draining { "yes" } else { "no" },
                    if s.reachable { "yes" } else { "no" },
                    if s.url.is_empty() {
                        "(the configured tenant database)"
                    } else {
                        &s.url
                    }
                );
            }
        }
    }
}

pub async fn run(connection: Connection, format: Format, cmd: Cmd) -> Result<(), Failure> {
    let mut client = PlacementServiceClient::new(connection.clone());
    match cmd {
        Cmd::List => {
            let r = client
                .list_database_servers(ListDatabaseServersRequest {})
                .await?
                .into_inner();
            print(format, &r.servers, &r, "ListDatabaseServersResponse");
        }
        Cmd::Register {
            name,
            url,
            region,
            weight,
            max_tenants,
            labels,
        } => {
            let r = client
                .register_database_server(RegisterDatabaseServerRequest {
                    server: Some(DatabaseServer {
                        name,
                        url,
                        region,
                        weight,
                        max_tenants,
                        labels: labels.into_iter().collect(),
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            let servers: Vec<DatabaseServer> = r.server.clone().into_iter().collect();
            print(format, &servers, &r, "RegisterDatabaseServerResponse");
        }
        Cmd::Update {
            name,
            weight,
            max_tenants,
            etag,
        } => {
            let mut paths = Vec::new();
            if weight.is_some() {
                paths.push("weight".to_owned());
            }
            if max_tenants.is_some() {
                paths.push("max_tenants".to_owned());
            }
            let r = client
                .update_database_server(UpdateDatabaseServerRequest {
                    server: Some(DatabaseServer {
                        name,
                        weight: weight.unwrap_or_default(),
                        max_tenants: max_tenants.unwrap_or_default(),
                        etag,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await?
                .into_inner();
            let servers: Vec<DatabaseServer> = r.server.clone().into_iter().collect();
            print(format, &servers, &r, "UpdateDatabaseServerResponse");
        }
        Cmd::Drain {
            name,
            undo,
            move_tenants,
            to,
        } => {
            let r = client
                .update_database_server(UpdateDatabaseServerRequest {
                    server: Some(DatabaseServer {
                        name: name.clone(),
                        draining: !undo,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["draining".into()],
                    }),
                })
                .await?
                .into_inner();
            let servers: Vec<DatabaseServer> = r.server.clone().into_iter().collect();
            print(format, &servers, &r, "UpdateDatabaseServerResponse");
            if move_tenants {
                crate::moves::drain(connection, &name, to.as_deref().unwrap_or("")).await?;
            }
        }
        Cmd::Move {
            tenant_id,
            to,
            wait,
        } => {
            let r = client
                .move_tenant(MoveTenantRequest {
                    tenant_id: tenant_id.clone(),
                    target_server: to.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let tenant = r.tenant.clone().unwrap_or_default();
            match format {
                Format::Json => println!("{}", output::json(&r, "MoveTenantResponse")),
                Format::Table => println!("{}", output::tenant_text(&tenant)),
            }
            if wait {
                let started = std::time::Instant::now();
                let server = crate::moves::wait(connection, &tenant_id, true).await?;
                println!(
                    "moved to {server} in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Cmd::Deregister { name } => {
            client
                .deregister_database_server(DeregisterDatabaseServerRequest { name: name.clone() })
                .await?;
            if format == Format::Table {
                println!("deregistered {name}");
            } else {
                println!("{{}}");
            }
        }
    }
    Ok(())
}
