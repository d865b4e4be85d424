//! `webhook_deliveries_per_sec` and `webhook_p99_ms`: the webhook sender
//! against one HTTP receiver on loopback that answers 200 at once.
//!
//! Throughput: one statement commits many `tenant.updated` events for a
//! subscribed endpoint (the fan-out trigger writes a delivery per event, as
//! for any writer), then a NOTIFY wakes the server as another replica's
//! commit would; the figure is deliveries recorded DELIVERED per second,
//! from that commit to the last one recorded. Latency: on an idle server,
//! CreateTenant one at a time, from the event's timestamp (its commit) to
//! the receiver reading the request.
//!
//! No plain-SQL baseline: the work is the HTTP round trip and recording its
//! outcome, which has no database-only equivalent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tokio_util::sync::CancellationToken;

use super::{BenchServer, Scratch, count, quantile, request};
use crate::config::Config;
use crate::outbox::NOTIFY_CHANNEL;
use crate::proto::webhook_service_client::WebhookServiceClient;
use crate::proto::{CreateEndpointRequest, Endpoint};
use crate::secrets::SecretKey;
use crate::server::BoxError;
use crate::steps::Registry;

/// How long the deliveries may take before the benchmark gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// What the receiver saw.
#[derive(Default)]
struct Receipts {
    requests: AtomicUsize,
    /// Milliseconds from each event's timestamp to its receipt.
    latencies: std::sync::Mutex<Vec<f64>>,
}

/// An HTTP receiver on 127.0.0.1 that answers 200 at once; stops on drop.
struct Receiver {
    url: String,
    receipts: Arc<Receipts>,
    stop: CancellationToken,
}

impl Receiver {
    async fn start() -> Result<Self, BoxError> {
        let receipts = Arc::new(Receipts::default());
        let seen = receipts.clone();
        let app = axum::Router::new().fallback(move |body: Bytes| {
            let seen = seen.clone();
            async move {
                let now = chrono::Utc::now();
                seen.requests.fetch_add(1, Ordering::Relaxed);
                let sent = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|b| b["timestamp"].as_str().map(str::to_owned))
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
                if let (Some(sent), Ok(mut latencies)) = (sent, seen.latencies.lock()) {
                    let ms = (now - sent.with_timezone(&chrono::Utc)).num_microseconds();
                    latencies.push(ms.unwrap_or(i64::MAX) as f64 / 1000.0);
                }
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Ok(Receiver {
            url,
            receipts,
            stop,
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A key and loopback targets: the receiver is local.
fn with_webhooks(config: &mut Config) -> Result<(), BoxError> {
    config.webhooks.secret_key = Some(Arc::new(SecretKey::from_base64(
        &SecretKey::generate_base64(),
    )?));
    config.webhooks.allow_private = true;
    // The API alone: no pipelines compete with the sender.
    config.concurrency = 0;
    Ok(())
}

async fn server_with_endpoint(
    scratch: &Scratch,
    receiver: &Receiver,
    event_type: &str,
) -> Result<BenchServer, BoxError> {
    let mut set_up = Ok(());
    let server = BenchServer::start(
        scratch,
        |config| set_up = with_webhooks(config),
        Registry::new(),
    )
    .await?;
    set_up?;
    WebhookServiceClient::new(server.channel().await?)
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(Endpoint {
                name: "bench".to_owned(),
                url: receiver.url.clone(),
                event_types: vec![event_type.to_owned()],
                ..Default::default()
            }),
        })
        .await?;
    Ok(server)
}

/// Deliveries recorded DELIVERED per second while `deliveries` queued at
/// once drain.
pub(super) async fn delivery_throughput(
    scratch: &Scratch,
    deliveries: usize,
) -> Result<f64, BoxError> {
    let receiver = Receiver::start().await?;
    let server = server_with_endpoint(scratch, &receiver, "tenant.updated").await?;
    let mut client = server.client().await?;
    let tenant = client
        .create_tenant(request("hooked".to_owned()))
        .await?
        .into_inner()
        .tenant
        .ok_or("no tenant in the answer")?;
    let mut conn = AsyncPgConnection::establish(&server.url).await?;
    conn.batch_execute(&format!(
        "INSERT INTO events (tenant_id, kind, state, message, actor)
         SELECT '{}', 'TENANT_UPDATED', 'PROVISIONING', 'bench update ' || i, 'bench'
         FROM generate_series(1, {deliveries}) i;
         NOTIFY {NOTIFY_CHANNEL};",
        tenant.id
    ))
    .await?;
    let started = Instant::now();
    let delivered_sql = "SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'DELIVERED'";
    while count(&mut conn, delivered_sql).await? < deliveries as i64 {
        if started.elapsed() > DRAIN_LIMIT {
            return Err(format!("{deliveries} deliveries did not drain in {DRAIN_LIMIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let received = receiver.receipts.requests.load(Ordering::Relaxed);
    if received < deliveries {
        return Err(format!("{deliveries} recorded delivered but {received} received").into());
    }
    server.stop().await;
    Ok(deliveries as f64 / elapsed.as_secs_f64())
}

/// p99 in milliseconds from an event's commit to its receipt, one
/// `tenant.created` at a time on an idle server.
pub(super) async fn delivery_latency(scratch: &Scratch, samples: usize) -> Result<f64, BoxError> {
    let receiver = Receiver::start().await?;
    let server = server_with_endpoint(scratch, &receiver, "tenant.created").await?;
    let mut client = server.client().await?;
    for i in 0..samples {
        client.create_tenant(request(format!("hook-{i}"))).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while receiver.receipts.requests.load(Ordering::Relaxed) <= i {
            if Instant::now() > deadline {
                return Err(format!("delivery {i} did not arrive within 10 s").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Idle between samples: the outcome is recorded, the sender sleeps.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
    let mut latencies = receiver
        .receipts
        .latencies
        .lock()
        .map_err(|_| "receiver poisoned")?
        .clone();
    quantile(&mut latencies, 0.99).ok_or_else(|| "no deliveries timed".into())
}
