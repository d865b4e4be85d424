//! Use cases. Each owns its transaction and writes state, event and outbox
//! row together; wake-ups are sent only after commit.

mod lifecycle;
mod tenants;
mod watch;

pub use tenants::ListPage;

use tokio_util::sync::CancellationToken;

use crate::db::DbPool;
use crate::outbox::Wakeup;
use crate::stream::EventHub;

/// The application: what every transport calls into.
#[derive(Clone)]
pub struct Ops {
    pool: DbPool,
    wakeup: Wakeup,
    hub: EventHub,
    /// Ends streams at shutdown.
    shutdown: CancellationToken,
}

impl Ops {
    pub fn new(pool: DbPool, wakeup: Wakeup, hub: EventHub, shutdown: CancellationToken) -> Self {
        Self {
            pool,
            wakeup,
            hub,
            shutdown,
        }
    }

    /// Watchers connected to this process.
    pub fn watchers(&self) -> usize {
        self.hub.watchers()
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }
}
