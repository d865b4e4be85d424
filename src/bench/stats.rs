//! GetProvisioningStats at scale: 100k tenants and about a million events
//! over 30 days, seeded by SQL into a scratch database, then the server
//! started on it and the RPC timed over gRPC with the default 24-hour
//! window and with a 30-day window.
//!
//! The seeded history follows the pipeline's real event sequences, so the
//! partial indexes hold the share of the log they would in production: a
//! TENANT_CREATED, five steps started and succeeded and the ACTIVE state
//! change for most tenants, a retried welcome email for one in ten, and
//! smaller groups that failed (four retries, then compensation), were
//! cancelled, suspended, deprovisioned, or are still provisioning.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde::Serialize;

use super::{BenchServer, Scratch, ms, quantile};
use crate::proto::GetProvisioningStatsRequest;
use crate::server::BoxError;
use crate::steps::Registry;

/// Tenants in the seeded history.
const TENANTS: usize = 100_000;
/// How far back the seeded history reaches.
const HISTORY_DAYS: u32 = 30;
/// Timed calls per window; the figure is their median. Each call reads the
/// whole window, so a handful is enough to smooth out scheduling noise.
const CALLS: usize = 9;

/// Latency of GetProvisioningStats on the seeded history.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub tenants: i64,
    pub events: i64,
    pub window_24h_p50_ms: f64,
    pub window_30d_p50_ms: f64,
}

pub async fn measure(scratch: &Scratch) -> Result<StatsReport, BoxError> {
    let url = scratch.create("stats").await?;
    let mut conn = AsyncPgConnection::establish(&url).await?;
    conn.batch_execute(&seed_sql(TENANTS, HISTORY_DAYS)).await?;
    // What autovacuum would do after the load: statistics for the planner,
    // and an all-visible map so that the partial indexes answer alone.
    conn.batch_execute("VACUUM ANALYZE").await?;
    let tenants = super::count(&mut conn, "SELECT count(*) AS n FROM tenants").await?;
    let events = super::count(&mut conn, "SELECT count(*) AS n FROM events").await?;
    // Started on the seeded history, so that its event hub does not read
    // the million events while the calls are timed. API only: the seeded
    // PROVISIONING tenants must stay as they are.
    let server =
        BenchServer::start_on(scratch, url, |c| c.concurrency = 0, Registry::new()).await?;

    let mut client = server.client().await?;
    let mut p50 = Vec::new();
    for window in [
        None,
        Some(Duration::from_secs(u64::from(HISTORY_DAYS) * 86_400)),
    ] {
        let request = GetProvisioningStatsRequest {
            window: window.map(|w| prost_types::Duration {
                seconds: w.as_secs() as i64,
                nanos: 0,
            }),
        };
        // One untimed call warms the connection and the caches.
        client.get_provisioning_stats(request).await?;
        let mut millis = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let started = Instant::now();
            client.get_provisioning_stats(request).await?;
            millis.push(ms(started));
        }
        p50.push(quantile(&mut millis, 0.5).unwrap_or(f64::NAN));
    }
    server.stop().await;
    Ok(StatsReport {
        tenants,
        events,
        window_24h_p50_ms: p50[0],
        window_30d_p50_ms: p50[1],
    })
}

