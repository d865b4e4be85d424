//! Server processes that crash or share the work: exactly-once database
//! steps, leases that expire, nothing lost, nothing run twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::AsyncPgConnection;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{CreateTenantRequest, ListTenantsRequest, TenantState};
use tonic::transport::Channel;

use crate::common::process::ServerProcess;
use crate::common::{TestDb, tenant};

/// Steps whose effect is in the database: exactly once, even across kills.
const EXACTLY_ONCE: &str =
    "('create_schema', 'run_migrations', 'seed_roles_and_admin', 'activate')";

async fn create_many(
    client: &mut TenantServiceClient<Channel>,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let req = CreateTenantRequest {
            tenant: Some(tenant(&format!("{prefix}-{i:03}"))),
            ..Default::default()
        };
        ids.push(
            client
                .create_tenant(req)
                .await
                .unwrap()
                .into_inner()
                .tenant
                .unwrap()
                .id,
        );
    }
    ids
}

async fn count_active(client: &mut TenantServiceClient<Channel>) -> usize {
    let req = ListTenantsRequest {
        page_size: 1000,
        state: TenantState::Active as i32,
        ..Default::default()
    };
    client
        .list_tenants(req)
        .await
        .unwrap()
        .into_inner()
        .tenants
        .len()
}

async fn wait_all_active(client: &mut TenantServiceClient<Channel>, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while count_active(client).await < n {
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "not every tenant reached ACTIVE:\n{}",
                not_active(client).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tenants that are not ACTIVE, with their unfinished steps, to say
/// why a wait timed out.
async fn not_active(client: &mut TenantServiceClient<Channel>) -> String {
    let req = ListTenantsRequest {
        page_size: 1000,
        ..Default::default()
    };
    let tenants = client.list_tenants(req).await.unwrap().into_inner().tenants;
    let mut lines = Vec::new();
    for t in tenants
        .iter()
        .filter(|t| t.state != TenantState::Active as i32)
    {
        let steps: Vec<_> = t
            .steps
            .iter()
            .filter(|s| s.status != tenantd::proto::StepStatus::Succeeded as i32)
            .map(|s| {
                format!(
                    "{} {:?} attempt {}/{} {:?}",
                    s.name,
                    s.status(),
                    s.attempts,
                    s.max_attempts,
                    s.last_error
                )
            })
            .collect();
        lines.push(format!("{} {:?}: {steps:?}", t.slug, t.state()));
    }
    lines.join("\n")
}

/// Every exactly-once step succeeded once per tenant, every tenant's
/// database objects exist once, and nothing is left in the outbox.
pub(crate) async fn assert_exactly_once(db: &TestDb, tenants: i64) {
    let twice = format!(
        "SELECT count(*) FROM (SELECT tenant_id, step FROM events
             WHERE kind = 'STEP_SUCCEEDED' AND step IN {EXACTLY_ONCE}
             GROUP BY tenant_id, step HAVING count(*) <> 1) x"
    );
    assert_eq!(
        db.count(&twice).await,
        0,
        "an exactly-once step succeeded twice"
    );
    let once = format!(
        "SELECT count(*) FROM events WHERE kind = 'STEP_SUCCEEDED' AND step IN {EXACTLY_ONCE}"
    );
    assert_eq!(db.count(&once).await, tenants * 4);
    let migrations = "SELECT count(*) FROM pg_tables WHERE tablename = 'schema_migrations' AND schemaname LIKE 'tenant_%'";
    assert_eq!(db.count(migrations).await, tenants);
    assert_eq!(
        db.count("SELECT count(*) FROM outbox").await,
        0,
        "work left in the outbox"
    );
    // Each tenant's log is in order: no step succeeds before it started, and
    // the last event is the change to ACTIVE.
    let out_of_order = "SELECT count(*) FROM events started JOIN events done
        ON done.tenant_id = started.tenant_id AND done.step = started.step
        WHERE started.kind = 'STEP_STARTED' AND done.kind = 'STEP_SUCCEEDED' AND done.id < started.id";
    assert_eq!(db.count(out_of_order).await, 0);
    let not_last = "SELECT count(*) FROM tenants t WHERE (SELECT e.message FROM events e
        WHERE e.tenant_id = t.id ORDER BY e.id DESC LIMIT 1) <> 'ACTIVE: provisioning complete'";
    assert_eq!(db.count(not_last).await, 0);
    // Each tenant schema holds exactly its three roles and one admin: the
    // seeding ran once (a second run would have been a no-op, but a
    // duplicated transaction would show as a second event above).
    let per_schema = "SELECT count(*) FROM tenants t WHERE (xpath('/row/c/text()',
        query_to_xml(format('SELECT count(*) AS c FROM %I.roles', 'tenant_' || replace(t.slug, '-', '_')), false, true, '')))[1]::text::int <> 3";
    assert_eq!(db.count(per_schema).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_nothing_and_runs_nothing_twice() {
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let lease_ms = 1500;
    let first = ServerProcess::spawn(&db, mail.path(), lease_ms).await;
    let mut client = first.client().await;
    let ids = create_many(&mut client, "crash", 50).await;
    // Let it get going, then pull the plug mid-run.
    while db
        .count("SELECT count(*) FROM events WHERE kind = 'STEP_SUCCEEDED'")
        .await
        < 20
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill_9().await;
    let active_at_kill = db
        .count("SELECT count(*) FROM tenants WHERE state = 'ACTIVE'")
        .await;
    let leased_at_kill = db
        .count("SELECT count(*) FROM outbox WHERE lease_owner IS NOT NULL")
        .await;
    eprintln!("at kill: {active_at_kill} of 50 active, {leased_at_kill} rows leased");

    let second = ServerProcess::spawn(&db, mail.path(), lease_ms).await;
    let mut client = second.client().await;
    wait_all_active(&mut client, ids.len()).await;
    assert_exactly_once(&db, 50).await;
    second.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_the_work_and_each_step_runs_once() {
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let a = ServerProcess::spawn(&db, mail.path(), 5000).await;
    let b = ServerProcess::spawn(&db, mail.path(), 5000).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let (left, right) = tokio::join!(
        create_many(&mut ca, "left", 50),
        create_many(&mut cb, "right", 50)
    );
    assert_eq!(left.len() + right.len(), 100);
    wait_all_active(&mut ca, 100).await;
    let started_twice =
        "SELECT count(*) FROM (SELECT tenant_id, step FROM events WHERE kind = 'STEP_STARTED'
                         GROUP BY tenant_id, step HAVING count(*) <> 1) x";
    assert_eq!(db.count(started_twice).await, 0, "a step ran twice");
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE kind = 'STEP_SUCCEEDED'")
            .await,
        700,
        "seven steps of the default plan, a hundred tenants"
    );
    assert_exactly_once(&db, 100).await;
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_attempts_all_died_with_their_workers_fails_without_running() {
    // The API alone writes the tenant; then the row looks as if five
    // workers had claimed it and died.
    let app = crate::common::TestApp::api_only().await;
    let t = app.create("acme", "").await;
    app.db.exec("UPDATE outbox SET attempt = 5").await;
    let mail = tempfile::tempdir().unwrap();
    let dispatcher = ServerProcess::spawn(&app.db, mail.path(), 5000).await;
    let failed = app.wait_for(&t.id, TenantState::Failed).await;
    let step = &failed.steps[0];
    assert_eq!(step.name, "create_schema");
    assert!(
        step.last_error.contains("lost with its worker"),
        "{}",
        step.last_error
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'")
            .await,
        0,
        "never ran"
    );
    dispatcher.terminate().await;
}

/// The three-replica test's lease: short, so the killed replica's rows are
/// due again soon; long enough that live replicas, which heartbeat at a
/// third of it, keep theirs on a loaded machine.
const SHORT_LEASE_MS: u64 = 2000;
/// `ServerProcess`'s fallback poll (300 ms) plus its +20% jitter: once a
/// lease expires, a replica with a free slot claims the row at the latest
/// on its next poll.
const POLL_MS: u64 = 360;
/// Slack on top of lease + poll. The bound is about correctness (work
/// resumes once its lease expires, not an hour later), not speed, so it
/// must hold on a two-core machine that also runs the rest of the suite:
/// there a row past its lease waits for a slot on a live replica while all
/// of theirs run the load.
const RESUME_SLACK: Duration = Duration::from_secs(20);
/// The plan of the load test: the default plan without `deploy_contract`.
/// Deployments are one at a time per deployer account, so under load their
/// attempts wait for one another in dispatcher slots, and a killed
/// replica's rows would wait for a free slot rather than for their lease:
/// this test measures the lease.
pub(crate) const PLAN_NAME: &str = "no-contract";
/// Its steps, in order.
pub(crate) const PLAN: [&str; 5] = [
    "create_schema",
    "run_migrations",
    "seed_roles_and_admin",
    "send_welcome_email",
    "activate",
];
/// Adds [`PLAN_NAME`] to the database.
pub(crate) async fn add_plan(db: &TestDb) {
    let steps: Vec<serde_json::Value> = PLAN
        .iter()
        .map(|name| serde_json::json!({"name": name, "critical": true, "max_attempts": 5}))
        .collect();
    db.exec(&format!(
        "INSERT INTO plans (name, steps) VALUES ('{PLAN_NAME}', '{}')",
        serde_json::Value::Array(steps)
    ))
    .await;
}

/// Each replica's dispatcher slots and pooled connections: small, so that
/// three replicas and a restart stay well inside PostgreSQL's default 100
/// connections, which tests running in parallel share.
const CONCURRENCY: usize = 4;
const POOL: &[(&str, &str)] = &[("TENANTD_POOL_SIZE", "8")];
/// Tenants each of the three writers creates, and the pause between its
/// creates: a steady load that spans the kill and the restart (a create
/// takes tens to hundreds of milliseconds on a busy two-core machine).
const PER_WRITER: usize = 30;
const WRITER_PAUSE: Duration = Duration::from_millis(25);

/// A replica of the three-replica test.
async fn replica(db: &TestDb, mail_dir: &std::path::Path) -> ServerProcess {
    ServerProcess::spawn_full(db, mail_dir, SHORT_LEASE_MS, CONCURRENCY, POOL, None).await
}

/// Clients of the replicas, one slot each; a slot is replaced when its
/// replica is restarted.
type Endpoints = Arc<Mutex<Vec<TenantServiceClient<Channel>>>>;

/// The writers' progress, watched by the test.
#[derive(Default)]
struct Progress {
    /// Tenants created.
    created: AtomicUsize,
    /// Creates that failed on one replica and were retried on another.
    retried: AtomicUsize,
}

/// Creates `n` tenants named `{prefix}-{i}`, the i-th through endpoint
/// `first + i` (modulo the number of endpoints), each with a request_id.
/// A create that fails (its replica was killed) is retried on the next
/// endpoint with the same request_id, so that it creates the tenant at
/// most once whether or not the first call committed.
async fn create_spread(
    endpoints: Endpoints,
    prefix: String,
    first: usize,
    n: usize,
    progress: Arc<Progress>,
) -> Vec<(String, String)> {
    let mut tenants = Vec::new();
    for i in 0..n {
        let slug = format!("{prefix}-{i:03}");
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut slot = first + i;
        let mut tries = 0;
        let id = loop {
            let mut client = {
                let endpoints = endpoints.lock().unwrap();
                endpoints[slot % endpoints.len()].clone()
            };
            let req = CreateTenantRequest {
                tenant: Some(tenantd::proto::Tenant {
                    plan: PLAN_NAME.to_owned(),
                    ..tenant(&slug)
                }),
                request_id: request_id.clone(),
                ..Default::default()
            };
            match client.create_tenant(req).await {
                Ok(response) => break response.into_inner().tenant.unwrap().id,
                Err(status) => {
                    tries += 1;
                    assert!(tries < 20, "creating {slug}: {status:?}");
                    progress.retried.fetch_add(1, Ordering::SeqCst);
                    slot += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        tenants.push((slug, id));
        progress.created.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(WRITER_PAUSE).await;
    }
    tenants
}

/// Runs SQL that returns a single bigint on an open connection (polling
/// with `TestDb::count` would connect each time).
async fn count_on(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: Count = diesel::sql_query(format!("SELECT ({sql})::bigint AS n"))
        .get_result(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.n
}

/// The database's clock.
async fn db_now(conn: &mut AsyncPgConnection) -> DateTime<Utc> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Now {
        #[diesel(sql_type = Timestamptz)]
        t: DateTime<Utc>,
    }
    let now: Now = diesel::sql_query("SELECT now() AS t")
        .get_result(conn)
        .await
        .unwrap();
    now.t
}

/// An outbox row leased to some owner.
#[derive(Debug, diesel::QueryableByName)]
struct Held {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    step: String,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Timestamptz)]
    locked_until: DateTime<Utc>,
}

/// Rows leased to the process with `pid` (owner id `{HOSTNAME}:{pid}:{random}`).
fn leased_to(pid: u32) -> String {
    format!("lease_owner ~ ':{pid}:[0-9a-f]+$'")
}

async fn held_by(conn: &mut AsyncPgConnection, pid: u32) -> Vec<Held> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(format!(
        "SELECT tenant_id, step, attempt, locked_until FROM outbox WHERE {}",
        leased_to(pid)
    ))
    .load(conn)
    .await
    .unwrap()
}

/// One row of the event log.
#[derive(Debug, diesel::QueryableByName)]
pub(crate) struct Event {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: uuid::Uuid,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    step: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    attempt: Option<i32>,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Timestamptz)]
    create_time: DateTime<Utc>,
}

