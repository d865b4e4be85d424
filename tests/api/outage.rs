//! A database outage: a private PostgreSQL cluster stopped under a running
//! server and started again. Health and RPCs say so, and the service comes
//! back by itself.

use std::time::Duration;

use tenantd::config::Config;
use tenantd::db::embedded::EmbeddedPostgres;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{CreateTenantRequest, GetTenantRequest, TenantState};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reports_a_database_outage_and_recovers_by_itself() {
    let dir = tempfile::Builder::new()
        .prefix("tenantd-outage-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("pg");
    let pg = EmbeddedPostgres::start(&data).await.unwrap();
    let mail = tempfile::tempdir().unwrap();
    let mut config = Config::new(pg.database_url());
    config.mail_dir = mail.path().to_owned();
    config.retry_base = Duration::from_millis(50);
    config.retry_cap = Duration::from_millis(500);
    config.poll_interval = Duration::from_millis(300);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tenantd::server::run(config, listener, shutdown.clone()));
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
    let before = create(&mut client, "before").await.unwrap();

    pg.stop().await.unwrap();
    wait_status(&mut health, ServingStatus::NotServing).await;
    let err = create(&mut client, "during").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        !err.message().contains("connect"),
        "no internal detail: {}",
        err.message()
    );

    let pg = EmbeddedPostgres::start(&data).await.unwrap();
    wait_status(&mut health, ServingStatus::Serving).await;
    let after = create(&mut client, "after").await.unwrap();
    for id in [before, after] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let t = client
                .get_tenant(GetTenantRequest {
                    tenant_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if t.tenant.unwrap().state == TenantState::Active as i32 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tenant {id} did not become ACTIVE after the outage"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
    pg.stop().await.unwrap();
}
