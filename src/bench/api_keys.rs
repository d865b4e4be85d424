//! `verify_api_key_per_sec` and `verify_api_key_p99_ms`: VerifyApiKey from
//! 16 gRPC clients (each on its own connection, as gateway instances are)
//! over a set of good keys of an ACTIVE tenant, for a fixed time.
//!
//! Baseline (`verify_sql_per_sec`): the same question asked of the
//! database the plainest honest way, one indexed `SELECT` of the key's hash
//! and its tenant's state per verification from as many connections, the
//! hash compared in the client: what a gateway would do without the
//! server's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};

use super::{BenchServer, NO_CONTRACT_PLAN, Scratch, add_no_contract_plan, quantile, request};
use crate::proto::api_key_service_client::ApiKeyServiceClient;
use crate::proto::{CreateApiKeyRequest, GetTenantRequest, TenantState, VerifyApiKeyRequest};
use crate::secrets::SecretKey;
use crate::server::BoxError;
use crate::steps::Registry;

/// Keys verified in turn.
const KEYS: usize = 100;

/// What the benchmark measured.
#[derive(Debug, serde::Serialize)]
pub struct ApiKeyFigures {
    pub clients: usize,
    pub verify_api_key_per_sec: f64,
    pub verify_api_key_p50_ms: f64,
    pub verify_api_key_p99_ms: f64,
    pub verify_sql_per_sec: f64,
    /// The same clients calling the health check, which does nothing: the
    /// floor the transport sets on this machine.
    pub empty_rpc_per_sec: f64,
}

