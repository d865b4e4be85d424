//! Tenants across several real PostgreSQL clusters: where new tenants are
//! placed (weights, labels, capacity, draining, a server that stops), and
//! the lifecycle of a tenant on a registered server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tenantd::proto::placement_service_client::PlacementServiceClient;
use tenantd::proto::{
    CreateTenantRequest, DatabaseServer, DeprovisionMode, DeprovisionRequest,
    GetDatabaseServerRequest, ListDatabaseServersRequest, RegisterDatabaseServerRequest,
    RestoreTenantRequest, ResumeTenantRequest, SuspendTenantRequest, Tenant, TenantState,
    UpdateDatabaseServerRequest,
};
use tenantd::secrets::SecretKey;
use tenantd::steps::Registry;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::cluster::Cluster;
use crate::common::{TestApp, tenant, violated_fields};

/// A server with a sealed key to keep passwords, checking servers every
/// second.
async fn app() -> TestApp {
    TestApp::start_with(
        |c| {
            c.webhooks.secret_key = Some(Arc::new(
                SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            ));
            c.schedules.server_check_interval = Duration::from_secs(1);
        },
        Registry::new(),
    )
    .await
}

async fn register(
    placement: &mut PlacementServiceClient<Channel>,
    name: &str,
    cluster: &Cluster,
    weight: i32,
    labels: &[(&str, &str)],
) {
    placement
        .register_database_server(RegisterDatabaseServerRequest {
            server: Some(DatabaseServer {
                name: name.into(),
                url: cluster.url(),
                weight,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e:?}"));
}

/// Sets one field of a server by mask.
async fn update(
    placement: &mut PlacementServiceClient<Channel>,
    server: DatabaseServer,
    field: &str,
) {
    placement
        .update_database_server(UpdateDatabaseServerRequest {
            server: Some(server),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![field.into()],
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("update {field}: {e:?}"));
}

async fn create(app: &TestApp, slug: &str, placement: &str) -> Result<Tenant, tonic::Status> {
    let mut t = tenant(slug);
    t.placement = placement.into();
    app.client
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(t),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().tenant.unwrap())
}

async fn server(placement: &mut PlacementServiceClient<Channel>, name: &str) -> DatabaseServer {
    placement
        .get_database_server(GetDatabaseServerRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .server
        .unwrap()
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn schema_exists(schema: &str) -> String {
    format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tenants_spread_by_weight_and_pass_over_draining_full_and_stopped_servers() {
    let app = app().await;
    let mut placement = PlacementServiceClient::new(app.channel().await);
    let (a, b, c) = tokio::join!(Cluster::start(), Cluster::start(), Cluster::start());
    let mut c = c;
    register(&mut placement, "db-a", &a, 1, &[("region", "eu")]).await;
    register(&mut placement, "db-b", &b, 1, &[("region", "us")]).await;
    register(
        &mut placement,
        "db-c",
        &c,
        2,
        &[("region", "eu"), ("tier", "big")],
    )
    .await;
    let drained = DatabaseServer {
        name: "default".into(),
        draining: true,
        ..Default::default()
    };
    update(&mut placement, drained, "draining").await;

    // 40 tenants over weights 1, 1, 2.
    let mut tenants = Vec::new();
    for i in 0..40 {
        tenants.push(create(&app, &format!("spread-{i}"), "").await.unwrap());
    }
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tenants {
        *placed.entry(t.database_server.clone()).or_default() += 1;
    }
    for (name, ideal) in [("db-a", 10), ("db-b", 10), ("db-c", 20)] {
        let n = placed.get(name).copied().unwrap_or(0);
        assert!(n.abs_diff(ideal) <= 1, "{name}: {n} of 40, {placed:?}");
    }
    assert!(!placed.contains_key("default"), "{placed:?}");
    // Each one provisioned on its own server, and only there.
    let clusters: HashMap<&str, &Cluster> = [("db-a", &a), ("db-b", &b), ("db-c", &c)].into();
    for t in &tenants {
        let t = app.wait_for(&t.id, TenantState::Active).await;
        let schema = t.outputs["schema_name"].clone();
        for (name, cluster) in &clusters {
            let expected = i64::from(*name == t.database_server);
            assert_eq!(
                cluster.count(&schema_exists(&schema)).await,
                expected,
                "{schema} on {name}"
            );
        }
        assert_eq!(app.db.count(&schema_exists(&schema)).await, 0, "{schema}");
    }
    let listed: HashMap<String, i64> = placement
        .list_database_servers(ListDatabaseServersRequest {})
        .await
        .unwrap()
        .into_inner()
        .servers
        .into_iter()
        .map(|s| (s.name, s.tenant_count))
        .collect();
    for (name, n) in &placed {
        assert_eq!(listed[name], *n as i64, "{name}");
    }
    // The counters placement reads agree with the tenants table.
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) FROM database_servers s
                 WHERE (SELECT coalesce(sum(tenants), 0) FROM server_tenants WHERE server = s.name)
                    <> (SELECT count(*) FROM tenants WHERE database_server = s.name AND delete_time IS NULL)"
            )
            .await,
        0
    );

    // A replayed request gets the server it got the first time.
    let mut first = tenant("replayed");
    first.placement = "region=us".into();
    let request = CreateTenantRequest {
        tenant: Some(first),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let once = app
        .client
        .clone()
        .create_tenant(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .client
        .clone()
        .create_tenant(request)
        .await
        .unwrap()
        .into_inner();
    let (once, again) = (once.tenant.unwrap(), again.tenant.unwrap());
    assert_eq!(
        (once.id.as_str(), once.database_server.as_str()),
        (again.id.as_str(), "db-b")
    );
    assert_eq!(once.placement, "region=us");

    // A full server and a draining one get none; labels choose among the rest.
    let full = server(&mut placement, "db-a").await;
    let full = DatabaseServer {
        max_tenants: full.tenant_count as i32,
        ..full
    };
    update(&mut placement, full, "max_tenants").await;
    let drain_b = DatabaseServer {
        name: "db-b".into(),
        draining: true,
        ..Default::default()
    };
    update(&mut placement, drain_b, "draining").await;
    for i in 0..3 {
        let t = create(&app, &format!("later-{i}"), "").await.unwrap();
        assert_eq!(t.database_server, "db-c");
    }
    let t = create(&app, "big", "tier=big").await.unwrap();
    assert_eq!(t.database_server, "db-c");
    let e = create(&app, "in-us", "region=us").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("region=us") && e.message().contains("db-b (draining)"),
        "{}",
        e.message()
    );
    let e = create(&app, "on-a", "server=db-a").await.unwrap_err();
    assert!(e.message().contains("db-a (full: "), "{}", e.message());
    // Malformed selectors are named; nothing is written.
    let before = app.db.count("SELECT count(*) FROM tenants").await;
    for bad in ["region", "region=", "Region=eu", "a=1,a=2"] {
        let e = create(&app, "malformed", bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        assert!(
            violated_fields(&e)
                .iter()
                .all(|f| f.starts_with("tenant.placement")),
            "{bad}: {e:?}"
        );
    }
    assert_eq!(app.db.count("SELECT count(*) FROM tenants").await, before);
    // validate_only says where it would go.
    let mut preview = tenant("preview");
    preview.placement = "region=eu".into();
    let previewed = app
        .client
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(preview),
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(previewed.database_server, "db-c");

    // A server that stops gets no new tenants once a check finds it gone;
    // its tenants' work waits for it without spending attempts.
    let on_c = tenants
        .iter()
        .find(|t| t.database_server == "db-c")
        .unwrap();
    c.stop().await;
    until("db-c found unreachable", async || {
        !server(&mut placement, "db-c").await.reachable
    })
    .await;
    app.client
        .clone()
        .deprovision(DeprovisionRequest {
            tenant_id: on_c.id.clone(),
            mode: DeprovisionMode::Archive as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let e = create(&app, "nowhere", "").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    for why in [
        "db-a (full: ",
        "db-b (draining)",
        "db-c (unreachable at its last check",
        "default (draining)",
    ] {
        assert!(e.message().contains(why), "{why}: {}", e.message());
    }
    // Several retry periods pass while it is down; the teardown waits.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let waiting = app.get(&on_c.id).await;
    assert_eq!(waiting.state(), TenantState::Deprovisioning);
    assert!(
        waiting.steps.iter().all(|s| s.attempts <= 1),
        "{:?}",
        waiting.steps
    );
    c.restart().await;
    let gone = app.wait_for(&on_c.id, TenantState::Deprovisioned).await;
    // Connections from before the restart are checked, not used: no
    // attempt was spent on the outage.
    for s in gone.steps.iter().filter(|s| {
        ["revoke_access", "archive_schema", "export_archive"].contains(&s.name.as_str())
    }) {
        assert_eq!(s.attempts, 1, "{s:?}");
    }
    let archived = gone.outputs["archived_schema"].clone();
    assert_eq!(c.count(&schema_exists(&archived)).await, 1);
    until("db-c answers again", async || {
        server(&mut placement, "db-c").await.reachable
    })
    .await;
    let back = create(&app, "back", "").await.unwrap();
    assert_eq!(back.database_server, "db-c");
    app.wait_for(&back.id, TenantState::Active).await;

    app.stop().await;
    for cluster in [&a, &b, &c] {
        cluster.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_on_a_registered_server_is_suspended_deprovisioned_and_restored_there() {
    let app = app().await;
    let mut placement = PlacementServiceClient::new(app.channel().await);
    let other = Cluster::start().await;
    register(&mut placement, "other", &other, 1, &[]).await;
    let t = create(&app, "elsewhere", "server=other").await.unwrap();
    assert_eq!(t.database_server, "other");
    let t = app.wait_for(&t.id, TenantState::Active).await;
    let (schema, role) = (
        t.outputs["schema_name"].clone(),
        t.outputs["role_name"].clone(),
    );
    other
        .exec(&format!(
            "CREATE TABLE {schema}.documents AS SELECT i, md5(i::text) AS body FROM generate_series(1, 300) i;
             ALTER TABLE {schema}.documents OWNER TO {role}"
        ))
        .await;
    let usage = format!("SELECT has_schema_privilege('{role}', '{schema}', 'USAGE')::int");

    assert_eq!(other.count(&usage).await, 1);
    app.client
        .clone()
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: t.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(other.count(&usage).await, 0);
    app.client
        .clone()
        .resume_tenant(ResumeTenantRequest {
            tenant_id: t.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(other.count(&usage).await, 1);

    // Deprovisioned there: archived and exported from that server.
    app.client
        .clone()
        .deprovision(DeprovisionRequest {
            tenant_id: t.id.clone(),
            mode: DeprovisionMode::Archive as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let gone = app.wait_for(&t.id, TenantState::Deprovisioned).await;
    let archived = gone.outputs["archived_schema"].clone();
    assert_eq!(other.count(&schema_exists(&archived)).await, 1);
    assert_eq!(other.count(&schema_exists(&schema)).await, 0);
    assert!(
        gone.outputs.contains_key("export_sha256"),
        "{:?}",
        gone.outputs
    );

    // Restored there, rows and access as before.
    let back = app
        .client
        .clone()
        .restore_tenant(RestoreTenantRequest {
            tenant_id: t.id.clone(),
            target_state: TenantState::Active as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(back.state(), TenantState::Active);
    assert_eq!(back.database_server, "other");
    assert_eq!(
        other
            .count(&format!("SELECT count(*) FROM {schema}.documents"))
            .await,
        300
    );
    assert_eq!(other.count(&usage).await, 1);
    assert_eq!(app.db.count(&schema_exists(&schema)).await, 0);

    // A server that holds a tenant stays registered.
    let e = placement
        .deregister_database_server(tenantd::proto::DeregisterDatabaseServerRequest {
            name: "other".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Once the tenant is purged and deleted, the server may go, though the
    // deleted tenant's record still names it; the name can come back.
    app.client
        .clone()
        .deprovision(DeprovisionRequest {
            tenant_id: t.id.clone(),
            mode: DeprovisionMode::Purge as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    app.wait_for(&t.id, TenantState::Deprovisioned).await;
    assert_eq!(other.count(&schema_exists(&schema)).await, 0);
    app.client
        .clone()
        .delete_tenant(tenantd::proto::DeleteTenantRequest {
            tenant_id: t.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    placement
        .deregister_database_server(tenantd::proto::DeregisterDatabaseServerRequest {
            name: "other".into(),
        })
        .await
        .unwrap();
    let e = placement
        .get_database_server(GetDatabaseServerRequest {
            name: "other".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = create(&app, "gone-server", "server=other")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    register(&mut placement, "other", &other, 1, &[]).await;
    assert_eq!(server(&mut placement, "other").await.tenant_count, 0);
    let again = create(&app, "returned", "server=other").await.unwrap();
    assert_eq!(again.database_server, "other");
    app.wait_for(&again.id, TenantState::Active).await;
    app.stop().await;
    other.stop().await;
}
