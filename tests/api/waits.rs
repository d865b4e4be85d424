//! Steps that answer "not yet, look again later": they wait without a
//! worker and without spending attempts, other tenants' steps go on in the
//! meantime, and the step's timeout bounds the whole wait.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tenantd::proto::TenantState;
use tenantd::steps::Registry;

use crate::common::TestApp;
use crate::common::steps::Scripted;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_step_holds_no_worker_and_spends_no_attempt() {
    tenantd::telemetry::metrics::handle();
    let confirming = Scripted {
        not_yet_first: 3,
        ..Scripted::new("confirming")
    };
    let blocked = Scripted {
        wait: Duration::from_millis(100),
        ..Scripted::new("blocked")
    };
    blocked.waiting.store(true, Ordering::SeqCst);
    let quick = Scripted::new("quick");
    let mut steps = Registry::new();
    for s in [&confirming, &blocked, &quick] {
        steps.register(s.clone());
    }
    // One worker: a step that held it while waiting would stop the others.
    let app = TestApp::start_with(|c| c.concurrency = 1, steps).await;
    app.add_plan("confirms", &[("confirming", true, 1)]).await;
    app.add_plan("blocks", &[("blocked", true, 1)]).await;
    app.add_plan("quick", &[("quick", true, 1)]).await;

    // Three "not yet" answers, then done: one attempt, one start event.
    let t = app.create("confirms", "confirms").await;
    let t = app.wait_for(&t.id, TenantState::Active).await;
    assert_eq!(confirming.calls(), 4);
    assert_eq!(t.steps[0].attempts, 1);
    let events = app.events(&t.id).await;
    let started = events
        .iter()
        .filter(|(kind, step, _)| kind == "STEP_STARTED" && step == "confirming")
        .count();
    assert_eq!(started, 1, "{events:?}");

    // While one tenant waits, the only worker serves the others.
    let waiting = app.create("waits", "blocks").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(blocked.calls() >= 1);
    for i in 0..3 {
        let other = app.create(&format!("other-{i}"), "quick").await;
        app.wait_for(&other.id, TenantState::Active).await;
    }
    let now = app.get(&waiting.id).await;
    assert_eq!(now.state(), TenantState::Provisioning);
    assert_eq!(now.steps[0].attempts, 1);
    assert!(blocked.calls() >= 3, "looked at again: {}", blocked.calls());
    blocked.waiting.store(false, Ordering::SeqCst);
    app.wait_for(&waiting.id, TenantState::Active).await;
    let metrics = tenantd::telemetry::metrics::handle().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tenantd_step_waits_total")
                && l.contains("step=\"confirming\"")
                && l.ends_with(" 3")),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_the_step_timeout_is_a_failure() {
    let forever = Scripted {
        wait: Duration::from_millis(100),
        ..Scripted::new("forever")
    };
    forever.waiting.store(true, Ordering::SeqCst);
    let mut steps = Registry::new();
    steps.register(forever.clone());
    let app = TestApp::start_with(|c| c.step_timeout = Duration::from_secs(1), steps).await;
    app.add_plan("forever", &[("forever", true, 2)]).await;
    let t = app.create("forever", "forever").await;
    let failed = app.wait_for(&t.id, TenantState::Failed).await;
    let step = &failed.steps[0];
    assert_eq!(step.attempts, 2, "each timed-out wait is one attempt");
    assert!(
        step.last_error.contains("still not done after waiting 1s"),
        "{}",
        step.last_error
    );
    // About ten looks per attempt: the wait was bounded, not endless.
    assert!((10..=40).contains(&forever.calls()), "{}", forever.calls());
    app.stop().await;
}
