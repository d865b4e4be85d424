//! Use cases. Each owns its transaction and writes state, event and outbox
//! row together; wake-ups are sent only after commit.

mod lifecycle;
mod tenants;

pub use tenants::ListPage;

use crate::db::DbPool;
use crate::outbox::Wakeup;

/// The application: what every transport calls into.
#[derive(Clone)]
pub struct Ops {
    pool: DbPool,
    wakeup: Wakeup,
}

impl Ops {
    pub fn new(pool: DbPool, wakeup: Wakeup) -> Self {
        Self { pool, wakeup }
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }
}
