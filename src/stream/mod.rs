//! The event hub behind StreamProvisioningStatus.
//!
//! One reader per process reads new events from the table once and fans
//! them out in memory through a broadcast channel; watchers never hold a
//! connection of their own.
//!
//! ```text
//! commit (this process) ─┐
//! NOTIFY (other replica) ─┼─> hub reader: SELECT events WHERE id > cursor ──> broadcast ──> watcher ... watcher
//! slow poll ──────────────┘        (plus ids still missing, see below)                │ lagged?
//!                                                                                      └─> catch up from the table
//! ```
//!
//! Ids are assigned at insert, so across tenants a lower id can commit after
//! a higher one. The reader remembers the ids it skipped and looks for them
//! again until they appear or [`MISSING_ID_PATIENCE`] passes (a rolled-back
//! insert leaves a hole for good). Within one tenant there is no such race:
//! every writer locks the tenant row before inserting its events, so a
//! tenant's events commit in id order and a watcher's per-tenant cursor never
//! skips one.

mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use watch::{WatchItem, WatchRequest, watch};

use crate::db::{self, DbPool};
use crate::domain::Event;
use crate::outbox::Wakeup;

/// Events buffered for watchers; one that falls further behind catches up
/// from the table.
const BROADCAST_CAPACITY: usize = 4096;
/// Largest batch the reader takes in one query.
const READ_BATCH: i64 = 1000;
/// Poll when no signal arrives (a NOTIFY lost while reconnecting).
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How long a skipped id is looked for again: longer than any transaction
/// that writes events runs.
pub const MISSING_ID_PATIENCE: Duration = Duration::from_secs(300);
/// Pause after a failed read (database down).
const READ_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Fans events out to the watchers of this process.
#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<Event>>,
    pool: DbPool,
    /// Receivers of the server's own (not watchers).
    internal: Arc<std::sync::atomic::AtomicUsize>,
}

impl EventHub {
    /// Starts the reader from the current end of the log.
    pub async fn start(
        pool: DbPool,
        wakeup: Wakeup,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) -> crate::error::Result<Self> {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let cursor = {
            let mut conn = db::conn(&pool).await?;
            db::events::last_id(&mut conn).await?
        };
        let hub = EventHub {
            sender,
            pool,
            internal: Arc::default(),
        };
        tracker.spawn(hub.clone().read(cursor, wakeup, token));
        Ok(hub)
    }

    /// A receiver of every event read from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// A receiver for the server's own use (it is not counted as a
    /// watcher), held as long as the server runs.
    pub fn subscribe_internal(&self) -> broadcast::Receiver<Arc<Event>> {
        self.internal
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sender.subscribe()
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Watchers subscribed right now.
    pub fn watchers(&self) -> usize {
        self.sender
            .receiver_count()
            .saturating_sub(self.internal.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn read(self, mut cursor: i64, wakeup: Wakeup, token: CancellationToken) {
        // Skipped ids and when they were first skipped.
        let mut missing: BTreeMap<i64, Instant> = BTreeMap::new();
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = wakeup.events_signal() => {}
                () = tokio::time::sleep(FALLBACK_POLL) => {}
            }
            // A backlog is read in batches; shutdown stops between them.
            while !token.is_cancelled() {
                let wanted: Vec<i64> = missing.keys().copied().collect();
                let rows = match db::conn(&self.pool).await {
                    Ok(mut conn) => db::events::after(&mut conn, cursor, &wanted, READ_BATCH)
                        .await
                        .map_err(Into::into),
                    Err(e) => Err(e),
                };
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading new events failed");
                        tokio::time::sleep(READ_ERROR_PAUSE).await;
                        break;
                    }
                };
                let fresh = rows.iter().filter(|r| r.id > cursor).count() as i64;
                for row in rows {
                    let id = row.id;
                    if id > cursor {
                        let now = Instant::now();
                        missing.extend((cursor + 1..id).map(|skipped| (skipped, now)));
                        cursor = id;
                    }
                    missing.remove(&id);
                    match row.into_domain() {
                        // No receivers is fine: nobody watches right now.
                        Ok(event) => drop(self.sender.send(Arc::new(event))),
                        Err(e) => tracing::error!(error = %e, event_id = id, "unreadable event"),
                    }
                }
                missing.retain(|_, since| since.elapsed() < MISSING_ID_PATIENCE);
                if fresh < READ_BATCH {
                    break;
                }
            }
        }
    }
}
