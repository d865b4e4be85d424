//! `create_tenant_rps` against `raw_sql_tps`: CreateTenant calls per second
//! through the real server, next to the rows it writes (tenant, steps,
//! event, outbox) inserted by the same single statement the server uses, in
//! a loop on plain connections. The gap between the two is what the gRPC
//! layer and the use case cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use super::{BenchServer, Scratch, request};
use crate::db::models::{NewTenantRow, json_map};
use crate::domain::{PlanStep, TenantState};
use crate::server::BoxError;
use crate::steps::Registry;

/// CreateTenant calls per second from `clients` concurrent clients, on a
/// server with no dispatcher slots so provisioning does not compete.
pub(super) async fn create_throughput(
    scratch: &Scratch,
    clients: usize,
    duration: Duration,
) -> Result<f64, BoxError> {
    let server = BenchServer::start(scratch, |cfg| cfg.concurrency = 0, Registry::new()).await?;
    let rps = create_load(&server, clients, duration).await?;
    server.stop().await;
    Ok(rps)
}

/// CreateTenant calls per second from `clients` concurrent clients.
pub(super) async fn create_load(
    server: &BenchServer,
    clients: usize,
    duration: Duration,
) -> Result<f64, BoxError> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let mut client = server.client().await?;
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                client
                    .create_tenant(request(format!("c{worker}-{i}")))
                    .await?;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The rows CreateTenant writes, by the same statement, one per round trip.
pub(super) async fn raw_inserts(
    url: &str,
    connections: usize,
    duration: Duration,
) -> Result<f64, BoxError> {
    let plan = {
        let mut conn = AsyncPgConnection::establish(url).await?;
        crate::db::plans::find(&mut conn, crate::domain::DEFAULT_PLAN)
            .await?
            .ok_or("no default plan")?
    };
    let plan_version = plan.version;
    let steps: Arc<Vec<PlanStep>> = Arc::new(plan.steps);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let mut conn = AsyncPgConnection::establish(url).await?;
        let (done, steps) = (done.clone(), steps.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let id = Uuid::now_v7();
                let slug = format!("r{worker}-{i}");
                let (name, email) = (format!("Bench {slug}"), format!("admin@{slug}.test"));
                let row = NewTenantRow {
                    id,
                    slug: &slug,
                    display_name: &name,
                    admin_email: &email,
                    plan: crate::domain::DEFAULT_PLAN,
                    plan_version,
                    labels: json_map(&Default::default()),
                    state: TenantState::Provisioning.as_str(),
                    request_id: None,
                    request_digest: None,
                    placement: "",
                    contract_owner: "",
                };
                let message = format!("tenant {slug} created");
                let any = serde_json::json!({});
                crate::db::tenants::create(&mut conn, &row, &steps, &any, &message, "bench")
                    .await?
                    .ok_or_else(|| diesel::result::Error::NotFound)?;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, diesel::result::Error>(())
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
