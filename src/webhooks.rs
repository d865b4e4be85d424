//! The webhook sender: claims due deliveries, POSTs each one signed, and
//! records the outcomes, like the dispatcher does with steps.
//!
//! ```text
//!   wake-ups: commits with events | next due time | jittered poll
//!       │
//!       ▼
//!   claim(n)  one statement: SKIP LOCKED, lease + fencing token, attempt + 1
//!     └─ per delivery, as a slot frees (up to `concurrency` at once, no
//!        connection held):
//!          open the endpoint's secrets, sign, POST through `outbound`
//!            └─> recorder: many outcomes per transaction, each applied
//!                only while its claim is current (id + token)
//! ```
//!
//! At least once: a sender that dies between the POST and the record leaves
//! the row leased; it is due again when the lease expires and is sent again
//! with the same `webhook-id`, which receivers deduplicate on.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use secrecy::SecretString;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::webhooks::{ClaimedDelivery, Settled};
use crate::db::{self, DbPool};
use crate::domain::webhook::{DeliveryStatus, Verdict, signed_headers, verdict};
use crate::error::Result;
use crate::outbound::{Headers, Outbound, SendError};
use crate::outbox::Wakeup;
use crate::secrets::SecretKey;
use crate::telemetry::metrics;

/// Most deliveries one claim takes.
const MAX_CLAIM: usize = 256;
/// Most outcomes recorded in one transaction.
const MAX_RECORD: usize = 512;
/// Pause after a failed claim (database down) before trying again.
const CLAIM_ERROR_PAUSE: Duration = Duration::from_millis(500);
/// A receiver's `Retry-After` is honoured up to this long.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The retry schedule after the first attempt: about 5 s, 5 min, 30 min,
/// 2 h, 5 h, 10 h and 24 h, so a receiver that is down for a day still
/// gets everything.
pub const DEFAULT_SCHEDULE: &[Duration] = &[
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(24 * 3600),
];

/// How the sender runs.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Identifies this process in leases.
    pub owner: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Bound on one request; the lease is this plus a margin, so a live
    /// sender never loses a delivery it is still sending.
    pub timeout: Duration,
    /// Fallback poll when no wake-up arrives.
    pub poll_interval: Duration,
    /// Delays before the second, third, ... attempt (full jitter); when it
    /// runs out the delivery is FAILED.
    pub schedule: Vec<Duration>,
}

impl SenderConfig {
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// Starts the sender on `tracker`; it stops claiming when `token` is
/// cancelled, and the requests in flight are recorded before it ends.
pub fn spawn(
    config: SenderConfig,
    pool: DbPool,
    key: Arc<SecretKey>,
    outbound: Outbound,
    wakeup: Wakeup,
    token: CancellationToken,
    tracker: &TaskTracker,
) {
    let (record, outcomes) = mpsc::channel(MAX_RECORD * 4);
    tracker.spawn(recorder(pool.clone(), outcomes));
    let sender = Arc::new(Sender {
        config,
        pool,
        key,
        outbound,
    });
    tracker.spawn(run(sender, wakeup, record, token, tracker.clone()));
}

struct Sender {
    config: SenderConfig,
    pool: DbPool,
    key: Arc<SecretKey>,
    outbound: Outbound,
}

async fn run(
    sender: Arc<Sender>,
    wakeup: Wakeup,
    record: mpsc::Sender<Settled>,
    token: CancellationToken,
    tasks: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(sender.config.concurrency));
    // One claim statement per `batch` deliveries, not per freed slot: the
    // claimed ones wait here for a slot. At most `concurrency` wait, so
    // none waits longer than one request's timeout, well within its lease.
    let batch = sender.config.concurrency.min(MAX_CLAIM);
    loop {
        if token.is_cancelled() {
            break;
        }
        let claimed = match claim(&sender, batch).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed");
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(CLAIM_ERROR_PAUSE) => continue,
                }
            }
        };
        let count = claimed.len();
        for delivery in claimed {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (sender, record) = (sender.clone(), record.clone());
            tasks.spawn(async move {
                let settled = sender.attempt(&delivery).await;
                let _ = record.send(settled).await;
                drop(permit);
            });
        }
        if count == batch {
            continue; // more may be due
        }
        let wait = idle_wait(&sender).await;
        tokio::select! {
            () = token.cancelled() => break,
            () = wakeup.deliveries_signal() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    // The recorder ends once every in-flight attempt dropped its sender.
}

async fn claim(sender: &Sender, limit: usize) -> Result<Vec<ClaimedDelivery>> {
    let mut conn = db::conn(&sender.pool).await?;
    db::webhooks::claim_deliveries(
        &mut conn,
        &sender.config.owner,
        sender.config.lease(),
        limit as i64,
    )
    .await
}

