//! `tenantd bench soak`: a steady load for a long time, to see what drifts.
//!
//! Every `1 / rate` seconds a client creates a tenant, follows its stream to
//! ACTIVE, deprovisions it (PURGE, no grace period), follows it to
//! DEPROVISIONED and deletes it. The purge and prune jobs run every 10 s
//! with a 1-minute event retention, so the outbox and the event log should
//! reach a steady size; deleted tenant rows are kept for audit and grow. Besides those
//! short streams, `watchers` long-lived streams follow early tenants for the
//! whole run. Every `report_every`, one line: latencies of the interval
//! (p50/p99), tenants settled, outbox rows, table sizes and dead tuples.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use tonic::transport::Channel;

use super::{BenchServer, Scratch, ms, quantile, request};
use crate::config::SoakArgs;
use crate::proto::stream_provisioning_status_response::Update;
use crate::proto::tenant_service_client::TenantServiceClient;
use crate::proto::{
    DeleteTenantRequest, DeprovisionMode, DeprovisionRequest, StreamProvisioningStatusRequest,
    TenantState,
};
use crate::server::BoxError;
use crate::steps::Registry;

/// Latencies of one reporting interval, in milliseconds.
#[derive(Default)]
struct Samples {
    create_ms: Vec<f64>,
    to_active_ms: Vec<f64>,
    deprovision_ms: Vec<f64>,
    to_deprovisioned_ms: Vec<f64>,
    errors: u64,
}

/// One reporting interval.
#[derive(Debug, Serialize)]
pub struct SoakLine {
    pub elapsed_s: u64,
    pub cycles_done: u64,
    pub errors: u64,
    pub create_p50_ms: f64,
    pub create_p99_ms: f64,
    pub to_active_p50_ms: f64,
    pub to_active_p99_ms: f64,
    pub deprovision_p50_ms: f64,
    pub deprovision_p99_ms: f64,
    pub to_deprovisioned_p50_ms: f64,
    pub to_deprovisioned_p99_ms: f64,
    pub open_streams: usize,
    pub outbox_rows: i64,
    pub tenants: i64,
    pub outbox_kib: f64,
    pub events_kib: f64,
    pub tenants_kib: f64,
    pub outbox_dead_tuples: i64,
    pub tenants_dead_tuples: i64,
    pub steps_dead_tuples: i64,
    pub events_dead_tuples: i64,
    pub rss_mib: f64,
    /// The server's `autovacuum` setting: with it off, dead tuples pile up.
    pub autovacuum: String,
}

/// Runs the soak, printing a JSON line per interval on stdout.
pub async fn run(args: SoakArgs, scratch: &Scratch) -> Result<(), BoxError> {
    let server = BenchServer::start(
        scratch,
        |c| {
            c.concurrency = 16;
            c.schedules.purge = "*/10 * * * * *".to_owned();
            c.schedules.prune = "*/10 * * * * *".to_owned();
            c.schedules.event_retention = Duration::from_secs(60);
        },
        Registry::new(),
    )
    .await?;
    let outcome = drive(&args, &server).await;
    server.stop().await;
    outcome
}