/// Every tenant's events in id order.
pub(crate) async fn event_logs(db: &TestDb) -> BTreeMap<uuid::Uuid, Vec<Event>> {
    use diesel_async::RunQueryDsl;
    let events: Vec<Event> = diesel::sql_query(
        "SELECT tenant_id, id, kind, step, attempt, state, create_time FROM events ORDER BY id",
    )
    .load(&mut db.conn().await)
    .await
    .unwrap();
    let mut logs: BTreeMap<_, Vec<Event>> = BTreeMap::new();
    for event in events {
        logs.entry(event.tenant_id).or_default().push(event);
    }
    logs
}

/// Replays one tenant's log: created, then each step of the plan started
/// (attempts strictly increasing: a lost lease shows as a new attempt) and
/// succeeded once by its latest attempt, in plan order with none skipped,
/// then one change to ACTIVE as the last event.
pub(crate) fn check_log(log: &[Event]) -> Result<(), String> {
    let (created, rest) = log.split_first().ok_or("no events")?;
    if created.kind != "TENANT_CREATED" {
        return Err(format!("first event is {created:?}"));
    }
    let mut next = 0; // index in PLAN of the step to succeed next
    let mut running: Option<i32> = None; // its latest started attempt
    let mut last_attempt = 0;
    for (i, e) in rest.iter().enumerate() {
        let expected = PLAN.get(next).copied();
        let step = e.step.as_deref();
        let attempt = e.attempt.unwrap_or(0);
        match e.kind.as_str() {
            "STEP_STARTED" if step == expected && attempt > last_attempt => {
                running = Some(attempt);
                last_attempt = attempt;
            }
            "STEP_RETRYING" if step == expected && running == Some(attempt) => running = None,
            "STEP_SUCCEEDED" if step == expected && running == Some(attempt) => {
                next += 1;
                running = None;
                last_attempt = 0;
            }
            "STATE_CHANGED" if next == PLAN.len() && e.state == "ACTIVE" && i + 1 == rest.len() => {
                return Ok(());
            }
            _ => {
                return Err(format!(
                    "unexpected {e:?} (next step {expected:?}, running {running:?})"
                ));
            }
        }
    }
    Err("never became ACTIVE".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_under_load_lose_nothing_when_one_is_killed_and_restarted() {
    let began = std::time::Instant::now();
    let db = TestDb::new().await;
    add_plan(&db).await;
    let mail = tempfile::tempdir().unwrap();
    let victim_sessions = "tenantd-victim";
    let a = replica(&db, mail.path()).await;
    let b = replica(&db, mail.path()).await;
    let victim = replica(&db.sessions_named(victim_sessions), mail.path()).await;
    let endpoints: Endpoints = Arc::new(Mutex::new(vec![
        a.client().await,
        b.client().await,
        victim.client().await,
    ]));
    let progress = Arc::new(Progress::default());
    let writers: Vec<_> = (0..3)
        .map(|w| {
            tokio::spawn(create_spread(
                endpoints.clone(),
                format!("load{w}"),
                w,
                PER_WRITER,
                progress.clone(),
            ))
        })
        .collect();

    // Under load, kill -9 the victim while it holds claimed rows.
    let pid = victim.pid();
    let held_by_victim = format!("SELECT count(*) FROM outbox WHERE {}", leased_to(pid));
    let mut conn = db.conn().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while progress.created.load(Ordering::SeqCst) < 15
        || count_on(&mut conn, &held_by_victim).await < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim never held two rows"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    victim.kill_9().await;
    let kill_at = db_now(&mut conn).await;
    let killed = std::time::Instant::now();
    let created_at_kill = progress.created.load(Ordering::SeqCst);
    let retried_at_kill = progress.retried.load(Ordering::SeqCst);
    // A statement the victim sent before it died may still commit; once its
    // sessions are gone, what it holds is final.
    let sessions = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{victim_sessions}' AND datname = '{}'",
        db.name()
    );
    while count_on(&mut conn, &sessions).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim's sessions stayed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let held = held_by(&mut conn, pid).await;
    assert!(!held.is_empty(), "the victim held no rows when it died");
    let settled = killed.elapsed();

    // Creates go on: wait until one has failed on the dead replica and gone
    // to another, then restart the victim and hand its slot the new process.
    while progress.retried.load(Ordering::SeqCst) == retried_at_kill {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no create reached the dead replica"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restarted = replica(&db, mail.path()).await;
    endpoints.lock().unwrap()[2] = restarted.client().await;
    let created_at_restart = progress.created.load(Ordering::SeqCst);
    let outage = killed.elapsed();

    let mut tenants = Vec::new();
    for writer in writers {
        tenants.extend(writer.await.unwrap());
    }
    let retried = progress.retried.load(Ordering::SeqCst);
    let load_done = killed.elapsed();
    let total = 3 * PER_WRITER;
    assert_eq!(tenants.len(), total);
    let mut client = a.client().await;
    wait_all_active(&mut client, total).await;
    let all_active = killed.elapsed();

    // Nothing lost, nothing twice: one tenant per create, under the id the
    // create returned; every database step succeeded exactly once; every
    // log runs through the plan in order and changes state once.
    assert_eq!(db.count("SELECT count(*) FROM tenants").await, total as i64);
    for (slug, id) in &tenants {
        let sql = format!(
            "SELECT count(*) FROM tenants WHERE slug = '{slug}' AND id = '{id}' AND state = 'ACTIVE'"
        );
        assert_eq!(db.count(&sql).await, 1, "{slug}");
    }
    assert_exactly_once(&db, total as i64).await;
    let logs = event_logs(&db).await;
    assert_eq!(logs.len(), total);
    for (tenant_id, log) in &logs {
        if let Err(e) = check_log(log) {
            panic!("tenant {tenant_id}: {e}\n{log:#?}");
        }
    }

    // The victim's rows were taken over once their leases expired, by
    // another owner (the victim was dead by `kill_at`), and resumed within
    // a lease of the kill.
    let bound = Duration::from_millis(SHORT_LEASE_MS + POLL_MS) + RESUME_SLACK;
    let mut latencies = Vec::new();
    for row in &held {
        let log = &logs[&row.tenant_id];
        let resumed = log
            .iter()
            .find(|e| e.kind == "STEP_STARTED" && e.create_time > kill_at)
            .unwrap_or_else(|| panic!("{row:?} never resumed"));
        assert_eq!(resumed.step.as_deref(), Some(row.step.as_str()), "{row:?}");
        assert_eq!(resumed.attempt, Some(row.attempt + 1), "{row:?}");
        assert!(
            resumed.create_time >= row.locked_until,
            "{row:?} taken before its lease expired: {resumed:?}"
        );
        let succeeded = log
            .iter()
            .find(|e| e.kind == "STEP_SUCCEEDED" && e.step == resumed.step)
            .unwrap();
        assert!(succeeded.id > resumed.id && succeeded.attempt > Some(row.attempt));
        let latency = (resumed.create_time - kill_at).to_std().unwrap();
        let after_expiry = (resumed.create_time - row.locked_until).to_std().unwrap();
        assert!(
            latency <= bound,
            "{row:?} resumed {latency:?} after the kill"
        );
        latencies.push((latency, after_expiry));
    }
    latencies.sort();
    println!(
        "three replicas, lease {SHORT_LEASE_MS} ms, {CONCURRENCY} slots each: the victim (pid {pid}) held {} rows when killed \
         after {created_at_kill} creates; its sessions were gone {} ms later; restarted after {} ms, \
         {} creates meanwhile, {retried} retried on another replica",
        held.len(),
        settled.as_millis(),
        outage.as_millis(),
        created_at_restart - created_at_kill,
    );
    for (latency, after_expiry) in &latencies {
        println!(
            "  resumed {} ms after the kill ({} ms after its lease expired)",
            latency.as_millis(),
            after_expiry.as_millis()
        );
    }
    // The welcome email is at least once: a victim killed after writing it
    // but before recording it leaves a second file.
    let emails = std::fs::read_dir(mail.path()).unwrap().count();
    println!(
        "  bound {} ms; after the kill the load ended at {} ms, all {total} ACTIVE at {} ms; \
         {emails} welcome emails; test wall time {} ms",
        bound.as_millis(),
        load_done.as_millis(),
        all_active.as_millis(),
        began.elapsed().as_millis()
    );
    a.terminate().await;
    b.terminate().await;
    restarted.terminate().await;
}

#[test]
fn the_log_check_rejects_a_second_success_a_skipped_step_and_a_stale_attempt() {
    let event = |kind: &str, step: Option<&str>, attempt: i32| Event {
        tenant_id: uuid::Uuid::nil(),
        id: 0,
        kind: kind.into(),
        step: step.map(Into::into),
        attempt: Some(attempt),
        state: if kind == "STATE_CHANGED" {
            "ACTIVE"
        } else {
            "PROVISIONING"
        }
        .into(),
        create_time: Utc::now(),
    };
    let good = || {
        let mut log = vec![event("TENANT_CREATED", None, 0)];
        for step in PLAN {
            log.push(event("STEP_STARTED", Some(step), 1));
            log.push(event("STEP_SUCCEEDED", Some(step), 1));
        }
        log.push(event("STATE_CHANGED", Some("activate"), 1));
        log
    };
    assert_eq!(check_log(&good()), Ok(()));
    // A lost lease: the step starts again with the next attempt.
    let mut resumed = good();
    resumed.insert(4, event("STEP_STARTED", Some("run_migrations"), 2));
    resumed[5].attempt = Some(2);
    assert_eq!(check_log(&resumed), Ok(()));

    let mut twice = good();
    twice.insert(3, event("STEP_SUCCEEDED", Some("create_schema"), 1));
    let mut skipped = good();
    skipped.drain(3..5);
    let mut stale = resumed;
    stale[5].attempt = Some(1);
    let mut activated_twice = good();
    activated_twice.push(event("STATE_CHANGED", Some("activate"), 1));
    for bad in [twice, skipped, stale, activated_twice] {
        assert!(check_log(&bad).is_err(), "{bad:#?}");
    }
}
