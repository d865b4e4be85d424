//! `tenantd bench`: throughput and latency figures, measured on scratch
//! databases that the benchmark creates on a given PostgreSQL server and
//! drops afterwards. Figures, not pass/fail: targets are checked by reading
//! them, never by tests.
//!
//! Each figure runs the real server in process, on 127.0.0.1, against its own
//! scratch database, next to a baseline that does the same database work with
//! plain SQL transactions (the physical limit of this machine).

pub mod smtp;
mod soak;
mod stats;
mod watchers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::config::{BenchArgs, BenchCommand, Config};
use crate::db::models::{NewTenantRow, json_map};
use crate::db::outbox::Operation;
use crate::domain::{EventKind, NewEvent, PlanStep, TenantState};
use crate::proto::tenant_service_client::TenantServiceClient;
use crate::proto::{CreateTenantRequest, Tenant};
use crate::server::BoxError;
use crate::steps::{
    CreateSchema, Output, Registry, RunMigrations, SeedRolesAndAdmin, Step, StepCtx, StepError,
    TenantNames,
};

/// The default plan without `deploy_contract`: provisioning compared with
/// the same work done in plain SQL, and wake-ups on an idle server.
const NO_CONTRACT_PLAN: &str = "bench-no-contract";

/// Steps per no-op tenant in the dispatcher benchmark.
const NOOP_STEPS_PER_TENANT: usize = 10;

/// Every figure of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub concurrency: usize,
    pub create_tenant_rps: f64,
    pub raw_sql_tps: f64,
    pub create_vs_raw: f64,
    pub provision_tenants: usize,
    pub provision_tps: f64,
    pub raw_provision_tps: f64,
    pub provision_vs_raw: f64,
    /// Tenants of the default plan (contract included) provisioned to
    /// measure deployments: one transaction in flight per deployer makes
    /// them one per ledger close at best.
    pub contract_tenants: usize,
    pub contract_deploys_per_sec: f64,
    /// Median time of one `deploy_contract` attempt, waits for the
    /// deployer's slot included.
    pub deploy_p50_ms: f64,
    pub noop_steps: usize,
    pub noop_concurrency: usize,
    pub noop_steps_per_sec: f64,
    pub wake_samples: usize,
    pub wake_p50_ms: f64,
    pub wake_p99_ms: f64,
    pub watch: Option<watchers::WatchReport>,
    pub stats_ms_at_100k: stats::StatsReport,
}

/// Runs every benchmark and prints the report (JSON with `--json`).
pub async fn run(args: BenchArgs) -> Result<(), BoxError> {
    let scratch = Scratch::new(&args.server_url);
    if let Some(BenchCommand::Soak(soak)) = args.command {
        let result = soak::run(soak, &scratch).await;
        scratch.drop_all().await;
        return result;
    }
    let result = measure(&args, &scratch).await;
    scratch.drop_all().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report:#?}");
    }
    Ok(())
}

