//! The outbox's wake-up path: how committed work reaches dispatchers.
//!
//! ```text
//! writer tx commits ──> Wakeup::work_committed()
//!                          ├─ local Notify ───────────────> this process's dispatcher
//!                          └─ notifier task (debounced) ──> NOTIFY tenantd_work ──> other replicas
//! ```
//!
//! NOTIFY is sent after commit, from its own short statement, never inside
//! the writer's transaction: NOTIFY takes a database-wide lock at commit and
//! would serialise every writer.

mod wakeup;

pub use wakeup::{NOTIFY_CHANNEL, Wakeup};
