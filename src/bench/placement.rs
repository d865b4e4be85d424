//! Several database servers: `move_mb_per_sec` (MoveTenant of a tenant of
//! `--move-mb` megabytes between two local clusters, from the call to the
//! end of its last step) next to `dump_restore_mb_per_sec` (the same schema
//! by hand: `pg_dump --format=custom --compress=0 | pg_restore
//! --single-transaction` between the same clusters), and
//! `create_rps_three_servers` next to `create_rps_one_server`
//! (CreateTenant's rate when placement chooses among three servers, and
//! when there is only `default`).

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde::Serialize;

use super::{BenchServer, NO_CONTRACT_PLAN, Scratch, add_no_contract_plan, count};
use crate::db::embedded::EmbeddedPostgres;
use crate::db::fleet::Target;
use crate::proto::placement_service_client::PlacementServiceClient;
use crate::proto::{
    CreateTenantRequest, DatabaseServer, GetTenantRequest, MoveTenantRequest,
    RegisterDatabaseServerRequest, StepStatus, Tenant, TenantState,
};
use crate::server::BoxError;
use crate::steps::Registry;

/// How long a move may take before the figure gives up on it.
const MOVE_LIMIT: Duration = Duration::from_secs(1800);

#[derive(Debug, Serialize)]
pub struct PlacementReport {
    /// The moved schema's size, in MB (10^6 bytes).
    pub move_mb: f64,
    pub move_mb_per_sec: f64,
    pub dump_restore_mb_per_sec: f64,
    pub move_vs_dump_restore: f64,
    pub create_rps_one_server: f64,
    pub create_rps_three_servers: f64,
    pub three_vs_one: f64,
    /// Each move step's milliseconds, from its start to its finish.
    pub move_steps_ms: std::collections::BTreeMap<String, f64>,
}

impl PlacementReport {
    /// The figures with their baselines and targets, for a person to read.
    pub fn table(&self) -> String {
        use super::targets::{MOVE_VS_DUMP_RESTORE, THREE_SERVERS_VS_ONE};
        let mut out = format!("moved schema: {:.1} MB; steps:", self.move_mb);
        for (step, ms) in &self.move_steps_ms {
            out.push_str(&format!(" {step} {ms:.0} ms"));
        }
        out.push('\n');
        for (figure, value, baseline, base, ratio_name, ratio, bound) in [
            (
                "placement.create_rps_three_servers",
                self.create_rps_three_servers,
                "create_rps_one_server",
                self.create_rps_one_server,
                "placement.three_vs_one",
                self.three_vs_one,
                THREE_SERVERS_VS_ONE,
            ),
            (
                "placement.move_mb_per_sec",
                self.move_mb_per_sec,
                "dump_restore_mb_per_sec",
                self.dump_restore_mb_per_sec,
                "placement.move_vs_dump_restore",
                self.move_vs_dump_restore,
                MOVE_VS_DUMP_RESTORE,
            ),
        ] {
            out.push_str(&format!(
                "{figure} {value:.1}, {baseline} {base:.1}, {ratio_name} {ratio:.2} (target {bound}: {})\n",
                if bound.met(ratio) { "met" } else { "not met" }
            ));
        }
        out
    }
}

/// Two extra clusters in a temporary directory, stopped when dropped.
struct Clusters {
    a: EmbeddedPostgres,
    b: EmbeddedPostgres,
    _dir: tempfile::TempDir,
}

impl Clusters {
    async fn start() -> Result<Self, BoxError> {
        let dir = tempfile::Builder::new()
            .prefix("tenantd-bench-")
            .tempdir_in(std::env::temp_dir())?;
        let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
        let (a, b) = tokio::join!(
            EmbeddedPostgres::start(&a_dir),
            EmbeddedPostgres::start(&b_dir)
        );
        Ok(Clusters {
            a: a?,
            b: b?,
            _dir: dir,
        })
    }

    async fn stop(&self) {
        for pg in [&self.a, &self.b] {
            if let Err(e) = pg.stop().await {
                eprintln!("bench cluster: {e}");
            }
        }
    }
}

