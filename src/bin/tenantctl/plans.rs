//! `tenantctl plan`: list, show, create, update and delete plans. Plans are
//! written as proto3 JSON of `tenancy.v1.Plan` (what `plan get -o json`
//! prints), from a file or standard input.

use std::io::Read;
use std::path::PathBuf;

use tenantd::proto::plan_service_client::PlanServiceClient;
use tenantd::proto::{
    CreatePlanRequest, DeletePlanRequest, GetPlanRequest, ListPlansRequest, Plan, UpdatePlanRequest,
};

use crate::errors::Failure;
use crate::output::{self, Format};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List plans (their current versions) by name.
    List {
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Show a plan, or one of its earlier versions.
    Get {
        name: String,
        /// A version to show; the current one when omitted.
        #[arg(long, default_value_t = 0)]
        version: i32,
    },
    /// Create a plan from a JSON file (`-`: standard input).
    Create {
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Make a new version of a plan from a JSON file (`-`: standard input);
    /// tenants keep the version they were created with.
    Update {
        #[arg(long, short)]
        file: PathBuf,
        /// Only if the plan's etag is still this (overrides the file's).
        #[arg(long)]
        etag: Option<String>,
    },
    /// Delete a plan that no tenant uses.
    Delete {
        name: String,
        #[arg(long, default_value = "")]
        etag: String,
    },
}

fn read_plan(file: &PathBuf) -> Result<Plan, Failure> {
    let mut text = String::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    read.map_err(|e| Failure::Rpc(format!("reading {}: {e}", file.display())))?;
    output::from_json(&text, "Plan").map_err(Failure::Rpc)
}

fn print(format: Format, message: &impl prost::Message, name: &str, plan: Option<&Plan>) {
    match format {
        Format::Json => println!("{}", output::json(message, name)),
        Format::Table => {
            if let Some(plan) = plan {
                println!("{}", output::plan_text(plan));
            }
        }
    }
}

/// A conflict is read again with `plan get`.
fn failure(status: tonic::Status) -> Failure {
    Failure::Rpc(crate::errors::describe(&status, "tenantctl plan get"))
}

pub async fn run(connection: crate::Connection, format: Format, cmd: Cmd) -> Result<(), Failure> {
    let mut client = PlanServiceClient::new(connection);
    match cmd {
        Cmd::List {
            page_size,
            page_token,
        } => {
            let page = client
                .list_plans(ListPlansRequest {
                    page_size,
                    page_token,
                })
                .await
                .map_err(failure)?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&page, "ListPlansResponse")),
                Format::Table => {
                    println!(
                        "{:<24}  {:>7}  {:>5}  {:<8}  DESCRIPTION",
                        "NAME", "VERSION", "STEPS", "BUILT-IN"
                    );
                    for p in &page.plans {
                        println!(
                            "{:<24}  {:>7}  {:>5}  {:<8}  {}",
                            p.name,
                            p.version,
                            p.steps.len(),
                            if p.built_in { "yes" } else { "no" },
                            p.description
                        );
                    }
                    if !page.next_page_token.is_empty() {
                        println!("next page: --page-token {}", page.next_page_token);
                    }
                }
            }
        }
        Cmd::Get { name, version } => {
            let r = client
                .get_plan(GetPlanRequest { name, version })
                .await
                .map_err(failure)?
                .into_inner();
            print(format, &r, "GetPlanResponse", r.plan.as_ref());
        }
        Cmd::Create { file } => {
            let plan = read_plan(&file)?;
            let r = client
                .create_plan(CreatePlanRequest { plan: Some(plan) })
                .await
                .map_err(failure)?
                .into_inner();
            print(format, &r, "CreatePlanResponse", r.plan.as_ref());
        }
        Cmd::Update { file, etag } => {
            let mut plan = read_plan(&file)?;
            if let Some(etag) = etag {
                plan.etag = etag;
            }
            let r = client
                .update_plan(UpdatePlanRequest { plan: Some(plan) })
                .await
                .map_err(failure)?
                .into_inner();
            print(format, &r, "UpdatePlanResponse", r.plan.as_ref());
        }
        Cmd::Delete { name, etag } => {
            client
                .delete_plan(DeletePlanRequest { name, etag })
                .await
                .map_err(failure)?;
            if format == Format::Table {
                println!("deleted");
            } else {
                println!("{{}}");
            }
        }
    }
    Ok(())
}