async fn idle_wait(sender: &Sender) -> Duration {
    let poll = sender
        .config
        .poll_interval
        .mul_f64(rand::rng().random_range(0.8..1.2));
    let next = match db::conn(&sender.pool).await {
        Ok(mut conn) => db::webhooks::next_due(&mut conn).await.ok().flatten(),
        Err(_) => None,
    };
    match next {
        Some(at) => (at - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(poll),
        None => poll,
    }
}

impl Sender {
    /// One attempt of one delivery, and what to record.
    async fn attempt(&self, d: &ClaimedDelivery) -> Settled {
        let answer = match self.prepare(d) {
            Ok((headers, body)) => self.outbound.post_json(&d.url, &headers, body).await,
            Err(error) => Err(SendError::Transport(error)),
        };
        let (http_status, retry_after, error) = match &answer {
            Ok(a) => (
                Some(a.status),
                a.retry_after,
                (!(200..300).contains(&a.status)).then(|| format!("HTTP {}", a.status)),
            ),
            Err(e) => (None, None, Some(e.to_string())),
        };
        let outcome = verdict(http_status, retry_after);
        tracing::debug!(endpoint = %d.endpoint, webhook_id = %d.webhook_id, attempt = d.attempt, ?outcome, "webhook attempt");
        let mut settled = Settled {
            id: d.id,
            lease_token: d.lease_token,
            status: DeliveryStatus::Pending,
            retry_in: Duration::ZERO,
            http_status: http_status.map(i32::from),
            error,
            gone: None,
            endpoint: d.endpoint.clone(),
        };
        match outcome {
            Verdict::Delivered => settled.status = DeliveryStatus::Delivered,
            Verdict::Gone => {
                settled.status = DeliveryStatus::Failed;
                settled.gone = Some(format!(
                    "the endpoint answered 410 Gone to delivery {}",
                    d.webhook_id
                ));
                tracing::warn!(endpoint = %d.endpoint, "webhook endpoint answered 410 Gone; disabled");
            }
            // A subscription retries every other answer: a receiver's bug
            // fixed within the schedule still gets its events.
            Verdict::Permanent | Verdict::RetryLater(_) => {
                match self.config.schedule.get((d.attempt - 1).max(0) as usize) {
                    Some(delay) => {
                        let jittered = delay.mul_f64(rand::rng().random_range(0.0..=1.0));
                        settled.retry_in = match outcome {
                            Verdict::RetryLater(Some(asked)) => asked.min(RETRY_AFTER_CAP),
                            _ => jittered,
                        };
                    }
                    None => settled.status = DeliveryStatus::Failed,
                }
            }
        }
        if matches!(answer, Err(SendError::Refused(_))) {
            tracing::warn!(endpoint = %d.endpoint, "webhook target refused by the address rule");
        }
        settled
    }

    /// The signed headers and the body of an attempt.
    fn prepare(&self, d: &ClaimedDelivery) -> Result<(Headers, Vec<u8>), String> {
        let body = serde_json::to_vec(&d.payload).map_err(|e| e.to_string())?;
        let sealed = Sealed {
            endpoint_id: d.endpoint_id,
            current: &d.secret_sealed,
            previous: d.previous_secret_sealed.as_deref(),
        };
        let headers = sign(&self.key, &sealed, &d.webhook_id, &body)?;
        Ok((headers, body))
    }
}

/// An endpoint's sealed secrets: the current one, and the previous one
/// while a rotation's overlap lasts.
pub struct Sealed<'a> {
    pub endpoint_id: uuid::Uuid,
    pub current: &'a [u8],
    pub previous: Option<&'a [u8]>,
}

/// The Standard Webhooks headers of one attempt to send `body` as message
/// `webhook_id`: the secrets are opened here and live only for the call.
pub fn sign(
    key: &SecretKey,
    sealed: &Sealed<'_>,
    webhook_id: &str,
    body: &[u8],
) -> Result<Headers, String> {
    let row = sealed.endpoint_id.as_bytes();
    let open = |sealed: &[u8]| -> Result<SecretString, String> {
        key.open_str(sealed, row).map_err(|e| e.to_string())
    };
    let current = open(sealed.current)?;
    let previous = sealed.previous.map(open).transpose()?;
    let mut secrets = vec![&current];
    secrets.extend(previous.as_ref());
    signed_headers(&secrets, webhook_id, chrono::Utc::now().timestamp(), body)
}

/// Records outcomes in batches until every sender handle is gone.
async fn recorder(pool: DbPool, mut outcomes: mpsc::Receiver<Settled>) {
    while let Some(first) = outcomes.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_RECORD {
            match outcomes.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut pause = Duration::from_millis(100);
        // The outcomes are kept through a short database outage; after
        // that their leases expire and the deliveries are sent again.
        for _ in 0..6 {
            match record(&pool, &batch).await {
                Ok(recorded) => {
                    if recorded < batch.len() {
                        tracing::warn!(
                            stale = batch.len() - recorded,
                            "webhook outcomes of stale claims refused; those deliveries were claimed again"
                        );
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "recording webhook outcomes failed");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }
}

async fn record(pool: &DbPool, batch: &[Settled]) -> Result<usize> {
    use diesel_async::AsyncConnection as _;
    let mut conn = db::conn(pool).await?;
    let recorded = conn
        .transaction(async |conn| db::webhooks::settle_deliveries(conn, batch).await)
        .await?;
    let recorded: std::collections::HashSet<i64> = recorded.into_iter().collect();
    for settled in batch.iter().filter(|s| recorded.contains(&s.id)) {
        metrics::webhook_attempt(&settled.endpoint, settled.outcome());
    }
    Ok(recorded.len())
}