pub async fn measure(
    scratch: &Scratch,
    clients: usize,
    duration: Duration,
    move_mb: u64,
) -> Result<PlacementReport, BoxError> {
    let clusters = Clusters::start().await?;
    let result = async {
        let (create_rps_one_server, create_rps_three_servers) =
            create_rates(scratch, &clusters, clients, duration).await?;
        let (mb, move_secs, dump_secs, move_steps_ms) =
            move_rates(scratch, &clusters, move_mb).await?;
        Ok::<_, BoxError>(PlacementReport {
            move_mb: mb,
            move_mb_per_sec: mb / move_secs,
            dump_restore_mb_per_sec: mb / dump_secs,
            move_vs_dump_restore: dump_secs / move_secs,
            create_rps_one_server,
            create_rps_three_servers,
            three_vs_one: create_rps_three_servers / create_rps_one_server,
            move_steps_ms,
        })
    }
    .await;
    clusters.stop().await;
    result
}

async fn register(server: &BenchServer, name: &str, url: &str) -> Result<(), BoxError> {
    PlacementServiceClient::new(server.channel().await?)
        .register_database_server(RegisterDatabaseServerRequest {
            server: Some(DatabaseServer {
                name: name.into(),
                url: url.into(),
                ..Default::default()
            }),
        })
        .await?;
    Ok(())
}

/// CreateTenant's rate on a server with only `default`, then on one with
/// two more servers to choose from.
async fn create_rates(
    scratch: &Scratch,
    clusters: &Clusters,
    clients: usize,
    duration: Duration,
) -> Result<(f64, f64), BoxError> {
    let one = BenchServer::start(scratch, |cfg| cfg.concurrency = 0, Registry::new()).await?;
    let one_rps = super::create::create_load(&one, clients, duration).await;
    one.stop().await;
    let three = BenchServer::start(scratch, |cfg| cfg.concurrency = 0, Registry::new()).await?;
    register(&three, "bench-a", &clusters.a.database_url()).await?;
    register(&three, "bench-b", &clusters.b.database_url()).await?;
    let three_rps = super::create::create_load(&three, clients, duration).await;
    let spread = {
        let mut conn = AsyncPgConnection::establish(&three.url).await?;
        count(
            &mut conn,
            "SELECT count(DISTINCT database_server) AS n FROM tenants",
        )
        .await?
    };
    three.stop().await;
    if spread != 3 {
        return Err(format!("tenants landed on {spread} servers, not 3").into());
    }
    Ok((one_rps?, three_rps?))
}

