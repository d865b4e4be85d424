//! Test-only steps, registered beside the standard ones by the tests that
//! need a step to fail, block or count. They never exist in a server binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use tenantd::steps::{Output, Step, StepCtx, StepError};
use tokio::sync::Semaphore;

/// A step whose behaviour the test scripts.
#[derive(Clone)]
pub struct Scripted {
    pub name: &'static str,
    /// Attempts so far.
    pub calls: Arc<AtomicUsize>,
    /// The first this-many attempts fail.
    pub fail_first: usize,
    /// Every attempt fails while this is set.
    pub failing: Arc<AtomicBool>,
    /// If set, an attempt waits for a permit before going on.
    pub gate: Option<Arc<Semaphore>>,
    pub compensable: bool,
}

impl Scripted {
    pub fn new(name: &'static str) -> Self {
        Scripted {
            name,
            calls: Arc::new(AtomicUsize::new(0)),
            fail_first: 0,
            failing: Arc::new(AtomicBool::new(false)),
            gate: None,
            compensable: true,
        }
    }

    /// A step whose attempts wait until the test adds permits to `gate`.
    pub fn gated(name: &'static str) -> Self {
        Scripted {
            gate: Some(Arc::new(Semaphore::new(0))),
            ..Scripted::new(name)
        }
    }

    /// Lets `n` waiting (or future) attempts go on.
    pub fn open(&self, n: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(n);
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Step for Scripted {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn run_external(&self, _ctx: &StepCtx) -> Result<Output, StepError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        if call <= self.fail_first || self.failing.load(Ordering::SeqCst) {
            return Err(StepError::new(format!("scripted failure of call {call}")));
        }
        Ok(Output::new())
    }

    fn database_work(&self) -> bool {
        false
    }

    fn compensable(&self) -> bool {
        self.compensable
    }
}
