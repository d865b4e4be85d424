//! GetProvisioningStats reads a rollup that triggers keep beside the event
//! log; these tests compare its answers with the figures computed straight
//! from `events` (the queries the rollup replaced), over a seeded history
//! of many hours, for windows whose starts cut hours and days, before and
//! after events are deleted.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use tenantd::proto::{GetProvisioningStatsRequest, GetProvisioningStatsResponse};

use crate::common::TestApp;

/// 6000 tenants created over the last 12 days, not in time order, on four
/// plans, each with the events of one fate (`ACTIVE`, `FAILED`,
/// `CANCELLED`, `NEEDS_ATTENTION` while provisioning, `NEEDS_ATTENTION`
/// while deprovisioning after an earlier ACTIVE), named in its slug. Times
/// to ACTIVE range from under a second to days, with ties. One tenant in
/// eight has its events written one statement per event, the others in
/// one statement, in time order.
const HISTORY: &str = "
    CREATE TEMPORARY TABLE seed AS
    SELECT i, gen_random_uuid() AS id,
           (ARRAY['default', 'basic', 'team', 'enterprise'])[1 + i % 4] AS plan,
           now() - interval '12 days' * ((i * 7919) % 6007) / 6007.0 AS created,
           CASE WHEN i % 5 = 0 THEN interval '90 seconds'
                WHEN i % 97 = 0 THEN interval '3 days 4 hours'
                ELSE make_interval(secs => (i * 104729 % 100000) * 0.123457)
           END AS d,
           CASE i % 10 WHEN 1 THEN 'failed' WHEN 2 THEN 'cancelled' WHEN 3 THEN 'na-provisioning'
                       WHEN 4 THEN 'na-deprovisioning' ELSE 'active' END AS fate
    FROM generate_series(1, 6000) i;

    INSERT INTO tenants (id, slug, display_name, admin_email, plan, plan_version, state,
                         create_time, update_time)
    SELECT id, fate || '-' || i, 'Seed ' || i, 'admin@seed-' || i || '.test', plan, 1,
           CASE fate WHEN 'active' THEN 'ACTIVE' WHEN 'failed' THEN 'FAILED'
                     WHEN 'cancelled' THEN 'CANCELLED' ELSE 'NEEDS_ATTENTION' END,
           created, created
    FROM seed;

    CREATE TEMPORARY TABLE seed_events AS
    SELECT s.i, s.id AS tenant_id, k.ord, k.kind, k.step, k.attempt, k.state,
           least(s.created + s.d * k.at, now()) AS at
    FROM seed s
    CROSS JOIN LATERAL (VALUES
        (0, 'TENANT_CREATED', NULL, NULL, 'PROVISIONING', 0.0, true),
        (1, 'STEP_RETRYING', CASE WHEN s.i % 6 = 0 THEN NULL ELSE 'run_migrations' END, 1,
            'PROVISIONING', 0.5, s.fate = 'active' AND s.i % 3 = 0),
        (2, 'STEP_WARNING', 'send_welcome_email', 3, 'PROVISIONING', 0.8,
            s.fate = 'active' AND s.i % 11 = 0),
        (3, 'STATE_CHANGED', 'activate', 1, 'ACTIVE', 1.0, s.fate = 'active'),
        -- Suspended and resumed: no pipeline ends.
        (4, 'STATE_CHANGED', NULL, NULL, 'SUSPENDED', 1.2, s.fate = 'active' AND s.i % 4 = 0),
        (5, 'STATE_CHANGED', NULL, NULL, 'ACTIVE', 1.4, s.fate = 'active' AND s.i % 4 = 0),
        (1, 'STEP_RETRYING', 'broken', 1, 'PROVISIONING', 0.3, s.fate = 'failed'),
        (2, 'STEP_RETRYING', 'broken', 2, 'PROVISIONING', 0.6, s.fate = 'failed'),
        (3, 'STEP_FAILED', 'broken', 3, 'PROVISIONING', 1.0, s.fate = 'failed'),
        (4, 'STATE_CHANGED', 'broken', 3, 'FAILED', 1.1, s.fate = 'failed'),
        (1, 'CANCEL_REQUESTED', NULL, NULL, 'PROVISIONING', 0.5, s.fate = 'cancelled'),
        (2, 'STATE_CHANGED', 'gate', 1, 'CANCELLED', 1.0, s.fate = 'cancelled'),
        (1, 'STEP_FAILED', 'broken', 1, 'PROVISIONING', 0.5, s.fate = 'na-provisioning'),
        (2, 'COMPENSATION_FAILED', 'sticky', 2, 'PROVISIONING', 0.9, s.fate = 'na-provisioning'),
        (3, 'STATE_CHANGED', 'sticky', 2, 'NEEDS_ATTENTION', 1.0, s.fate = 'na-provisioning'),
        (1, 'STATE_CHANGED', 'activate', 1, 'ACTIVE', 0.5, s.fate = 'na-deprovisioning'),
        (2, 'STATE_CHANGED', NULL, NULL, 'DEPROVISIONING', 0.7, s.fate = 'na-deprovisioning'),
        (3, 'STEP_FAILED', 'archive_schema', 5, 'DEPROVISIONING', 0.9, s.fate = 'na-deprovisioning'),
        (4, 'STATE_CHANGED', 'archive_schema', 5, 'NEEDS_ATTENTION', 1.0,
            s.fate = 'na-deprovisioning')
    ) k(ord, kind, step, attempt, state, at, happened)
    WHERE k.happened;

    INSERT INTO events (tenant_id, kind, step, attempt, state, actor, create_time)
    SELECT tenant_id, kind, step, attempt, state, 'system', at
    FROM seed_events WHERE i % 8 <> 0
    ORDER BY at, tenant_id, ord;

    DO $$
    DECLARE e record;
    BEGIN
        FOR e IN SELECT * FROM seed_events WHERE i % 8 = 0 ORDER BY at, tenant_id, ord LOOP
            INSERT INTO events (tenant_id, kind, step, attempt, state, actor, create_time)
            VALUES (e.tenant_id, e.kind, e.step, e.attempt, e.state, 'system', e.at);
        END LOOP;
    END
    $$;";

