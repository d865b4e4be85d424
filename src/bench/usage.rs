//! Usage metering: `usage_events_per_sec` (RecordUsage in batches of 500
//! from `clients` gRPC clients) next to `raw_usage_tps` (the same rows and
//! rollup updates by the same statement over plain connections, at the
//! same concurrency), then `query_usage_30d_p99_ms` (a 30-day daily query)
//! and `check_quota_p99_ms` (CheckQuota on a tenant's hot path), both over
//! a history of `stored` events seeded by SQL.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use rand::Rng;
use serde::Serialize;
use uuid::Uuid;

use super::{BenchServer, Scratch, ms, quantile};
use crate::domain::usage::UsageEvent as Event;
use crate::proto::usage_service_client::UsageServiceClient;
use crate::proto::{
    CheckQuotaRequest, QueryUsageRequest, RecordUsageRequest, UsageEvent, UsageResult, UsageWindow,
};
use crate::server::BoxError;
use crate::steps::Registry;

/// Tenants the history and the load are spread over.
const TENANTS: u32 = 100;
/// Events per RecordUsage call, as a gateway flushing its buffer sends.
const BATCH: usize = 500;
/// Timed queries and quota checks.
const QUERIES: usize = 200;
const CHECKS: usize = 2000;

#[derive(Debug, Serialize)]
pub struct UsageReport {
    /// Events stored before the queries were timed.
    pub stored_events: i64,
    pub usage_events_per_sec: f64,
    pub raw_usage_tps: f64,
    pub usage_vs_raw: f64,
    pub query_usage_30d_p99_ms: f64,
    pub check_quota_p99_ms: f64,
}

fn tenant(i: u32) -> Uuid {
    Uuid::parse_str(&format!("00000000-0000-7000-8000-{:012x}", i)).unwrap_or_default()
}

fn seed_sql(events: u64) -> String {
    format!(
        "INSERT INTO tenants (id, slug, display_name, admin_email, plan, plan_version, state)
         SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'usage-' || i,
                'Usage ' || i, 'admin@usage-' || i || '.test', 'basic',
                (SELECT version FROM plans WHERE name = 'basic'), 'ACTIVE'
         FROM generate_series(1, {TENANTS}) i;
         INSERT INTO usage_events (tenant_id, meter, id, value, time)
         SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(1 + i % {TENANTS}), 12, '0'))::uuid,
                'api_calls', 'seed-' || i, 1 + i % 7,
                now() - interval '30 days' * (i::float8 / {events})
         FROM generate_series(1, {events}) i;
         INSERT INTO usage_rollups
             (tenant_id, meter, bucket, events, total, max, latest_time, latest_id, latest_value)
         SELECT tenant_id, meter, usage_bucket(time), count(*), sum(value), max(value), max(time),
                (array_agg(id ORDER BY time DESC, id DESC))[1],
                (array_agg(value ORDER BY time DESC, id DESC))[1]
         FROM usage_events GROUP BY 1, 2, 3;"
    )
}

