//! Command-line and environment configuration. Every setting is a flag with
//! an environment variable; nothing is read from anywhere else.
//!
//! Each flag group has its own submodule, re-exported here; this one holds
//! the command line itself, the flags of `serve` and the [`Config`] they
//! resolve to.

pub mod acme;
pub mod api_keys;
mod auth;
mod bench;
mod database;
pub mod defaults;
pub mod dns;
pub mod oidc;
mod soroban;
mod usage;
mod webhooks;

pub use auth::{AuthArgs, TokenArgs};
pub use bench::{BenchArgs, BenchCommand, ContractIdArgs, ContractsArgs, SoakArgs};
pub use database::DatabaseArgs;
pub use soroban::SorobanArgs;
pub use usage::UsageArgs;
pub use webhooks::{Schedule, WebhookArgs, WebhookConfig};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::scheduler::Schedules;

/// tenantd: the tenant-provisioning control plane.
#[derive(Debug, Parser)]
#[command(name = "tenantd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log line format.
    #[arg(long, env = "TENANTD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// OTLP/gRPC collector to export trace spans to (e.g.
    /// http://127.0.0.1:4317); no export when unset.
    #[arg(long, env = "TENANTD_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run the gRPC server (the default when no command is given).
    Serve(ServeArgs),
    /// Apply pending control-plane migrations and exit.
    Migrate(DatabaseArgs),
    /// Measure throughput and latency on scratch databases (created on
    /// --server-url and dropped afterwards).
    Bench(BenchArgs),
    /// Print a bearer token signed with TENANTD_AUTH_HS256_SECRET.
    Token(TokenArgs),
    /// Print the address (C...) of the Soroban contract a deployer account
    /// deploys with a salt; computed offline, by the network's rules.
    ContractId(ContractIdArgs),
}

