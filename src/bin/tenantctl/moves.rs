//! Moving tenants between database servers: waiting for a move, and
//! draining a server one tenant at a time.

use std::time::{Duration, Instant};

use tenantd::proto::placement_service_client::PlacementServiceClient;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{
    GetTenantRequest, ListTenantsRequest, MoveTenantRequest, StepStatus, Tenant, TenantState,
};

use crate::Connection;
use crate::errors::Failure;

/// How often a move's progress is read.
const POLL: Duration = Duration::from_millis(500);

/// The steps of a move, in order (the last one ends it).
const LAST_STEP: &str = "move_drop_source";
const FIRST_STEP: &str = "move_freeze";

/// Waits until the tenant's move ends; the server it lives on then. A
/// rolled-back move or a tenant left NEEDS_ATTENTION is a failure. With
/// `show_steps`, each step is printed as it finishes.
pub async fn wait(
    connection: Connection,
    tenant_id: &str,
    show_steps: bool,
) -> Result<String, Failure> {
    let mut client = TenantServiceClient::new(connection);
    let mut shown = 0;
    loop {
        let tenant = client
            .get_tenant(GetTenantRequest {
                tenant_id: tenant_id.to_owned(),
            })
            .await?
            .into_inner()
            .tenant
            .unwrap_or_default();
        let moves: Vec<_> = tenant
            .steps
            .iter()
            .filter(|s| s.name.starts_with("move_"))
            .collect();
        if show_steps {
            let done: Vec<_> = moves
                .iter()
                .filter(|s| {
                    matches!(
                        s.status(),
                        StepStatus::Succeeded | StepStatus::Compensated | StepStatus::Failed
                    )
                })
                .collect();
            for s in done.iter().skip(shown) {
                println!("  {} {}", s.name, status_word(s.status()));
            }
            shown = shown.max(done.len());
        }
        let status_of = |name: &str| moves.iter().find(|s| s.name == name).map(|s| s.status());
        if tenant.state() == TenantState::NeedsAttention {
            return Err(Failure::Settled(format!(
                "tenant {tenant_id} needs attention: {}",
                tenant.state_reason
            )));
        }
        if status_of(LAST_STEP) == Some(StepStatus::Succeeded) {
            return Ok(tenant.database_server);
        }
        if status_of(FIRST_STEP) == Some(StepStatus::Compensated) {
            return Err(Failure::Settled(format!(
                "the move of tenant {tenant_id} was rolled back: {}",
                tenant.state_reason
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn status_word(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "done",
        StepStatus::Compensated => "undone",
        StepStatus::Failed => "failed",
        _ => "",
    }
}

/// Moves every ACTIVE tenant off `server`, one at a time, to `to` (empty:
/// where placement puts each); stops at the first move that fails.
pub async fn drain(connection: Connection, server: &str, to: &str) -> Result<(), Failure> {
    let mut tenants = TenantServiceClient::new(connection.clone());
    let mut placement = PlacementServiceClient::new(connection.clone());
    let mut on_server: Vec<Tenant> = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = tenants
            .list_tenants(ListTenantsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                database_server: server.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        on_server.extend(page.tenants);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let total = on_server.len();
    let (mut moved, mut skipped) = (0, 0);
    for (i, tenant) in on_server.iter().enumerate() {
        let n = i + 1;
        if tenant.state() != TenantState::Active {
            println!(
                "[{n}/{total}] {}: {}, not moved",
                tenant.slug,
                tenant
                    .state()
                    .as_str_name()
                    .trim_start_matches("TENANT_STATE_")
            );
            skipped += 1;
            continue;
        }
        let started = Instant::now();
        placement
            .move_tenant(MoveTenantRequest {
                tenant_id: tenant.id.clone(),
                target_server: to.to_owned(),
            })
            .await?;
        let now_on = wait(connection.clone(), &tenant.id, false).await?;
        moved += 1;
        println!(
            "[{n}/{total}] {}: moved to {now_on} in {:.1} s",
            tenant.slug,
            started.elapsed().as_secs_f64()
        );
    }
    println!("{moved} moved, {skipped} not moved (not ACTIVE) off {server}");
    Ok(())
}
