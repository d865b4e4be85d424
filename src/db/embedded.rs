//! The embedded default: a private PostgreSQL cluster, made from the
//! machine's own PostgreSQL binaries, in a data directory tenantd owns.
//!
//! It exists so that a newcomer sees a full provisioning run with one
//! command. Real deployments pass `DATABASE_URL` and never come here.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

/// Database the embedded cluster serves tenantd from.
const DATABASE: &str = "tenantd";
/// Records the cluster's port so that the next start reuses it.
const PORT_FILE: &str = "tenantd.port";

/// Why the embedded cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH or under \
         /usr/lib/postgresql/*/bin. Install PostgreSQL (Debian/Ubuntu: `apt install postgresql`, \
         Fedora: `dnf install postgresql-server`, macOS: `brew install postgresql`) or set \
         DATABASE_URL to an existing server"
    )]
    NotInstalled,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A running private cluster. `stop` shuts it down if this process started it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    /// Root cannot run postgres; as root, every command runs as `postgres`.
    as_postgres_user: bool,
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Starts (initialising on first use) the cluster in `data_dir`, or reuses
    /// it if it is already running, and makes sure the `tenantd` database
    /// exists.
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedError::NotInstalled)?;
        std::fs::create_dir_all(data_dir)?;
        let data_dir = data_dir.canonicalize()?;
        let as_postgres_user = is_root().await;
        let mut pg = Self {
            data_dir,
            bin_dir,
            port: 0,
            as_postgres_user,
            started_here: false,
        };

        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.init().await?;
        }
        pg.port = pg.port()?;
        if !pg.is_running().await {
            let options = format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
                pg.port
            );
            let log = pg.data_dir.join("postgres.log");
            pg.pg_ctl(&[
                "start",
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "-l",
                &path_str(&log),
            ])
            .await?;
            pg.started_here = true;
        }
        pg.create_database().await?;
        Ok(pg)
    }

    /// Where tenantd connects.
    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Stops the cluster if this process started it.
    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        if self.started_here {
            self.pg_ctl(&["stop", "-w", "-m", "fast"]).await?;
        }
        Ok(())
    }

    async fn init(&self) -> Result<(), EmbeddedError> {
        if self.as_postgres_user {
            self.run(
                Command::new("chown").args(["-R", "postgres:", &path_str(&self.data_dir)]),
                "chown",
            )
            .await?;
        }
        let initdb = self.bin_dir.join("initdb");
        let dir = path_str(&self.data_dir);
        self.run(
            self.command(&initdb).args([
                "-D",
                &dir,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
            "initdb",
        )
        .await?;
        Ok(())
    }

    /// The recorded port, or a free one recorded now.
    fn port(&self) -> Result<u16, EmbeddedError> {
        let file = self.data_dir.join(PORT_FILE);
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(port) = text.trim().parse()
        {
            return Ok(port);
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::write(&file, port.to_string())?;
        Ok(port)
    }

    async fn is_running(&self) -> bool {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let dir = path_str(&self.data_dir);
        matches!(self.command(&pg_ctl).args(["status", "-D", &dir]).output().await, Ok(o) if o.status.success())
    }

    async fn create_database(&self) -> Result<(), EmbeddedError> {
        let psql = self.bin_dir.join("psql");
        let port = self.port.to_string();
        let base = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
        ];
        let exists = self
            .run(
                self.command(&psql).args(base).arg(format!(
                    "SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
                )),
                "psql",
            )
            .await?;
        if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
            self.run(
                self.command(&psql)
                    .args(base)
                    .arg(format!("CREATE DATABASE {DATABASE}")),
                "psql",
            )
            .await?;
        }
        Ok(())
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<Output, EmbeddedError> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let dir = path_str(&self.data_dir);
        self.run(
            self.command(&pg_ctl).args(["-D", &dir]).args(args),
            "pg_ctl",
        )
        .await
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        command
    }

    async fn run(&self, command: &mut Command, what: &str) -> Result<Output, EmbeddedError> {
        let output = command.output().await?;
        if output.status.success() {
            Ok(output)
        } else {
            let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            if detail.contains("Permission denied") && self.as_postgres_user {
                detail.push_str(
                    " (the data directory and every directory above it must be reachable by the \
                     postgres user; choose another with --data-dir)",
                );
            }
            Err(EmbeddedError::Command {
                what: what.to_owned(),
                detail,
            })
        }
    }
}

/// The newest /usr/lib/postgresql/<v>/bin, else the directory of `initdb` on
/// PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    })
}

async fn is_root() -> bool {
    matches!(Command::new("id").arg("-u").output().await, Ok(o) if o.stdout.trim_ascii() == b"0")
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
