//! Webhook endpoints and signed event subscriptions, against real HTTP
//! receivers on loopback. Signatures are checked with the Standard Webhooks
//! reference implementation (the `standardwebhooks` crate), not ours.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tenantd::config::Config;
use tenantd::proto::webhook_service_client::WebhookServiceClient;
use tenantd::proto::{
    CreateEndpointRequest, DeleteEndpointRequest, DeliveryStatus, Endpoint, GetEndpointRequest,
    ListDeliveriesRequest, ListEndpointsRequest, RetryDeliveryRequest, RotateEndpointSecretRequest,
    TenantState, UpdateEndpointRequest,
};
use tenantd::secrets::SecretKey;
use tenantd::steps::Registry;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::process::ServerProcess;
use crate::common::receiver::{Received, Receiver};
use crate::common::scrape::sample;
use crate::common::{TestApp, TestDb, violated_fields};

/// A key, private addresses allowed (the receivers are on loopback), and a
/// schedule of short retries so nothing waits long.
pub(crate) fn webhooks(c: &mut Config) {
    c.webhooks.secret_key = Some(Arc::new(
        SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
    ));
    c.webhooks.allow_private = true;
    c.webhooks.schedule = vec![Duration::from_millis(50); 3];
}

pub(crate) async fn start() -> (TestApp, WebhookServiceClient<Channel>) {
    let app = TestApp::start_with(webhooks, Registry::new()).await;
    let client = WebhookServiceClient::new(app.channel().await);
    (app, client)
}

pub(crate) fn endpoint(name: &str, url: &str, types: &[&str]) -> Endpoint {
    Endpoint {
        name: name.into(),
        url: url.into(),
        description: format!("{name} receiver"),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        ..Default::default()
    }
}

pub(crate) async fn create(
    client: &mut WebhookServiceClient<Channel>,
    endpoint: Endpoint,
) -> (Endpoint, String) {
    let r = client
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(endpoint),
        })
        .await
        .expect("create endpoint")
        .into_inner();
    (r.endpoint.unwrap(), r.secret)
}

/// Verifies `received` with the reference implementation and `secret`.
pub(crate) fn verify(secret: &str, received: &Received) -> Result<(), String> {
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, received.header(name).parse().unwrap());
    }
    standardwebhooks::Webhook::new(secret)
        .map_err(|e| e.to_string())?
        .verify(&received.body, &headers)
        .map_err(|e| e.to_string())
}

/// Verifies deliveries with the Python `standardwebhooks` package: one
/// verdict per (secret, delivery).
async fn python_verifies(checks: &[(&str, &Received)]) -> Vec<bool> {
    use base64::Engine as _;
    let input: Vec<serde_json::Value> = checks
        .iter()
        .map(|(secret, r)| {
            let headers: serde_json::Map<String, serde_json::Value> =
                ["webhook-id", "webhook-timestamp", "webhook-signature"]
                    .into_iter()
                    .map(|name| (name.to_owned(), r.header(name).into()))
                    .collect();
            serde_json::json!({
                "secret": secret,
                "headers": headers,
                "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
            })
        })
        .collect();
    let python = crate::examples::python().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/examples/python/webhook_check.py"
    );
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(&serde_json::to_vec(&input).unwrap())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    results.iter().map(|r| r["valid"] == true).collect()
}

