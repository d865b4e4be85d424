//! Consecutive steps with only database work run in one transaction: one
//! commit for several steps, each still recorded with its own events, and a
//! step that fails inside is rolled back alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tenantd::proto::TenantState;
use tenantd::steps::{Output, Registry, Step, StepCtx, StepError};

use crate::common::TestApp;
use crate::common::steps::STEP_EFFECTS;

/// A step with database work only, whose first `fail_first` runs write
/// their effect and then fail (so the effect must be rolled back).
struct DbOnly {
    name: &'static str,
    runs: Arc<AtomicUsize>,
    fail_first: usize,
}

#[async_trait]
impl Step for DbOnly {
    fn name(&self) -> &'static str {
        self.name
    }

    fn external_work(&self) -> bool {
        false
    }

    async fn run_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<Output, StepError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        diesel::sql_query(
            "INSERT INTO step_effects (tenant_id, step, action) VALUES ($1, $2, 'run')",
        )
        .bind::<diesel::sql_types::Uuid, _>(ctx.tenant_id)
        .bind::<diesel::sql_types::Text, _>(self.name)
        .execute(conn)
        .await?;
        if run <= self.fail_first {
            return Err(StepError::new(format!("scripted failure of run {run}")));
        }
        Ok(Output::from([(
            format!("{}_done", self.name),
            "yes".to_owned(),
        )]))
    }
}

/// Each STEP_SUCCEEDED event's step and its transaction's start time (in
/// microseconds; `now()` is the same for a whole transaction, savepoints
/// included, while `xmin` differs per savepoint), in order.
async fn successes(app: &TestApp, tenant: &str) -> Vec<(String, i64)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        step: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        tx: i64,
    }
    let mut conn = app.db.conn().await;
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT step, (extract(epoch FROM create_time) * 1000000)::bigint AS tx FROM events
         WHERE tenant_id = '{tenant}' AND kind = 'STEP_SUCCEEDED' ORDER BY id"
    ))
    .load(&mut conn)
    .await
    .unwrap();
    rows.into_iter().map(|r| (r.step, r.tx)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_steps_in_a_row_commit_together_and_a_failure_rolls_back_alone() {
    let first = DbOnly {
        name: "db_first",
        runs: Arc::default(),
        fail_first: 0,
    };
    let flaky = DbOnly {
        name: "db_flaky",
        runs: Arc::default(),
        fail_first: 1,
    };
    let flaky_runs = flaky.runs.clone();
    let mut steps = Registry::new();
    steps.register(first);
    steps.register(flaky);
    let app = TestApp::start_with(|_| {}, steps).await;
    app.db.exec(STEP_EFFECTS).await;
    app.add_plan(
        "chained",
        &[
            ("create_schema", true, 3),
            ("run_migrations", true, 3),
            ("db_first", true, 3),
            ("db_flaky", true, 3),
            ("activate", true, 3),
        ],
    )
    .await;
    let created = app.create("acme", "chained").await;
    let active = app.wait_for(&created.id, TenantState::Active).await;

    let done = successes(&app, &created.id).await;
    let names: Vec<&str> = done.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "create_schema",
            "run_migrations",
            "db_first",
            "db_flaky",
            "activate"
        ],
        "each step recorded once, in order"
    );
    let tx: BTreeMap<&str, i64> = done.iter().map(|(s, t)| (s.as_str(), *t)).collect();
    assert_eq!(
        tx["create_schema"], tx["run_migrations"],
        "consecutive database steps share one transaction"
    );
    assert_eq!(tx["run_migrations"], tx["db_first"]);
    assert_ne!(
        tx["db_first"], tx["db_flaky"],
        "the step that failed inside the chain ran on its own"
    );
    assert_eq!(AtomicUsize::load(&flaky_runs, Ordering::SeqCst), 2);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM step_effects WHERE tenant_id = '{}' AND step = 'db_flaky'",
                created.id
            ))
            .await,
        1,
        "the failed run's effect was rolled back with its savepoint"
    );
    let flaky = active.steps.iter().find(|s| s.name == "db_flaky").unwrap();
    assert_eq!(flaky.attempts, 1, "the rolled-back run is not an attempt");
    assert_eq!(active.outputs["db_first_done"], "yes");
    assert_eq!(active.outputs["db_flaky_done"], "yes");
    let events = app.events(&created.id).await;
    assert!(
        !events.iter().any(|(kind, _, _)| kind == "STEP_RETRYING"),
        "{events:?}"
    );
    let started: Vec<&str> = events
        .iter()
        .filter(|(kind, _, _)| kind == "STEP_STARTED")
        .map(|(_, step, _)| step.as_str())
        .collect();
    assert_eq!(
        started,
        [
            "create_schema",
            "run_migrations",
            "db_first",
            "db_flaky",
            "activate"
        ]
    );
    app.stop().await;
}
