//! tenantd on a Patroni-managed PostgreSQL cluster (real etcd, real
//! Patroni, two PostgreSQL 15 nodes on loopback, synchronous mode): the
//! primary dies, or is switched over, while clients create tenants and
//! retry UNAVAILABLE with their request_id, as the README says to. Nothing
//! acknowledged is lost, nothing runs twice, every pipeline ends ACTIVE.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{CreateTenantRequest, GetTenantRequest, TenantState};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::patroni::Patroni;
use crate::common::process::ServerProcess;
use crate::common::{TestDb, tenant};
use crate::replicas::{PLAN_NAME, add_plan, assert_exactly_once, check_log, event_logs};

const TENANTS: usize = 100;
const CLIENTS: usize = 8;
/// Acknowledged creates before the primary goes.
const BEFORE: usize = 30;
/// How long a client keeps retrying one create.
const RETRY_LIMIT: Duration = Duration::from_secs(90);

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// request index -> (tenant id, when acknowledged).
    acked: BTreeMap<usize, (String, Instant)>,
    /// The failed calls (each retried): code, when.
    errors: Vec<(tonic::Code, Instant)>,
    /// When each request that had failed was acknowledged on a retry: a
    /// call made after the failover began, served by the new primary.
    recovered: Vec<Instant>,
}

/// One database on the cluster, its server process, and its plan.
async fn serve_on(
    cluster: &Patroni,
    mail: &std::path::Path,
) -> (std::mem::ManuallyDrop<TestDb>, ServerProcess) {
    let admin = TestDb::external(cluster.url("postgres"), "");
    admin.exec("CREATE DATABASE tenantd_ha").await;
    let db = TestDb::external(cluster.url("tenantd_ha"), "ha_");
    let server =
        ServerProcess::spawn_full(&db, mail, 2_000, 4, &[("TENANTD_POOL_SIZE", "8")], None).await;
    add_plan(&db).await;
    (db, server)
}