fn of_type<'a>(received: &'a [Received], kind: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.json()["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_managed_and_bad_input_writes_nothing() {
    let (app, mut client) = start().await;
    let (created, secret) = create(
        &mut client,
        endpoint(
            "billing",
            "https://billing.example.com/hooks",
            &["tenant.active"],
        ),
    )
    .await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            &secret["whsec_".len()..]
        )
        .unwrap()
        .len(),
        32
    );
    assert_eq!(created.etag, "\"1\"");
    assert!(created.create_time.is_some());
    let sealed = app
        .db
        .count(&format!(
            "SELECT count(*) FROM webhook_endpoints WHERE position(convert_to('{secret}', 'UTF8') IN secret_sealed) > 0"
        ))
        .await;
    assert_eq!(sealed, 0, "the secret is stored sealed");

    // Bad input: each field named, nothing written.
    let bad = client
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(endpoint(
                "Bad_Name",
                "ftp://billing.example.com",
                &["tenant.active", "tenant.exploded"],
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let mut fields = violated_fields(&bad);
    fields.sort();
    assert_eq!(
        fields,
        ["endpoint.event_types[1]", "endpoint.name", "endpoint.url"]
    );
    let taken = client
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(endpoint("billing", "https://other.example.com/", &[])),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(
        app.db.count("SELECT count(*) FROM webhook_endpoints").await,
        1
    );

    // Update by mask, with the etag read.
    let mut change = created.clone();
    change.description = "Stripe bridge".into();
    change.url = "https://ignored.example.com/".into();
    let updated = client
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(change.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    assert_eq!(updated.description, "Stripe bridge");
    assert_eq!(updated.url, created.url, "only masked fields change");
    assert_eq!(updated.etag, "\"2\"");
    let stale = client
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(change.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "the etag was \"1\"");
    let unknown_field = client
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(updated.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_field.code(), Code::InvalidArgument);

    // A second endpoint, then list, get, delete.
    create(
        &mut client,
        endpoint("crm", "https://crm.example.com/", &["*"]),
    )
    .await;
    let listed = client
        .list_endpoints(ListEndpointsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.endpoints.len(), 1);
    assert_eq!(listed.endpoints[0].name, "billing");
    let next = client
        .list_endpoints(ListEndpointsRequest {
            page_size: 1,
            page_token: listed.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.endpoints[0].name, "crm");
    assert!(next.next_page_token.is_empty());
    client
        .delete_endpoint(DeleteEndpointRequest {
            name: "crm".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let gone = client
        .get_endpoint(GetEndpointRequest { name: "crm".into() })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_address_is_refused_without_the_flag() {
    let app = TestApp::start_with(
        |c| {
            webhooks(c);
            c.webhooks.allow_private = false;
        },
        Registry::new(),
    )
    .await;
    let mut client = WebhookServiceClient::new(app.channel().await);
    for url in [
        "http://hooks.example.com/",
        "https://127.0.0.1/",
        "https://10.0.0.8/hook",
        "https://[::1]/",
        "https://169.254.169.254/latest",
        "https://localhost/",
    ] {
        let refused = client
            .create_endpoint(CreateEndpointRequest {
                endpoint: Some(endpoint("private", url, &[])),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{url}");
        assert_eq!(violated_fields(&refused), ["endpoint.url"], "{url}");
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM webhook_endpoints").await,
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_receives_signed_created_and_active_events() {
    let (app, mut client) = start().await;
    let receiver = Receiver::start().await;
    let (_, secret) = create(
        &mut client,
        endpoint(
            "events",
            &receiver.url("/tenantd"),
            &["tenant.created", "tenant.active"],
        ),
    )
    .await;
    let created = app.create("acme", "").await;
    app.wait_for(&created.id, TenantState::Active).await;
    let received = receiver
        .wait("tenant.created and tenant.active", |r| r.len() >= 2)
        .await;
    assert_eq!(received.len(), 2, "only the subscribed types");
    let first = of_type(&received, "tenant.created")[0];
    let active = of_type(&received, "tenant.active")[0];
    for r in [first, active] {
        verify(&secret, r).unwrap();
        assert_eq!(r.path, "/tenantd");
        assert_eq!(r.header("content-type"), "application/json");
        let body = r.json();
        assert_eq!(body["data"]["tenant"]["id"], created.id.as_str());
        assert_eq!(body["data"]["tenant"]["slug"], "acme");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(active.json()["data"]["tenant"]["state"], "ACTIVE");
    let other = tenantd::domain::webhook::new_secret();
    assert_eq!(
        python_verifies(&[
            (&secret, first),
            (&secret, active),
            (other.expose_secret(), first)
        ])
        .await,
        [true, true, false],
        "the Python standardwebhooks package verifies them too"
    );
    assert!(
        verify(
            tenantd::domain::webhook::new_secret().expose_secret(),
            first
        )
        .is_err()
    );

    // Received first, recorded just after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let deliveries = loop {
        let deliveries = client
            .list_deliveries(ListDeliveriesRequest {
                endpoint: "events".into(),
                tenant_id: created.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Delivered as i32)
            || tokio::time::Instant::now() > deadline
        {
            break deliveries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(deliveries.len(), 2);
    for d in &deliveries {
        assert_eq!(d.status, DeliveryStatus::Delivered as i32, "{d:?}");
        assert_eq!(d.attempts, 1);
        assert_eq!(d.last_http_status, 200);
        assert!(received.iter().any(|r| r.header("webhook-id") == d.id));
    }
    assert_eq!(deliveries[0].r#type, "tenant.active", "newest first");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_retry_with_one_webhook_id_and_410_disables() {
    // Counted only once the recorder is installed.
    let recorder = tenantd::telemetry::metrics::handle();
    let (app, mut client) = start().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 500]);
    create(
        &mut client,
        endpoint("flaky", &receiver.url("/"), &["tenant.created"]),
    )
    .await;
    let created = app.create("acme", "").await;
    let received = receiver.wait("three attempts", |r| r.len() >= 3).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids[0].starts_with("msg_"), "{ids:?}");
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(received[0].body, received[2].body, "the same bytes");
    let delivery = wait_delivery(&mut client, "flaky", DeliveryStatus::Delivered).await;
    assert_eq!(delivery.attempts, 3);
    assert_eq!(delivery.id, ids[0]);
    let metrics = recorder.render();
    let attempts = |endpoint: &str, outcome: &str| {
        sample(
            &metrics,
            "tenantd_webhook_attempts_total",
            &[("endpoint", endpoint), ("outcome", outcome)],
        )
    };
    assert_eq!(attempts("flaky", "retry"), Some(2.0), "{metrics}");
    assert_eq!(attempts("flaky", "delivered"), Some(1.0));

    // 410 Gone: the endpoint is disabled with a reason, the delivery FAILED.
    let gone = Receiver::start().await;
    gone.answer(&[410]);
    create(
        &mut client,
        endpoint(
            "gone",
            &gone.url("/"),
            &["tenant.updated", "tenant.created"],
        ),
    )
    .await;
    app.create("globex", "").await;
    gone.wait("one attempt", |r| !r.is_empty()).await;
    let failed = wait_delivery(&mut client, "gone", DeliveryStatus::Failed).await;
    assert_eq!(failed.last_http_status, 410);
    let endpoint = client
        .get_endpoint(GetEndpointRequest {
            name: "gone".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    assert!(endpoint.disabled);
    assert!(endpoint.disabled_reason.contains("410"), "{endpoint:?}");
    let metrics = recorder.render();
    assert_eq!(
        sample(
            &metrics,
            "tenantd_webhook_attempts_total",
            &[("endpoint", "gone"), ("outcome", "gone")]
        ),
        Some(1.0)
    );
    app.wait_for(&created.id, TenantState::Active).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gone.received().len(), 1, "nothing more after 410");

    // A failed delivery cannot be retried while its endpoint is disabled.
    let refused = client
        .retry_delivery(RetryDeliveryRequest {
            id: failed.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_out_of_attempts_fails_and_retry_delivery_sends_it_again() {
    let (app, mut client) = start().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[503, 500, 500, 400]);
    create(
        &mut client,
        endpoint("down", &receiver.url("/"), &["tenant.created"]),
    )
    .await;
    app.create("acme", "").await;
    let failed = wait_delivery(&mut client, "down", DeliveryStatus::Failed).await;
    assert_eq!(failed.attempts, 4, "one attempt and three retries");
    assert_eq!(failed.last_http_status, 400);
    let retried = client
        .retry_delivery(RetryDeliveryRequest {
            id: failed.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(retried.id, failed.id);
    let delivered = wait_delivery(&mut client, "down", DeliveryStatus::Delivered).await;
    assert_eq!(delivered.attempts, 1, "a fresh schedule");
    let received = receiver.received();
    assert_eq!(received.len(), 5);
    assert!(received.iter().all(|r| r.header("webhook-id") == failed.id));
    let again = client
        .retry_delivery(RetryDeliveryRequest { id: failed.id })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "already delivered");
    let unknown = client
        .retry_delivery(RetryDeliveryRequest {
            id: "msg_nothing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_both_secrets_verify() {
    let (app, mut client) = start().await;
    let receiver = Receiver::start().await;
    let (_, old) = create(
        &mut client,
        endpoint("rotating", &receiver.url("/"), &["tenant.created"]),
    )
    .await;
    let new = client
        .rotate_endpoint_secret(RotateEndpointSecretRequest {
            name: "rotating".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert_ne!(new, old);
    app.create("acme", "").await;
    let received = receiver.wait("one delivery", |r| !r.is_empty()).await;
    assert_eq!(
        received[0].header("webhook-signature").split(' ').count(),
        2,
        "the new and the old signature"
    );
    verify(&new, &received[0]).unwrap();
    verify(&old, &received[0]).unwrap();
    assert_eq!(
        python_verifies(&[(&new, &received[0]), (&old, &received[0])]).await,
        [true, true]
    );
    app.stop().await;
}

async fn wait_delivery(
    client: &mut WebhookServiceClient<Channel>,
    endpoint: &str,
    status: DeliveryStatus,
) -> tenantd::proto::Delivery {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = client
            .list_deliveries(ListDeliveriesRequest {
                endpoint: endpoint.into(),
                status: status as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if let Some(d) = found.into_iter().next() {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status:?} delivery to {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// kill -9 with deliveries waiting out retries and in flight; a new process
/// sends every one (duplicates allowed, under the same `webhook-id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_kill_9_of_the_server() {
    const TENANTS: i64 = 12;
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.answer(&[500; 20]);
    let key = SecretKey::generate_base64();
    let env = [
        ("TENANTD_SECRET_KEY", key.expose_secret()),
        ("TENANTD_WEBHOOK_ALLOW_PRIVATE", "true"),
        // A delivery's lease is twice the timeout plus 5 s: 7 s here.
        ("TENANTD_WEBHOOK_TIMEOUT_SECS", "1"),
        (
            "TENANTD_WEBHOOK_RETRY_SCHEDULE",
            "100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms",
        ),
    ];
    db.exec(
        r#"INSERT INTO plans (name, steps) VALUES ('schema-only',
           '[{"name": "create_schema", "critical": true, "max_attempts": 3},
             {"name": "activate", "critical": true, "max_attempts": 3}]')"#,
    )
    .await;
    let server = ServerProcess::spawn_full(&db, mail.path(), 5000, 8, &env, None).await;
    let mut client = WebhookServiceClient::new(server.channel().await);
    create(
        &mut client,
        endpoint(
            "crash",
            &receiver.url("/"),
            &["tenant.created", "tenant.active"],
        ),
    )
    .await;
    let mut tenants = server.client().await;
    for i in 0..TENANTS {
        let mut t = crate::common::tenant(&format!("crash-{i}"));
        t.plan = "schema-only".into();
        tenants
            .create_tenant(tenantd::proto::CreateTenantRequest {
                tenant: Some(t),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    receiver.wait("a first batch", |r| r.len() >= 10).await;
    // Requests in flight when the process dies: their receipts come after.
    receiver.slow_down(Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leased = db
        .count("SELECT count(*) FROM webhook_deliveries WHERE lease_owner IS NOT NULL")
        .await;
    server.kill_9().await;
    receiver.slow_down(Duration::ZERO);
    let before = receiver.received().len();

    let server = ServerProcess::spawn_full(&db, mail.path(), 5000, 8, &env, None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while db
        .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'DELIVERED'")
        .await
        < 2 * TENANTS
    {
        if tokio::time::Instant::now() > deadline {
            let pending = db
                .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'PENDING'")
                .await;
            let failed = db
                .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'FAILED'")
                .await;
            let all = db.count("SELECT count(*) FROM webhook_deliveries").await;
            let active = db
                .count("SELECT count(*) FROM tenants WHERE state = 'ACTIVE'")
                .await;
            panic!(
                "deliveries left undelivered after the restart: {pending} pending, {failed} failed of {all}; {active} tenants ACTIVE"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.terminate().await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_deliveries").await,
        2 * TENANTS,
        "one delivery per event and endpoint"
    );
    let received = receiver.received();
    assert!(received.len() > before, "the new process sent the rest");
    assert!(leased > 0, "some deliveries were in flight at the kill");
    let ids: std::collections::BTreeSet<&str> =
        received.iter().map(|r| r.header("webhook-id")).collect();
    let listed = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id NOT IN ({listed})"
        ))
        .await,
        0,
        "every delivery arrived"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id IN ({listed})"
        ))
        .await,
        ids.len() as i64,
        "nothing arrived that is not a delivery"
    );
    let delivered: std::collections::BTreeSet<(String, String)> = received
        .iter()
        .filter(|r| r.json()["type"] == "tenant.active")
        .map(|r| {
            let body = r.json();
            (
                body["data"]["tenant"]["id"].as_str().unwrap().to_owned(),
                body["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(delivered.len() as i64, TENANTS, "every tenant's activation");
}

/// A delivery commits with its event and rolls back with it, whatever
/// writes the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_commits_and_rolls_back_with_its_event() {
    let (app, mut client) = start().await;
    create(
        &mut client,
        endpoint("audit", "https://audit.example.com/", &["tenant.updated"]),
    )
    .await;
    let created = app.create("acme", "").await;
    app.wait_for(&created.id, TenantState::Active).await;
    let event = format!(
        "INSERT INTO events (tenant_id, kind, state, message, actor)
         VALUES ('{}', 'TENANT_UPDATED', 'ACTIVE', 'by hand', 'test')",
        created.id
    );
    let count = "SELECT count(*) FROM webhook_deliveries WHERE type = 'tenant.updated'";
    app.db.exec(&format!("BEGIN; {event}; ROLLBACK;")).await;
    assert_eq!(app.db.count(count).await, 0, "rolled back with its event");
    app.db.exec(&format!("BEGIN; {event}; COMMIT;")).await;
    assert_eq!(app.db.count(count).await, 1, "committed with its event");
    // Several events in one statement: one delivery each.
    app.db
        .exec(&format!(
            "{event}, ('{}', 'TENANT_UPDATED', 'ACTIVE', 'again', 'test')",
            created.id
        ))
        .await;
    assert_eq!(app.db.count(count).await, 3);
    // Events nobody subscribed to bring no delivery.
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM webhook_deliveries WHERE type <> 'tenant.updated'")
            .await,
        0
    );
    app.stop().await;
}
