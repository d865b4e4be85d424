//! Drift: changes made by hand to a tenant's schema and role show as its
//! drift (an event when they change), and ReconcileTenant repairs what is
//! safe to repair and reports the rest.

use std::time::Duration;

use tenantd::proto::{ReconcileTenantRequest, TenantState};
use tenantd::steps::Registry;
use tonic::Code;

use crate::common::TestApp;

async fn drift_until(
    app: &TestApp,
    id: &str,
    what: &str,
    done: impl Fn(&[tenantd::proto::DriftCondition]) -> bool,
) -> Vec<tenantd::proto::DriftCondition> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = app.get(id).await;
        if done(&t.drift) {
            return t.drift;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never: {what}: {:?}",
            t.drift
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has(drift: &[tenantd::proto::DriftCondition], resource: &str) -> bool {
    drift.iter().any(|d| d.resource == resource)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_by_hand_show_as_drift_and_reconcile_repairs_what_is_safe() {
    // The gauge is recorded only once the recorder is installed.
    tenantd::telemetry::metrics::handle();
    let app = TestApp::start_with(
        |c| c.schedules.reconcile_interval = Duration::from_secs(1),
        Registry::new(),
    )
    .await;
    let created = app.create("drifty", "").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    let role = t.outputs["role_name"].clone();
    // A clean tenant has none, after a few passes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(app.get(&t.id).await.drift.is_empty());
    let (code, out, err) = crate::tenantctl::run(&app, &["doctor"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("1 tenant(s); healthy"), "{out}");
    assert!(out.contains("note     outbox: 0 due"), "{out}");

    // A contract recorded with another Wasm than the ledger's instance.
    let recorded = t.outputs["contract_wasm_hash"].clone();
    app.db
        .exec(&format!(
            "UPDATE tenants SET outputs = outputs || '{{\"contract_wasm_hash\": \"{}\"}}' WHERE id = '{}'",
            "0".repeat(64),
            t.id
        ))
        .await;
    let contract = format!("contract {}", t.contract_address);
    let drift = drift_until(&app, &t.id, "the contract", |d| has(d, &contract)).await;
    assert_eq!(drift[0].found, format!("an instance with Wasm {recorded}"));
    app.db
        .exec(&format!(
            "UPDATE tenants SET outputs = outputs || '{{\"contract_wasm_hash\": \"{recorded}\"}}' WHERE id = '{}'",
            t.id
        ))
        .await;
    drift_until(&app, &t.id, "the contract agrees again", |d| d.is_empty()).await;

    // A grant and a table, by hand.
    app.db
        .exec(&format!(
            "REVOKE ALL ON SCHEMA tenant_drifty FROM \"{role}\";
             DROP TABLE tenant_drifty.audit_logs"
        ))
        .await;
    let privileges = format!("privileges of {role} on schema tenant_drifty");
    let drift = drift_until(&app, &t.id, "the grant and the table", |d| {
        has(d, &privileges) && has(d, "table tenant_drifty.audit_logs")
    })
    .await;
    assert_eq!(drift.len(), 2, "{drift:?}");
    let events = app.events(&t.id).await;
    let detected: Vec<&String> = events
        .iter()
        .filter(|(kind, _, _)| kind == "DRIFT_DETECTED")
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(
        detected.len(),
        2,
        "the contract, then the grant and the table, once each: {detected:?}"
    );
    assert!(detected[1].contains(&privileges) && detected[1].contains("audit_logs"));

    // Then the role.
    app.db
        .exec(&format!(
            "REASSIGN OWNED BY \"{role}\" TO CURRENT_USER; DROP ROLE \"{role}\""
        ))
        .await;
    drift_until(&app, &t.id, "the role", |d| {
        has(d, &format!("role {role}")) && has(d, "owner of schema tenant_drifty")
    })
    .await;

    let mut client = app.client().await;
    let done = client
        .reconcile_tenant(ReconcileTenantRequest {
            tenant_id: t.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        done.repaired
            .iter()
            .any(|r| r.starts_with(&format!("role {role}")))
            && done
                .repaired
                .iter()
                .any(|r| r.starts_with("owner of schema")),
        "{done:?}"
    );
    assert_eq!(done.left.len(), 1, "{done:?}");
    assert!(done.left[0].contains("audit_logs") && done.left[0].contains("restore"));
    let remaining = done.tenant.unwrap().drift;
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(remaining[0].resource, "table tenant_drifty.audit_logs");
    // The role is back and owns its schema, with its privileges.
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
                 WHERE n.nspname = 'tenant_drifty' AND r.rolname = '{role}'
                   AND has_schema_privilege('{role}', 'tenant_drifty', 'USAGE')"
            ))
            .await,
        1
    );

    for (id, code) in [
        ("not-a-uuid", Code::InvalidArgument),
        ("0190c5d8-0000-7000-8000-000000000000", Code::NotFound),
    ] {
        let e = client
            .reconcile_tenant(ReconcileTenantRequest {
                tenant_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
    }
    // The doctor names what is left, and says so in its exit status.
    let (code, out, _) = crate::tenantctl::run(&app, &["doctor"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("PROBLEM  drifty") && out.contains("table tenant_drifty.audit_logs"),
        "{out}"
    );
    let (_, json, _) = crate::tenantctl::run(&app, &["doctor", "-o", "json"]).await;
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["healthy"], false);
    let metrics = tenantd::telemetry::metrics::handle().render();
    assert!(metrics.contains("tenantd_tenants_drifted"), "{metrics}");
    app.stop().await;
}