async fn measure(args: &BenchArgs, scratch: &Scratch) -> Result<Report, BoxError> {
    let c = args.concurrency;
    let duration = Duration::from_secs(args.duration_secs);

    eprintln!("create_tenant_rps: {c} gRPC clients for {duration:?}");
    let create_tenant_rps = {
        let server =
            BenchServer::start(scratch, |cfg| cfg.concurrency = 0, Registry::new()).await?;
        let rps = create_load(&server, c, duration).await?;
        server.stop().await;
        rps
    };
    eprintln!("raw_sql_tps: {c} connections for {duration:?}");
    let raw_sql_tps = raw_inserts(&scratch.create("raw").await?, c, duration).await?;

    let n = args.provision_tenants;
    eprintln!("provision_tps: {n} tenants to ACTIVE, email to a local SMTP listener, no contract");
    let provision_tps = {
        let (server, _smtp) = provisioning_server(scratch, c).await?;
        // The database steps and the email, as raw_provision_tps does them.
        add_no_contract_plan(&server).await?;
        let tps = provision_load(&server, c, n, NO_CONTRACT_PLAN).await?;
        server.stop().await;
        tps
    };

    let contract_tenants = args.contract_tenants;
    eprintln!(
        "contract_deploys_per_sec: {contract_tenants} tenants of the default plan, contracts to the local Soroban network"
    );
    let (contract_deploys_per_sec, deploy_p50_ms) = {
        let (server, _smtp) = provisioning_server(scratch, c).await?;
        let tps = provision_load(&server, c, contract_tenants, crate::domain::DEFAULT_PLAN).await?;
        let mut conn = AsyncPgConnection::establish(&server.url).await?;
        let p50 = milliseconds(
            &mut conn,
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finish_time - start_time) * 1000) AS ms
             FROM tenant_steps WHERE name = 'deploy_contract' AND status = 'SUCCEEDED'",
        )
        .await?;
        server.stop().await;
        (tps, p50)
    };
    eprintln!("raw_provision_tps: the same DDL as plain SQL transactions");
    let raw_provision_tps =
        raw_provision(&scratch.create("rawddl").await?, &scratch.role_prefix, c, n).await?;

    let tenants = args.noop_steps / NOOP_STEPS_PER_TENANT;
    eprintln!(
        "noop_steps_per_sec: {} queued no-op steps",
        tenants * NOOP_STEPS_PER_TENANT
    );
    let noop_steps_per_sec = noop_throughput(scratch, args.noop_concurrency, tenants).await?;

    eprintln!(
        "wake latency: {} creates on an idle server",
        args.wake_samples
    );
    let (wake_p50_ms, wake_p99_ms) = wake_latency(scratch, args.wake_samples).await?;

    let watch = if args.watchers > 0 {
        eprintln!(
            "watchers: {} following {} tenants at {} events/s",
            args.watchers, args.watched_tenants, args.event_rate
        );
        Some(watchers::measure(args, scratch).await?)
    } else {
        None
    };

    eprintln!("stats_ms_at_100k: GetProvisioningStats over 100k tenants' seeded events");
    let stats_ms_at_100k = stats::measure(scratch).await?;

    Ok(Report {
        watch,
        stats_ms_at_100k,
        concurrency: c,
        create_tenant_rps,
        raw_sql_tps,
        create_vs_raw: create_tenant_rps / raw_sql_tps,
        provision_tenants: n,
        provision_tps,
        raw_provision_tps,
        provision_vs_raw: provision_tps / raw_provision_tps,
        contract_tenants,
        contract_deploys_per_sec,
        deploy_p50_ms,
        noop_steps: tenants * NOOP_STEPS_PER_TENANT,
        noop_concurrency: args.noop_concurrency,
        noop_steps_per_sec,
        wake_samples: args.wake_samples,
        wake_p50_ms,
        wake_p99_ms,
    })
}

/// Scratch databases (and tenant roles) on the benchmark's server.
struct Scratch {
    server_url: String,
    tag: String,
    role_prefix: String,
    created: std::sync::Mutex<Vec<String>>,
}

impl Scratch {
    fn new(server_url: &str) -> Self {
        let tag = Uuid::new_v4().simple().to_string()[..8].to_owned();
        Scratch {
            server_url: server_url.trim_end_matches('/').to_owned(),
            role_prefix: format!("b{tag}_"),
            tag,
            created: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A new migrated database; returns its URL.
    async fn create(&self, purpose: &str) -> Result<String, BoxError> {
        let name = format!("tenantd_bench_{}_{purpose}", self.tag);
        let mut admin =
            AsyncPgConnection::establish(&format!("{}/postgres", self.server_url)).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        if let Ok(mut created) = self.created.lock() {
            created.push(name.clone());
        }
        let url = format!("{}/{name}", self.server_url);
        crate::db::migrate(&url).await?;
        Ok(url)
    }

    async fn drop_all(&self) {
        let names = self.created.lock().map(|c| c.clone()).unwrap_or_default();
        let Ok(mut admin) =
            AsyncPgConnection::establish(&format!("{}/postgres", self.server_url)).await
        else {
            eprintln!("cannot connect to drop scratch databases {names:?}");
            return;
        };
        for name in names {
            if let Err(e) = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
            {
                eprintln!("dropping {name}: {e}");
            }
        }
        let prefix = &self.role_prefix;
        let roles = format!(
            "DO $$ DECLARE r record; BEGIN
                 FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE '{prefix}%' LOOP
                     EXECUTE format('DROP ROLE %I', r.rolname);
                 END LOOP;
             END $$;"
        );
        if let Err(e) = admin.batch_execute(&roles).await {
            eprintln!("dropping bench roles: {e}");
        }
    }
}

/// The real server, in process, on its own scratch database.
struct BenchServer {
    url: String,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), BoxError>>,
    _mail: tempfile::TempDir,
}

impl BenchServer {
    async fn start(
        scratch: &Scratch,
        tweak: impl FnOnce(&mut Config),
        steps: Registry,
    ) -> Result<Self, BoxError> {
        let url = scratch
            .create(&format!(
                "s{}",
                Uuid::new_v4().simple().to_string()[..6].to_owned()
            ))
            .await?;
        // Migrated before the server starts, so a benchmark may add rows
        // (plans) as soon as this returns.
        crate::db::migrate(&url).await?;
        let mail = tempfile::tempdir()?;
        let mut config = Config::new(&url);
        config.tenant_role_prefix = scratch.role_prefix.clone();
        config.mail_dir = mail.path().to_owned();
        config.pool_size = 40;
        // The benchmark is one principal making as many calls as it can.
        config.rate_limit = None;
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(crate::server::run_with(
            config,
            listener,
            shutdown.clone(),
            steps,
        ));
        Ok(BenchServer {
            url,
            addr,
            shutdown,
            task,
            _mail: mail,
        })
    }