async fn drive(args: &SoakArgs, server: &BenchServer) -> Result<(), BoxError> {
    let samples = Arc::new(Mutex::new(Samples::default()));
    let open_streams = Arc::new(AtomicUsize::new(0));
    let channel = server.channel().await?;
    let mut conn = AsyncPgConnection::establish(&server.url).await?;

    // Long-lived watchers on tenants made for them.
    let mut dashboards = Vec::new();
    for i in 0..args.watchers {
        let mut client = TenantServiceClient::new(channel.clone());
        let id = client
            .create_tenant(request(format!("watched-{i}")))
            .await?
            .into_inner()
            .tenant
            .ok_or("no tenant")?
            .id;
        let open = open_streams.clone();
        dashboards.push(tokio::spawn(async move {
            let request = StreamProvisioningStatusRequest {
                tenant_id: id,
                follow: true,
                ..Default::default()
            };
            if let Ok(stream) = client.stream_provisioning_status(request).await {
                open.fetch_add(1, Ordering::Relaxed);
                let mut stream = stream.into_inner();
                while let Ok(Some(_)) = stream.message().await {}
                open.fetch_sub(1, Ordering::Relaxed);
            }
        }));
    }

    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_report = started + args.report_every;
    let mut cycles = Vec::new();
    let done = Arc::new(AtomicU64::new(0));
    let mut n = 0u64;
    while started.elapsed() < args.duration {
        ticker.tick().await;
        let client = TenantServiceClient::new(channel.clone());
        let slug = format!("soak-{n}");
        n += 1;
        cycles.push(tokio::spawn({
            let (samples, done, open) = (samples.clone(), done.clone(), open_streams.clone());
            async move {
                match cycle(client, slug, &samples, &open).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("soak cycle: {e}");
                        if let Ok(mut s) = samples.lock() {
                            s.errors += 1;
                        }
                    }
                }
            }
        }));
        cycles.retain(|c| !c.is_finished());
        if Instant::now() >= next_report {
            next_report += args.report_every;
            let interval = std::mem::take(&mut *samples.lock().map_err(|_| "poisoned")?);
            let line = report(
                &mut conn,
                started,
                AtomicU64::load(&done, Ordering::Relaxed),
                interval,
                AtomicUsize::load(&open_streams, Ordering::Relaxed),
            )
            .await?;
            println!("{}", serde_json::to_string(&line)?);
        }
    }
    for c in cycles {
        let _ = c.await;
    }
    for d in dashboards {
        d.abort();
    }
    Ok(())
}

/// Create, follow to ACTIVE, deprovision, follow to DEPROVISIONED.
async fn cycle(
    mut client: TenantServiceClient<Channel>,
    slug: String,
    samples: &Mutex<Samples>,
    open: &AtomicUsize,
) -> Result<(), BoxError> {
    let t0 = Instant::now();
    let id = client
        .create_tenant(request(slug))
        .await?
        .into_inner()
        .tenant
        .ok_or("no tenant")?
        .id;
    let create_ms = ms(t0);
    follow_until(&mut client, &id, TenantState::Active, open).await?;
    let to_active_ms = ms(t0);
    let t1 = Instant::now();
    client
        .deprovision(DeprovisionRequest {
            tenant_id: id.clone(),
            grace_period: Some(prost_types::Duration::default()),
            mode: DeprovisionMode::Purge as i32,
            reason: "soak".to_owned(),
        })
        .await?;
    let deprovision_ms = ms(t1);
    follow_until(&mut client, &id, TenantState::Deprovisioned, open).await?;
    let to_deprovisioned_ms = ms(t1);
    client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: id,
            ..Default::default()
        })
        .await?;
    let mut s = samples.lock().map_err(|_| "poisoned")?;
    s.create_ms.push(create_ms);
    s.to_active_ms.push(to_active_ms);
    s.deprovision_ms.push(deprovision_ms);
    s.to_deprovisioned_ms.push(to_deprovisioned_ms);
    Ok(())
}

/// Follows the tenant's stream until it reports `state`.
async fn follow_until(
    client: &mut TenantServiceClient<Channel>,
    id: &str,
    state: TenantState,
    open: &AtomicUsize,
) -> Result<(), BoxError> {
    let request = StreamProvisioningStatusRequest {
        tenant_id: id.to_owned(),
        follow: true,
        ..Default::default()
    };
    let mut stream = client
        .stream_provisioning_status(request)
        .await?
        .into_inner();
    open.fetch_add(1, Ordering::Relaxed);
    let reached = async {
        while let Some(message) = stream.message().await? {
            let now = match message.update {
                Some(Update::Snapshot(s)) => s.tenant.map(|t| t.state),
                Some(Update::Event(e)) => Some(e.state),
                None => None,
            };
            if now == Some(state as i32) {
                return Ok(());
            }
        }
        Err::<(), BoxError>(format!("stream of {id} ended before {state:?}").into())
    }
    .await;
    open.fetch_sub(1, Ordering::Relaxed);
    reached
}

