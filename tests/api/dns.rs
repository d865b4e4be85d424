//! `dns_records` against a real BIND 9: a tenant's name by RFC 2136
//! updates signed with TSIG, refused when the name is someone else's or the
//! key is wrong, and gone when the tenant is deprovisioned.

use secrecy::SecretString;
use tenantd::config::dns::{DnsConfig, TsigAlgorithm};
use tenantd::proto::{DeprovisionRequest, StepStatus, TenantState};
use tenantd::steps::Registry;

use crate::common::TestApp;
use crate::common::bind::{KEY_NAME, Named, ZONE};

fn config(named: &Named, secret: &str) -> DnsConfig {
    DnsConfig {
        server: named.server().parse().unwrap(),
        zone: format!("{ZONE}."),
        base_domain: format!("{ZONE}."),
        key_name: format!("{KEY_NAME}."),
        algorithm: TsigAlgorithm::HmacSha256,
        secret: SecretString::from(secret.to_owned()),
        target: "app.example.com".into(),
    }
}

/// The default plan's database steps, then the name.
async fn add_plan(app: &TestApp) {
    app.add_plan(
        "named",
        &[
            ("create_schema", true, 3),
            ("run_migrations", true, 3),
            ("seed_roles_and_admin", true, 3),
            ("dns_records", true, 3),
            ("activate", true, 3),
        ],
    )
    .await;
}

fn dns_step(t: &tenantd::proto::Tenant) -> &tenantd::proto::Step {
    t.steps.iter().find(|s| s.name == "dns_records").unwrap()
}

#[tokio::test]
async fn a_tenant_gets_its_name_and_loses_it_when_deprovisioned() {
    let named = Named::start(&[]).await;
    let dns = config(&named, &named.secret);
    let app = TestApp::start_with(|c| c.dns = Some(dns), Registry::new()).await;
    add_plan(&app).await;
    let created = app.create("acme", "named").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    assert_eq!(t.outputs["dns_name"], format!("acme.{ZONE}"));
    assert_eq!(dns_step(&t).attempts, 1);
    assert_eq!(
        named.dig(&format!("acme.{ZONE}"), "CNAME").await,
        ["app.example.com."]
    );
    assert_eq!(
        named.dig(&format!("_tenantd.acme.{ZONE}"), "TXT").await,
        [format!("\"tenantd-tenant={}\"", created.id)]
    );

    let mut client = app.client().await;
    client
        .deprovision(DeprovisionRequest {
            tenant_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.wait_for(&created.id, TenantState::Deprovisioned).await;
    assert!(named.dig(&format!("acme.{ZONE}"), "CNAME").await.is_empty());
    assert!(
        named
            .dig(&format!("_tenantd.acme.{ZONE}"), "TXT")
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_name_in_use_by_someone_else_fails_the_step_and_is_left_alone() {
    let named = Named::start(&["taken IN A 192.0.2.7"]).await;
    let dns = config(&named, &named.secret);
    let app = TestApp::start_with(|c| c.dns = Some(dns), Registry::new()).await;
    add_plan(&app).await;
    let created = app.create("taken", "named").await;
    let t = app.wait_for(&created.id, TenantState::Failed).await;
    let step = dns_step(&t);
    assert_eq!(step.status(), StepStatus::Failed);
    assert_eq!(step.attempts, 1, "a refusal is not retried");
    assert!(
        step.last_error.contains(&format!("taken.{ZONE} is in use")),
        "{}",
        step.last_error
    );
    assert_eq!(
        named.dig(&format!("taken.{ZONE}"), "A").await,
        ["192.0.2.7"]
    );
    assert!(
        named
            .dig(&format!("_tenantd.taken.{ZONE}"), "TXT")
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_tsig_secret_is_refused_at_once_and_changes_nothing() {
    let named = Named::start(&[]).await;
    let wrong = config(&named, "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=");
    let app = TestApp::start_with(|c| c.dns = Some(wrong), Registry::new()).await;
    add_plan(&app).await;
    let created = app.create("keyless", "named").await;
    let t = app.wait_for(&created.id, TenantState::Failed).await;
    let step = dns_step(&t);
    assert_eq!(step.attempts, 1, "a refused key is not retried");
    assert!(step.last_error.contains("NOTAUTH"), "{}", step.last_error);
    assert!(
        !step.last_error.contains("c2VjcmV0"),
        "the secret leaked: {}",
        step.last_error
    );
    assert!(
        named
            .dig(&format!("keyless.{ZONE}"), "CNAME")
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_retried_until_it_is_back() {
    let mut named = Named::start(&[]).await;
    let dns = config(&named, &named.secret);
    let app = TestApp::start_with(|c| c.dns = Some(dns), Registry::new()).await;
    app.add_plan("patient", &[("dns_records", true, 50)]).await;
    named.stop().await;
    let created = app.create("patient", "patient").await;
    // It fails and is retried while the server is down.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t = app.get(&created.id).await;
        if dns_step(&t).attempts >= 2 {
            assert_eq!(t.state(), TenantState::Provisioning);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", dns_step(&t));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    named.start_again().await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    assert_eq!(t.outputs["dns_name"], format!("patient.{ZONE}"));
    assert_eq!(
        named.dig(&format!("patient.{ZONE}"), "CNAME").await,
        ["app.example.com."]
    );
    app.stop().await;
}
