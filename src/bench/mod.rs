//! `tenantd bench`: throughput and latency figures, measured on scratch
//! databases that the benchmark creates on a given PostgreSQL server and
//! drops afterwards. Figures, not pass/fail: each is printed next to its
//! target ([`targets`]) with whether it was met, but nothing fails on a
//! miss, and tests never check the figures.
//!
//! Each figure runs the real server in process, on 127.0.0.1, against its own
//! scratch database, next to a baseline that does the same database work with
//! plain SQL transactions (the physical limit of this machine) where one
//! exists.
//!
//! One file per figure and its baseline: [`create`] (CreateTenant against
//! raw inserts), [`provision`] (tenants to ACTIVE against raw DDL),
//! [`contract`] (deployments), [`noop`] (the dispatcher alone), [`wake`]
//! (wake-up latency), [`watchers`], [`stats`], [`list`] (ListTenants pages
//! at 1k and 100k tenants), [`webhooks`] (the webhook sender's throughput
//! and latency), [`placement`] (MoveTenant against `pg_dump | pg_restore`,
//! CreateTenant with three servers against one), [`channels`] (Soroban
//! deployments through channel accounts), and the long-running
//! [`soak`]. [`connections`] counts the
//! server's sessions through every phase. [`report`] turns the figures into
//! the table (or JSON) and [`targets`] holds what each should reach. What
//! the figures share lives here: scratch databases, the in-process server,
//! the no-contract plan, quantiles.

mod api_keys;
mod channels;
mod connections;
mod contract;
mod create;
mod list;
mod noop;
mod placement;
mod provision;
mod report;
pub mod smtp;
mod soak;
mod stats;
mod targets;
mod usage;
mod wake;
mod watchers;
mod webhooks;

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::config::{BenchArgs, BenchCommand, Config};
use crate::proto::tenant_service_client::TenantServiceClient;
use crate::proto::{CreateTenantRequest, Tenant};
use crate::server::BoxError;
use crate::steps::Registry;
use noop::NOOP_STEPS_PER_TENANT;
pub use report::Report;

/// The default plan without `deploy_contract`: provisioning compared with
/// the same work done in plain SQL, and wake-ups on an idle server.
const NO_CONTRACT_PLAN: &str = "bench-no-contract";

/// Runs every benchmark and prints the report: a table, or one JSON object
/// with `--json`.
pub async fn run(args: BenchArgs) -> Result<(), BoxError> {
    let scratch = Scratch::new(&args.server_url);
    match args.command {
        Some(BenchCommand::Soak(soak)) => {
            let result = soak::run(soak, &scratch).await;
            scratch.drop_all().await;
            return result;
        }
        Some(BenchCommand::Placement(placement)) => {
            let result = placement::measure(
                &scratch,
                placement.concurrency,
                Duration::from_secs(placement.duration_secs),
                placement.move_mb,
            )
            .await;
            scratch.drop_all().await;
            let report = result?;
            return print_report(&report, report.table(), args.json);
        }
        Some(BenchCommand::ApiKeys(keys)) => {
            let result = api_keys::measure(
                &scratch,
                keys.clients,
                Duration::from_secs(keys.duration_secs),
            )
            .await;
            scratch.drop_all().await;
            let report = result?;
            return print_report(&report, report.table(), args.json);
        }
        Some(BenchCommand::Contracts(contracts)) => {
            let result = channels::measure(&scratch, &contracts).await;
            scratch.drop_all().await;
            let report = result?;
            return print_report(&report, report.table(), args.json);
        }
        None => {}
    }
    let result = measure(&args, &scratch).await;
    scratch.drop_all().await;
    let report = result?;
    if args.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// A subcommand's report: its table for a person, or one JSON object.
fn print_report(report: &impl serde::Serialize, table: String, json: bool) -> Result<(), BoxError> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{table}");
    }
    Ok(())
}