#[derive(QueryableByName)]
struct Tables {
    #[diesel(sql_type = BigInt)]
    outbox_rows: i64,
    #[diesel(sql_type = BigInt)]
    tenants: i64,
    #[diesel(sql_type = Double)]
    outbox_kib: f64,
    #[diesel(sql_type = Double)]
    events_kib: f64,
    #[diesel(sql_type = Double)]
    tenants_kib: f64,
    #[diesel(sql_type = Text)]
    autovacuum: String,
}

#[derive(QueryableByName)]
struct Dead {
    #[diesel(sql_type = Text)]
    relname: String,
    #[diesel(sql_type = BigInt)]
    n_dead_tup: i64,
}

async fn report(
    conn: &mut AsyncPgConnection,
    started: Instant,
    cycles_done: u64,
    mut s: Samples,
    open_streams: usize,
) -> Result<SoakLine, BoxError> {
    let tables: Tables = diesel::sql_query(
        "SELECT (SELECT count(*) FROM outbox) AS outbox_rows,
                (SELECT count(*) FROM tenants) AS tenants,
                pg_total_relation_size('outbox') / 1024.0::float8 AS outbox_kib,
                pg_total_relation_size('events') / 1024.0::float8 AS events_kib,
                pg_total_relation_size('tenants') / 1024.0::float8 AS tenants_kib,
                current_setting('autovacuum') AS autovacuum",
    )
    .get_result(conn)
    .await?;
    let dead: Vec<Dead> = diesel::sql_query(
        "SELECT relname::text AS relname, n_dead_tup FROM pg_stat_user_tables
         WHERE relname IN ('outbox', 'tenants', 'tenant_steps', 'events')",
    )
    .load(conn)
    .await?;
    let dead_of = |name: &str| {
        dead.iter()
            .find(|d| d.relname == name)
            .map_or(0, |d| d.n_dead_tup)
    };
    Ok(SoakLine {
        elapsed_s: started.elapsed().as_secs(),
        cycles_done,
        errors: s.errors,
        create_p50_ms: quantile(&mut s.create_ms, 0.5).unwrap_or(0.0),
        create_p99_ms: quantile(&mut s.create_ms, 0.99).unwrap_or(0.0),
        to_active_p50_ms: quantile(&mut s.to_active_ms, 0.5).unwrap_or(0.0),
        to_active_p99_ms: quantile(&mut s.to_active_ms, 0.99).unwrap_or(0.0),
        deprovision_p50_ms: quantile(&mut s.deprovision_ms, 0.5).unwrap_or(0.0),
        deprovision_p99_ms: quantile(&mut s.deprovision_ms, 0.99).unwrap_or(0.0),
        to_deprovisioned_p50_ms: quantile(&mut s.to_deprovisioned_ms, 0.5).unwrap_or(0.0),
        to_deprovisioned_p99_ms: quantile(&mut s.to_deprovisioned_ms, 0.99).unwrap_or(0.0),
        open_streams,
        outbox_rows: tables.outbox_rows,
        tenants: tables.tenants,
        outbox_kib: tables.outbox_kib,
        events_kib: tables.events_kib,
        tenants_kib: tables.tenants_kib,
        outbox_dead_tuples: dead_of("outbox"),
        tenants_dead_tuples: dead_of("tenants"),
        steps_dead_tuples: dead_of("tenant_steps"),
        events_dead_tuples: dead_of("events"),
        rss_mib: super::watchers::rss_mib(),
        autovacuum: tables.autovacuum,
    })
}
