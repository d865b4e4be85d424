//! `peak_connections`: the most client sessions the PostgreSQL server had,
//! all databases together, during each phase of the run, against its
//! `max_connections`. A background task counts them every
//! [`SAMPLE_EVERY`] on a connection of its own (one of the sessions it
//! counts); each phase also counts them when it starts and when it ends.
//!
//! A phase should give back every session it opened: a stopped server
//! closes its pool. Sessions on this run's scratch databases that are still
//! there [`SETTLE`] after the phase ended are reported as left open by it.
//! The server may have other clients, so more sessions after a phase than
//! before it on other databases are only noted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::ser::{Serialize, SerializeMap, Serializer};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{Scratch, count};
use crate::server::BoxError;

/// How often the sessions are counted: short next to every phase, long
/// next to one count (well under a millisecond).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long a phase's sessions may take to end after it returns: a closed
/// connection's backend exits a moment after the client lets go.
const SETTLE: Duration = Duration::from_secs(3);
/// Client sessions only: background workers (autovacuum after the seeded
/// phases, checkpointer, ...) do not count against `max_connections`.
const SESSIONS_SQL: &str =
    "SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend'";

/// Sessions counted around and during one phase: all of the server's, and
/// those on this run's scratch databases.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseSessions {
    pub phase: &'static str,
    pub before: i64,
    pub peak: i64,
    pub after: i64,
    pub own_before: i64,
    pub own_after: i64,
}

impl PhaseSessions {
    /// Sessions of this run's that the phase left open, if it left any.
    pub fn left_open(&self) -> Option<i64> {
        (self.own_after > self.own_before).then(|| self.own_after - self.own_before)
    }

    /// What a reader should know about the sessions after the phase: the
    /// ones it left open, or more sessions of other clients.
    pub fn note(&self) -> Option<String> {
        let (phase, before, after) = (self.phase, self.before, self.after);
        let sessions = |n: i64| format!("{n} session{}", if n == 1 { "" } else { "s" });
        if let Some(open) = self.left_open() {
            return Some(format!(
                "LEAK: {phase} left {} open on this run's databases \
                 ({before} before, {after} after on the whole server)",
                sessions(open)
            ));
        }
        (after > before).then(|| {
            format!(
                "{phase}: {} more after than before, none on this run's \
                 databases (other clients of the server)",
                sessions(after - before)
            )
        })
    }
}

/// The server's sessions through a whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Sessions {
    pub max_connections: i64,
    pub phases: Vec<PhaseSessions>,
}

/// Three keys: `max_connections`, `peak_connections` (phase to peak) and
/// `connections_left_open` (phase to sessions left, for those that left
/// any), phases in the order they ran.
impl Serialize for Sessions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct ByPhase<'a>(&'a [PhaseSessions], fn(&PhaseSessions) -> Option<i64>);
        impl Serialize for ByPhase<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(
                    self.0
                        .iter()
                        .filter_map(|p| (self.1)(p).map(|n| (p.phase, n))),
                )
            }
        }
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("max_connections", &self.max_connections)?;
        map.serialize_entry("peak_connections", &ByPhase(&self.phases, |p| Some(p.peak)))?;
        map.serialize_entry(
            "connections_left_open",
            &ByPhase(&self.phases, PhaseSessions::left_open),
        )?;
        map.end()
    }
}

/// Counts the server's sessions in the background and keeps each phase's
/// peak.
pub(super) struct Sampler {
    conn: Arc<Mutex<AsyncPgConnection>>,
    /// The most sessions counted since the current phase began.
    peak: Arc<AtomicI64>,
    own_sql: String,
    max_connections: i64,
    phases: Vec<PhaseSessions>,
    stop: CancellationToken,
}

