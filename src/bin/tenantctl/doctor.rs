//! `tenantctl doctor`: one screen of what needs an operator: NEEDS_ATTENTION
//! and drifted tenants, the oldest running pipeline, the outbox backlog,
//! failed webhook deliveries, legal holds and archives the purge refused
//! for want of a verified export. Exits 0 when healthy, 1 otherwise.

use std::time::Duration;

use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::webhook_service_client::WebhookServiceClient;
use tenantd::proto::{
    DeliveryStatus, GetProvisioningStatsRequest, ListDeliveriesRequest, ListTenantsRequest, Tenant,
    TenantState,
};

use crate::Connection;
use crate::errors::Failure;
use crate::output::Format;

/// A pipeline running longer than this is a problem.
const SLOW_PIPELINE: Duration = Duration::from_secs(30 * 60);
/// Work due for longer than this without a dispatcher taking it is a
/// problem.
const STUCK_OUTBOX: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, clap::Args)]
pub struct Args {}

/// Every live tenant, page by page.
async fn all_tenants(client: &mut TenantServiceClient<Connection>) -> Result<Vec<Tenant>, Failure> {
    let mut tenants = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tenants(ListTenantsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        tenants.extend(page.tenants);
        if page.next_page_token.is_empty() {
            return Ok(tenants);
        }
        page_token = page.next_page_token;
    }
}

pub async fn run(connection: Connection, format: Format, _args: Args) -> Result<(), Failure> {
    let mut tenants_api = TenantServiceClient::new(connection.clone());
    let stats = tenants_api
        .get_provisioning_stats(GetProvisioningStatsRequest::default())
        .await?
        .into_inner();
    let tenants = all_tenants(&mut tenants_api).await?;
    let failed = WebhookServiceClient::new(connection)
        .list_deliveries(ListDeliveriesRequest {
            status: DeliveryStatus::Failed as i32,
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner();

    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for t in &tenants {
        if t.state() == TenantState::NeedsAttention {
            problems.push(format!(
                "{} ({}) NEEDS_ATTENTION: {}; left behind: {}",
                t.slug,
                t.id,
                t.state_reason,
                t.leftover_resources.join(", ")
            ));
        }
        for d in &t.drift {
            problems.push(format!(
                "{} ({}) drift: {}: expected {}, found {}",
                t.slug, t.id, d.resource, d.expected, d.found
            ));
        }
        if t.outputs.contains_key("purge_blocked") {
            problems.push(format!(
                "{} ({}) archive not purged: no verified export",
                t.slug, t.id
            ));
        }
        if t.legal_hold {
            notes.push(format!(
                "{} ({}) under legal hold: {}",
                t.slug, t.id, t.legal_hold_reason
            ));
        }
    }
    if let Some(oldest) = &stats.oldest_running {
        let age = oldest
            .age
            .map(|a| Duration::from_secs(a.seconds.max(0) as u64))
            .unwrap_or_default();
        let line = format!(
            "oldest running pipeline: {} ({}) at {} for {}",
            oldest.slug,
            oldest.tenant_id,
            oldest.step,
            humantime::format_duration(age)
        );
        if age > SLOW_PIPELINE {
            problems.push(line);
        } else {
            notes.push(line);
        }
    }
    if let Some(outbox) = &stats.outbox {
        let waited = outbox
            .oldest_due_time
            .zip(stats.as_of_time)
            .map(|(due, now)| Duration::from_secs((now.seconds - due.seconds).max(0) as u64))
            .unwrap_or_default();
        let line = format!(
            "outbox: {} due (oldest due for {}), {} waiting",
            outbox.due,
            humantime::format_duration(waited),
            outbox.waiting
        );
        if waited > STUCK_OUTBOX {
            problems.push(line);
        } else {
            notes.push(line);
        }
    }
    if !failed.deliveries.is_empty() {
        let more = if failed.next_page_token.is_empty() {
            ""
        } else {
            " (and more)"
        };
        problems.push(format!(
            "{} failed webhook deliveries{more}; see `tenantctl deliveries --status failed`",
            failed.deliveries.len()
        ));
    }

    match format {
        Format::Json => {
            let report = serde_json::json!({
                "healthy": problems.is_empty(),
                "problems": problems,
                "notes": notes,
                "tenants": tenants.len(),
            });
            println!("{report}");
        }
        Format::Table => {
            println!(
                "{} tenant(s); {}",
                tenants.len(),
                if problems.is_empty() {
                    "healthy".to_owned()
                } else {
                    format!("{} problem(s)", problems.len())
                }
            );
            for p in &problems {
                println!("PROBLEM  {p}");
            }
            for n in &notes {
                println!("note     {n}");
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Rpc(format!("{} problem(s) found", problems.len())))
    }
}
