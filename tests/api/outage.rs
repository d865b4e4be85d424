//! A database outage: a private PostgreSQL cluster stopped under a running
//! server and started again. Health and RPCs say so, and the service comes
//! back by itself.

use std::time::Duration;

use tenantd::config::Config;
use tenantd::db::embedded::EmbeddedPostgres;
use tenantd::proto::CreateTenantRequest;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use tenantd::steps::Registry;

use crate::common::steps::Scripted;
use crate::common::tenant;

async fn status(health: &mut HealthClient<Channel>) -> i32 {
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn wait_status(health: &mut HealthClient<Channel>, wanted: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while status(health).await != wanted as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never became {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(
    client: &mut TenantServiceClient<Channel>,
    slug: &str,
) -> Result<String, tonic::Status> {
    let req = CreateTenantRequest {
        tenant: Some(tenant(slug)),
        ..Default::default()
    };
    Ok(client
        .create_tenant(req)
        .await?
        .into_inner()
        .tenant
        .unwrap()
        .id)
}

async fn count(url: &str, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn =
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(url)
            .await
            .unwrap();
    let n: N = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(format!("SELECT ({sql})::bigint AS n")),
        &mut conn,
    )
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
    n.n
}

/// Steps whose effect is in the database: exactly once, outage or not.
const EXACTLY_ONCE: &str =
    "('create_schema', 'run_migrations', 'seed_roles_and_admin', 'activate')";
const PIPELINES: usize = 50;

/// The cluster stops for a few seconds while 50 pipelines are in flight
/// (some done, some blocked at a gate that opens during the outage, some not
/// started). Health turns NOT_SERVING, CreateTenant fails at once with
/// UNAVAILABLE, and after the restart everything resumes by itself: every
/// tenant ACTIVE, every database step once, nothing left in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pipelines_survive_a_database_outage_without_a_restart() {
    let dir = tempfile::Builder::new()
        .prefix("tenantd-outage-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("pg");
    let pg = EmbeddedPostgres::start(&data).await.unwrap();
    let url = pg.database_url();
    let mail = tempfile::tempdir().unwrap();
    let mut config = Config::new(&url);
    config.mail_dir = mail.path().to_owned();
    config.retry_base = Duration::from_millis(50);
    config.retry_cap = Duration::from_millis(500);
    config.poll_interval = Duration::from_millis(300);
    config.lease = Duration::from_secs(3);
    config.concurrency = 8;
    config.rate_limit = None;
    let gate = Scripted::gated("outage_gate");
    let mut steps = Registry::new();
    steps.register(gate.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tenantd::server::run_with(
        config,
        listener,
        shutdown.clone(),
        steps,
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (mut client, mut health) = (
        TenantServiceClient::new(channel.clone()),
        HealthClient::new(channel),
    );
    wait_status(&mut health, ServingStatus::Serving).await;
    let plan = r#"[{"name": "create_schema", "critical": true, "max_attempts": 10},
                   {"name": "run_migrations", "critical": true, "max_attempts": 10},
                   {"name": "outage_gate", "critical": true, "max_attempts": 10},
                   {"name": "seed_roles_and_admin", "critical": true, "max_attempts": 10},
                   {"name": "activate", "critical": true, "max_attempts": 10}]"#;
    let mut conn =
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&url)
            .await
            .unwrap();
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut conn,
        &format!("INSERT INTO plans (name, steps) VALUES ('gated', '{plan}')"),
    )
    .await
    .unwrap();
    drop(conn);
    let mut ids = Vec::new();
    for i in 0..PIPELINES {
        let mut t = tenant(&format!("outage-{i:02}"));
        t.plan = "gated".into();
        let created = client
            .create_tenant(CreateTenantRequest {
                tenant: Some(t),
                ..Default::default()
            })
            .await
            .unwrap();
        ids.push(created.into_inner().tenant.unwrap().id);
    }
    // A third gets through; the rest wait at the gate or have not started.
    gate.open(PIPELINES / 3);
    let active = "SELECT count(*) FROM tenants WHERE state = 'ACTIVE'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(&url, active).await < (PIPELINES / 4) as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress before the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pg.stop().await.unwrap();
    let stopped = tokio::time::Instant::now();
    // Attempts finish their outside work while the database is gone.
    gate.open(PIPELINES);
    wait_status(&mut health, ServingStatus::NotServing).await;
    let started = tokio::time::Instant::now();
    let err = create(&mut client, "during").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast, not after a timeout: {:?}",
        started.elapsed()
    );
    assert!(
        !err.message().contains("connect"),
        "no internal detail: {}",
        err.message()
    );
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed())).await;

    let pg = EmbeddedPostgres::start(&data).await.unwrap();
    println!("database down for {:?}", stopped.elapsed());
    wait_status(&mut health, ServingStatus::Serving).await;
    let after = create(&mut client, "after").await.unwrap();
    ids.push(after);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let all = ids.len() as i64;
    while count(&url, active).await < all {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {all} ACTIVE after the outage",
            count(&url, active).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&url, "SELECT count(*) FROM tenants").await,
        all,
        "nothing duplicated"
    );
    let twice = format!(
        "SELECT count(*) FROM (SELECT tenant_id, step FROM events
             WHERE kind = 'STEP_SUCCEEDED' AND step IN {EXACTLY_ONCE}
             GROUP BY tenant_id, step HAVING count(*) <> 1) x"
    );
    assert_eq!(
        count(&url, &twice).await,
        0,
        "a database step succeeded twice"
    );
    let once = format!(
        "SELECT count(*) FROM events WHERE kind = 'STEP_SUCCEEDED' AND step IN {EXACTLY_ONCE}"
    );
    assert_eq!(
        count(&url, &once).await,
        all * 4,
        "a database step is missing"
    );
    assert_eq!(count(&url, "SELECT count(*) FROM outbox").await, 0);
    let settled_twice = "SELECT count(*) FROM (SELECT tenant_id FROM events
             WHERE kind = 'STATE_CHANGED' AND state = 'ACTIVE'
             GROUP BY tenant_id HAVING count(*) <> 1) x";
    assert_eq!(count(&url, settled_twice).await, 0);
    shutdown.cancel();
    server.await.unwrap().unwrap();
    pg.stop().await.unwrap();
}
