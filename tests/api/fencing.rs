//! Every write about a claim is fenced by that claim's token. Each test
//! replays the race step by step with a hook, not by timing luck: a worker
//! is held, its lease expires (moved to now by the test, which stands for
//! the time passing), the same process claims the row again and moves on,
//! then the stale worker is let go, and whatever it writes is refused.
//!
//! Step names are each test's own, so the process-wide counters they read
//! are theirs alone.

use std::time::Duration;

use tenantd::outbox::hooks::Point;
use tenantd::outbox::{pipeline, store};
use tenantd::proto::TenantState;
use tenantd::steps::Registry;

use crate::common::hold::{Held, HoldOnce};
use crate::common::scrape::sample;
use crate::common::steps::{STEP_EFFECTS, Scripted};
use crate::common::{TestApp, TestDb};

/// Makes the held claim's lease run out now, as time would.
async fn expire(db: &TestDb, held: Held) {
    db.exec(&format!(
        "UPDATE outbox SET locked_until = now(), available_at = now() WHERE lease_token = {}",
        held.lease_token
    ))
    .await;
}

/// Waits (at most 30 s) until `tenantd_stale_outcomes_total` for `step`
/// reaches 1 and returns the process's metrics then.
async fn refused_once(step: &str, operation: &str, action: &str) -> String {
    let metrics = tenantd::telemetry::metrics::handle();
    let labels = [("step", step), ("operation", operation), ("action", action)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics.render();
        match sample(&text, "tenantd_stale_outcomes_total", &labels) {
            Some(1.0) => return text,
            Some(n) => panic!("{n} stale outcomes of {step} refused, expected one"),
            None => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stale {action} of {step} was never refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn count(events: &[(String, String, String)], kind: &str, step: &str) -> usize {
    events
        .iter()
        .filter(|(k, s, _)| k == kind && s == step)
        .count()
}

/// The one-row path: a step with database work. The row the stale worker
/// held is the tenant's cursor: it keeps its id and its owner (the same
/// process) while it moves on to the next step, and only the token tells
/// the stale claim apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_database_outcome_is_refused_with_its_effect() {
    let db_step = Scripted {
        in_db: true,
        ..Scripted::new("fenced_db")
    };
    let gate = Scripted::gated("fenced_db_next");
    let mut steps = Registry::new();
    steps.register(db_step.clone());
    steps.register(gate.clone());
    let hold = HoldOnce::new("fenced_db", "PROVISION", Point::BeforeRecord);
    let app = TestApp::start_with_hooks(|_| {}, steps, hold.hooks()).await;
    app.db.exec(STEP_EFFECTS).await;
    app.add_plan(
        "fenced",
        &[
            ("fenced_db", true, 3),
            ("fenced_db_next", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("acme", "fenced").await;

    let held = hold.held().await;
    assert_eq!(held.attempt, 1);
    expire(&app.db, held).await;
    // Claimed again by the same process, recorded, and moved on: the row
    // now runs the next step under a new claim.
    until("the next step started", || gate.calls() == 1).await;
    let row = format!(
        "SELECT count(*) FROM outbox WHERE tenant_id = '{}' AND step = 'fenced_db_next'
         AND lease_token <> {} AND lease_owner IS NOT NULL",
        created.id, held.lease_token
    );
    assert_eq!(
        app.db.count(&row).await,
        1,
        "the row moved on, still leased"
    );

    hold.release();
    refused_once("fenced_db", "PROVISION", "succeeded").await;
    let effects = format!(
        "SELECT count(*) FROM step_effects WHERE tenant_id = '{}' AND step = 'fenced_db'",
        created.id
    );
    assert_eq!(
        app.db.count(&effects).await,
        1,
        "the stale effect never ran"
    );
    gate.open(1);
    app.wait_for(&created.id, TenantState::Active).await;

    let events = app.events(&created.id).await;
    assert_eq!(
        count(&events, "STEP_SUCCEEDED", "fenced_db"),
        1,
        "{events:#?}"
    );
    assert_eq!(count(&events, "STEP_STARTED", "fenced_db_next"), 1);
    assert_eq!(count(&events, "STEP_SUCCEEDED", "fenced_db_next"), 1);
    assert_eq!(db_step.calls(), 2, "both claims ran the external part");
    assert_eq!(gate.calls(), 1, "the next step ran once");
    assert_eq!(app.db.count(&effects).await, 1);
    app.stop().await;
}

/// The batched path: a step without database work is recorded by the
/// completer, which checks every claim's token in its one statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_batched_completion_is_refused() {
    let quick = Scripted::new("fenced_batched");
    let gate = Scripted::gated("fenced_batched_next");
    let mut steps = Registry::new();
    steps.register(quick.clone());
    steps.register(gate.clone());
    let hold = HoldOnce::new("fenced_batched", "PROVISION", Point::BeforeRecord);
    let app = TestApp::start_with_hooks(|_| {}, steps, hold.hooks()).await;
    app.add_plan(
        "fenced",
        &[
            ("fenced_batched", true, 3),
            ("fenced_batched_next", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("acme", "fenced").await;

    let held = hold.held().await;
    expire(&app.db, held).await;
    until("the next step started", || gate.calls() == 1).await;
    hold.release();
    refused_once("fenced_batched", "PROVISION", "succeeded").await;
    gate.open(1);
    app.wait_for(&created.id, TenantState::Active).await;

    let events = app.events(&created.id).await;
    assert_eq!(
        count(&events, "STEP_SUCCEEDED", "fenced_batched"),
        1,
        "{events:#?}"
    );
    assert_eq!(count(&events, "STEP_STARTED", "fenced_batched_next"), 1);
    assert_eq!(quick.calls(), 2);
    assert_eq!(gate.calls(), 1);
    app.stop().await;
}

/// A stale failure neither counts an attempt nor puts the row back to wait
/// out a backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_failure_counts_no_extra_attempt() {
    let flaky = Scripted {
        fail_first: 1,
        ..Scripted::new("fenced_flaky")
    };
    let gate = Scripted::gated("fenced_flaky_next");
    let mut steps = Registry::new();
    steps.register(flaky.clone());
    steps.register(gate.clone());
    let hold = HoldOnce::new("fenced_flaky", "PROVISION", Point::BeforeRecord);
    let app = TestApp::start_with_hooks(|_| {}, steps, hold.hooks()).await;
    app.add_plan(
        "fenced",
        &[
            ("fenced_flaky", true, 3),
            ("fenced_flaky_next", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("acme", "fenced").await;

    let held = hold.held().await;
    assert_eq!(flaky.calls(), 1, "the held attempt failed");
    expire(&app.db, held).await;
    until("the next step started", || gate.calls() == 1).await;
    hold.release();
    refused_once("fenced_flaky", "PROVISION", "failed").await;
    let due_later = format!(
        "SELECT count(*) FROM outbox WHERE tenant_id = '{}' AND (lease_owner IS NULL OR last_error IS NOT NULL)",
        created.id
    );
    assert_eq!(
        app.db.count(&due_later).await,
        0,
        "the row was not put back"
    );
    gate.open(1);
    let t = app.wait_for(&created.id, TenantState::Active).await;

    let events = app.events(&created.id).await;
    assert_eq!(
        count(&events, "STEP_RETRYING", "fenced_flaky"),
        0,
        "{events:#?}"
    );
    assert_eq!(count(&events, "STEP_SUCCEEDED", "fenced_flaky"), 1);
    let step = t.steps.iter().find(|s| s.name == "fenced_flaky").unwrap();
    assert_eq!(step.attempts, 2, "the claim that succeeded was the second");
    assert!(step.last_error.is_empty(), "{:?}", step.last_error);
    assert_eq!(gate.calls(), 1);
    app.stop().await;
}

/// A heartbeat of a stale claim extends nothing, and its worker stops
/// without recording anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_heartbeat_is_refused_and_its_worker_stops() {
    let slow = Scripted::gated("fenced_slow");
    let mut steps = Registry::new();
    steps.register(slow.clone());
    let hold = HoldOnce::new("fenced_slow", "PROVISION", Point::BeforeHeartbeat);
    // Heartbeats every second, with room for a slow machine.
    let app =
        TestApp::start_with_hooks(|c| c.lease = Duration::from_secs(3), steps, hold.hooks()).await;
    app.add_plan("fenced", &[("fenced_slow", true, 3), ("activate", true, 1)])
        .await;
    let created = app.create("acme", "fenced").await;

    let held = hold.held().await;
    expire(&app.db, held).await;
    until("claimed again", || slow.calls() == 2).await;
    hold.release();
    refused_once("fenced_slow", "PROVISION", "heartbeat").await;
    slow.open(1);
    app.wait_for(&created.id, TenantState::Active).await;

    let events = app.events(&created.id).await;
    assert_eq!(
        count(&events, "STEP_SUCCEEDED", "fenced_slow"),
        1,
        "{events:#?}"
    );
    assert_eq!(count(&events, "STEP_RETRYING", "fenced_slow"), 0);
    assert_eq!(count(&events, "STEP_FAILED", "fenced_slow"), 0);
    assert_eq!(slow.calls(), 2);
    app.stop().await;
}

/// A stale compensation outcome is refused, with its database effect, while
/// the saga goes on with the previous step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_compensation_outcome_is_refused() {
    let first = Scripted {
        undo_gate: Some(std::sync::Arc::new(tokio::sync::Semaphore::new(0))),
        ..Scripted::new("fenced_first")
    };
    let undone = Scripted {
        in_db: true,
        ..Scripted::new("fenced_undone")
    };
    let broken = Scripted {
        failing: std::sync::Arc::new(true.into()),
        ..Scripted::new("fenced_broken")
    };
    let mut steps = Registry::new();
    steps.register(first.clone());
    steps.register(undone.clone());
    steps.register(broken.clone());
    let hold = HoldOnce::new("fenced_undone", "COMPENSATE", Point::BeforeRecord);
    let app = TestApp::start_with_hooks(|_| {}, steps, hold.hooks()).await;
    app.db.exec(STEP_EFFECTS).await;
    app.add_plan(
        "fenced",
        &[
            ("fenced_first", true, 1),
            ("fenced_undone", true, 3),
            ("fenced_broken", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("acme", "fenced").await;

    let held = hold.held().await;
    expire(&app.db, held).await;
    // Undone by the new claim; the saga moved on to the first step.
    until("the first step's compensation started", || {
        first.undos() == 1
    })
    .await;
    hold.release();
    refused_once("fenced_undone", "COMPENSATE", "compensated").await;
    let undos = format!(
        "SELECT count(*) FROM step_effects WHERE tenant_id = '{}' AND step = 'fenced_undone' AND action = 'undo'",
        created.id
    );
    assert_eq!(app.db.count(&undos).await, 1, "the stale undo never ran");
    first.open_undo(1);
    app.wait_for(&created.id, TenantState::Failed).await;

    let events = app.events(&created.id).await;
    assert_eq!(
        count(&events, "COMPENSATION_SUCCEEDED", "fenced_undone"),
        1,
        "{events:#?}"
    );
    assert_eq!(count(&events, "COMPENSATION_SUCCEEDED", "fenced_first"), 1);
    assert_eq!(undone.undos(), 2);
    assert_eq!(first.undos(), 1);
    assert_eq!(app.db.count(&undos).await, 1);
    app.stop().await;
}

/// Statement by statement: once a row is claimed again, the earlier claim
/// can neither heartbeat, nor lock it for an outcome, nor release it, while
/// the current claim can do all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_about_a_stale_claim_changes_nothing() {
    let app = TestApp::api_only().await;
    let created = app.create("acme", "").await;
    let mut conn = app.db.conn().await;
    let lease = Duration::from_secs(60);
    let owner = "one-process";
    let stale = store::claim(&mut conn, owner, lease, 10).await.unwrap();
    assert_eq!(stale.len(), 1);
    let stale = &stale[0];
    app.db
        .exec("UPDATE outbox SET locked_until = now(), available_at = now()")
        .await;
    let current = store::claim(&mut conn, owner, lease, 10).await.unwrap();
    assert_eq!(current.len(), 1, "claimed again after the lease expired");
    let current = &current[0];
    assert_eq!((current.id, current.attempt), (stale.id, 2));
    assert_ne!(current.lease_token, stale.lease_token);

    assert_eq!(
        store::heartbeat(&mut conn, stale, lease).await.unwrap(),
        None
    );
    assert!(pipeline::lock(&mut conn, stale).await.unwrap().is_none());
    assert!(!store::release(&mut conn, stale).await.unwrap());
    let row = format!(
        "SELECT count(*) FROM outbox WHERE tenant_id = '{}' AND lease_token = {} AND attempt = 2",
        created.id, current.lease_token
    );
    assert_eq!(
        app.db.count(&row).await,
        1,
        "the stale writes changed nothing"
    );

    assert_eq!(
        store::heartbeat(&mut conn, current, lease).await.unwrap(),
        Some(false)
    );
    assert!(pipeline::lock(&mut conn, current).await.unwrap().is_some());
    assert!(store::release(&mut conn, current).await.unwrap());
    let released = format!(
        "SELECT count(*) FROM outbox WHERE tenant_id = '{}' AND lease_token IS NULL AND lease_owner IS NULL
         AND attempt = 1",
        created.id
    );
    assert_eq!(app.db.count(&released).await, 1);
    app.stop().await;
}
