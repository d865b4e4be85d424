//! `tenantd serve --demo`: once the server is up, create one tenant through
//! the same use case CreateTenant calls, and log its steps until it settles,
//! so that a first run shows a whole provisioning pipeline.

use std::time::Duration;

use crate::domain::{Caller, StepStatus, TenantInput};
use crate::ops::Ops;

/// How often the demo looks at the tenant.
const POLL: Duration = Duration::from_millis(50);
/// The demo gives up watching after this long.
const PATIENCE: Duration = Duration::from_secs(120);

/// Creates a demo tenant and logs its progress.
pub async fn run(ops: Ops, listen: String) {
    let slug = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let input = TenantInput {
        slug: slug.clone(),
        display_name: "Demo Workspace".into(),
        admin_email: "admin@demo.example".into(),
        plan: String::new(),
        labels: [("created-by".to_owned(), "demo".to_owned())].into(),
        placement: String::new(),
        contract_owner: String::new(),
    };
    let caller = Caller::system("demo");
    let tenant = match ops.create_tenant(&caller, input, "", false).await {
        Ok(tenant) => tenant,
        Err(e) => {
            tracing::error!(error = %e, "demo: creating the tenant failed");
            return;
        }
    };
    tracing::info!(tenant_id = %tenant.id, %slug, "demo: tenant created, provisioning");
    let mut shown = vec![StepStatus::Pending; tenant.steps.len()];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let Ok(t) = ops.get_tenant(tenant.id).await else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        for (i, step) in t.steps.iter().enumerate() {
            if shown.get(i) != Some(&step.status) {
                tracing::info!(step = %step.name, status = %step.status, attempts = step.attempts, "demo: step");
                if let Some(slot) = shown.get_mut(i) {
                    *slot = step.status;
                }
            }
        }
        if t.state.is_terminal() {
            tracing::info!(state = %t.state, outputs = ?t.outputs, "demo: tenant settled");
            tracing::info!(
                "demo: try `grpcurl -plaintext -d '{{\"tenant_id\": \"{}\"}}' {listen} tenancy.v1.TenantService/GetTenant`",
                t.id
            );
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    tracing::warn!("demo: the tenant did not settle within {PATIENCE:?}");
}
