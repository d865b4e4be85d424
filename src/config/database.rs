//! Where the control-plane database is; `serve` and `migrate` share it.

use std::fmt;
use std::path::PathBuf;

use clap::Args;

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