/// The schema size in MB, the move's seconds and the by-hand copy's, and
/// the move's steps' milliseconds.
async fn move_rates(
    scratch: &Scratch,
    clusters: &Clusters,
    move_mb: u64,
) -> Result<(f64, f64, f64, std::collections::BTreeMap<String, f64>), BoxError> {
    let server = BenchServer::start(scratch, |cfg| cfg.concurrency = 4, Registry::new()).await?;
    add_no_contract_plan(&server).await?;
    register(&server, "bench-a", &clusters.a.database_url()).await?;
    register(&server, "bench-b", &clusters.b.database_url()).await?;
    let mut client = server.client().await?;
    let created = client
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: "bench-mover".into(),
                display_name: "Bench mover".into(),
                admin_email: "admin@bench-mover.test".into(),
                plan: NO_CONTRACT_PLAN.into(),
                placement: "server=bench-a".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tenant
        .ok_or("no tenant")?;
    let id = created.id.clone();
    let tenant = wait(&mut client, &id, |t| t.state() == TenantState::Active).await?;
    let schema = tenant
        .outputs
        .get("schema_name")
        .cloned()
        .ok_or("no schema")?;
    let role = tenant.outputs.get("role_name").cloned().ok_or("no role")?;
    // Rows of about 300 bytes: a key, a 256-character body, a time.
    let rows = move_mb * 1_000_000 / 330;
    let mut a = AsyncPgConnection::establish(&clusters.a.database_url()).await?;
    a.batch_execute(&format!(
        "CREATE TABLE {schema}.documents (id bigserial PRIMARY KEY, body text, at timestamptz);
         INSERT INTO {schema}.documents (body, at)
             SELECT repeat(md5(i::text), 8), now() - i * interval '1 second'
             FROM generate_series(1, {rows}) i;
         ALTER TABLE {schema}.documents OWNER TO {role};"
    ))
    .await?;
    a.batch_execute(&format!("VACUUM ANALYZE {schema}.documents"))
        .await?;
    let bytes = count(
        &mut a,
        &format!(
            "SELECT sum(pg_total_relation_size(c.oid))::int8 AS n FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = '{schema}' AND c.relkind = 'r'"
        ),
    )
    .await?;
    drop(a);
    let mb = bytes as f64 / 1e6;

    // By hand: the same schema into a database of its own on the target.
    let mut b = AsyncPgConnection::establish(&clusters.b.database_url()).await?;
    b.batch_execute("DROP DATABASE IF EXISTS bench_by_hand")
        .await?;
    b.batch_execute("CREATE DATABASE bench_by_hand").await?;
    let by_hand_url = clusters
        .b
        .database_url()
        .replace("/tenantd", "/bench_by_hand");
    let started = Instant::now();
    dump_restore(&clusters.a.database_url(), &by_hand_url, &schema).await?;
    let dump_secs = started.elapsed().as_secs_f64();
    b.batch_execute("DROP DATABASE bench_by_hand").await?;
    drop(b);

    let started = Instant::now();
    PlacementServiceClient::new(server.channel().await?)
        .move_tenant(MoveTenantRequest {
            tenant_id: id.clone(),
            target_server: "bench-b".into(),
        })
        .await?;
    let moved = wait(&mut client, &id, |t| {
        t.steps
            .iter()
            .any(|s| s.name == "move_drop_source" && s.status() == StepStatus::Succeeded)
            || t.steps
                .iter()
                .any(|s| s.name == "move_freeze" && s.status() == StepStatus::Compensated)
    })
    .await?;
    let move_secs = started.elapsed().as_secs_f64();
    server.stop().await;
    if moved.database_server != "bench-b" {
        return Err(format!("the move did not end on bench-b: {}", moved.state_reason).into());
    }
    let steps = moved
        .steps
        .iter()
        .filter(|s| s.name.starts_with("move_"))
        .filter_map(|s| {
            let (start, finish) = (s.start_time.as_ref()?, s.finish_time.as_ref()?);
            let ms = (finish.seconds - start.seconds) as f64 * 1e3
                + f64::from(finish.nanos - start.nanos) / 1e6;
            Some((s.name.clone(), ms))
        })
        .collect();
    Ok((mb, move_secs, dump_secs, steps))
}

/// `pg_dump | pg_restore` of `schema`, as an operator would type it.
async fn dump_restore(from: &str, to: &str, schema: &str) -> Result<(), BoxError> {
    let (from, to) = (Target::parse(from)?, Target::parse(to)?);
    let script = format!(
        "set -o pipefail; pg_dump --format=custom --compress=0 --no-owner --no-privileges --schema={schema} \
         --dbname='{}' | pg_restore --no-owner --no-privileges --exit-on-error \
         --single-transaction --dbname='{}'",
        from.url, to.url
    );
    let out = crate::archive::tool("bash", None)
        .arg("-c")
        .arg(&script)
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "pg_dump | pg_restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Polls GetTenant until `done` (every 20 ms, at most [`MOVE_LIMIT`]).
async fn wait(
    client: &mut crate::proto::tenant_service_client::TenantServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
    done: impl Fn(&Tenant) -> bool,
) -> Result<Tenant, BoxError> {
    let deadline = Instant::now() + MOVE_LIMIT;
    loop {
        let t = client
            .get_tenant(GetTenantRequest {
                tenant_id: id.to_owned(),
            })
            .await?
            .into_inner()
            .tenant
            .ok_or("no tenant")?;
        if done(&t) {
            return Ok(t);
        }
        if Instant::now() > deadline || t.state() == TenantState::Failed {
            return Err(format!("tenant {id} did not get there: {:?}", t.state()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
