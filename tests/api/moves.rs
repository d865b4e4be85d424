//! MoveTenant between real PostgreSQL clusters: the rows arrive verified,
//! writes stop only while the data moves, a failed verification rolls the
//! move back, and a server killed at any step never leaves two live
//! copies, nor none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tenantd::outbox::hooks::Point;
use tenantd::proto::placement_service_client::PlacementServiceClient;
use tenantd::proto::{
    CreateTenantRequest, DatabaseServer, GetTenantRequest, MoveTenantRequest,
    RegisterDatabaseServerRequest, SuspendTenantRequest, Tenant, TenantState,
};
use tenantd::secrets::SecretKey;
use tenantd::steps::Registry;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::cluster::Cluster;
use crate::common::hold::HoldOnce;
use crate::common::process::ServerProcess;
use crate::common::{TestApp, TestDb, tenant, violated_fields};

/// Rows the moved tenant holds.
const ROWS: i64 = 100_000;

fn secret_key() -> String {
    use secrecy::ExposeSecret;
    SecretKey::generate_base64().expose_secret().to_owned()
}

async fn register(placement: &mut PlacementServiceClient<Channel>, name: &str, url: &str) {
    placement
        .register_database_server(RegisterDatabaseServerRequest {
            server: Some(DatabaseServer {
                name: name.into(),
                url: url.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e:?}"));
}

async fn move_to(
    placement: &mut PlacementServiceClient<Channel>,
    id: &str,
    target: &str,
) -> Result<Tenant, tonic::Status> {
    placement
        .move_tenant(MoveTenantRequest {
            tenant_id: id.into(),
            target_server: target.into(),
        })
        .await
        .map(|r| r.into_inner().tenant.unwrap())
}

/// A tenant's table of [`ROWS`] rows (with a key, text and times), owned
/// by its role, as its application would have made it.
async fn fill(url: &str, t: &Tenant) {
    let (schema, role) = (&t.outputs["schema_name"], &t.outputs["role_name"]);
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    conn.batch_execute(&format!(
        "CREATE TABLE {schema}.documents (id bigserial PRIMARY KEY, body text, at timestamptz, score float8);
         INSERT INTO {schema}.documents (body, at, score)
             SELECT md5(i::text), timestamptz '2026-01-01' + i * interval '1 minute', i / 7.0
             FROM generate_series(1, {ROWS}) i;
         ALTER TABLE {schema}.documents OWNER TO {role};
         CREATE TABLE {schema}.places (id int PRIMARY KEY, spot point, seen timestamptz);
         INSERT INTO {schema}.places
             SELECT i, point(i, -i), timestamptz '2026-06-01' + i * interval '1 hour'
             FROM generate_series(1, 100) i;
         ALTER TABLE {schema}.places OWNER TO {role};"
    ))
    .await
    .unwrap();
}

/// Per table of the schema on `url`: rows in key order, hashed; empty if
/// the schema is not there.
async fn contents(url: &str, schema: &str) -> BTreeMap<String, String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Sum {
        #[diesel(sql_type = diesel::sql_types::Text)]
        sum: String,
    }
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    conn.batch_execute("SET timezone = 'UTC'").await.unwrap();
    let tables: Vec<Row> = diesel::sql_query(format!(
        "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = '{schema}' ORDER BY 1"
    ))
    .load(&mut conn)
    .await
    .unwrap();
    let mut sums = BTreeMap::new();
    for Row { name } in tables {
        let sum: Sum = diesel::sql_query(format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')
                 AS sum
             FROM {schema}.{name} t"
        ))
        .get_result(&mut conn)
        .await
        .unwrap();
        sums.insert(name, sum.sum);
    }
    sums
}

/// Whether the tenant's role may write its table on `url`: `None` if the
/// schema is not there.
async fn writable(url: &str, t: &Tenant) -> Option<bool> {
    let (schema, role) = (&t.outputs["schema_name"], &t.outputs["role_name"]);
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let found: Found = diesel::sql_query(format!(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{schema}') AS found"
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    if !found.found {
        return None;
    }
    conn.batch_execute(&format!("SET ROLE {role}"))
        .await
        .unwrap();
    let wrote = conn
        .batch_execute(&format!(
            "BEGIN; INSERT INTO {schema}.documents (body) VALUES ('probe'); ROLLBACK;"
        ))
        .await;
    if let Err(e) = &wrote {
        assert!(e.to_string().contains("permission denied"), "{e}");
        conn.batch_execute("ROLLBACK").await.ok();
    }
    Some(wrote.is_ok())
}

/// Whether the tenant's role may read its table on `url`.
async fn readable(url: &str, t: &Tenant) -> bool {
    let (schema, role) = (&t.outputs["schema_name"], &t.outputs["role_name"]);
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    conn.batch_execute(&format!("SET ROLE {role}"))
        .await
        .unwrap();
    conn.batch_execute(&format!("SELECT count(*) FROM {schema}.documents"))
        .await
        .is_ok()
}

/// A tenant placed on `server`.
async fn create_on(
    client: &tenantd::proto::tenant_service_client::TenantServiceClient<Channel>,
    slug: &str,
    server: &str,
) -> Tenant {
    client
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                placement: format!("server={server}"),
                ..tenant(slug)
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
}

/// The state of the move steps, by name.
fn move_steps(t: &Tenant) -> BTreeMap<String, String> {
    t.steps
        .iter()
        .filter(|s| s.name.starts_with("move_"))
        .map(|s| (s.name.clone(), s.status().as_str_name().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moves_with_its_rows_verified_and_writes_refused_only_during_the_move() {
    let hold = HoldOnce::new("move_copy", "MOVE", Point::BeforeRecord);
    let app = TestApp::start_with_hooks(
        |c| {
            c.webhooks.secret_key = Some(Arc::new(
                SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            ))
        },
        Registry::new(),
        hold.hooks(),
    )
    .await;
    let mut placement = PlacementServiceClient::new(app.channel().await);
    let target = Cluster::start().await;
    register(&mut placement, "target", &target.url()).await;
    let created = app.create("mover", "").await;
    app.wait_for(&created.id, TenantState::Active).await;
    // The tenant starts on the control plane's own database.
    let t = create_on(&app.client, "moved", "default").await;
    let t = app.wait_for(&t.id, TenantState::Active).await;
    assert_eq!(t.database_server, "default");
    let schema = t.outputs["schema_name"].clone();
    fill(app.db.url(), &t).await;
    let before = contents(app.db.url(), &schema).await;
    assert_eq!(before["documents"].split(':').next(), Some("100000"));
    assert_eq!(writable(app.db.url(), &t).await, Some(true));

    // Refused, and nothing starts: a malformed id, an unknown server, the
    // server it is on, a tenant that is not ACTIVE.
    let e = move_to(&mut placement, "nope", "target").await.unwrap_err();
    assert_eq!(violated_fields(&e), ["tenant_id"]);
    let e = move_to(&mut placement, &t.id, "nowhere").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = move_to(&mut placement, &t.id, "default").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("already"), "{}", e.message());
    app.client
        .clone()
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = move_to(&mut placement, &created.id, "target")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        app.db.count("SELECT count(*) FROM tenant_moves").await,
        0,
        "nothing started"
    );

    // While the data moves: reads go on, writes are refused, the tenant
    // still lives on its source, and nothing else may start.
    let moving = move_to(&mut placement, &t.id, "target").await.unwrap();
    assert_eq!(moving.database_server, "default");
    hold.held().await;
    assert_eq!(writable(app.db.url(), &t).await, Some(false));
    assert!(
        readable(app.db.url(), &t).await,
        "reads go on during the move"
    );
    assert_eq!(app.get(&t.id).await.database_server, "default");
    let e = move_to(&mut placement, &t.id, "target").await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    let e = app
        .client
        .clone()
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: t.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    hold.release();

    // Then it lives on the target, alone, with every row, writable.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let moved = loop {
        let now = app.get(&t.id).await;
        if move_steps(&now).get("move_drop_source").map(String::as_str)
            == Some("STEP_STATUS_SUCCEEDED")
        {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            move_steps(&now)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(moved.state(), TenantState::Active);
    assert_eq!(moved.database_server, "target");
    let events = app.events(&t.id).await;
    assert!(
        events
            .iter()
            .any(|(kind, _, m)| kind == "STATE_CHANGED"
                && m.contains("moved to database server target")),
        "{events:?}"
    );
    assert_eq!(contents(&target.url(), &schema).await, before);
    assert!(
        contents(app.db.url(), &schema).await.is_empty(),
        "the source copy is gone"
    );
    assert_eq!(writable(&target.url(), &t).await, Some(true));
    assert!(readable(&target.url(), &t).await);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM tenant_moves WHERE tenant_id = '{}' AND outcome = 'MOVED'
                   AND (tables -> 'documents' ->> 'rows')::int8 = {ROWS} AND bytes > 0
                   AND tables -> 'documents' ->> 'checksum' LIKE 'h:%'
                   AND tables -> 'places' ->> 'checksum' LIKE 'm:%'",
                t.id
            ))
            .await,
        1
    );

    for step in tenantd::domain::MOVE_STEPS {
        assert!(
            events
                .iter()
                .any(|(kind, s, _)| kind == "STEP_SUCCEEDED" && s == step),
            "{step}: {events:?}"
        );
    }
    // The counts placement reads follow the tenant.
    for (server, n) in [("default", 1), ("target", 1)] {
        assert_eq!(
            app.db
                .count(&format!(
                    "SELECT coalesce(sum(tenants), 0) FROM server_tenants WHERE server = '{server}'"
                ))
                .await,
            n,
            "{server}"
        );
    }

    // Draining the target from the command line moves it back, with
    // progress, and the server can then go.
    let (code, out, err) =
        crate::tenantctl::run(&app, &["server", "drain", "target", "--move"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("[1/1] moved: moved to default in "), "{out}");
    assert_eq!(app.get(&t.id).await.database_server, "default");
    assert_eq!(contents(app.db.url(), &schema).await, before);
    assert!(contents(&target.url(), &schema).await.is_empty());
    let (code, out, err) = crate::tenantctl::run(&app, &["server", "deregister", "target"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    app.stop().await;
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_does_not_verify_is_rolled_back_with_writes_restored() {
    let hold = HoldOnce::new("move_copy", "MOVE", Point::BeforeRecord);
    let app = TestApp::start_with_hooks(
        |c| {
            c.webhooks.secret_key = Some(Arc::new(
                SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            ))
        },
        Registry::new(),
        hold.hooks(),
    )
    .await;
    let mut placement = PlacementServiceClient::new(app.channel().await);
    let (source, target) = tokio::join!(Cluster::start(), Cluster::start());
    register(&mut placement, "source", &source.url()).await;
    let t = create_on(&app.client, "rolled", "source").await;
    let t = app.wait_for(&t.id, TenantState::Active).await;
    assert_eq!(t.database_server, "source");
    register(&mut placement, "target", &target.url()).await;
    let schema = t.outputs["schema_name"].clone();
    fill(&source.url(), &t).await;
    let before = contents(&source.url(), &schema).await;

    move_to(&mut placement, &t.id, "target").await.unwrap();
    hold.held().await;
    // The copy loses a row before it is verified.
    target
        .exec(&format!("DELETE FROM {schema}.documents WHERE id = 4242"))
        .await;
    hold.release();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let back = loop {
        let now = app.get(&t.id).await;
        if move_steps(&now).get("move_freeze").map(String::as_str)
            == Some("STEP_STATUS_COMPENSATED")
        {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            move_steps(&now)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(back.state(), TenantState::Active);
    assert_eq!(back.database_server, "source");
    assert!(
        back.state_reason.contains("move_verify failed"),
        "{}",
        back.state_reason
    );
    assert_eq!(contents(&source.url(), &schema).await, before);
    assert_eq!(writable(&source.url(), &t).await, Some(true));
    assert!(
        contents(&target.url(), &schema).await.is_empty(),
        "the copy is gone"
    );
    let events = app.events(&t.id).await;
    assert!(
        events
            .iter()
            .any(|(kind, _, m)| kind == "STATE_CHANGED" && m.contains("the move was rolled back")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(kind, step, m)| kind == "STEP_FAILED"
            && step == "move_verify"
            && m.contains("documents (100000 rows here, 99999 there)")),
        "{events:?}"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM tenant_moves WHERE outcome = 'ROLLED_BACK'")
            .await,
        1
    );
    // And it can move again.
    move_to(&mut placement, &t.id, "target").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.get(&t.id).await.database_server != "target"
        || app.db.count("SELECT count(*) FROM outbox").await > 0
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(contents(&target.url(), &schema).await, before);
    app.stop().await;
    source.stop().await;
    target.stop().await;
}

/// Server processes on one database, each started to be killed (SIGKILL)
/// where a move step has done its work and not recorded it yet.
async fn spawn_parked(
    db: &TestDb,
    dir: &std::path::Path,
    key: &str,
    park: Option<&str>,
) -> ServerProcess {
    let dir_text = dir.to_string_lossy().into_owned();
    let mut env = vec![("TENANTD_SECRET_KEY", key)];
    if let Some(step) = park {
        env.push(("TENANTD_TEST_PARK_BEFORE_RECORD", step));
        env.push(("TENANTD_TEST_PARK_DIR", &dir_text));
    }
    ServerProcess::spawn_full(db, dir, 1500, 4, &env, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_killed_at_each_step_resumes_with_one_live_copy_and_every_row() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let key = secret_key();
    let (source, target) = tokio::join!(Cluster::start(), Cluster::start());
    let server = spawn_parked(&db, dir.path(), &key, None).await;
    let mut placement = PlacementServiceClient::new(server.channel().await);
    register(&mut placement, "source", &source.url()).await;
    let t = create_on(&server.client().await, "killed", "source").await;
    let t = server.wait_active(&t.id).await;
    assert_eq!(t.database_server, "source");
    register(&mut placement, "target", &target.url()).await;
    let schema = t.outputs["schema_name"].clone();
    fill(&source.url(), &t).await;
    let before = contents(&source.url(), &schema).await;
    server.kill_9().await;

    let mut started = false;
    for step in tenantd::domain::MOVE_STEPS {
        let marker = dir.path().join(step);
        let server = spawn_parked(&db, dir.path(), &key, Some(step)).await;
        if !started {
            let mut placement = PlacementServiceClient::new(server.channel().await);
            move_to(&mut placement, &t.id, "target").await.unwrap();
            started = true;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !marker.exists() {
            if tokio::time::Instant::now() > deadline {
                let running = db
                    .count(&format!(
                        "SELECT count(*) FROM tenant_steps WHERE tenant_id = '{}' AND status = 'RUNNING'",
                        t.id
                    ))
                    .await;
                let waiting = source
                    .count("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    .await;
                panic!(
                    "never parked at {step}: {running} step(s) running, {waiting} lock(s) waited for on the source"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill_9().await;
        std::fs::remove_file(&marker).unwrap();
        // Where the control plane says the tenant lives, all of it is there;
        // the tenant's role may write in one place at most.
        let home = db
            .count(&format!(
                "SELECT (database_server = 'target')::int FROM tenants WHERE id = '{}'",
                t.id
            ))
            .await;
        let (home_url, other_url) = if home == 1 {
            (target.url(), source.url())
        } else {
            (source.url(), target.url())
        };
        assert_eq!(
            contents(&home_url, &schema).await,
            before,
            "killed at {step}"
        );
        let writers = [
            writable(&home_url, &t).await,
            writable(&other_url, &t).await,
        ]
        .into_iter()
        .filter(|w| *w == Some(true))
        .count();
        assert!(writers <= 1, "two live copies when killed at {step}");
    }
    // The last start has nothing parked: the move ends.
    let server = spawn_parked(&db, dir.path(), &key, None).await;
    let mut client = server.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let moved = loop {
        let now = client
            .get_tenant(GetTenantRequest {
                tenant_id: t.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .tenant
            .unwrap();
        if move_steps(&now).get("move_drop_source").map(String::as_str)
            == Some("STEP_STATUS_SUCCEEDED")
        {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            move_steps(&now)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(moved.database_server, "target");
    assert_eq!(moved.state(), TenantState::Active);
    assert_eq!(contents(&target.url(), &schema).await, before);
    assert!(contents(&source.url(), &schema).await.is_empty());
    assert_eq!(writable(&target.url(), &t).await, Some(true));
    // Each step recorded its success once, though killed ones ran again.
    for step in tenantd::domain::MOVE_STEPS {
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM events WHERE tenant_id = '{}' AND kind = 'STEP_SUCCEEDED' AND step = '{step}'",
                t.id
            ))
            .await,
            1,
            "{step}"
        );
    }
    server.terminate().await;
    source.stop().await;
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_stopped_after_its_switch_is_resolved_forward() {
    let hold = HoldOnce::new("move_switch", "MOVE", Point::BeforeRecord);
    let app = TestApp::start_with_hooks(
        |c| {
            c.webhooks.secret_key = Some(Arc::new(
                SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            ))
        },
        Registry::new(),
        hold.hooks(),
    )
    .await;
    let mut placement = PlacementServiceClient::new(app.channel().await);
    let target = Cluster::start().await;
    register(&mut placement, "target", &target.url()).await;
    let t = create_on(&app.client, "stuck", "default").await;
    let t = app.wait_for(&t.id, TenantState::Active).await;
    let (schema, role) = (
        t.outputs["schema_name"].clone(),
        t.outputs["role_name"].clone(),
    );
    fill(app.db.url(), &t).await;
    let before = contents(app.db.url(), &schema).await;

    // The tenant's role goes missing on the target just before the switch:
    // writes cannot return there, and every attempt says so.
    move_to(&mut placement, &t.id, "target").await.unwrap();
    hold.held().await;
    target.exec(&format!("DROP ROLE {role}")).await;
    hold.release();
    let stuck = app.wait_for(&t.id, TenantState::NeedsAttention).await;
    assert_eq!(stuck.database_server, "target", "past the switch");
    assert!(
        stuck.state_reason.contains("move_restore_writes"),
        "{}",
        stuck.state_reason
    );
    assert_eq!(contents(&target.url(), &schema).await, before);

    // Put right by hand, then retried: the move finishes forward.
    target.exec(&format!("CREATE ROLE {role} NOLOGIN")).await;
    let resolved = app
        .client
        .clone()
        .resolve_tenant(tenantd::proto::ResolveTenantRequest {
            tenant_id: t.id.clone(),
            action: tenantd::proto::ResolveAction::RetryCompensation as i32,
            note: "role recreated".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(resolved.state(), TenantState::Active);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while move_steps(&app.get(&t.id).await)
        .get("move_drop_source")
        .map(String::as_str)
        != Some("STEP_STATUS_SUCCEEDED")
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(writable(&target.url(), &t).await, Some(true));
    assert!(contents(app.db.url(), &schema).await.is_empty());
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM tenant_moves WHERE outcome = 'MOVED'")
            .await,
        1
    );
    app.stop().await;
    target.stop().await;
}