/// Settings of `tenantd serve`.
#[derive(Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address the gRPC server listens on.
    #[arg(long, env = "TENANTD_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Address of the Prometheus HTTP listener (GET /metrics); off when
    /// unset. Keep it off the public network: it needs no token.
    #[arg(long, env = "TENANTD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Maximum pooled database connections. Each in-flight RPC or step holds
    /// one for the length of a short transaction.
    #[arg(long, env = "TENANTD_POOL_SIZE", default_value_t = defaults::POOL_SIZE)]
    pub pool_size: usize,
    /// Minimum milliseconds between two NOTIFYs this replica sends to wake
    /// other replicas; bursts of commits fold into one.
    #[arg(long, env = "TENANTD_NOTIFY_DEBOUNCE_MS", default_value_t = defaults::NOTIFY_DEBOUNCE_MS)]
    pub notify_debounce_ms: u64,
    /// Seconds a graceful shutdown waits for in-flight RPCs and steps before
    /// exiting anyway (their leases then expire and another replica resumes).
    #[arg(long, env = "TENANTD_SHUTDOWN_TIMEOUT_SECS", default_value_t = defaults::SHUTDOWN_TIMEOUT_SECS)]
    pub shutdown_timeout_secs: u64,
    /// Database holding tenant schemas and roles. Unset: the control-plane
    /// database, where database steps commit with their completion (exactly once).
    #[arg(long, env = "TENANT_DATABASE_URL", hide_env_values = true)]
    pub tenant_database_url: Option<String>,
    /// Steps of different tenants run at once by this replica; 0 runs the API
    /// only, with no dispatcher.
    #[arg(long, env = "TENANTD_CONCURRENCY", default_value_t = defaults::CONCURRENCY)]
    pub concurrency: usize,
    /// Milliseconds a claimed step stays leased without a heartbeat (sent
    /// every third of it); a dead replica's work resumes after about this long.
    #[arg(long, env = "TENANTD_LEASE_MS", default_value_t = defaults::LEASE_MS)]
    pub lease_ms: u64,
    /// Milliseconds between fallback polls of the outbox when no wake-up
    /// arrives (jittered by +-20%).
    #[arg(long, env = "TENANTD_POLL_INTERVAL_MS", default_value_t = defaults::POLL_INTERVAL_MS)]
    pub poll_interval_ms: u64,
    /// Ceiling of the first retry's delay; doubles per attempt (full jitter).
    #[arg(long, env = "TENANTD_RETRY_BASE_MS", default_value_t = defaults::RETRY_BASE_MS)]
    pub retry_base_ms: u64,
    /// No retry waits longer than this.
    #[arg(long, env = "TENANTD_RETRY_CAP_MS", default_value_t = defaults::RETRY_CAP_MS)]
    pub retry_cap_ms: u64,
    /// Seconds one attempt's external work (SMTP, RPC) may take.
    #[arg(long, env = "TENANTD_STEP_TIMEOUT_SECS", default_value_t = defaults::STEP_TIMEOUT_SECS)]
    pub step_timeout_secs: u64,
    /// Prefix of tenant role names. Roles are cluster-wide: control planes
    /// sharing a PostgreSQL cluster need different prefixes.
    #[arg(long, env = "TENANTD_TENANT_ROLE_PREFIX", default_value = defaults::TENANT_ROLE_PREFIX)]
    pub tenant_role_prefix: String,
    /// SMTP server for welcome emails, e.g. `smtp://127.0.0.1:2525` or
    /// `smtps://user:pass@mail.example.com`. Unset: emails are written as
    /// `.eml` files into --mail-dir.
    #[arg(long, env = "TENANTD_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Folder for `.eml` files when no SMTP server is set (default
    /// `<data-dir>/mail`).
    #[arg(long, env = "TENANTD_MAIL_DIR")]
    pub mail_dir: Option<PathBuf>,
    /// Folder of the verified exports (`pg_dump`) of archived tenants
    /// (default `<data-dir>/archives`). Keep it on storage that outlives
    /// the database server.
    #[arg(long, env = "TENANTD_ARCHIVE_DIR")]
    pub archive_dir: Option<PathBuf>,
    /// Sender of welcome emails.
    #[arg(long, env = "TENANTD_MAIL_FROM", default_value = defaults::MAIL_FROM)]
    pub mail_from: String,
    /// Base of invitation links; `?tenant=<slug>&token=<token>` is appended.
    #[arg(long, env = "TENANTD_INVITATION_URL", default_value = defaults::INVITATION_URL)]
    pub invitation_url: String,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub soroban: SorobanArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(flatten)]
    pub usage: UsageArgs,
    #[command(flatten)]
    pub oidc: oidc::OidcArgs,
    #[command(flatten)]
    pub dns: dns::DnsArgs,
    #[command(flatten)]
    pub acme: acme::AcmeArgs,
    #[command(flatten)]
    pub api_keys: api_keys::ApiKeyArgs,
    /// PEM certificate (chain) to serve TLS with; with --tls-key-file.
    #[arg(long, env = "TENANTD_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "TENANTD_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate they sign
    /// (mutual TLS).
    #[arg(long, env = "TENANTD_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Status streams this process serves at most; more are
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "TENANTD_MAX_WATCHERS", default_value_t = defaults::MAX_WATCHERS)]
    pub max_watchers: usize,
    /// Requests per second each principal (token subject, or client IP
    /// without auth) may make to TenantService on average; 0 disables.
    #[arg(long, env = "TENANTD_RATE_LIMIT_PER_SEC", default_value_t = defaults::RATE_LIMIT_PER_SEC)]
    pub rate_limit_per_sec: u32,
    /// Requests a principal may make in a burst above the average.
    #[arg(long, env = "TENANTD_RATE_LIMIT_BURST", default_value_t = defaults::RATE_LIMIT_BURST)]
    pub rate_limit_burst: u32,
    /// Serve without authentication even with a DATABASE_URL (every caller
    /// may do everything). The embedded default runs without it by default.
    #[arg(long, env = "TENANTD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Once serving, provision one demo tenant and log its steps.
    #[arg(long, env = "TENANTD_DEMO")]
    pub demo: bool,
    /// When the stale-pipeline reaper runs (cron, with seconds).
    #[arg(long, env = "TENANTD_REAPER_SCHEDULE", default_value = defaults::REAPER_SCHEDULE)]
    pub reaper_schedule: String,
    /// A PROVISIONING tenant with no event for this long is cancelled and
    /// compensated (e.g. `30m`, `2h`).
    #[arg(long, env = "TENANTD_STALE_AFTER", default_value = defaults::STALE_AFTER, value_parser = humantime::parse_duration)]
    pub stale_after: Duration,
    /// When deprovisioned tenants past their grace period are purged.
    #[arg(long, env = "TENANTD_PURGE_SCHEDULE", default_value = defaults::PURGE_SCHEDULE)]
    pub purge_schedule: String,
    /// When old events are pruned.
    #[arg(long, env = "TENANTD_PRUNE_SCHEDULE", default_value = defaults::PRUNE_SCHEDULE)]
    pub prune_schedule: String,
    /// How often every ACTIVE and SUSPENDED tenant is checked against what
    /// its steps produced (e.g. `10m`); differences show as its drift.
    #[arg(long, env = "TENANTD_RECONCILE_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,
    /// How often every database server holding tenants' data is connected
    /// to (e.g. `15s`); one that does not answer gets no new tenants until
    /// it answers again.
    #[arg(long, env = "TENANTD_SERVER_CHECK_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub server_check_interval: Duration,
    /// Events of deleted tenants are kept this long (e.g. `90days`); live
    /// tenants keep their whole log.
    #[arg(long, env = "TENANTD_EVENT_RETENTION", default_value = defaults::EVENT_RETENTION, value_parser = humantime::parse_duration)]
    pub event_retention: Duration,
}

