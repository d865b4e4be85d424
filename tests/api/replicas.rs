//! Server processes that crash or share the work: exactly-once database
//! steps, leases that expire, nothing lost, nothing run twice.

use std::time::Duration;

use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{CreateTenantRequest, ListTenantsRequest, TenantState};
use tonic::transport::Channel;

use crate::common::process::ServerProcess;
use crate::common::{TestDb, tenant};

/// Steps whose effect is in the database: exactly once, even across kills.
const EXACTLY_ONCE: &str =
    "('create_schema', 'run_migrations', 'seed_roles_and_admin', 'activate')";

async fn create_many(
    client: &mut TenantServiceClient<Channel>,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let req = CreateTenantRequest {
            tenant: Some(tenant(&format!("{prefix}-{i:03}"))),
            ..Default::default()
        };
        ids.push(
            client
                .create_tenant(req)
                .await
                .unwrap()
                .into_inner()
                .tenant
                .unwrap()
                .id,
        );
    }
    ids
}

async fn count_active(client: &mut TenantServiceClient<Channel>) -> usize {
    let req = ListTenantsRequest {
        page_size: 1000,
        state: TenantState::Active as i32,
        ..Default::default()
    };
    client
        .list_tenants(req)
        .await
        .unwrap()
        .into_inner()
        .tenants
        .len()
}

async fn wait_all_active(client: &mut TenantServiceClient<Channel>, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while count_active(client).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every tenant reached ACTIVE"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every exactly-once step succeeded once per tenant, every tenant's
/// database objects exist once, and nothing is left in the outbox.
async fn assert_exactly_once(db: &TestDb, tenants: i64) {
    let twice = format!(
        "SELECT count(*) FROM (SELECT tenant_id, step FROM events
             WHERE kind = 'STEP_SUCCEEDED' AND step IN {EXACTLY_ONCE}
             GROUP BY tenant_id, step HAVING count(*) <> 1) x"
    );
    assert_eq!(
        db.count(&twice).await,
        0,
        "an exactly-once step succeeded twice"
    );
    let once = format!(
        "SELECT count(*) FROM events WHERE kind = 'STEP_SUCCEEDED' AND step IN {EXACTLY_ONCE}"
    );
    assert_eq!(db.count(&once).await, tenants * 4);
    let migrations = "SELECT count(*) FROM pg_tables WHERE tablename = 'schema_migrations' AND schemaname LIKE 'tenant_%'";
    assert_eq!(db.count(migrations).await, tenants);
    assert_eq!(
        db.count("SELECT count(*) FROM outbox").await,
        0,
        "work left in the outbox"
    );
    // Each tenant's log is in order: no step succeeds before it started, and
    // the last event is the change to ACTIVE.
    let out_of_order = "SELECT count(*) FROM events started JOIN events done
        ON done.tenant_id = started.tenant_id AND done.step = started.step
        WHERE started.kind = 'STEP_STARTED' AND done.kind = 'STEP_SUCCEEDED' AND done.id < started.id";
    assert_eq!(db.count(out_of_order).await, 0);
    let not_last = "SELECT count(*) FROM tenants t WHERE (SELECT e.message FROM events e
        WHERE e.tenant_id = t.id ORDER BY e.id DESC LIMIT 1) <> 'ACTIVE: provisioning complete'";
    assert_eq!(db.count(not_last).await, 0);
    // Each tenant schema holds exactly its three roles and one admin: the
    // seeding ran once (a second run would have been a no-op, but a
    // duplicated transaction would show as a second event above).
    let per_schema = "SELECT count(*) FROM tenants t WHERE (xpath('/row/c/text()',
        query_to_xml(format('SELECT count(*) AS c FROM %I.roles', 'tenant_' || replace(t.slug, '-', '_')), false, true, '')))[1]::text::int <> 3";
    assert_eq!(db.count(per_schema).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_nothing_and_runs_nothing_twice() {
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let lease_ms = 1500;
    let first = ServerProcess::spawn(&db, mail.path(), lease_ms).await;
    let mut client = first.client().await;
    let ids = create_many(&mut client, "crash", 50).await;
    // Let it get going, then pull the plug mid-run.
    while db
        .count("SELECT count(*) FROM events WHERE kind = 'STEP_SUCCEEDED'")
        .await
        < 20
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill_9().await;
    let active_at_kill = db
        .count("SELECT count(*) FROM tenants WHERE state = 'ACTIVE'")
        .await;
    let leased_at_kill = db
        .count("SELECT count(*) FROM outbox WHERE lease_owner IS NOT NULL")
        .await;
    eprintln!("at kill: {active_at_kill} of 50 active, {leased_at_kill} rows leased");

    let second = ServerProcess::spawn(&db, mail.path(), lease_ms).await;
    let mut client = second.client().await;
    wait_all_active(&mut client, ids.len()).await;
    assert_exactly_once(&db, 50).await;
    second.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_the_work_and_each_step_runs_once() {
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let a = ServerProcess::spawn(&db, mail.path(), 5000).await;
    let b = ServerProcess::spawn(&db, mail.path(), 5000).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let (left, right) = tokio::join!(
        create_many(&mut ca, "left", 50),
        create_many(&mut cb, "right", 50)
    );
    assert_eq!(left.len() + right.len(), 100);
    wait_all_active(&mut ca, 100).await;
    let started_twice =
        "SELECT count(*) FROM (SELECT tenant_id, step FROM events WHERE kind = 'STEP_STARTED'
                         GROUP BY tenant_id, step HAVING count(*) <> 1) x";
    assert_eq!(db.count(started_twice).await, 0, "a step ran twice");
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE kind = 'STEP_SUCCEEDED'")
            .await,
        500
    );
    assert_exactly_once(&db, 100).await;
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_attempts_all_died_with_their_workers_fails_without_running() {
    // The API alone writes the tenant; then the row looks as if five
    // workers had claimed it and died.
    let app = crate::common::TestApp::api_only().await;
    let t = app.create("acme", "").await;
    app.db.exec("UPDATE outbox SET attempt = 5").await;
    let mail = tempfile::tempdir().unwrap();
    let dispatcher = ServerProcess::spawn(&app.db, mail.path(), 5000).await;
    let failed = app.wait_for(&t.id, TenantState::Failed).await;
    let step = &failed.steps[0];
    assert_eq!(step.name, "create_schema");
    assert!(
        step.last_error.contains("lost with its worker"),
        "{}",
        step.last_error
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'")
            .await,
        0,
        "never ran"
    );
    dispatcher.terminate().await;
}
