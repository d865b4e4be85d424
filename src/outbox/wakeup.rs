//! In-process signal plus a debounced cross-replica NOTIFY.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::RunQueryDsl;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::{self, DbPool};

/// The channel other replicas LISTEN on for new outbox work and events.
pub const NOTIFY_CHANNEL: &str = "tenantd_work";

/// Signals that work was committed.
#[derive(Debug, Clone, Default)]
pub struct Wakeup {
    /// Wakes this process's dispatcher; a permit is stored if it is busy, so
    /// no signal is lost and bursts coalesce.
    local: Arc<Notify>,
    /// Wakes this process's event hub (new events to fan out).
    events: Arc<Notify>,
    /// Asks the notifier task to NOTIFY other replicas.
    remote: Arc<Notify>,
    /// Wakes this process's webhook sender: events may have brought
    /// deliveries with them.
    deliveries: Arc<Notify>,
}

impl Wakeup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after a transaction that wrote outbox rows or events committed.
    pub fn work_committed(&self) {
        self.local.notify_one();
        self.events.notify_one();
        self.remote.notify_one();
        self.deliveries.notify_one();
    }

    /// Call after a transaction that wrote events but no new work for this
    /// process committed.
    pub fn events_committed(&self) {
        self.events.notify_one();
        self.remote.notify_one();
        self.deliveries.notify_one();
    }

    /// Another replica committed work or events (its NOTIFY arrived).
    pub fn remote_committed(&self) {
        self.local.notify_one();
        self.events.notify_one();
        self.deliveries.notify_one();
    }

    /// Resolves at the next commit that may have brought deliveries.
    pub async fn deliveries_signal(&self) {
        self.deliveries.notified().await;
    }

    /// Resolves at the next signal for the event hub.
    pub async fn events_signal(&self) {
        self.events.notified().await;
    }

    /// Resolves at the next local signal (or at once if one is pending).
    pub async fn local_signal(&self) {
        self.local.notified().await;
    }

    /// Starts the task that turns signals into at most one NOTIFY per
    /// `debounce`: the first signal of a burst is sent at once, the rest of
    /// the burst is folded into one more NOTIFY when the interval ends.
    pub fn spawn_notifier(
        &self,
        pool: DbPool,
        debounce: Duration,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let remote = self.remote.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = remote.notified() => {}
                }
                if let Err(e) = notify(&pool).await {
                    tracing::warn!(error = %e, "NOTIFY for other replicas failed; they will find the work by polling");
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(debounce) => {}
                }
            }
        });
    }
}

async fn notify(pool: &DbPool) -> crate::error::Result<()> {
    let mut conn = db::conn(pool).await?;
    diesel::sql_query(format!("NOTIFY {NOTIFY_CHANNEL}"))
        .execute(&mut conn)
        .await?;
    Ok(())
}