/// What pruning and deletions leave behind: tenants deleted outright (their
/// events go by cascade), events older than 10 days of one tenant in three
/// (pipelines cut in the middle), and the events before some NEEDS_ATTENTION
/// ends, which changes how those count: a provisioning one loses its
/// predecessor, a deprovisioning one is left with TENANT_CREATED before it.
const DELETIONS: &str = "
    DELETE FROM tenants WHERE slug ~ '-[0-9]*7$' AND slug LIKE 'active-%';
    DELETE FROM events e USING tenants t
    WHERE e.tenant_id = t.id AND t.slug ~ '-[0-9]*[0369]$'
      AND e.create_time < now() - interval '10 days';
    DELETE FROM events e USING tenants t
    WHERE e.tenant_id = t.id AND e.kind NOT IN ('STATE_CHANGED', 'TENANT_CREATED')
      AND t.slug LIKE 'na-provisioning-%' AND t.slug ~ '[02468]3$';
    DELETE FROM events e USING tenants t
    WHERE e.tenant_id = t.id AND t.slug LIKE 'na-deprovisioning-%' AND t.slug ~ '[13579]4$'
      AND e.kind <> 'TENANT_CREATED' AND e.state <> 'NEEDS_ATTENTION';";

/// Windows whose starts cut hours and days anywhere, and the longest one.
const WINDOWS: [i64; 6] = [
    24 * 3600,
    7 * 60 + 13,
    36 * 3600 + 17 * 60 + 3,
    4 * 86_400 + 5 * 3600 + 1,
    30 * 86_400,
    90 * 86_400,
];

#[derive(Debug, PartialEq, QueryableByName)]
struct Outcomes {
    #[diesel(sql_type = BigInt)]
    succeeded: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = BigInt)]
    cancelled: i64,
    #[diesel(sql_type = BigInt)]
    needs_attention: i64,
}

/// Microseconds, the database's precision, which the RPC keeps.
#[derive(Debug, PartialEq, QueryableByName)]
struct Timing {
    #[diesel(sql_type = Text)]
    plan: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = BigInt)]
    p50_us: i64,
    #[diesel(sql_type = BigInt)]
    p95_us: i64,
}

