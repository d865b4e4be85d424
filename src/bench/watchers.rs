//! Watchers per process and event delivery latency at a steady event rate.
//!
//! `tenants` tenants are provisioned, `watchers` streams follow them
//! (round-robin), then UpdateTenant calls produce `rate` events per second
//! for `duration`. Each watcher measures, for every TENANT_UPDATED event,
//! its arrival time minus the event's `create_time` (one clock: same host).
//!
//! What the streams cost is read around their opening: the process's
//! resident memory (server and clients alike, so an upper bound for the
//! server) per watcher, and the sessions on the server's database that the
//! streams added, with them open and again after the events. Watchers share
//! the server's pool, so that is what the pool had to grow by for them, not
//! which session served which stream. No plain-SQL baseline: fanning events
//! out has no database-only equivalent.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tonic::transport::Channel;

use super::{BenchServer, Scratch, quantile, request};
use crate::config::BenchArgs;
use crate::proto::stream_provisioning_status_response::Update;
use crate::proto::tenant_service_client::TenantServiceClient;
use crate::proto::{EventKind, StreamProvisioningStatusRequest, Tenant, UpdateTenantRequest};
use crate::server::BoxError;
use crate::steps::Registry;

/// Sessions on the server's database.
const SESSIONS_SQL: &str =
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()";

/// Figures of the watcher benchmark.
#[derive(Debug, Serialize)]
pub struct WatchReport {
    pub watchers: usize,
    pub watched_tenants: usize,
    pub event_rate_per_sec: f64,
    pub events_expected: u64,
    pub events_delivered: u64,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    pub rss_before_watchers_mib: f64,
    pub rss_with_watchers_mib: f64,
    /// Resident memory the streams added, per watcher.
    pub rss_per_watcher_kib: f64,
    /// Sessions on the server's database with the streams open (the
    /// benchmark's own one included).
    pub db_connections: i64,
    /// The same before the streams were opened.
    pub db_connections_before_watchers: i64,
    /// Sessions the streams added: the most seen with them open or after
    /// the events, less those before.
    pub stream_db_connections: i64,
}

pub async fn measure(args: &BenchArgs, scratch: &Scratch) -> Result<WatchReport, BoxError> {
    let tenants = args.watched_tenants.max(1);
    let server = BenchServer::start(scratch, |c| c.concurrency = 8, Registry::new()).await?;
    let mut client = server.client().await?;
    let mut ids = Vec::new();
    for i in 0..tenants {
        let created = client
            .create_tenant(request(format!("watched-{i}")))
            .await?
            .into_inner();
        ids.push(created.tenant.ok_or("no tenant")?.id);
    }
    // Let the pipelines finish, so that only the updates make events.
    let mut conn =
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&server.url)
            .await?;
    while super::count(&mut conn, "SELECT count(*) AS n FROM outbox").await? > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_before = rss_mib();
    let connections_before = super::count(&mut conn, SESSIONS_SQL).await?;

    let mut channels = Vec::new();
    for _ in 0..args.watchers.div_ceil(100) {
        channels.push(server.client().await?);
    }
    let mut tasks = Vec::new();
    for w in 0..args.watchers {
        let mut client = channels[w / 100].clone();
        let req = StreamProvisioningStatusRequest {
            tenant_id: ids[w % tenants].clone(),
            resume_after_event_id: None,
            follow: true,
        };
        let mut stream = client.stream_provisioning_status(req).await?.into_inner();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(Ok(message)) = stream.next().await {
                let Some(Update::Event(e)) = message.update else {
                    continue;
                };
                if e.kind == EventKind::TenantUpdated as i32 && e.message == "updated labels" {
                    let sent = e
                        .create_time
                        .map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
                        .unwrap_or(0.0);
                    let now = chrono::Utc::now();
                    let now =
                        now.timestamp() as f64 + f64::from(now.timestamp_subsec_nanos()) / 1e9;
                    latencies.push((now - sent) * 1000.0);
                }
                if e.kind == EventKind::TenantUpdated as i32 && e.message == "updated display_name"
                {
                    break; // the end marker
                }
            }
            latencies
        }));
    }
    let rss_with = rss_mib();
    let connections = super::count(&mut conn, SESSIONS_SQL).await?;

    // A steady event rate: one label update per tick, round-robin.
    let rate = args.event_rate.max(1.0);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut per_tenant = vec![0u64; tenants];
    let mut i = 0usize;
    while Instant::now() < deadline {
        ticker.tick().await;
        let labels = [("tick".to_owned(), i.to_string())].into();
        let tenant = Tenant {
            labels,
            ..Default::default()
        };
        update(&mut client, &ids[i % tenants], tenant, "labels").await?;
        per_tenant[i % tenants] += 1;
        i += 1;
    }
    // End marker per tenant, so every watcher finishes.
    for id in &ids {
        let tenant = Tenant {
            display_name: "done".into(),
            ..Default::default()
        };
        update(&mut client, id, tenant, "display_name").await?;
    }
    let mut all = Vec::new();
    let mut expected = 0u64;
    for (w, task) in tasks.into_iter().enumerate() {
        expected += per_tenant[w % tenants];
        all.extend(task.await?);
    }
    let connections_after = super::count(&mut conn, SESSIONS_SQL).await?;
    server.stop().await;
    let mut pick = |q: f64| quantile(&mut all, q).unwrap_or(f64::NAN);
    let (delivery_p50_ms, delivery_p99_ms) = (pick(0.5), pick(0.99));
    Ok(WatchReport {
        watchers: args.watchers,
        watched_tenants: tenants,
        event_rate_per_sec: rate,
        events_expected: expected,
        events_delivered: all.len() as u64,
        delivery_p50_ms,
        delivery_p99_ms,
        rss_before_watchers_mib: rss_before,
        rss_with_watchers_mib: rss_with,
        rss_per_watcher_kib: (rss_with - rss_before) * 1024.0 / args.watchers as f64,
        db_connections: connections,
        db_connections_before_watchers: connections_before,
        stream_db_connections: connections.max(connections_after) - connections_before,
    })
}

/// UpdateTenant of one field: one TENANT_UPDATED event.
async fn update(
    client: &mut TenantServiceClient<Channel>,
    id: &str,
    tenant: Tenant,
    field: &str,
) -> Result<(), BoxError> {
    let request = UpdateTenantRequest {
        tenant_id: id.to_owned(),
        tenant: Some(tenant),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![field.to_owned()],
        }),
    };
    client.update_tenant(request).await?;
    Ok(())
}

/// This process's resident memory (server and clients alike), from /proc.
pub(super) fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