/// `tenants` tenants created evenly over the last `days` days (tenant `i`
/// of `n` at `now() - days * (1 - i/n)`), with their events in id order.
/// Step durations vary per tenant between 1 and 11 seconds.
fn seed_sql(tenants: usize, days: u32) -> String {
    format!(
        "CREATE TEMPORARY TABLE seed AS
         SELECT i, gen_random_uuid() AS id,
                now() - make_interval(days => {days}) * (1 - i::float8 / {tenants}) AS created,
                make_interval(secs => 1 + (i * 7919 % 100) / 10.0) AS d,
                CASE
                    WHEN i > {tenants} - 50 THEN 'PROVISIONING'
                    WHEN i % 50 = 7 THEN 'FAILED'
                    WHEN i % 100 = 11 THEN 'CANCELLED'
                    WHEN i % 40 = 3 THEN 'SUSPENDED'
                    WHEN i % 25 = 5 THEN 'DEPROVISIONED'
                    ELSE 'ACTIVE'
                END AS state
         FROM generate_series(1, {tenants}) i;

         INSERT INTO tenants (id, slug, display_name, admin_email, plan, plan_version, state,
                              create_time, update_time)
         SELECT id, 'bench-' || i, 'Bench ' || i, 'admin@bench-' || i || '.test',
                (ARRAY['default', 'basic', 'team', 'enterprise'])[1 + i % 4], 1, state,
                created, created
         FROM seed;

         INSERT INTO outbox (tenant_id, operation, step, create_time)
         SELECT id, 'PROVISION', 'create_schema', created FROM seed WHERE state = 'PROVISIONING';

         CREATE TEMPORARY TABLE seed_events (tenant_id uuid, kind text, step text, attempt int,
                                             state text, at timestamptz);
         -- Every tenant was created.
         INSERT INTO seed_events
         SELECT id, 'TENANT_CREATED', NULL, NULL, 'PROVISIONING', created FROM seed;
         -- Tenants that went through the five steps to ACTIVE.
         INSERT INTO seed_events
         SELECT s.id, k.kind, p.name, 1, 'PROVISIONING', s.created + s.d * (p.n + k.half)
         FROM seed s,
              unnest(ARRAY['create_schema', 'run_migrations', 'seed_roles_and_admin',
                           'send_welcome_email', 'activate']) WITH ORDINALITY p(name, n),
              (VALUES ('STEP_STARTED', 0.0), ('STEP_SUCCEEDED', 0.5)) k(kind, half)
         WHERE s.state IN ('ACTIVE', 'SUSPENDED', 'DEPROVISIONED');
         INSERT INTO seed_events
         SELECT id, 'STATE_CHANGED', 'activate', 1, 'ACTIVE', created + d * 5.6
         FROM seed WHERE state IN ('ACTIVE', 'SUSPENDED', 'DEPROVISIONED');
         -- One in ten retried its welcome email once.
         INSERT INTO seed_events
         SELECT s.id, k.kind, 'send_welcome_email', k.attempt, 'PROVISIONING',
                s.created + s.d * (4 + k.at)
         FROM seed s,
              (VALUES ('STEP_RETRYING', 1, 0.2), ('STEP_STARTED', 2, 0.3)) k(kind, attempt, at)
         WHERE s.state IN ('ACTIVE', 'SUSPENDED', 'DEPROVISIONED') AND s.i % 10 = 0;
         -- Suspended, and deprovisioned through the three teardown steps.
         INSERT INTO seed_events
         SELECT id, 'STATE_CHANGED', NULL, NULL, 'SUSPENDED', created + d * 8
         FROM seed WHERE state = 'SUSPENDED';
         INSERT INTO seed_events
         SELECT id, 'STATE_CHANGED', NULL, NULL, 'DEPROVISIONING', created + d * 8
         FROM seed WHERE state = 'DEPROVISIONED';
         INSERT INTO seed_events
         SELECT s.id, k.kind, p.name, 1, 'DEPROVISIONING', s.created + s.d * (8 + p.n + k.half)
         FROM seed s,
              unnest(ARRAY['revoke_access', 'archive_schema', 'send_deprovision_notice'])
                  WITH ORDINALITY p(name, n),
              (VALUES ('STEP_STARTED', 0.0), ('STEP_SUCCEEDED', 0.5)) k(kind, half)
         WHERE s.state = 'DEPROVISIONED';
         INSERT INTO seed_events
         SELECT id, 'STATE_CHANGED', 'send_deprovision_notice', 1, 'DEPROVISIONED', created + d * 12
         FROM seed WHERE state = 'DEPROVISIONED';
         -- Failed: run_migrations out of five attempts, create_schema undone.
         INSERT INTO seed_events
         SELECT s.id, k.kind, k.step, k.attempt, k.state, s.created + s.d * k.at
         FROM seed s,
              (VALUES ('STEP_STARTED', 'create_schema', 1, 'PROVISIONING', 1.0),
                      ('STEP_SUCCEEDED', 'create_schema', 1, 'PROVISIONING', 1.5),
                      ('STEP_STARTED', 'run_migrations', 1, 'PROVISIONING', 2.0),
                      ('STEP_RETRYING', 'run_migrations', 1, 'PROVISIONING', 2.5),
                      ('STEP_STARTED', 'run_migrations', 2, 'PROVISIONING', 3.0),
                      ('STEP_RETRYING', 'run_migrations', 2, 'PROVISIONING', 3.5),
                      ('STEP_STARTED', 'run_migrations', 3, 'PROVISIONING', 4.0),
                      ('STEP_RETRYING', 'run_migrations', 3, 'PROVISIONING', 4.5),
                      ('STEP_STARTED', 'run_migrations', 4, 'PROVISIONING', 5.0),
                      ('STEP_RETRYING', 'run_migrations', 4, 'PROVISIONING', 5.5),
                      ('STEP_STARTED', 'run_migrations', 5, 'PROVISIONING', 6.0),
                      ('STEP_FAILED', 'run_migrations', 5, 'PROVISIONING', 6.5),
                      ('COMPENSATION_STARTED', 'create_schema', 1, 'PROVISIONING', 7.0),
                      ('COMPENSATION_SUCCEEDED', 'create_schema', 1, 'PROVISIONING', 7.5),
                      ('STATE_CHANGED', 'create_schema', 1, 'FAILED', 7.6))
                  k(kind, step, attempt, state, at)
         WHERE s.state = 'FAILED';
         -- Cancelled after the first step, which was undone.
         INSERT INTO seed_events
         SELECT s.id, k.kind, k.step, k.attempt, k.state, s.created + s.d * k.at
         FROM seed s,
              (VALUES ('STEP_STARTED', 'create_schema', 1, 'PROVISIONING', 1.0),
                      ('STEP_SUCCEEDED', 'create_schema', 1, 'PROVISIONING', 1.5),
                      ('CANCEL_REQUESTED', NULL, NULL, 'PROVISIONING', 1.7),
                      ('COMPENSATION_STARTED', 'create_schema', 1, 'PROVISIONING', 2.0),
                      ('COMPENSATION_SUCCEEDED', 'create_schema', 1, 'PROVISIONING', 2.5),
                      ('STATE_CHANGED', 'create_schema', 1, 'CANCELLED', 2.6))
                  k(kind, step, attempt, state, at)
         WHERE s.state = 'CANCELLED';
         -- Still provisioning: the first step runs.
         INSERT INTO seed_events
         SELECT id, 'STEP_STARTED', 'create_schema', 1, 'PROVISIONING', created + d
         FROM seed WHERE state = 'PROVISIONING';

         -- In time order, so that ids increase with time as they do live;
         -- nothing lies in the future.
         INSERT INTO events (tenant_id, kind, step, attempt, state, message, actor, create_time)
         SELECT tenant_id, kind, step, attempt, state, '', 'system', least(at, now())
         FROM seed_events ORDER BY at;
         DROP TABLE seed_events;
         DROP TABLE seed;"
    )
}
