//! The connection pools of the servers that hold tenants' data: `default`
//! (the configured tenant database) always open, every registered server's
//! opened when a tenant's work first needs it and closed once idle. Each
//! pool is bounded, so one busy server cannot take every connection a
//! process may open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::DbPool;
use crate::error::{Error, Result};
use secrecy::{ExposeSecret as _, SecretString};

use crate::secrets::SecretKey;

/// The server every tenant lived on before servers were registered: the
/// configured tenant database.
pub const DEFAULT_SERVER: &str = "default";

/// A registered server's pool that nothing used for this long is closed:
/// long enough that a server with steady work keeps its connections, short
/// enough that a fleet of quiet servers holds none.
const IDLE: Duration = Duration::from_secs(60);

/// How often idle pools and connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// How to reach a server: its URL without the password, and the password
/// apart (for tools, which take it from their environment). Never printed.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub password: Option<SecretString>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Splits a configured URL.
    /// Splits a configured URL. The userinfo is read as text, not by a URL
    /// parser, so libpq's multi-host form (`postgres://u:p@h1:5432,h2:5432/db
    /// ?target_session_attrs=read-write`) is kept whole.
    pub fn parse(url: &str) -> Result<Self> {
        let Some((head, user, password, tail)) = split_userinfo(url) else {
            return Err(Error::Internal(
                "a tenant database URL is not postgres://...".into(),
            ));
        };
        Ok(Target {
            url: match user {
                Some(user) => format!("{head}{user}@{tail}"),
                None => format!("{head}{tail}"),
            },
            password: password.map(|p| {
                SecretString::from(
                    percent_encoding::percent_decode_str(p)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            }),
        })
    }

    /// The hosts (`h1:5432,h2:5432`) and the database a URL names, if it
    /// is a `scheme://` URL.
    pub fn hosts_and_database(url: &str) -> Option<(&str, &str)> {
        let (_, _, _, tail) = split_userinfo(url)?;
        let (hosts, rest) = tail.split_once('/').unwrap_or((tail, ""));
        let hosts = hosts.split('?').next().unwrap_or_default();
        Some((hosts, rest.split('?').next().unwrap_or_default()))
    }

    /// The URL with its password, for a connection.
    pub fn full_url(&self) -> Result<String> {
        match &self.password {
            None => Ok(self.url.clone()),
            Some(password) => with_password(&self.url, password.expose_secret().as_bytes()),
        }
    }
}

/// The pools, by server name.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    /// The control-plane database, where servers' URLs are read.
    control: DbPool,
    /// The configured tenant database.
    default: DbPool,
    default_target: Target,
    /// `default` is the control-plane database itself, so tenant DDL there
    /// commits in the transaction of the state change.
    default_is_control: bool,
    /// Opens the sealed passwords of registered servers.
    key: Option<Arc<SecretKey>>,
    /// Connections one registered server's pool holds at most.
    pool_size: usize,
    open: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    pool: DbPool,
    last_used: Instant,
}

