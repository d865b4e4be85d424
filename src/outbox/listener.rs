//! The one LISTEN connection of this process: a dedicated connection (not
//! pooled: a pooled one would keep listening after being recycled), reopened
//! if it drops. Each notification wakes the local dispatcher and event hub.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{NOTIFY_CHANNEL, Wakeup};

/// Pause before reconnecting a dropped listener, doubled up to the cap.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Starts the listener; the returned flag turns true once LISTEN is active.
pub fn spawn(
    database_url: String,
    wakeup: Wakeup,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> watch::Receiver<bool> {
    let (ready, listening) = watch::channel(false);
    tracker.spawn(async move {
        let mut pause = RECONNECT_MIN;
        loop {
            let session = listen(&database_url, &wakeup, &ready, &token);
            match session.await {
                Ok(()) => return, // shutdown
                Err(e) => {
                    ready.send_replace(false);
                    crate::telemetry::metrics::listener_reconnect();
                    tracing::warn!(error = %e, retry_in = ?pause, "LISTEN connection lost; reconnecting");
                    // Work may have been committed while we were deaf.
                    wakeup.remote_committed();
                }
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RECONNECT_MAX);
        }
    });
    listening
}

/// One listening session; returns Ok on shutdown, Err when the connection fails.
async fn listen(
    url: &str,
    wakeup: &Wakeup,
    ready: &watch::Sender<bool>,
    token: &CancellationToken,
) -> Result<(), String> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| e.to_string())?;
    diesel::sql_query(format!("LISTEN {NOTIFY_CHANNEL}"))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    ready.send_replace(true);
    tracing::debug!("listening for {NOTIFY_CHANNEL}");
    let mut notifications = std::pin::pin!(conn.notifications_stream());
    loop {
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            next = notifications.next() => match next {
                Some(Ok(_)) => wakeup.remote_committed(),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection closed".into()),
            }
        }
    }
}
