//! Prometheus metrics: what a scrape of `/metrics` reports after real work.

use std::time::Duration;

use tenantd::proto::{GetTenantRequest, StreamProvisioningStatusRequest, TenantState};
use tenantd::steps::Registry;
use tonic::Code;

use crate::common::process::ServerProcess;
use crate::common::scrape::{sample, scrape};
use crate::common::steps::Scripted;
use crate::common::{TestApp, TestDb, tenant};

/// Steps, outcomes and retries, labelled by step: the names here are this
/// test's own, so other tests of the process cannot change the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_retries_and_time_to_active_are_counted_per_step_and_plan() {
    let metrics = tenantd::telemetry::metrics::handle();
    let flaky = Scripted {
        fail_first: 2,
        ..Scripted::new("metered_flaky")
    };
    let mut steps = Registry::new();
    steps.register(flaky.clone());
    let app = TestApp::start_with(|_| {}, steps).await;
    app.add_plan(
        "metered-plan",
        &[("metered_flaky", true, 5), ("activate", true, 1)],
    )
    .await;
    let created = app.create("acme", "metered-plan").await;
    app.wait_for(&created.id, TenantState::Active).await;

    let text = metrics.render();
    let step = |name: &str, outcome: &str| {
        sample(
            &text,
            "tenantd_step_attempts_total",
            &[
                ("step", "metered_flaky"),
                ("operation", "PROVISION"),
                ("outcome", outcome),
            ],
        )
        .unwrap_or_else(|| panic!("no {name} sample with outcome {outcome}:\n{text}"))
    };
    assert_eq!(step("attempts", "failed"), 2.0);
    assert_eq!(step("attempts", "succeeded"), 1.0);
    let labels = [("step", "metered_flaky"), ("operation", "PROVISION")];
    assert_eq!(
        sample(&text, "tenantd_step_retries_total", &labels),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "tenantd_step_claims_total", &labels),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "tenantd_step_duration_seconds_count", &labels),
        Some(3.0)
    );
    let plan = [("plan", "metered-plan")];
    assert_eq!(
        sample(&text, "tenantd_time_to_active_seconds_count", &plan),
        Some(1.0)
    );
    let took = sample(&text, "tenantd_time_to_active_seconds_sum", &plan).unwrap();
    assert!(took > 0.0 && took < 60.0, "time to ACTIVE {took} s");
}

/// A server process of its own, so every count is this test's: RPCs by
/// method and code, settled pipelines, tenants by state, the outbox, the
/// open streams, the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_reports_rpcs_pipelines_and_backlog() {
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = metrics_addr.to_string();
    let server = ServerProcess::spawn_full(
        &db,
        mail.path(),
        5_000,
        8,
        &[
            ("TENANTD_METRICS_LISTEN", listen.as_str()),
            ("TENANTD_POOL_SIZE", "7"),
        ],
        None,
    )
    .await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for slug in ["metrics-a", "metrics-b", "metrics-c"] {
        let created = client
            .create_tenant(tenantd::proto::CreateTenantRequest {
                tenant: Some(tenant(slug)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(created.tenant.unwrap().id);
    }
    let missing = client
        .get_tenant(GetTenantRequest {
            tenant_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    for id in &ids {
        server.wait_active(id).await;
    }
    // One stream stays open while the scrape runs (it follows a settled
    // tenant, so it does not end by itself).
    let mut stream = client
        .stream_provisioning_status(StreamProvisioningStatusRequest {
            tenant_id: ids[0].clone(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("the snapshot");

    let text = scrape(metrics_addr).await;
    let rpc = |method: &str, code: &str| {
        sample(
            &text,
            "tenantd_rpc_requests_total",
            &[
                ("method", &format!("/tenancy.v1.TenantService/{method}")),
                ("code", code),
            ],
        )
    };
    assert_eq!(rpc("CreateTenant", "OK"), Some(3.0), "{text}");
    assert_eq!(rpc("GetTenant", "NOT_FOUND"), Some(1.0));
    assert!(rpc("GetTenant", "OK").is_some_and(|n| n >= 3.0));
    assert_eq!(
        sample(
            &text,
            "tenantd_rpc_duration_seconds_count",
            &[("method", "/tenancy.v1.TenantService/CreateTenant")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "tenantd_pipelines_settled_total",
            &[("state", "ACTIVE")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "tenantd_tenants", &[("state", "ACTIVE")]),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "tenantd_tenants", &[("state", "PROVISIONING")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "tenantd_step_attempts_total",
            &[
                ("step", "create_schema"),
                ("operation", "PROVISION"),
                ("outcome", "succeeded")
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "tenantd_time_to_active_seconds_count",
            &[("plan", tenantd::domain::DEFAULT_PLAN)]
        ),
        Some(3.0)
    );
    assert_eq!(sample(&text, "tenantd_outbox_rows", &[]), Some(0.0));
    assert_eq!(sample(&text, "tenantd_outbox_due_rows", &[]), Some(0.0));
    assert_eq!(
        sample(&text, "tenantd_webhook_pending_deliveries", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "tenantd_outbox_oldest_due_age_seconds", &[]),
        Some(0.0)
    );
    assert_eq!(sample(&text, "tenantd_watchers", &[]), Some(1.0));
    assert_eq!(sample(&text, "tenantd_database_up", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "tenantd_db_pool_max_connections", &[]),
        Some(7.0)
    );
    assert!(sample(&text, "tenantd_db_pool_wait_seconds_count", &[]).is_some_and(|n| n > 0.0));
    assert!(
        text.contains("# HELP tenantd_rpc_requests_total "),
        "described"
    );

    // The stream ends when the client drops it: counted as CANCELLED.
    drop(stream);
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(metrics_addr).await;
        let cancelled = sample(
            &text,
            "tenantd_rpc_requests_total",
            &[
                (
                    "method",
                    "/tenancy.v1.TenantService/StreamProvisioningStatus",
                ),
                ("code", "CANCELLED"),
            ],
        );
        if cancelled == Some(1.0) && sample(&text, "tenantd_watchers", &[]) == Some(0.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.terminate().await;
}
