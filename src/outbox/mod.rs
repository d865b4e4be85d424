//! The outbox of due work: how committed work reaches dispatchers, and the
//! dispatcher that runs it (see `dispatcher` for the flow).
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

mod backoff;
pub mod batch;
pub mod dispatcher;
pub mod hooks;
pub mod listener;
pub mod pipeline;
pub mod store;
mod wakeup;

pub use backoff::Backoff;
pub use dispatcher::DispatcherConfig;
pub use hooks::Hooks;
pub use wakeup::{NOTIFY_CHANNEL, Wakeup};
