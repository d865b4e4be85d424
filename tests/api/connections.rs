//! A server stopped inside a process gives back every database connection
//! it opened: pools, the LISTEN connection, the webhook sender, watchers.

use std::time::Duration;

use tenantd::proto::{StreamProvisioningStatusRequest, TenantState};
use tenantd::steps::Registry;

use crate::common::receiver::Receiver;
use crate::common::{TestApp, TestDb};
use crate::webhooks::{create, endpoint, webhooks};

/// Sessions on `db`'s database other than the one asking.
async fn sessions(db: &TestDb) -> i64 {
    db.count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await
}

/// What the open sessions last ran, to tell whose they are.
async fn last_queries(db: &TestDb) -> String {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        q: String,
    }
    use diesel_async::RunQueryDsl;
    let mut conn = db.conn().await;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT state || ': ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 80) AS q
         FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .load(&mut conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| r.q)
        .collect::<Vec<_>>()
        .join(" | ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_closes_every_connection_it_opened() {
    for round in 0..2 {
        let mut app = TestApp::start_with(webhooks, Registry::new()).await;
        let receiver = Receiver::start().await;
        let mut hooks =
            tenantd::proto::webhook_service_client::WebhookServiceClient::new(app.channel().await);
        create(&mut hooks, endpoint("all", &receiver.url("/"), &["*"])).await;
        let created = app.create("acme", "default").await;
        app.wait_for(&created.id, TenantState::Active).await;
        receiver
            .wait("tenant.active", |r| {
                r.iter().any(|r| r.json()["type"] == "tenant.active")
            })
            .await;
        // A watcher that follows the tenant stays open until shutdown.
        let mut stream = app
            .client
            .clone()
            .stream_provisioning_status(StreamProvisioningStatusRequest {
                tenant_id: created.id.clone(),
                resume_after_event_id: None,
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().expect("the snapshot");
        assert!(
            sessions(&app.db).await > 0,
            "round {round}: the server is connected"
        );

        app.shutdown().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = sessions(&app.db).await;
            if left == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: {left} connection(s) still open 10 s after the server stopped: {}",
                last_queries(&app.db).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(stream);
    }
}