#[derive(Debug, PartialEq, QueryableByName)]
struct Failures {
    #[diesel(sql_type = Text)]
    step: String,
    #[diesel(sql_type = BigInt)]
    failed_attempts: i64,
    #[diesel(sql_type = BigInt)]
    given_up: i64,
}

#[derive(Debug, PartialEq)]
struct Figures {
    pipelines: Outcomes,
    time_to_active: Vec<Timing>,
    step_failures: Vec<Failures>,
}

fn micros(d: Option<prost_types::Duration>) -> i64 {
    let d = d.expect("duration");
    d.seconds * 1_000_000 + i64::from(d.nanos) / 1000
}

fn from_rpc(s: &GetProvisioningStatsResponse) -> Figures {
    let p = s.pipelines.expect("pipelines");
    Figures {
        pipelines: Outcomes {
            succeeded: p.succeeded,
            failed: p.failed,
            cancelled: p.cancelled,
            needs_attention: p.needs_attention,
        },
        time_to_active: s
            .time_to_active
            .iter()
            .map(|t| Timing {
                plan: t.plan.clone(),
                count: t.count,
                p50_us: micros(t.p50),
                p95_us: micros(t.p95),
            })
            .collect(),
        step_failures: s
            .step_failures
            .iter()
            .map(|f| Failures {
                step: f.step.clone(),
                failed_attempts: f.failed_attempts,
                given_up: f.given_up,
            })
            .collect(),
    }
}

/// The figures from `since` on, straight from the event log.
async fn from_events(app: &TestApp, since: DateTime<Utc>) -> Figures {
    let mut conn = app.db.conn().await;
    let pipelines = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE e.state = 'ACTIVE') AS succeeded,
                count(*) FILTER (WHERE e.state = 'FAILED') AS failed,
                count(*) FILTER (WHERE e.state = 'CANCELLED') AS cancelled,
                count(*) FILTER (WHERE e.state = 'NEEDS_ATTENTION') AS needs_attention
         FROM events e
         WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL
           AND e.state IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION')
           AND e.create_time >= $1
           AND (e.state <> 'NEEDS_ATTENTION'
                OR (SELECT p.state FROM events p
                    WHERE p.tenant_id = e.tenant_id AND p.id < e.id
                    ORDER BY p.id DESC LIMIT 1) = 'PROVISIONING')",
    )
    .bind::<Timestamptz, _>(since)
    .get_result(&mut conn)
    .await
    .expect("pipelines from events");
    let time_to_active = diesel::sql_query(
        "SELECT plan, count, round(p50_secs * 1e6)::int8 AS p50_us,
                round(p95_secs * 1e6)::int8 AS p95_us
         FROM (
             SELECT t.plan, count(*) AS count,
                    extract(epoch FROM percentile_cont(0.5)
                        WITHIN GROUP (ORDER BY e.create_time - t.create_time))::float8 AS p50_secs,
                    extract(epoch FROM percentile_cont(0.95)
                        WITHIN GROUP (ORDER BY e.create_time - t.create_time))::float8 AS p95_secs
             FROM events e
             JOIN tenants t ON t.id = e.tenant_id
             WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL AND e.state = 'ACTIVE'
               AND e.create_time >= $1
             GROUP BY t.plan
         ) p
         ORDER BY plan",
    )
    .bind::<Timestamptz, _>(since)
    .load(&mut conn)
    .await
    .expect("time to ACTIVE from events");
    let step_failures = diesel::sql_query(
        "SELECT coalesce(e.step, '') AS step, count(*) AS failed_attempts,
                count(*) FILTER (WHERE e.kind <> 'STEP_RETRYING') AS given_up
         FROM events e
         WHERE e.kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
           AND e.create_time >= $1
         GROUP BY 1
         ORDER BY failed_attempts DESC, step",
    )
    .bind::<Timestamptz, _>(since)
    .load(&mut conn)
    .await
    .expect("step failures from events");
    Figures {
        pipelines,
        time_to_active,
        step_failures,
    }
}