/// `CLIENTS` clients create up to `limit` tenants (fewer if `stop` is
/// set first), each with a request_id, retrying any failure after 100 ms
/// with the same request. A request once begun is seen through.
fn start_clients(
    client: TenantServiceClient<Channel>,
    seen: Arc<Mutex<Seen>>,
    limit: usize,
    stop: Arc<AtomicBool>,
    pause: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicUsize::new(0));
    (0..CLIENTS)
        .map(|_| {
            let (mut client, seen) = (client.clone(), Arc::clone(&seen));
            let (next, stop) = (Arc::clone(&next), Arc::clone(&stop));
            tokio::spawn(async move {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= limit {
                        break;
                    }
                    let mut t = tenant(&format!("ha-{i:03}"));
                    t.plan = PLAN_NAME.to_owned();
                    let request = CreateTenantRequest {
                        tenant: Some(t),
                        request_id: format!("ha-request-{i}"),
                        ..Default::default()
                    };
                    let started = Instant::now();
                    let mut failed = false;
                    loop {
                        match client.create_tenant(request.clone()).await {
                            Ok(r) => {
                                let id = r.into_inner().tenant.unwrap().id;
                                let mut seen = seen.lock().unwrap();
                                seen.acked.insert(i, (id, Instant::now()));
                                if failed {
                                    seen.recovered.push(Instant::now());
                                }
                                break;
                            }
                            Err(e) => {
                                failed = true;
                                seen.lock().unwrap().errors.push((e.code(), Instant::now()));
                                assert!(started.elapsed() < RETRY_LIMIT, "request {i}: {e:?}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    // A steady load that spans the failover.
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect()
}

/// Health as a client saw it: (when, serving).
type HealthLog = Arc<Mutex<Vec<(Instant, bool)>>>;

/// Health as a client sees it, every 50 ms.
fn watch_health(mut health: HealthClient<Channel>) -> (HealthLog, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            let serving = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
            out.lock().unwrap().push((Instant::now(), serving));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (seen, task)
}

async fn wait_acked(seen: &Mutex<Seen>, n: usize) {
    let deadline = Instant::now() + RETRY_LIMIT;
    while seen.lock().unwrap().acked.len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} creates acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every acknowledged tenant exists once and reaches ACTIVE, every step
/// with an effect in the database succeeded once, every log is in order.
async fn assert_nothing_lost(db: &TestDb, server: &ServerProcess, seen: &Seen) {
    let tenants = seen.acked.len();
    // Requests are numbered from 0 and each begun one was seen through.
    assert_eq!(seen.acked.keys().copied().max(), Some(tenants - 1));
    let ids: HashSet<&String> = seen.acked.values().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), tenants, "two requests named one tenant");
    let mut client = server.client().await;
    let deadline = Instant::now() + RETRY_LIMIT;
    for id in ids {
        loop {
            let t = client
                .get_tenant(GetTenantRequest {
                    tenant_id: id.clone(),
                })
                .await
                .map(|r| r.into_inner().tenant.unwrap());
            match t {
                Ok(t) if t.state() == TenantState::Active => break,
                other => {
                    assert!(Instant::now() < deadline, "{id} not ACTIVE: {other:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    assert_eq!(
        db.count("SELECT count(*) FROM tenants").await,
        tenants as i64,
        "a tenant was created twice or lost"
    );
    assert_exactly_once(db, tenants as i64).await;
    for (tenant, log) in event_logs(db).await {
        check_log(&log).unwrap_or_else(|e| panic!("tenant {tenant}: {e}"));
    }
}

/// The first moment after `since` at which `serving` is `wanted`.
fn first(health: &[(Instant, bool)], since: Instant, wanted: bool) -> Option<Instant> {
    health
        .iter()
        .find(|(at, serving)| *at >= since && *serving == wanted)
        .map(|(at, _)| *at)
}

fn secs(from: Instant, to: Option<Instant>) -> String {
    to.map_or("never".to_owned(), |t| {
        format!("{:.2} s", (t - from).as_secs_f64())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_loses_nothing_acknowledged_and_every_pipeline_ends_active() {
    let cluster = Patroni::start().await;
    let mail = tempfile::tempdir().unwrap();
    let (db, server) = serve_on(&cluster, mail.path()).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (health, watcher) = watch_health(HealthClient::new(server.channel().await));
    let never = Arc::new(AtomicBool::new(false));
    let clients = start_clients(
        server.client().await,
        Arc::clone(&seen),
        TENANTS,
        never,
        Duration::from_millis(20),
    );

    wait_acked(&seen, BEFORE).await;
    let leader = cluster.leader().await.expect("a leader");
    let killed = Instant::now();
    cluster.kill(leader);
    for c in clients {
        c.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // Health catches up within its check interval.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (not_serving, serving) = loop {
        let samples = health.lock().unwrap().clone();
        let not_serving = first(&samples, killed, false);
        let serving = not_serving.and_then(|at| first(&samples, at, true));
        if serving.is_some() || Instant::now() > deadline {
            break (not_serving, serving);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    watcher.abort();
    let first_success = seen.recovered.iter().min().copied();
    eprintln!(
        "failover: primary {} killed after {BEFORE} acknowledged creates; NOT_SERVING after {}, SERVING after {}, first CreateTenant acknowledged after {}; {} failed calls retried",
        cluster.nodes[leader].name,
        secs(killed, not_serving),
        secs(killed, serving),
        secs(killed, first_success),
        seen.errors.len()
    );
    assert!(
        seen.errors
            .iter()
            .all(|(c, _)| *c == tonic::Code::Unavailable),
        "calls during the failover must fail UNAVAILABLE: {:?}",
        seen.errors
    );
    assert!(not_serving.is_some(), "health never said NOT_SERVING");
    assert!(serving.is_some(), "health never came back to SERVING");
    assert_eq!(cluster.leader().await.map(|l| l != leader), Some(true));
    assert_eq!(seen.acked.len(), TENANTS);
    assert_nothing_lost(&db, &server, &seen).await;
    server.terminate().await;

    // A server started now runs its migrations and serves on the new
    // primary, through the same URL.
    let server = ServerProcess::spawn_full(
        &db,
        mail.path(),
        2_000,
        4,
        &[("TENANTD_POOL_SIZE", "8")],
        None,
    )
    .await;
    let mut t = tenant("ha-after");
    t.plan = PLAN_NAME.to_owned();
    let after = server
        .client()
        .await
        .create_tenant(CreateTenantRequest {
            tenant: Some(t),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    server.wait_active(&after.id).await;
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_load_loses_nothing_and_clients_that_retry_see_no_error() {
    let cluster = Patroni::start().await;
    let mail = tempfile::tempdir().unwrap();
    let (db, server) = serve_on(&cluster, mail.path()).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    // Creates go on until the switchover is over and more have been
    // acknowledged since, so that the load spans it.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(
        server.client().await,
        Arc::clone(&seen),
        usize::MAX,
        Arc::clone(&stop),
        // Slower: it runs for the whole switchover.
        Duration::from_millis(150),
    );

    wait_acked(&seen, BEFORE).await;
    let leader = cluster.leader().await.expect("a leader");
    let started = Instant::now();
    let before = seen.lock().unwrap().acked.len();
    cluster.switchover(leader).await;
    let after = seen.lock().unwrap().acked.len();
    wait_acked(&seen, after + BEFORE).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        after > before,
        "no create was acknowledged while the switchover ran"
    );
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "switchover from {}: {:.2} s to the command's return, {} creates acknowledged while it ran, {} in all, {} failed calls retried",
        cluster.nodes[leader].name,
        started.elapsed().as_secs_f64(),
        after - before,
        seen.acked.len(),
        seen.errors.len()
    );
    assert!(
        seen.errors
            .iter()
            .all(|(c, _)| *c == tonic::Code::Unavailable),
        "calls during the switchover must fail UNAVAILABLE: {:?}",
        seen.errors
    );
    assert_eq!(cluster.leader().await.map(|l| l != leader), Some(true));
    assert_nothing_lost(&db, &server, &seen).await;
    // The old primary is a standby now: a connection to it alone is
    // refused as read-only, never used.
    let old = tenantd::db::pool(&cluster.node_url(leader, "tenantd_ha"), 1).unwrap();
    cluster.wait_ready().await;
    match tenantd::db::conn(&old).await {
        Err(tenantd::error::Error::Unavailable(why)) => {
            assert!(why.contains("read-only"), "{why}")
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a connection to the standby was handed out"),
    }
    server.terminate().await;
}