impl fmt::Debug for ServeArgs {
    // URLs may carry passwords; they are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("database", &self.database)
            .field("listen", &self.listen)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl ServeArgs {
    /// The server configuration once the database URL is known.
    pub fn resolve(&self, database_url: String) -> Config {
        Config {
            database_url,
            tenant_database_url: self.tenant_database_url.clone(),
            pool_size: self.pool_size,
            notify_debounce: Duration::from_millis(self.notify_debounce_ms),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            concurrency: self.concurrency,
            lease: Duration::from_millis(self.lease_ms),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_cap: Duration::from_millis(self.retry_cap_ms),
            step_timeout: Duration::from_secs(self.step_timeout_secs),
            tenant_role_prefix: self.tenant_role_prefix.clone(),
            smtp_url: self.smtp_url.clone(),
            mail_dir: self
                .mail_dir
                .clone()
                .unwrap_or_else(|| self.database.data_dir.join("mail")),
            archive_dir: self
                .archive_dir
                .clone()
                .unwrap_or_else(|| self.database.data_dir.join("archives")),
            mail_from: self.mail_from.clone(),
            invitation_url: self.invitation_url.clone(),
            soroban: SorobanArgs {
                soroban_local_ledger: Some(
                    self.soroban
                        .soroban_local_ledger
                        .clone()
                        .unwrap_or_else(|| self.database.data_dir.join("soroban-ledger.xdr")),
                ),
                ..self.soroban.clone()
            },
            demo: self.demo,
            auth: None,
            rate_limit: (self.rate_limit_per_sec > 0)
                .then_some((self.rate_limit_per_sec, self.rate_limit_burst.max(1))),
            max_watchers: self.max_watchers,
            metrics_listen: self.metrics_listen,
            tls: match (&self.tls_cert_file, &self.tls_key_file) {
                (Some(cert_file), Some(key_file)) => Some(Tls {
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                    client_ca_file: self.tls_client_ca_file.clone(),
                }),
                _ => None,
            },
            // The secret key is resolved by `serve`, which knows whether
            // the embedded default runs.
            webhooks: WebhookConfig {
                secret_key: None,
                allow_private: self.webhooks.webhook_allow_private,
                timeout: Duration::from_secs(self.webhooks.webhook_timeout_secs.max(1)),
                concurrency: self.webhooks.webhook_concurrency.max(1),
                schedule: self.webhooks.webhook_retry_schedule.0.clone(),
            },
            usage_late_window: self.usage.usage_late_window,
            // Checked by `serve`, which reports a bad combination of flags.
            oidc: None,
            dns: None,
            acme: None,
            // Checked by `serve`.
            api_keys: api_keys::ApiKeyConfig::default(),
            schedules: Schedules {
                reaper: self.reaper_schedule.clone(),
                purge: self.purge_schedule.clone(),
                prune: self.prune_schedule.clone(),
                stale_after: self.stale_after,
                event_retention: self.event_retention,
                usage_sample_interval: self.usage.usage_sample_interval,
                reconcile_interval: self.reconcile_interval,
                server_check_interval: self.server_check_interval,
                renew_before: self.acme.acme_renew_before,
                renew_check_interval: self.acme.acme_renew_check_interval,
            },
        }
    }
}

/// Everything the server needs, resolved. Fields mirror [`ServeArgs`], whose
/// docs explain them.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub tenant_database_url: Option<String>,
    pub pool_size: usize,
    pub notify_debounce: Duration,
    pub shutdown_timeout: Duration,
    pub concurrency: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub step_timeout: Duration,
    pub tenant_role_prefix: String,
    pub smtp_url: Option<String>,
    pub mail_dir: PathBuf,
    /// Where exports of archived tenants are written.
    pub archive_dir: PathBuf,
    pub mail_from: String,
    pub invitation_url: String,
    /// Contract deployment; its `soroban_local_ledger` unset keeps the local
    /// network's ledger in memory only.
    pub soroban: SorobanArgs,
    pub demo: bool,
    pub schedules: Schedules,
    /// Bearer-token verification; `None` runs without authentication.
    pub auth: Option<crate::auth::Verifier>,
    /// Per-principal rate limit (requests per second, burst); `None` for none.
    pub rate_limit: Option<(u32, u32)>,
    /// TLS files; `None` serves plaintext.
    pub tls: Option<Tls>,
    /// Status streams this process serves at most.
    pub max_watchers: usize,
    /// Where `/metrics` is served; `None` for nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Webhook delivery and the key of stored secrets.
    pub webhooks: WebhookConfig,
    /// How far behind the server's clock a usage event may be dated.
    pub usage_late_window: Duration,
    /// The identity provider of `register_oidc_client`; `None` for none.
    pub oidc: Option<oidc::OidcConfig>,
    /// The DNS server of `dns_records`; `None` for none.
    pub dns: Option<dns::DnsConfig>,
    /// The certificate authority of `tls_certificate`; `None` for none.
    pub acme: Option<acme::AcmeConfig>,
    /// Tenants' API keys.
    pub api_keys: api_keys::ApiKeyConfig,
}

