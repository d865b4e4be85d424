//! Command-line and environment configuration. Every setting is a flag with
//! an environment variable; nothing is read from anywhere else.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// tenantd: the tenant-provisioning control plane.
#[derive(Debug, Parser)]
#[command(name = "tenantd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log line format.
    #[arg(long, env = "TENANTD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
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
pub enum Command {
    /// Run the gRPC server (the default when no command is given).
    Serve(ServeArgs),
    /// Apply pending control-plane migrations and exit.
    Migrate(DatabaseArgs),
}

/// Where the control-plane database is.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres URL of the control-plane database. Unset: start the embedded
    /// private PostgreSQL cluster under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory of the embedded default's state (its PostgreSQL cluster).
    #[arg(long, env = "TENANTD_DATA_DIR", default_value = ".tenantd")]
    pub data_dir: PathBuf,
}

impl fmt::Debug for DatabaseArgs {
    // The URL may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// Settings of `tenantd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address the gRPC server listens on.
    #[arg(long, env = "TENANTD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Maximum pooled database connections. Each in-flight RPC or step holds
    /// one for the length of a short transaction.
    #[arg(long, env = "TENANTD_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,
    /// Minimum milliseconds between two NOTIFYs this replica sends to wake
    /// other replicas; bursts of commits fold into one.
    #[arg(long, env = "TENANTD_NOTIFY_DEBOUNCE_MS", default_value_t = 10)]
    pub notify_debounce_ms: u64,
    /// Seconds a graceful shutdown waits for in-flight RPCs and work before
    /// exiting anyway.
    #[arg(long, env = "TENANTD_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
}

impl Default for ServeArgs {
    fn default() -> Self {
        // Parsing an empty command line yields every documented default.
        ServeArgs::from_env_free_defaults()
    }
}

impl ServeArgs {
    fn from_env_free_defaults() -> Self {
        ServeArgs {
            database: DatabaseArgs {
                database_url: None,
                data_dir: PathBuf::from(".tenantd"),
            },
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            pool_size: 16,
            notify_debounce_ms: 10,
            shutdown_timeout_secs: 30,
        }
    }

    /// The server configuration once the database URL is known.
    pub fn resolve(&self, database_url: String) -> Config {
        Config {
            database_url,
            pool_size: self.pool_size,
            notify_debounce: Duration::from_millis(self.notify_debounce_ms),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
        }
    }
}

/// Everything the server needs, resolved.
#[derive(Clone)]
pub struct Config {
    /// Control-plane database.
    pub database_url: String,
    /// See [`ServeArgs::pool_size`].
    pub pool_size: usize,
    /// See [`ServeArgs::notify_debounce_ms`].
    pub notify_debounce: Duration,
    /// See [`ServeArgs::shutdown_timeout_secs`].
    pub shutdown_timeout: Duration,
}

impl Config {
    /// Defaults for everything but the database.
    pub fn new(database_url: impl Into<String>) -> Self {
        ServeArgs::default().resolve(database_url.into())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("notify_debounce", &self.notify_debounce)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_flags_and_secrets_stay_hidden() {
        let cli = Cli::try_parse_from([
            "tenantd",
            "serve",
            "--database-url",
            "postgres://u:hunter2@h/db",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("not serve")
        };
        let defaults = ServeArgs::default();
        assert_eq!(args.listen, defaults.listen);
        assert_eq!(args.pool_size, defaults.pool_size);
        assert_eq!(args.notify_debounce_ms, defaults.notify_debounce_ms);
        assert!(!format!("{args:?}").contains("hunter2"));
        assert!(
            !format!("{:?}", args.resolve("postgres://u:hunter2@h/db".into())).contains("hunter2")
        );
    }
}