/// Events that count, from `since` to the end of the hour it cuts: the
/// part of a window the rollup's hours leave to the event log.
async fn in_cut_hour(app: &TestApp, since: DateTime<Utc>) -> i64 {
    let mut conn = app.db.conn().await;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM events
         WHERE create_time >= $1 AND date_trunc('hour', create_time AT TIME ZONE 'UTC')
                                     < date_trunc('hour', $1 AT TIME ZONE 'UTC') + interval '1 hour'
           AND (kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
                OR (kind = 'STATE_CHANGED' AND attempt IS NOT NULL))",
    )
    .bind::<Timestamptz, _>(since)
    .get_result(&mut conn)
    .await
    .expect("events in the cut hour");
    row.n
}

/// Compares every window's answer with the event log; returns the events
/// that only the event log could answer for (in the hours the starts cut).
async fn assert_windows_agree(app: &TestApp, when: &str) -> i64 {
    let mut cut = 0;
    for seconds in WINDOWS {
        let answer = app
            .client
            .clone()
            .get_provisioning_stats(GetProvisioningStatsRequest {
                window: Some(prost_types::Duration { seconds, nanos: 0 }),
            })
            .await
            .expect("stats")
            .into_inner();
        let start = answer.window_start_time.expect("window start");
        let since = DateTime::from_timestamp(start.seconds, start.nanos as u32).expect("time");
        let rpc = from_rpc(&answer);
        let raw = from_events(app, since).await;
        assert_eq!(rpc, raw, "{when}, window of {seconds} s from {since}");
        cut += in_cut_hour(app, since).await;
    }
    cut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_rollup_agrees_with_the_event_log() {
    let app = TestApp::api_only().await;
    app.db.exec(HISTORY).await;
    // The history spans the windows' hours, and its pipelines end in every
    // way the figures tell apart.
    assert!(
        app.db
            .count("SELECT count(DISTINCT date_trunc('hour', create_time)) FROM events")
            .await
            > 200
    );
    let month = app
        .client
        .clone()
        .get_provisioning_stats(GetProvisioningStatsRequest {
            window: Some(prost_types::Duration {
                seconds: 30 * 86_400,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let p = month.pipelines.unwrap();
    assert!(p.succeeded > 0 && p.failed > 0 && p.cancelled > 0 && p.needs_attention > 0);
    assert_eq!(
        p.needs_attention,
        app.db
            .count("SELECT count(*) FROM tenants WHERE slug LIKE 'na-provisioning-%'")
            .await,
        "a NEEDS_ATTENTION while deprovisioning ends no provisioning pipeline"
    );
    assert_eq!(month.time_to_active.len(), 4);
    let cut = assert_windows_agree(&app, "as written").await;
    assert!(cut > 0, "no window start cut an hour with events");

    app.db.exec(DELETIONS).await;
    assert!(
        app.db
            .count(
                "SELECT count(*) FROM events e JOIN tenants t ON t.id = e.tenant_id
                 WHERE t.slug LIKE 'na-deprovisioning-%' AND e.state = 'NEEDS_ATTENTION'
                   AND (SELECT p.state FROM events p WHERE p.tenant_id = e.tenant_id
                        AND p.id < e.id ORDER BY p.id DESC LIMIT 1) = 'PROVISIONING'"
            )
            .await
            > 0,
        "some deprovisioning NEEDS_ATTENTION is now read as the end of provisioning"
    );
    let cut = assert_windows_agree(&app, "after deletions").await;
    assert!(cut > 0, "no window start cut an hour with events");

    // What the rollup was computed from cannot change behind its back.
    let mut conn = app.db.conn().await;
    for rewrite in [
        "UPDATE tenants SET plan = 'basic' WHERE plan = 'team'",
        "UPDATE tenants SET create_time = create_time - interval '1 hour'",
        "UPDATE events SET state = 'FAILED' WHERE state = 'ACTIVE'",
        "UPDATE events SET create_time = create_time - interval '1 hour'",
    ] {
        let err = conn.batch_execute(rewrite).await.expect_err(rewrite);
        assert!(
            err.to_string()
                .contains("GetProvisioningStats keeps a rollup"),
            "{rewrite}: {err}"
        );
    }
    conn.batch_execute("UPDATE tenants SET display_name = 'Renamed' WHERE slug = 'active-5'")
        .await
        .expect("other columns stay writable");
    app.stop().await;
}
