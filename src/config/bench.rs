//! Settings of `tenantd bench` (and `bench soak`), and of
//! `tenantd contract-id`.

use std::time::Duration;

use clap::{Args, Subcommand};

/// Settings of `tenantd contract-id`. Parsed by [`crate::soroban`], so a
/// mistyped key is reported without being echoed.
#[derive(Debug, Clone, Args)]
pub struct ContractIdArgs {
    /// The deploying account (G... strkey).
    #[arg(long, value_name = "G...")]
    pub deployer: String,
    /// The deployment salt: 32 bytes as 64 hex characters.
    #[arg(long, value_name = "HEX")]
    pub salt: String,
    /// The network's passphrase (e.g. "Test SDF Network ; September 2015");
    /// the same deployer and salt give another address on another network.
    #[arg(long)]
    pub network_passphrase: String,
}

/// Settings of `tenantd bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Without a command: the throughput and latency figures.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// PostgreSQL server to create scratch databases on (no database name).
    #[arg(
        long,
        env = "TENANTD_BENCH_SERVER_URL",
        default_value = "postgres://postgres@127.0.0.1:5432",
        global = true
    )]
    pub server_url: String,
    /// Concurrent clients, connections and dispatcher slots.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Tenants taken to ACTIVE for `provision_tps`.
    #[arg(long, default_value_t = 500)]
    pub provision_tenants: usize,
    /// Tenants of the default plan taken to ACTIVE for
    /// `contract_deploys_per_sec` (each deploys a contract).
    #[arg(long, default_value_t = 50)]
    pub contract_tenants: usize,
    /// No-op steps queued for `noop_steps_per_sec`.
    #[arg(long, default_value_t = 100_000)]
    pub noop_steps: usize,
    /// Dispatcher slots for `noop_steps_per_sec`: no-op steps hold nothing,
    /// so many run at once and their completions batch.
    #[arg(long, default_value_t = 1024)]
    pub noop_concurrency: usize,
    /// Usage events stored (by SQL) before `query_usage_30d_p99_ms` and
    /// `check_quota_p99_ms` are timed.
    #[arg(long, default_value_t = 10_000_000)]
    pub usage_events: u64,
    /// Creates timed for `wake_p50_ms` / `wake_p99_ms`.
    #[arg(long, default_value_t = 200)]
    pub wake_samples: usize,
    /// Streams following tenants for the delivery latency figures (0: skip).
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Tenants the watchers follow, round-robin.
    #[arg(long, default_value_t = 20)]
    pub watched_tenants: usize,
    /// Events per second produced while watchers follow.
    #[arg(long, default_value_t = 100.0)]
    pub event_rate: f64,
    /// Event deliveries queued at once for `webhook_deliveries_per_sec`.
    #[arg(long, default_value_t = 20_000)]
    pub webhook_deliveries: usize,
    /// Events timed one at a time for `webhook_p99_ms`.
    #[arg(long, default_value_t = 200)]
    pub webhook_samples: usize,
    /// Size in MB of the tenant `placement.move_mb_per_sec` moves between
    /// two local clusters.
    #[arg(long, default_value_t = 100)]
    pub move_mb: u64,
    /// Print one JSON object of named figures.
    #[arg(long)]
    pub json: bool,
}

/// Benchmarks other than the default figures.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// A steady load of tenant lifecycles (create, watch, deprovision,
    /// delete) and long-lived watchers; prints one JSON line of latencies,
    /// table sizes and dead tuples per interval.
    Soak(SoakArgs),
    /// Only the figures of several database servers (`placement.*` of the
    /// full run): CreateTenant with three servers and with one, MoveTenant
    /// next to `pg_dump | pg_restore`.
    Placement(PlacementArgs),
    /// Soroban deployments through channel accounts on a local network
    /// with one-second ledgers: `contract_deploys_per_sec` with 1, 4 and 16
    /// channels, and other tenants' wake-up while deployments queue.
    Contracts(ContractsArgs),
    /// VerifyApiKey from many clients, answered from memory:
    /// `verify_api_key_per_sec` and `verify_api_key_p99_ms`, next to one
    /// SELECT per verification.
    ApiKeys(ApiKeysArgs),
}

/// Settings of `tenantd bench api-keys`.
#[derive(Debug, Clone, Args)]
pub struct ApiKeysArgs {
    /// Concurrent gRPC clients, each on its own connection.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long each figure is measured.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
}

/// Settings of `tenantd bench contracts`.
#[derive(Debug, Clone, Args)]
pub struct ContractsArgs {
    /// Channel counts measured, one run each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
    pub channels: Vec<usize>,
    /// Ledgers' worth of deployments each run times: this many times the
    /// channel count, plus one warm-up deployment that uploads the code.
    #[arg(long, default_value_t = 10)]
    pub ledgers: usize,
    /// Deployments queued while other tenants' wake-up is sampled.
    #[arg(long, default_value_t = 200)]
    pub queued: usize,
    /// Wake-up samples, idle and during the deployments.
    #[arg(long, default_value_t = 50)]
    pub wake_samples: usize,
    /// The server's --soroban-poll-ms: how soon a deployment looks at its
    /// transaction again. A quarter of a ledger by default: soon enough to
    /// hand a channel on before the next ledger closes.
    #[arg(long, default_value_t = 250)]
    pub poll_ms: u64,
}

/// Settings of `tenantd bench placement`.
#[derive(Debug, Clone, Args)]
pub struct PlacementArgs {
    /// Concurrent CreateTenant clients.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds each CreateTenant rate is measured.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Size in MB of the moved tenant.
    #[arg(long, default_value_t = 100)]
    pub move_mb: u64,
}

/// Settings of `tenantd bench soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long to keep the load up (e.g. `10m`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Tenant lifecycles started per second.
    #[arg(long, default_value_t = 10.0, value_parser = positive_rate)]
    pub rate: f64,
    /// Streams that follow tenants for the whole run.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// How often a line of figures is printed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub report_every: Duration,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}
