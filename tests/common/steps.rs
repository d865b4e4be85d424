//! Test-only steps, registered beside the standard ones by the tests that
//! need a step to fail, block or count. They never exist in a server binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use diesel_async::AsyncPgConnection;
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
    /// Compensations so far.
    pub undos: Arc<AtomicUsize>,
    /// If set, a compensation waits for a permit before going on.
    pub undo_gate: Option<Arc<Semaphore>>,
    /// Every compensation fails while this is set.
    pub undo_failing: Arc<AtomicBool>,
    /// The step has database work: each run (and each undo) inserts a row
    /// into `step_effects (tenant_id uuid, step text, action text)`, which
    /// the test creates.
    pub in_db: bool,
    /// The first this-many attempts answer "not yet, look again in
    /// `wait`".
    pub not_yet_first: usize,
    /// Every attempt answers "not yet" while this is set.
    pub waiting: Arc<AtomicBool>,
    pub wait: std::time::Duration,
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
            undos: Arc::new(AtomicUsize::new(0)),
            undo_gate: None,
            undo_failing: Arc::new(AtomicBool::new(false)),
            in_db: false,
            not_yet_first: 0,
            waiting: Arc::new(AtomicBool::new(false)),
            wait: std::time::Duration::from_millis(200),
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

    pub fn undos(&self) -> usize {
        self.undos.load(Ordering::SeqCst)
    }

    /// Lets `n` waiting (or future) compensations go on.
    pub fn open_undo(&self, n: usize) {
        if let Some(gate) = &self.undo_gate {
            gate.add_permits(n);
        }
    }
}

/// The table steps with `in_db` write to.
pub const STEP_EFFECTS: &str =
    "CREATE TABLE step_effects (tenant_id uuid NOT NULL, step text NOT NULL, action text NOT NULL)";

async fn record_effect(
    conn: &mut AsyncPgConnection,
    ctx: &StepCtx,
    step: &str,
    action: &str,
) -> Result<(), StepError> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query("INSERT INTO step_effects (tenant_id, step, action) VALUES ($1, $2, $3)")
        .bind::<diesel::sql_types::Uuid, _>(ctx.tenant_id)
        .bind::<diesel::sql_types::Text, _>(step)
        .bind::<diesel::sql_types::Text, _>(action)
        .execute(conn)
        .await?;
    Ok(())
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
        if call <= self.not_yet_first || self.waiting.load(Ordering::SeqCst) {
            return Err(StepError::not_yet(
                format!("call {call}: not yet"),
                self.wait,
            ));
        }
        Ok(Output::new())
    }

    async fn run_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<Output, StepError> {
        if self.in_db {
            record_effect(conn, ctx, self.name, "run").await?;
        }
        Ok(Output::new())
    }

    async fn compensate_external(&self, _ctx: &StepCtx) -> Result<Output, StepError> {
        self.undos.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.undo_gate {
            gate.acquire().await.expect("gate open").forget();
        }
        if self.undo_failing.load(Ordering::SeqCst) {
            return Err(StepError::new("scripted failure of an undo"));
        }
        Ok(Output::new())
    }

    async fn compensate_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<(), StepError> {
        if self.in_db {
            record_effect(conn, ctx, self.name, "undo").await?;
        }
        Ok(())
    }

    fn database_work(&self) -> bool {
        self.in_db
    }

    fn compensable(&self) -> bool {
        self.compensable
    }
}
