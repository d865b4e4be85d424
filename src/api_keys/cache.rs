//! VerifyApiKey's memory: what each key verifies against (its hash, its
//! tenant's state, its expiry and revocation), read once from the database
//! and kept current by the event stream. Every change that matters to a
//! key (its revocation or rotation, its tenant's suspension,
//! deprovisioning, deletion) writes an event of its tenant in the same
//! transaction; every replica's hub reads it (a NOTIFY, or its one-second
//! poll) and this memory forgets the tenant's keys.
//!
//! ```text
//! verify ─> memory ─(miss)─> SELECT key JOIN tenant ─> memory
//!              ^
//! hub (every event) ── forget the event's tenant; lagged: forget all
//! ```
//!
//! A read that raced with an event (it began before the event was seen and
//! the event names its tenant) answers its call but is not kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{self, DbPool};
use crate::domain::TenantState;
use crate::error::Result;

/// Keys kept at most; past it the memory starts over (each is one read
/// away).
const MAX_KEYS: usize = 200_000;
/// How long an entry is trusted even if no event came: a bound on what a
/// lost event could cost, far above the hub's one-second poll.
const MAX_AGE: Duration = Duration::from_secs(60);
/// How long an unknown id is remembered as unknown (ids are random: one
/// that is unknown now is almost surely unknown for good, but a key
/// created on another replica a moment later must not wait long).
const UNKNOWN_FOR: Duration = Duration::from_secs(2);

/// What a key verifies against.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tenant_id: Uuid,
    pub tenant_state: TenantState,
    pub hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub expire_time: Option<DateTime<Utc>>,
    pub revoke_time: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Inner {
    /// `None`: no such key.
    keys: HashMap<Uuid, (Option<Arc<Entry>>, Instant)>,
    by_tenant: HashMap<Uuid, Vec<Uuid>>,
    /// The counter's value at each tenant's last event.
    forgotten_at: HashMap<Uuid, u64>,
    /// The counter's value when everything was last forgotten.
    cleared_at: u64,
}

/// The memory.
#[derive(Default)]
pub struct KeyCache {
    inner: RwLock<Inner>,
    /// Counts events seen.
    counter: AtomicU64,
}

impl KeyCache {
    /// The key `id`'s entry (`None`: no such key, or its tenant is gone),
    /// from memory or read now.
    pub async fn get(&self, pool: &DbPool, id: Uuid) -> Result<Option<Arc<Entry>>> {
        if let Ok(inner) = self.inner.read()
            && let Some((entry, at)) = inner.keys.get(&id)
        {
            let fresh = match entry {
                Some(_) => at.elapsed() < MAX_AGE,
                None => at.elapsed() < UNKNOWN_FOR,
            };
            if fresh {
                return Ok(entry.clone());
            }
        }
        let began = self.counter.load(Ordering::SeqCst);
        let row = {
            let mut conn = db::conn(pool).await?;
            db::api_keys::verifiable(&mut conn, id).await?
        };
        let entry = match row {
            Some(row) => Some(Arc::new(Entry {
                tenant_id: row.tenant_id,
                tenant_state: db::models::parse_state(&row.tenant_state)?,
                hash: row.secret_hash,
                scopes: row.scopes,
                expire_time: row.expire_time,
                revoke_time: row.revoke_time,
            })),
            None => None,
        };
        if let Ok(mut inner) = self.inner.write() {
            let raced = inner.cleared_at > began
                || entry.as_ref().is_some_and(|e| {
                    inner
                        .forgotten_at
                        .get(&e.tenant_id)
                        .is_some_and(|at| *at > began)
                });
            if !raced {
                if inner.keys.len() >= MAX_KEYS {
                    let cleared = self.counter.load(Ordering::SeqCst);
                    *inner = Inner {
                        cleared_at: cleared,
                        ..Inner::default()
                    };
                }
                if let Some(e) = &entry {
                    inner.by_tenant.entry(e.tenant_id).or_default().push(id);
                }
                inner.keys.insert(id, (entry.clone(), Instant::now()));
            }
        }
        Ok(entry)
    }

    /// Forgets the keys of `tenant`.
    pub fn forget_tenant(&self, tenant: Uuid) {
        let seen = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut inner) = self.inner.write() {
            if let Some(ids) = inner.by_tenant.remove(&tenant) {
                for id in ids {
                    inner.keys.remove(&id);
                }
            }
            if inner.forgotten_at.len() >= MAX_KEYS {
                inner.forgotten_at.clear();
                inner.cleared_at = seen;
            }
            inner.forgotten_at.insert(tenant, seen);
        }
    }

    /// Forgets everything.
    pub fn forget_all(&self) {
        let seen = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut inner) = self.inner.write() {
            *inner = Inner {
                cleared_at: seen,
                ..Inner::default()
            };
        }
    }

    /// Follows the hub until shutdown: each event forgets its tenant's
    /// keys; a receiver that fell behind forgets all.
    pub async fn follow(
        self: Arc<Self>,
        mut events: tokio::sync::broadcast::Receiver<Arc<crate::domain::Event>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = events.recv() => received,
            };
            match received {
                Ok(event) => self.forget_tenant(event.tenant_id),
                Err(RecvError::Lagged(_)) => self.forget_all(),
                Err(RecvError::Closed) => return,
            }
        }
    }
}
