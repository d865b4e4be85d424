//! One watcher: a snapshot, the backlog since the caller's cursor, then live
//! events of its tenant from the hub, in id order, each exactly once.

use std::sync::Arc;

use diesel_async::AsyncConnection;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::EventHub;
use crate::db::{self, DbPool};
use crate::domain::{Event, Tenant, TenantState};
use crate::error::{Error, Result};

/// Messages buffered towards one client; a slow client fills this and then
/// falls behind the hub, from which it recovers by reading the table.
const CLIENT_BUFFER: usize = 32;
/// Events read from the table per query while catching up.
const CATCH_UP_BATCH: i64 = 500;

/// What a watcher asks for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub tenant_id: Uuid,
    /// Deliver events after this id; `None`: after the snapshot.
    pub resume_after: Option<i64>,
    /// Keep going after the tenant settles.
    pub follow: bool,
}

/// One message to the watcher.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// First: the tenant as of `last_event_id`.
    Snapshot {
        tenant: Box<Tenant>,
        last_event_id: i64,
    },
    Event(Arc<Event>),
}

/// Reads the snapshot (NOT_FOUND for an unknown tenant) and starts the
/// watcher; items arrive on the returned channel, which closes when the
/// tenant settles (unless following), at shutdown, or when the caller drops
/// the receiver.
pub async fn watch(
    hub: &EventHub,
    request: WatchRequest,
    slot: tokio::sync::OwnedSemaphorePermit,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Result<WatchItem>>> {
    // Subscribe before reading, so nothing committed meanwhile is missed.
    let live = hub.subscribe();
    let (tenant, last_event_id) = snapshot(hub.pool(), request.tenant_id).await?;
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let watcher = Watcher {
        pool: hub.pool().clone(),
        tenant_id: tenant.id,
        cursor: request.resume_after.unwrap_or(last_event_id),
        state: tenant.state,
        follow: request.follow,
        tx,
    };
    tokio::spawn(async move {
        // The stream's slot is free again when its watcher ends.
        let _slot = slot;
        tokio::select! {
            () = watcher.run(tenant, last_event_id, live) => {}
            () = shutdown.cancelled() => {}
        }
    });
    Ok(rx)
}

/// The tenant with its steps and its last event id, read under a share lock
/// on the tenant row: event writers hold the row lock, so the snapshot is
/// exactly the state after `last_event_id`.
async fn snapshot(pool: &DbPool, id: Uuid) -> Result<(Tenant, i64)> {
    let mut conn = db::conn(pool).await?;
    conn.transaction(async |conn| {
        db::tenants::lock_shared(conn, id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(id))?;
        let tenant = db::tenants::load(conn, id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(id))?;
        let last = db::events::last_of_tenant(conn, id).await?;
        Ok((tenant, last))
    })
    .await
}

struct Watcher {
    pool: DbPool,
    tenant_id: Uuid,
    /// The last event id delivered (or the snapshot's).
    cursor: i64,
    /// The tenant's state after the last delivered event.
    state: TenantState,
    follow: bool,
    tx: mpsc::Sender<Result<WatchItem>>,
}

impl Watcher {
    async fn run(
        mut self,
        tenant: Tenant,
        last_event_id: i64,
        mut live: broadcast::Receiver<Arc<Event>>,
    ) {
        if self
            .tx
            .send(Ok(WatchItem::Snapshot {
                tenant: Box::new(tenant),
                last_event_id,
            }))
            .await
            .is_err()
        {
            return;
        }
        // The backlog since the caller's cursor, then live events.
        if !self.catch_up().await || self.settled() {
            return;
        }
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                () = self.tx.closed() => return,
            };
            let keep_going = match received {
                Ok(event) if event.tenant_id == self.tenant_id => self.deliver(event).await,
                Ok(_) => true,
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(tenant_id = %self.tenant_id, skipped, "watcher fell behind; reading the table");
                    self.catch_up().await
                }
                Err(broadcast::error::RecvError::Closed) => false,
            };
            if !keep_going || self.settled() {
                return;
            }
        }
    }

    /// Sends `event` if it is new; false when the client is gone.
    async fn deliver(&mut self, event: Arc<Event>) -> bool {
        if event.id <= self.cursor {
            return true;
        }
        self.cursor = event.id;
        self.state = event.state;
        self.tx.send(Ok(WatchItem::Event(event))).await.is_ok()
    }

    /// Delivers every stored event after the cursor; false when the client is
    /// gone or the database failed (the error is sent).
    async fn catch_up(&mut self) -> bool {
        loop {
            let rows = match db::conn(&self.pool).await {
                Ok(mut conn) => db::events::of_tenant_after(
                    &mut conn,
                    self.tenant_id,
                    self.cursor,
                    CATCH_UP_BATCH,
                )
                .await
                .map_err(Error::from),
                Err(e) => Err(e),
            };
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return false;
                }
            };
            let full = rows.len() as i64 == CATCH_UP_BATCH;
            for row in rows {
                let event = match row.into_domain() {
                    Ok(event) => Arc::new(event),
                    Err(e) => {
                        let _ = self.tx.send(Err(e)).await;
                        return false;
                    }
                };
                if !self.deliver(event).await {
                    return false;
                }
            }
            if !full {
                return true;
            }
        }
    }

    fn settled(&self) -> bool {
        !self.follow && self.state.is_terminal()
    }
}