impl Sampler {
    pub(super) async fn start(scratch: &Scratch) -> Result<Self, BoxError> {
        let mut conn =
            AsyncPgConnection::establish(&format!("{}/postgres", scratch.server_url)).await?;
        let max_connections = count(
            &mut conn,
            "SELECT current_setting('max_connections')::bigint AS n",
        )
        .await?;
        let sampler = Sampler {
            conn: Arc::new(Mutex::new(conn)),
            peak: Arc::new(AtomicI64::new(0)),
            own_sql: format!(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname LIKE '{}%'",
                scratch.database_prefix()
            ),
            max_connections,
            phases: Vec::new(),
            stop: CancellationToken::new(),
        };
        let (conn, peak, stop) = (
            sampler.conn.clone(),
            sampler.peak.clone(),
            sampler.stop.clone(),
        );
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                match count(&mut *conn.lock().await, SESSIONS_SQL).await {
                    Ok(n) => {
                        peak.fetch_max(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("counting sessions: {e}; peaks from phase ends only");
                        break;
                    }
                }
            }
        });
        Ok(sampler)
    }

    /// Runs one phase of the benchmark and records its sessions.
    pub(super) async fn phase<T>(
        &mut self,
        phase: &'static str,
        work: impl Future<Output = Result<T, BoxError>>,
    ) -> Result<T, BoxError> {
        let before = self.sessions().await?;
        let own_before = self.own_sessions().await?;
        self.peak.store(before, Ordering::Relaxed);
        let result = work.await?;
        let settled = Instant::now() + SETTLE;
        let mut own_after = self.own_sessions().await?;
        while own_after > own_before && Instant::now() < settled {
            tokio::time::sleep(SAMPLE_EVERY).await;
            own_after = self.own_sessions().await?;
        }
        let sessions = PhaseSessions {
            phase,
            before,
            after: self.sessions().await?,
            peak: self.peak.load(Ordering::Relaxed),
            own_before,
            own_after,
        };
        eprintln!("  sessions on the server: peak {}", sessions.peak);
        if let Some(note) = sessions.note() {
            eprintln!("  {note}");
        }
        self.phases.push(sessions);
        Ok(result)
    }

    /// Stops counting (on drop); the sessions of every phase run.
    pub(super) fn finish(mut self) -> Sessions {
        Sessions {
            max_connections: self.max_connections,
            phases: std::mem::take(&mut self.phases),
        }
    }

    /// Counts the sessions now, into the current phase's peak too.
    async fn sessions(&self) -> Result<i64, BoxError> {
        let n = count(&mut *self.conn.lock().await, SESSIONS_SQL).await?;
        self.peak.fetch_max(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Counts the sessions on this run's scratch databases now.
    async fn own_sessions(&self) -> Result<i64, BoxError> {
        count(&mut *self.conn.lock().await, &self.own_sql).await
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::PhaseSessions;

    fn phase(before: i64, after: i64, own_before: i64, own_after: i64) -> PhaseSessions {
        PhaseSessions {
            phase: "stats",
            before,
            peak: 30,
            after,
            own_before,
            own_after,
        }
    }

    #[test]
    fn sessions_left_on_the_runs_databases_are_a_leak() {
        let p = phase(5, 8, 0, 3);
        assert_eq!(p.left_open(), Some(3));
        assert_eq!(
            p.note().as_deref(),
            Some(
                "LEAK: stats left 3 sessions open on this run's databases (5 before, 8 after on the whole server)"
            )
        );
    }

    #[test]
    fn other_clients_sessions_are_noted_but_no_leak() {
        let p = phase(5, 9, 0, 0);
        assert_eq!(p.left_open(), None);
        let note = p.note().unwrap_or_default();
        assert!(note.starts_with("stats: 4 sessions more"), "{note}");
        assert!(!note.contains("LEAK"));
    }

    #[test]
    fn a_phase_that_gives_every_session_back_has_nothing_to_say() {
        assert_eq!(phase(5, 5, 0, 0).note(), None);
        assert_eq!(phase(5, 4, 0, 0).note(), None);
    }
}
