//! `noop_steps_per_sec`: the dispatcher alone. Tenants whose plan is ten
//! steps that do nothing are seeded straight into the database, outbox
//! included, and the server drains them. The baseline is zero work per
//! step, so the figure is the ceiling of claims, events and hand-offs.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Scratch, count};
use crate::config::Config;
use crate::server::BoxError;
use crate::steps::{Output, Registry, Step, StepCtx, StepError};

/// Steps per no-op tenant in the dispatcher benchmark.
pub(super) const NOOP_STEPS_PER_TENANT: usize = 10;

/// A step that does nothing, to measure the dispatcher itself.
struct Noop(&'static str);

#[async_trait]
impl Step for Noop {
    fn name(&self) -> &'static str {
        self.0
    }

    async fn run_external(&self, _ctx: &StepCtx) -> Result<Output, StepError> {
        Ok(Output::new())
    }

    fn database_work(&self) -> bool {
        false
    }
}

const NOOP_NAMES: [&str; NOOP_STEPS_PER_TENANT] = [
    "noop_01", "noop_02", "noop_03", "noop_04", "noop_05", "noop_06", "noop_07", "noop_08",
    "noop_09", "noop_10",
];

/// Steps per second while the dispatcher drains `tenants` x 10 queued no-op steps.
pub(super) async fn noop_throughput(
    scratch: &Scratch,
    concurrency: usize,
    tenants: usize,
) -> Result<f64, BoxError> {
    let url = scratch.create("noop").await?;
    let mut conn = AsyncPgConnection::establish(&url).await?;
    let plan: Vec<_> = NOOP_NAMES
        .iter()
        .map(|n| serde_json::json!({"name": n, "critical": true, "max_attempts": 3}))
        .collect();
    conn.batch_execute(&format!(
        "INSERT INTO plans (name, steps) VALUES ('bench-noop', '{}');
         INSERT INTO tenants (id, slug, display_name, admin_email, plan, plan_version, state)
             SELECT gen_random_uuid(), 'noop-' || i, 'Noop ' || i, 'noop@bench.test', 'bench-noop', 1, 'PROVISIONING'
             FROM generate_series(1, {tenants}) i;
         INSERT INTO tenant_steps (tenant_id, position, name, critical, max_attempts, status)
             SELECT t.id, p - 1, 'noop_' || lpad(p::text, 2, '0'), true, 3, 'PENDING'
             FROM tenants t, generate_series(1, {NOOP_STEPS_PER_TENANT}) p;
         INSERT INTO outbox (tenant_id, operation, step) SELECT id, 'PROVISION', 'noop_01' FROM tenants;",
        serde_json::Value::Array(plan)
    ))
    .await?;
    conn.batch_execute("VACUUM ANALYZE").await?;
    let mut steps = Registry::new();
    for name in NOOP_NAMES {
        steps.register(Noop(name));
    }
    let started = Instant::now();
    let mail = tempfile::tempdir()?;
    let mut config = Config::new(&url);
    config.tenant_role_prefix = scratch.role_prefix.clone();
    config.mail_dir = mail.path().to_owned();
    config.archive_dir = mail.path().join("archives");
    config.concurrency = concurrency;
    // Workers of no-op steps hold no connection; claims and batches need few.
    config.pool_size = 16;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(crate::server::run_with(
        config,
        listener,
        shutdown.clone(),
        steps,
    ));
    loop {
        // Whether any row is left, not how many: the poll must not load the
        // server it measures.
        if count(
            &mut conn,
            "SELECT count(*) AS n FROM (SELECT 1 FROM outbox LIMIT 1) o",
        )
        .await?
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    task.await??;
    let done = count(
        &mut conn,
        "SELECT count(*) AS n FROM events WHERE kind = 'STEP_SUCCEEDED'",
    )
    .await?;
    Ok(done as f64 / elapsed.as_secs_f64())
}