async fn measure(args: &BenchArgs, scratch: &Scratch) -> Result<Report, BoxError> {
    let c = args.concurrency;
    let duration = Duration::from_secs(args.duration_secs);
    let mut sessions = connections::Sampler::start(scratch).await?;

    eprintln!("create_tenant_rps: {c} gRPC clients for {duration:?}");
    let create_tenant_rps = sessions
        .phase("create", create::create_throughput(scratch, c, duration))
        .await?;
    eprintln!("raw_sql_tps: {c} connections for {duration:?}");
    let raw_sql_tps = sessions
        .phase("raw_sql", async {
            create::raw_inserts(&scratch.create("raw").await?, c, duration).await
        })
        .await?;

    let n = args.provision_tenants;
    eprintln!("provision_tps: {n} tenants to ACTIVE, email to a local SMTP listener, no contract");
    let provision_tps = sessions
        .phase("provision", provision::provision_throughput(scratch, c, n))
        .await?;

    let contract_tenants = args.contract_tenants;
    eprintln!(
        "contract_deploys_per_sec: {contract_tenants} tenants of the default plan, contracts to the local Soroban network"
    );
    let (contract_deploys_per_sec, deploy_p50_ms) = sessions
        .phase(
            "contract",
            contract::deploy_throughput(scratch, c, contract_tenants),
        )
        .await?;
    eprintln!("raw_provision_tps: the same DDL as plain SQL transactions");
    let raw_provision_tps = sessions
        .phase("raw_provision", async {
            let url = scratch.create("rawddl").await?;
            provision::raw_provision(&url, &scratch.role_prefix, c, n).await
        })
        .await?;

    let tenants = args.noop_steps / NOOP_STEPS_PER_TENANT;
    eprintln!(
        "noop_steps_per_sec: {} queued no-op steps",
        tenants * NOOP_STEPS_PER_TENANT
    );
    let noop_steps_per_sec = sessions
        .phase(
            "noop",
            noop::noop_throughput(scratch, args.noop_concurrency, tenants),
        )
        .await?;

    eprintln!(
        "wake latency: {} creates on an idle server",
        args.wake_samples
    );
    let (wake_p50_ms, wake_p99_ms) = sessions
        .phase("wake", wake::wake_latency(scratch, args.wake_samples))
        .await?;

    let watch = if args.watchers > 0 {
        eprintln!(
            "watchers: {} following {} tenants at {} events/s",
            args.watchers, args.watched_tenants, args.event_rate
        );
        Some(
            sessions
                .phase("watchers", watchers::measure(args, scratch))
                .await?,
        )
    } else {
        None
    };

    eprintln!("stats_ms_at_100k: GetProvisioningStats over 100k tenants' seeded events");
    let stats_ms_at_100k = sessions.phase("stats", stats::measure(scratch)).await?;

    eprintln!("list_page_p99_ms: ListTenants pages at 1k and at 100k seeded tenants");
    let list_page_p99_ms = sessions.phase("list", list::measure(scratch)).await?;

    let deliveries = args.webhook_deliveries;
    eprintln!("webhook_deliveries_per_sec: {deliveries} event deliveries to a local receiver");
    let webhook_deliveries_per_sec = sessions
        .phase(
            "webhook_deliveries",
            webhooks::delivery_throughput(scratch, deliveries),
        )
        .await?;
    let samples = args.webhook_samples;
    eprintln!("webhook_p99_ms: {samples} events, commit to receipt, idle server");
    let webhook_p99_ms = sessions
        .phase(
            "webhook_latency",
            webhooks::delivery_latency(scratch, samples),
        )
        .await?;
    let stored = args.usage_events;
    eprintln!(
        "usage_events_per_sec: RecordUsage in batches of 500 from {c} clients for {duration:?}, after queries over {stored} stored events"
    );
    let usage = sessions
        .phase("usage", usage::measure(scratch, c, duration, stored))
        .await?;
    eprintln!(
        "placement: CreateTenant with one server and with three; MoveTenant of {} MB between two local clusters next to pg_dump | pg_restore",
        args.move_mb
    );
    let placement = sessions
        .phase(
            "placement",
            placement::measure(scratch, c, duration, args.move_mb),
        )
        .await?;
    let sessions = sessions.finish();

    Ok(Report {
        placement,
        watch,
        stats_ms_at_100k,
        list_page_p99_ms,
        usage,
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
        webhook_deliveries: deliveries,
        webhook_deliveries_per_sec,
        webhook_samples: samples,
        webhook_p99_ms,
        sessions,
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
        let name = format!("{}{purpose}", self.database_prefix());
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

    /// What the names of this run's databases start with.
    fn database_prefix(&self) -> String {
        format!("tenantd_bench_{}_", self.tag)
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
        Self::start_on(scratch, url, tweak, steps).await
    }

    /// The server on a database from [`Scratch::create`] that a benchmark
    /// filled first: history seeded before the server starts is behind its
    /// event hub's cursor, as if the server had written it itself, so the
    /// hub does not read it all while the figure is timed.
    async fn start_on(
        scratch: &Scratch,
        url: String,
        tweak: impl FnOnce(&mut Config),
        steps: Registry,
    ) -> Result<Self, BoxError> {
        let mail = tempfile::tempdir()?;
        let mut config = Config::new(&url);
        config.tenant_role_prefix = scratch.role_prefix.clone();
        config.mail_dir = mail.path().to_owned();
        config.archive_dir = mail.path().join("archives");
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

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> Result<i64, BoxError> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: N = diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql), conn).await?;
    Ok(n.n)
}

/// The `q` quantile of `values` by nearest rank (sorts them); `None` for
/// no values.
fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// Milliseconds since `since`.
fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(quantile(&mut v, 0.5), Some(50.0));
        assert_eq!(quantile(&mut v, 0.99), Some(99.0));
        assert_eq!(quantile(&mut [7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