    async fn client(&self) -> Result<TenantServiceClient<Channel>, BoxError> {
        Ok(TenantServiceClient::new(self.channel().await?))
    }

    async fn channel(&self) -> Result<Channel, BoxError> {
        Ok(Channel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("bench server: {e}"),
            Err(e) => eprintln!("bench server task: {e}"),
        }
    }
}

fn request(slug: String) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(Tenant {
            display_name: format!("Bench {slug}"),
            admin_email: format!("admin@{slug}.test"),
            slug,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// CreateTenant calls per second from `clients` concurrent clients.
async fn create_load(
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

/// The rows CreateTenant writes, by the same queries, in plain transactions.
async fn raw_inserts(url: &str, connections: usize, duration: Duration) -> Result<f64, BoxError> {
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
                };
                let event = NewEvent {
                    tenant_id: id,
                    kind: EventKind::TenantCreated,
                    step: None,
                    attempt: None,
                    state: TenantState::Provisioning,
                    message: format!("tenant {slug} created"),
                    actor: "bench".into(),
                };
                conn.transaction(async |conn| {
                    crate::db::tenants::insert(conn, &row, &steps).await?;
                    crate::db::events::append(conn, &event).await?;
                    crate::db::outbox::enqueue(conn, id, Operation::Provision, &steps[0].name)
                        .await?;
                    Ok::<_, diesel::result::Error>(())
                })
                .await?;
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

/// Adds [`NO_CONTRACT_PLAN`]: the default plan without `deploy_contract`.
async fn add_no_contract_plan(server: &BenchServer) -> Result<(), BoxError> {
    AsyncPgConnection::establish(&server.url)
        .await?
        .batch_execute(&format!(
            "INSERT INTO plans (name, steps)
             SELECT '{NO_CONTRACT_PLAN}',
                    jsonb_path_query_array(steps, '$[*] ? (@.name != \"deploy_contract\")')
             FROM plans WHERE name = 'default'"
        ))
        .await?;
    Ok(())
}

/// A server with `slots` dispatcher slots whose emails go to a local SMTP
/// listener, which must live as long as it.
async fn provisioning_server(
    scratch: &Scratch,
    slots: usize,
) -> Result<(BenchServer, smtp::SmtpSink), BoxError> {
    let smtp = smtp::SmtpSink::start().await?;
    let url = smtp.url();
    let server = BenchServer::start(
        scratch,
        |cfg| {
            cfg.smtp_url = Some(url);
            cfg.concurrency = slots;
        },
        Registry::new(),
    )
    .await?;
    Ok((server, smtp))
}

/// Tenants per second from the first CreateTenant to the last ACTIVE.
async fn provision_load(
    server: &BenchServer,
    clients: usize,
    tenants: usize,
    plan: &'static str,
) -> Result<f64, BoxError> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let mut client = server.client().await?;
        tasks.push(tokio::spawn(async move {
            for i in (worker..tenants).step_by(clients) {
                let mut request = request(format!("p-{i}"));
                if let Some(tenant) = request.tenant.as_mut() {
                    tenant.plan = plan.to_owned();
                }
                client.create_tenant(request).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut conn = AsyncPgConnection::establish(&server.url).await?;
    loop {
        let active = count(
            &mut conn,
            "SELECT count(*) AS n FROM tenants WHERE state = 'ACTIVE'",
        )
        .await?;
        if active as usize >= tenants {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(tenants as f64 / started.elapsed().as_secs_f64())
}

/// The provisioning DDL and seed rows of the database steps, one plain
/// transaction per tenant, `connections` at a time.
async fn raw_provision(
    url: &str,
    role_prefix: &str,
    connections: usize,
    tenants: usize,
) -> Result<f64, BoxError> {
    let pool = crate::db::pool(url, 1)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let mut conn = AsyncPgConnection::establish(url).await?;
        let (pool, prefix) = (pool.clone(), role_prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in (worker..tenants).step_by(connections) {
                let slug = format!("raw-{i}");
                let ctx = StepCtx {
                    tenant_id: Uuid::now_v7(),
                    names: TenantNames::derive(&slug, &format!("{prefix}r"))
                        .map_err(StepError::new)?,
                    display_name: format!("Bench {slug}"),
                    admin_email: format!("admin@{slug}.test"),
                    slug,
                    attempt: 1,
                    outputs: Default::default(),
                    tenant_db: pool.clone(),
                    purge: false,
                    extra_roles: Vec::new(),
                    limits: Default::default(),
                };
                conn.transaction(async |conn| {
                    CreateSchema.run_in_db(conn, &ctx).await?;
                    RunMigrations.run_in_db(conn, &ctx).await?;
                    SeedRolesAndAdmin.run_in_db(conn, &ctx).await
                })
                .await?;
            }
            Ok::<_, StepError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(tenants as f64 / started.elapsed().as_secs_f64())
}

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
async fn noop_throughput(
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
        if count(&mut conn, "SELECT count(*) AS n FROM outbox").await? == 0 {
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

/// Commit of CreateTenant to the start of its first step, idle server.
async fn wake_latency(scratch: &Scratch, samples: usize) -> Result<(f64, f64), BoxError> {
    let server = BenchServer::start(scratch, |cfg| cfg.concurrency = 4, Registry::new()).await?;
    // Without contracts: their deployments queue behind one another and
    // keep dispatcher slots busy, so the server would not be idle.
    add_no_contract_plan(&server).await?;
    let mut client = server.client().await?;
    for i in 0..samples {
        let mut request = request(format!("w-{i}"));
        if let Some(tenant) = request.tenant.as_mut() {
            tenant.plan = NO_CONTRACT_PLAN.to_owned();
        }
        client.create_tenant(request).await?;
        // Idle between samples: the pipeline finishes, the dispatcher sleeps.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let mut conn = AsyncPgConnection::establish(&server.url).await?;
    #[derive(diesel::QueryableByName)]
    struct Percentiles {
        #[diesel(sql_type = diesel::sql_types::Double)]
        p50: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        p99: f64,
    }
    // TENANT_CREATED is stamped when the create transaction starts (just
    // before its commit), STEP_STARTED when the claim starts.
    let p: Percentiles = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
         FROM (SELECT (extract(epoch FROM s.create_time - c.create_time) * 1000)::float8 AS ms
               FROM events c JOIN events s ON s.tenant_id = c.tenant_id
               WHERE c.kind = 'TENANT_CREATED' AND s.kind = 'STEP_STARTED' AND s.step = 'create_schema') x",
        ),
        &mut conn,
    )
    .await?;
    server.stop().await;
    Ok((p.p50, p.p99))
}

/// A query's one float column `ms` (0 for none).
async fn milliseconds(conn: &mut AsyncPgConnection, sql: &str) -> Result<f64, BoxError> {
    #[derive(diesel::QueryableByName)]
    struct Ms {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
        ms: Option<f64>,
    }
    let row: Ms = diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql), conn).await?;
    Ok(row.ms.unwrap_or(0.0))
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> Result<i64, BoxError> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: N = diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql), conn).await?;
    Ok(n.n)
}
