//! Holding one worker at a hook point, to replay a race step by step: the
//! first worker that reaches the point for a given step and operation waits
//! there until the test releases it; every other worker passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tenantd::outbox::Hooks;
use tenantd::outbox::hooks::Point;
use tokio::sync::{Semaphore, watch};

/// What the test learns of the held worker's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub attempt: i32,
    pub lease_token: i64,
}

#[derive(Clone)]
pub struct HoldOnce {
    step: &'static str,
    operation: &'static str,
    point: Point,
    taken: Arc<AtomicBool>,
    held: watch::Sender<Option<Held>>,
    gate: Arc<Semaphore>,
}

impl HoldOnce {
    /// Holds the first worker at `point` for `step` under `operation`
    /// (`PROVISION`, `COMPENSATE`, `DEPROVISION`).
    pub fn new(step: &'static str, operation: &'static str, point: Point) -> Self {
        // The refusals a test counts are recorded only once the recorder
        // is installed: install it before any worker runs.
        tenantd::telemetry::metrics::handle();
        HoldOnce {
            step,
            operation,
            point,
            taken: Arc::new(AtomicBool::new(false)),
            held: watch::Sender::new(None),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    /// The dispatcher hooks that do the holding.
    pub fn hooks(&self) -> Hooks {
        let this = self.clone();
        Hooks::new(Arc::new(move |point, claim| {
            let mine = point == this.point
                && claim.step == this.step
                && claim.operation == this.operation
                && !this.taken.swap(true, Ordering::SeqCst);
            let this = this.clone();
            let held = Held {
                attempt: claim.attempt,
                lease_token: claim.lease_token,
            };
            Box::pin(async move {
                if mine {
                    this.held.send_replace(Some(held));
                    this.gate.acquire().await.expect("gate open").forget();
                }
            })
        }))
    }

    /// Waits (at most 30 s) until a worker is held, and says which claim.
    pub async fn held(&self) -> Held {
        let mut rx = self.held.subscribe();
        let held = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(Option::is_some))
            .await
            .unwrap_or_else(|_| panic!("no worker reached {:?} for {}", self.point, self.step))
            .expect("sender alive");
        held.expect("checked above")
    }

    /// Lets the held worker go on.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }
}