impl Fleet {
    /// `default_url` is the configured tenant database's (the
    /// control-plane database's when `default_is_control`).
    pub fn new(
        control: DbPool,
        default: DbPool,
        default_url: &str,
        default_is_control: bool,
        key: Option<Arc<SecretKey>>,
        pool_size: usize,
    ) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                control,
                default,
                default_target: Target::parse(default_url)?,
                default_is_control,
                key,
                pool_size,
                open: Mutex::default(),
            }),
        })
    }

    /// Whether tenant DDL on `server` may run in the control-plane
    /// transaction that records it.
    pub fn same_database(&self, server: &str) -> bool {
        server == DEFAULT_SERVER && self.inner.default_is_control
    }

    /// The configured tenant database's pool.
    pub fn default_pool(&self) -> &DbPool {
        &self.inner.default
    }

    /// The pool of `server`, opened if it is not open. Opening reads the
    /// server's URL and password; it connects only when a connection is
    /// asked for, so a stopped server fails the work that needs it (which
    /// retries), not this call.
    pub async fn pool(&self, server: &str) -> Result<DbPool> {
        if server == DEFAULT_SERVER {
            return Ok(self.inner.default.clone());
        }
        if let Some(pool) = self.touch(server) {
            return Ok(pool);
        }
        let pool = super::verified_pool(
            &self.target(server).await?.full_url()?,
            self.inner.pool_size,
        )?;
        let mut open = self.lock();
        // Another task may have opened it meanwhile: keep the first.
        let entry = open.entry(server.to_owned()).or_insert(Entry {
            pool,
            last_used: Instant::now(),
        });
        Ok(entry.pool.clone())
    }

    /// How to reach `server`, its password opened.
    pub async fn target(&self, server: &str) -> Result<Target> {
        if server == DEFAULT_SERVER {
            return Ok(self.inner.default_target.clone());
        }
        let mut conn = super::conn(&self.inner.control).await?;
        let (url, sealed) = super::servers::credentials(&mut conn, server)
            .await?
            .ok_or_else(|| Error::Internal(format!("no database server is named {server}")))?;
        drop(conn);
        let password = match sealed {
            None => None,
            Some(sealed) => {
                let key = self.inner.key.as_ref().ok_or_else(|| {
                    Error::Internal(format!(
                        "the password of database server {server} is sealed, and no secrets key is set"
                    ))
                })?;
                let password = key
                    .open(
                        &sealed,
                        format!("database_servers/{server}/password").as_bytes(),
                    )
                    .map_err(|e| {
                        Error::Internal(format!("opening the password of {server}: {e}"))
                    })?;
                Some(SecretString::from(
                    String::from_utf8_lossy(password.expose_secret()).into_owned(),
                ))
            }
        };
        Ok(Target { url, password })
    }

    /// Closes a server's pool (it was deregistered).
    pub fn forget(&self, server: &str) {
        if let Some(entry) = self.lock().remove(server) {
            entry.pool.close();
        }
    }

    /// Names of the registered servers whose pools are open.
    pub fn open_servers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Closes idle pools and idle connections until shutdown.
    pub fn spawn_sweeper(&self, shutdown: CancellationToken, tracker: &TaskTracker) {
        let fleet = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => fleet.sweep(IDLE),
                }
            }
            for (_, entry) in fleet.lock().drain() {
                entry.pool.close();
            }
        });
    }

    /// Closes the pools not used for `idle`, and in the others the
    /// connections not used for as long.
    pub fn sweep(&self, idle: Duration) {
        let mut open = self.lock();
        open.retain(|name, entry| {
            let in_use = entry.pool.status().size > entry.pool.status().available;
            if !in_use && entry.last_used.elapsed() >= idle {
                tracing::debug!(server = %name, "closing an idle database server's pool");
                entry.pool.close();
                return false;
            }
            entry.pool.retain(|_, metrics| metrics.last_used() < idle);
            true
        });
    }

    fn touch(&self, server: &str) -> Option<DbPool> {
        let mut open = self.lock();
        let entry = open.get_mut(server)?;
        entry.last_used = Instant::now();
        Some(entry.pool.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock leaves a map that is still whole.
        self.inner.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `scheme://`, the user (if any), the password as written (if any), and
/// what follows the userinfo (hosts, database, parameters).
fn split_userinfo(url: &str) -> Option<(&str, Option<&str>, Option<&str>, &str)> {
    let start = url.find("://")? + 3;
    let (head, rest) = url.split_at(start);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Some((head, None, None, rest));
    };
    let (userinfo, tail) = (&rest[..at], &rest[at + 1..]);
    Some(match userinfo.split_once(':') {
        Some((user, password)) => (head, Some(user), Some(password), tail),
        None => (head, Some(userinfo), None, tail),
    })
}

/// `url` with `password` put back in its userinfo (percent-encoded).
fn with_password(url: &str, password: &[u8]) -> Result<String> {
    let (head, user, _, tail) = split_userinfo(url)
        .ok_or_else(|| Error::Internal("a stored URL is not postgres://...".into()))?;
    let password = String::from_utf8_lossy(password);
    let encoded: String =
        percent_encoding::utf8_percent_encode(&password, percent_encoding::NON_ALPHANUMERIC)
            .collect();
    Ok(format!(
        "{head}{}:{encoded}@{tail}",
        user.unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_keeps_its_password_apart_and_out_of_debug() {
        let t = Target::parse("postgres://app:s%40c+ret@db.example:5432/tenants").unwrap();
        assert_eq!(
            t.password.as_ref().map(|p| p.expose_secret().to_owned()),
            Some("s@c+ret".to_owned())
        );
        assert!(!t.url.contains("cret"), "{}", t.url);
        assert!(!format!("{t:?}").contains("cret"));
        let full = url::Url::parse(&t.full_url().unwrap()).unwrap();
        assert_eq!(full.password(), Some("s%40c%2Bret"));
    }

    #[test]
    fn a_multi_host_url_keeps_its_hosts_and_loses_only_its_password() {
        let text =
            "postgres://app:p%40ss@db1:5432,db2:5433/tenants?target_session_attrs=read-write";
        let t = Target::parse(text).unwrap();
        assert_eq!(
            t.url,
            "postgres://app@db1:5432,db2:5433/tenants?target_session_attrs=read-write"
        );
        assert_eq!(
            t.password.as_ref().map(|p| p.expose_secret().to_owned()),
            Some("p@ss".to_owned())
        );
        assert_eq!(
            t.full_url().unwrap(),
            "postgres://app:p%40ss@db1:5432,db2:5433/tenants?target_session_attrs=read-write"
        );
        let bare = Target::parse("postgres://db1,db2/tenants").unwrap();
        assert_eq!(
            (bare.url.as_str(), bare.password.is_none()),
            ("postgres://db1,db2/tenants", true)
        );
        assert!(Target::parse("db1:5432").is_err());
    }

    #[test]
    fn a_password_goes_back_in_as_it_came_out() {
        let url = with_password("postgres://u@h:5/db", b"s@c+r et/").unwrap();
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!(parsed.password(), Some("s%40c%2Br%20et%2F"));
        let back = Target::parse(&url).unwrap();
        assert_eq!(back.url, "postgres://u@h:5/db");
        assert_eq!(
            back.password.map(|p| p.expose_secret().to_owned()),
            Some("s@c+r et/".to_owned())
        );
    }

    #[test]
    fn hosts_and_database_are_read_from_either_form() {
        assert_eq!(
            Target::hosts_and_database("postgres://u:p@h1:5,h2:6/db?sslmode=require"),
            Some(("h1:5,h2:6", "db"))
        );
        assert_eq!(Target::hosts_and_database("postgres://h/"), Some(("h", "")));
        assert_eq!(Target::hosts_and_database("h/db"), None);
    }
}