pub async fn measure(
    scratch: &Scratch,
    clients: usize,
    duration: Duration,
) -> Result<ApiKeyFigures, BoxError> {
    let server = BenchServer::start(
        scratch,
        |c| {
            c.webhooks.secret_key = Some(Arc::new(
                SecretKey::from_base64(&SecretKey::generate_base64())
                    .expect("a generated key is well-formed"),
            ));
            c.api_keys.rate_limit = "100000/1h".parse().expect("a valid rate limit");
        },
        Registry::new(),
    )
    .await?;
    add_no_contract_plan(&server).await?;
    let mut tenants = server.client().await?;
    let mut create = request("keyed".into());
    if let Some(t) = create.tenant.as_mut() {
        t.plan = NO_CONTRACT_PLAN.into();
    }
    let tenant = tenants
        .create_tenant(create)
        .await?
        .into_inner()
        .tenant
        .ok_or("no tenant")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = tenants
            .get_tenant(GetTenantRequest {
                tenant_id: tenant.id.clone(),
            })
            .await?
            .into_inner()
            .tenant
            .ok_or("no tenant")?;
        if t.state == TenantState::Active as i32 {
            break;
        }
        if Instant::now() > deadline {
            return Err("the benchmark's tenant did not become ACTIVE".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut admin = ApiKeyServiceClient::new(server.channel().await?);
    let mut keys = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let made = admin
            .create_api_key(CreateApiKeyRequest {
                tenant_id: tenant.id.clone(),
                name: format!("gateway-{i}"),
                scopes: vec!["read".into()],
                ttl: None,
            })
            .await?
            .into_inner();
        keys.push(made.key);
    }
    let keys = Arc::new(keys);

    // Warm-up: every key once, so the figure is the steady state.
    for key in keys.iter() {
        admin
            .verify_api_key(VerifyApiKeyRequest {
                key: key.clone(),
                count_usage: false,
            })
            .await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut client = ApiKeyServiceClient::new(server.channel().await?);
        let (keys, stop) = (keys.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                client
                    .verify_api_key(VerifyApiKeyRequest {
                        key: keys[i % keys.len()].clone(),
                        count_usage: false,
                    })
                    .await?;
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                i += clients;
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let verify_api_key_per_sec = latencies.len() as f64 / elapsed;
    let p50 = quantile(&mut latencies, 0.50).unwrap_or(f64::NAN);
    let p99 = quantile(&mut latencies, 0.99).unwrap_or(f64::NAN);

    let verify_sql_per_sec = sql_baseline(&server.url, &keys, clients, duration).await?;
    let empty_rpc_per_sec = empty_rpcs(&server, clients, duration).await?;
    server.stop().await;
    Ok(ApiKeyFigures {
        clients,
        verify_api_key_per_sec,
        verify_api_key_p50_ms: p50,
        verify_api_key_p99_ms: p99,
        verify_sql_per_sec,
        empty_rpc_per_sec,
    })
}

/// Health checks from `clients` connections for `duration`, per second.
async fn empty_rpcs(
    server: &BenchServer,
    clients: usize,
    duration: Duration,
) -> Result<f64, BoxError> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut client = HealthClient::new(server.channel().await?);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                done += 1;
            }
            Ok::<_, tonic::Status>(done)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// One `SELECT` per verification from `clients` connections, the hash
/// compared here (HMAC-SHA256 under a pepper, as the server does).
async fn sql_baseline(
    url: &str,
    keys: &[String],
    clients: usize,
    duration: Duration,
) -> Result<f64, BoxError> {
    use diesel::sql_types::{Bytea, Text, Uuid as SqlUuid};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bytea)]
        secret_hash: Vec<u8>,
        #[diesel(sql_type = Text)]
        state: String,
    }
    let pepper = [7u8; 32];
    let stop = Arc::new(AtomicBool::new(false));
    let ids: Arc<Vec<(uuid::Uuid, String)>> = Arc::new(
        keys.iter()
            .filter_map(|k| {
                let id = k.split('_').nth(1)?;
                Some((uuid::Uuid::try_parse(id).ok()?, k.clone()))
            })
            .collect(),
    );
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut conn = AsyncPgConnection::establish(url).await?;
        let (ids, stop) = (ids.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut i = c;
            while !AtomicBool::load(&stop, Ordering::Relaxed) {
                let (id, text) = &ids[i % ids.len()];
                let row: Row = diesel::sql_query(
                    "SELECT k.secret_hash, t.state FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                     WHERE k.id = $1 AND t.delete_time IS NULL",
                )
                .bind::<SqlUuid, _>(*id)
                .get_result(&mut conn)
                .await?;
                // The comparison the server makes (against another pepper:
                // the cost is what counts here).
                if let Some(presented) = crate::domain::api_key::parse("tnd", text) {
                    std::hint::black_box(presented.matches(&pepper, &row.secret_hash));
                }
                std::hint::black_box(&row.state);
                done += 1;
                i += clients;
            }
            Ok::<_, diesel::result::Error>(done)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

impl ApiKeyFigures {
    pub fn table(&self) -> String {
        use super::targets::{VERIFY_API_KEY_P99_MS, VERIFY_API_KEY_PER_SEC};
        let met = |ok: bool| if ok { "met" } else { "not met" };
        format!(
            "api_keys.verify_api_key_per_sec {:.0} from {} clients (target {VERIFY_API_KEY_PER_SEC}: {})\n\
             api_keys.verify_api_key_p50_ms {:.3}\n\
             api_keys.verify_api_key_p99_ms {:.3} (target {VERIFY_API_KEY_P99_MS}: {})\n\
             api_keys.verify_sql_per_sec {:.0} (baseline: one SELECT per verification; memory/SQL {:.2})\n\
             api_keys.empty_rpc_per_sec {:.0} (the health check from the same clients: the transport's floor)\n",
            self.verify_api_key_per_sec,
            self.clients,
            met(VERIFY_API_KEY_PER_SEC.met(self.verify_api_key_per_sec)),
            self.verify_api_key_p50_ms,
            self.verify_api_key_p99_ms,
            met(VERIFY_API_KEY_P99_MS.met(self.verify_api_key_p99_ms)),
            self.verify_sql_per_sec,
            self.verify_api_key_per_sec / self.verify_sql_per_sec,
            self.empty_rpc_per_sec,
        )
    }
}