/// Where the TLS material is.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Set: clients must present a certificate signed by these CAs.
    pub client_ca_file: Option<PathBuf>,
}

impl Config {
    /// The documented defaults, for `database_url`.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            tenant_database_url: None,
            pool_size: defaults::POOL_SIZE,
            notify_debounce: Duration::from_millis(defaults::NOTIFY_DEBOUNCE_MS),
            shutdown_timeout: Duration::from_secs(defaults::SHUTDOWN_TIMEOUT_SECS),
            concurrency: defaults::CONCURRENCY,
            lease: Duration::from_millis(defaults::LEASE_MS),
            poll_interval: Duration::from_millis(defaults::POLL_INTERVAL_MS),
            retry_base: Duration::from_millis(defaults::RETRY_BASE_MS),
            retry_cap: Duration::from_millis(defaults::RETRY_CAP_MS),
            step_timeout: Duration::from_secs(defaults::STEP_TIMEOUT_SECS),
            tenant_role_prefix: defaults::TENANT_ROLE_PREFIX.to_owned(),
            smtp_url: None,
            mail_dir: PathBuf::from(".tenantd/mail"),
            archive_dir: PathBuf::from(".tenantd/archives"),
            mail_from: defaults::MAIL_FROM.to_owned(),
            invitation_url: defaults::INVITATION_URL.to_owned(),
            soroban: SorobanArgs::default(),
            demo: false,
            auth: None,
            rate_limit: Some((defaults::RATE_LIMIT_PER_SEC, defaults::RATE_LIMIT_BURST)),
            tls: None,
            max_watchers: defaults::MAX_WATCHERS,
            metrics_listen: None,
            webhooks: WebhookConfig::default(),
            usage_late_window: defaults::USAGE_LATE_WINDOW,
            oidc: None,
            dns: None,
            acme: None,
            api_keys: api_keys::ApiKeyConfig::default(),
            schedules: Schedules {
                reaper: defaults::REAPER_SCHEDULE.to_owned(),
                purge: defaults::PURGE_SCHEDULE.to_owned(),
                prune: defaults::PRUNE_SCHEDULE.to_owned(),
                stale_after: Duration::from_secs(30 * 60),
                event_retention: Duration::from_secs(90 * 24 * 3600),
                usage_sample_interval: defaults::USAGE_SAMPLE_INTERVAL,
                reconcile_interval: std::time::Duration::from_secs(600),
                server_check_interval: std::time::Duration::from_secs(15),
                renew_before: defaults::ACME_RENEW_BEFORE,
                renew_check_interval: defaults::ACME_RENEW_CHECK_INTERVAL,
            },
        }
    }
}

impl fmt::Debug for Config {
    // URLs may carry passwords; they are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("pool_size", &self.pool_size)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("tenant_role_prefix", &self.tenant_role_prefix)
            .field("mail_dir", &self.mail_dir)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_default_like_config_new_and_secrets_stay_hidden() {
        let url = "postgres://u:hunter2@h/db";
        let cli = Cli::try_parse_from([
            "tenantd",
            "serve",
            "--database-url",
            url,
            "--smtp-url",
            "smtps://u:pw2@h",
            "--soroban-rpc-url",
            "https://rpc.example/?apikey=k3y",
            "--soroban-network-passphrase",
            "Test SDF Network ; September 2015",
            "--soroban-deployer-secret",
            "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("not serve")
        };
        let resolved = args.resolve(url.into());
        let defaults = Config::new(url);
        assert_eq!(args.listen.to_string(), defaults::LISTEN);
        assert_eq!(resolved.pool_size, defaults.pool_size);
        assert_eq!(resolved.lease, defaults.lease);
        assert_eq!(resolved.retry_cap, defaults.retry_cap);
        assert_eq!(resolved.mail_dir, defaults.mail_dir);
        assert_eq!(
            resolved.schedules.stale_after,
            defaults.schedules.stale_after
        );
        assert_eq!(
            resolved.schedules.event_retention,
            defaults.schedules.event_retention
        );
        for shown in [
            format!("{args:?}"),
            format!("{resolved:?}"),
            format!("{:?}", resolved.soroban),
        ] {
            assert!(
                !shown.contains("hunter2")
                    && !shown.contains("pw2")
                    && !shown.contains("k3y")
                    && !shown.contains("SCCS5ZBI"),
                "{shown}"
            );
        }
        assert_eq!(resolved.soroban.soroban_fee_cap, defaults::SOROBAN_FEE_CAP);
    }
}
