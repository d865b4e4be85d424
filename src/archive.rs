//! Exports of archived tenant schemas: `pg_dump` in custom format into the
//! archive directory, the file's SHA-256, and its contents as
//! `pg_restore --list` shows them; and their way back with `pg_restore`.
//!
//! The tenant database's password is handed to the tools in their
//! environment (`PGPASSWORD`), never on a command line, and never appears
//! in an error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use secrecy::ExposeSecret as _;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::db::fleet::Target;

/// A written export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: i64,
    /// The tables of the schema the dump holds, by name.
    pub tables: BTreeSet<String>,
}

/// Where exports go.
#[derive(Debug)]
pub struct Archives {
    dir: PathBuf,
}

/// A PostgreSQL tool (`pg_dump`, `pg_restore`) run against `target`, its
/// password in the environment; output captured, killed if dropped.
pub fn tool(program: &str, target: Option<&Target>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    if let Some(password) = target.and_then(|t| t.password.as_ref()) {
        command.env("PGPASSWORD", password.expose_secret());
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

impl Archives {
    pub fn new(dir: PathBuf) -> Self {
        Archives { dir }
    }

    fn command(&self, program: &str, target: Option<&Target>) -> tokio::process::Command {
        tool(program, target)
    }

    /// Where a tenant's export of `schema` is written.
    pub fn path_of(&self, tenant: Uuid, schema: &str) -> PathBuf {
        self.dir
            .join(tenant.to_string())
            .join(format!("{schema}.dump"))
    }

    /// Dumps `schema` into the tenant's file (written under a temporary
    /// name, synced, then renamed), and reads back its checksum and the
    /// tables it holds.
    pub async fn export(
        &self,
        target: &Target,
        tenant: Uuid,
        schema: &str,
    ) -> Result<Export, String> {
        let path = self.path_of(tenant, schema);
        let parent = path.parent().unwrap_or(&self.dir).to_owned();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let partial = path.with_extension("dump.partial");
        let out = self
            .command("pg_dump", Some(target))
            .arg("--format=custom")
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg(format!("--schema={schema}"))
            .arg(format!("--file={}", partial.display()))
            .arg(format!("--dbname={}", target.url))
            .output()
            .await
            .map_err(|e| format!("running pg_dump: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_dump of {schema} failed: {}",
                stderr(&out.stderr)
            ));
        }
        let file = tokio::fs::File::open(&partial)
            .await
            .map_err(|e| format!("opening {}: {e}", partial.display()))?;
        file.sync_all()
            .await
            .map_err(|e| format!("syncing {}: {e}", partial.display()))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| format!("renaming {}: {e}", partial.display()))?;
        let (sha256, bytes) = checksum(&path).await?;
        let tables = self.tables_in(&path, schema).await?;
        Ok(Export {
            path,
            sha256,
            bytes,
            tables,
        })
    }

    /// The tables of `schema` in a dump, from `pg_restore --list`.
    pub async fn tables_in(&self, path: &Path, schema: &str) -> Result<BTreeSet<String>, String> {
        let out = self
            .command("pg_restore", None)
            .arg("--list")
            .arg(path)
            .output()
            .await
            .map_err(|e| format!("running pg_restore: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_restore --list of {} failed: {}",
                path.display(),
                stderr(&out.stderr)
            ));
        }
        Ok(listed_tables(&String::from_utf8_lossy(&out.stdout), schema))
    }

    /// Checks that the file still has the recorded checksum.
    pub async fn verify(&self, path: &Path, sha256: &str) -> Result<(), String> {
        let (found, _) = checksum(path).await?;
        if found == sha256 {
            Ok(())
        } else {
            Err(format!(
                "the export {} does not match its recorded SHA-256 ({sha256}, found {found})",
                path.display()
            ))
        }
    }

    /// Restores a dump into the tenant database, all or nothing (the
    /// schema comes back under the name it was dumped with).
    pub async fn restore(&self, target: &Target, path: &Path) -> Result<(), String> {
        let out = self
            .command("pg_restore", Some(target))
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--exit-on-error")
            .arg("--single-transaction")
            .arg(format!("--dbname={}", target.url))
            .arg(path)
            .output()
            .await
            .map_err(|e| format!("running pg_restore: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_restore of {} failed: {}",
                path.display(),
                stderr(&out.stderr)
            ))
        }
    }
}

/// SHA-256 (hex) and size of a file, read in chunks.
pub async fn checksum(path: &Path) -> Result<(String, i64), String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut bytes = 0i64;
    loop {
        let n = file
            .read(&mut buffer)
            .await
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        bytes += n as i64;
        hasher.update(&buffer[..n]);
    }
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// The last lines of a tool's error output, without control characters.
fn stderr(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..]
        .join("; ")
        .chars()
        .filter(|c| !c.is_control())
        .take(500)
        .collect()
}

/// Tables of `schema` in a `pg_restore --list` table of contents: lines
/// `id; oid oid TABLE schema name owner`.
fn listed_tables(list: &str, schema: &str) -> BTreeSet<String> {
    list.lines()
        .filter(|line| !line.starts_with(';'))
        .filter_map(|line| {
            let (_, entry) = line.split_once(';')?;
            let parts: Vec<&str> = entry.split_whitespace().collect();
            (parts.len() >= 5 && parts[2] == "TABLE" && parts[3] == schema)
                .then(|| parts[4].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_of_contents_names_the_schemas_tables() {
        let list = "\
;
; Archive created at 2026-12-01 06:00:00 UTC
;
215; 2615 16385 SCHEMA - archived_acme_0190c5d8 postgres
216; 1259 16390 TABLE archived_acme_0190c5d8 users postgres
217; 1259 16395 TABLE archived_acme_0190c5d8 roles postgres
3301; 0 16390 TABLE DATA archived_acme_0190c5d8 users postgres
218; 1259 16399 TABLE other_schema users postgres
";
        let tables = listed_tables(list, "archived_acme_0190c5d8");
        assert_eq!(tables.into_iter().collect::<Vec<_>>(), ["roles", "users"]);
    }
}