pub async fn measure(
    scratch: &Scratch,
    clients: usize,
    duration: Duration,
    stored: u64,
) -> Result<UsageReport, BoxError> {
    let url = scratch.create("usage").await?;
    crate::db::migrate(&url).await?;
    let mut conn = AsyncPgConnection::establish(&url).await?;
    conn.batch_execute(&seed_sql(stored)).await?;
    conn.batch_execute("VACUUM ANALYZE").await?;
    let stored_events = super::count(&mut conn, "SELECT count(*) AS n FROM usage_events").await?;
    drop(conn);
    let server =
        BenchServer::start_on(scratch, url.clone(), |c| c.concurrency = 0, Registry::new()).await?;

    // Reads first, on the seeded history alone.
    let mut client = UsageServiceClient::new(server.channel().await?);
    let now = chrono::Utc::now();
    let mut millis = Vec::with_capacity(QUERIES);
    for i in 0..=QUERIES {
        let request = QueryUsageRequest {
            tenant_id: tenant(1 + (i as u32 % TENANTS)).to_string(),
            meter: "api_calls".into(),
            start_time: Some(timestamp(now - chrono::Duration::days(29))),
            end_time: Some(timestamp(now)),
            window: UsageWindow::Day as i32,
            time_zone: if i % 2 == 0 { "UTC" } else { "Europe/Berlin" }.into(),
        };
        let started = Instant::now();
        let buckets = client.query_usage(request).await?.into_inner().buckets;
        if i > 0 {
            // The first call warms the connection.
            millis.push(ms(started));
        }
        if buckets.len() != 30 {
            return Err(format!("a 30-day query returned {} days", buckets.len()).into());
        }
    }
    let query_usage_30d_p99_ms = quantile(&mut millis, 0.99).unwrap_or(f64::NAN);
    // Each tenant's first check reads its figure; the timed ones are the
    // hot path's.
    for i in 1..=TENANTS {
        client
            .check_quota(CheckQuotaRequest {
                tenant_id: tenant(i).to_string(),
                meter: "api_calls".into(),
                amount: 1.0,
            })
            .await?;
    }
    let mut millis = Vec::with_capacity(CHECKS);
    for _ in 0..CHECKS {
        let request = CheckQuotaRequest {
            tenant_id: tenant(1 + rand::rng().random_range(0..TENANTS)).to_string(),
            meter: "api_calls".into(),
            amount: 1.0,
        };
        let started = Instant::now();
        client.check_quota(request).await?;
        millis.push(ms(started));
    }
    let check_quota_p99_ms = quantile(&mut millis, 0.99).unwrap_or(f64::NAN);

    let usage_events_per_sec = record_load(&server, clients, duration).await?;
    server.stop().await;
    let raw_usage_tps = raw_load(&url, clients, duration).await?;
    Ok(UsageReport {
        stored_events,
        usage_events_per_sec,
        raw_usage_tps,
        usage_vs_raw: usage_events_per_sec / raw_usage_tps,
        query_usage_30d_p99_ms,
        check_quota_p99_ms,
    })
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Events of one batch for client `worker`, its `n`th: new ids, one random
/// tenant each.
fn batch(worker: usize, n: usize, prefix: &str) -> Vec<(Uuid, String, f64)> {
    let mut rng = rand::rng();
    (0..BATCH)
        .map(|k| {
            (
                tenant(1 + rng.random_range(0..TENANTS)),
                format!("{prefix}-{worker}-{n}-{k}"),
                f64::from(rng.random_range(1..10u32)),
            )
        })
        .collect()
}

/// Accepted events per second through RecordUsage.
async fn record_load(
    server: &BenchServer,
    clients: usize,
    duration: Duration,
) -> Result<f64, BoxError> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let mut client = UsageServiceClient::new(server.channel().await?);
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0usize;
            let mut n = 0;
            while started.elapsed() < duration {
                let events = batch(worker, n, "rpc")
                    .into_iter()
                    .map(|(tenant, id, value)| UsageEvent {
                        id,
                        tenant_id: tenant.to_string(),
                        meter: "api_calls".into(),
                        value,
                        ..Default::default()
                    })
                    .collect();
                let results = client
                    .record_usage(RecordUsageRequest { events })
                    .await?
                    .into_inner()
                    .results;
                accepted += results
                    .iter()
                    .filter(|r| r.result() == UsageResult::Accepted)
                    .count();
                n += 1;
            }
            Ok::<_, tonic::Status>(accepted)
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await??;
    }
    Ok(accepted as f64 / started.elapsed().as_secs_f64())
}

/// The same rows and rollup updates by the statement RecordUsage runs, over
/// plain connections: one statement per batch, atomic on its own.
async fn raw_load(url: &str, clients: usize, duration: Duration) -> Result<f64, BoxError> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let mut conn = AsyncPgConnection::establish(url).await?;
        tasks.push(tokio::spawn(async move {
            let mut stored = 0usize;
            let mut n = 0;
            while started.elapsed() < duration {
                let now = chrono::Utc::now();
                let events: Vec<Event> = batch(worker, n, "raw")
                    .into_iter()
                    .map(|(tenant_id, id, value)| Event {
                        id,
                        tenant_id,
                        meter: "api_calls".into(),
                        value,
                        time: now,
                        dated: false,
                        subject: String::new(),
                    })
                    .collect();
                let rows: Vec<&Event> = events.iter().collect();
                stored += crate::db::usage::insert_events(&mut conn, &rows)
                    .await
                    .map_err(|e| e.to_string())?
                    .len();
                n += 1;
            }
            Ok::<_, String>(stored)
        }));
    }
    let mut stored = 0;
    for task in tasks {
        stored += task.await??;
    }
    Ok(stored as f64 / started.elapsed().as_secs_f64())
}
