//! ResolveTenant: out of NEEDS_ATTENTION by running the compensation that
//! gave up again, or by recording that an operator cleaned up by hand.

use std::sync::atomic::Ordering;

use tenantd::proto::{ResolveAction, ResolveTenantRequest, StepStatus, TenantState};
use tenantd::steps::Registry;
use tonic::Code;

use crate::common::TestApp;
use crate::common::steps::Scripted;

fn status(t: &tenantd::proto::Tenant, step: &str) -> StepStatus {
    t.steps
        .iter()
        .find(|s| s.name == step)
        .unwrap_or_else(|| panic!("no step {step}"))
        .status()
}

fn resolve(id: &str, action: ResolveAction, note: &str) -> ResolveTenantRequest {
    ResolveTenantRequest {
        tenant_id: id.into(),
        action: action as i32,
        note: note.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn needs_attention_ends_by_retrying_the_compensation_or_by_marking_it_resolved() {
    let sticky = Scripted::new("sticky");
    sticky.undo_failing.store(true, Ordering::SeqCst);
    let broken = Scripted::new("broken");
    broken.failing.store(true, Ordering::SeqCst);
    let mut steps = Registry::new();
    steps.register(sticky.clone());
    steps.register(broken.clone());
    let app = TestApp::start_with(|_| {}, steps).await;
    app.add_plan(
        "stuck",
        &[
            ("create_schema", true, 3),
            ("sticky", true, 2),
            ("broken", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let mut client = app.client().await;

    let a = app.create("stuck-a", "stuck").await;
    let a = app.wait_for(&a.id, TenantState::NeedsAttention).await;
    assert_eq!(status(&a, "sticky"), StepStatus::Failed);
    assert_eq!(status(&a, "create_schema"), StepStatus::Succeeded);

    // Bad requests change nothing.
    let active = app.create("fine", "").await;
    let active = app.wait_for(&active.id, TenantState::Active).await;
    for (request, code, says) in [
        (
            resolve(&active.id, ResolveAction::RetryCompensation, ""),
            Code::FailedPrecondition,
            "only a NEEDS_ATTENTION tenant",
        ),
        (
            resolve(&a.id, ResolveAction::Unspecified, ""),
            Code::InvalidArgument,
            "RETRY_COMPENSATION or MARK_RESOLVED",
        ),
        (
            resolve(&a.id, ResolveAction::MarkResolved, " "),
            Code::InvalidArgument,
            "is required with MARK_RESOLVED",
        ),
        (
            resolve(&a.id, ResolveAction::MarkResolved, "bell\u{7}"),
            Code::InvalidArgument,
            "control characters",
        ),
        (
            resolve(
                "0190c5d8-0000-7000-8000-000000000000",
                ResolveAction::RetryCompensation,
                "",
            ),
            Code::NotFound,
            "",
        ),
    ] {
        let e = client.resolve_tenant(request.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{request:?}: {e:?}");
        assert!(e.message().contains(says), "{e:?}");
    }
    assert_eq!(
        app.get(&a.id).await.state(),
        TenantState::NeedsAttention,
        "nothing changed"
    );

    // The cause is fixed: the compensation runs again, the saga goes on to
    // the end.
    sticky.undo_failing.store(false, Ordering::SeqCst);
    let undos = sticky.undos();
    let resumed = client
        .resolve_tenant(resolve(
            &a.id,
            ResolveAction::RetryCompensation,
            "released the lock",
        ))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(resumed.state(), TenantState::Provisioning);
    assert!(resumed.leftover_resources.is_empty());
    let a = app.wait_for(&a.id, TenantState::Failed).await;
    assert_eq!(sticky.undos(), undos + 1);
    assert_eq!(status(&a, "sticky"), StepStatus::Compensated);
    assert_eq!(status(&a, "create_schema"), StepStatus::Compensated);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_stuck_a'")
            .await,
        0,
        "the saga went on and dropped the schema"
    );

    // Another stays stuck; an operator cleans up by hand.
    sticky.undo_failing.store(true, Ordering::SeqCst);
    let b = app.create("stuck-b", "stuck").await;
    let b = app.wait_for(&b.id, TenantState::NeedsAttention).await;
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_stuck_b'")
            .await,
        1,
        "the saga stopped before the schema"
    );
    let leftovers = b.leftover_resources.clone();
    assert!(!leftovers.is_empty(), "{b:?}");
    let settled = client
        .resolve_tenant(resolve(
            &b.id,
            ResolveAction::MarkResolved,
            "dropped the schema and the role by hand",
        ))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(settled.state(), TenantState::Failed);
    assert!(settled.leftover_resources.is_empty());
    assert_eq!(status(&settled, "sticky"), StepStatus::Compensated);
    assert_eq!(status(&settled, "create_schema"), StepStatus::Compensated);
    let events = app.events(&b.id).await;
    let (_, _, message) = events
        .iter()
        .rev()
        .find(|(kind, _, _)| kind == "STATE_CHANGED")
        .unwrap();
    assert!(
        message.contains("resolved by hand by anonymous")
            && message.contains("dropped the schema and the role by hand")
            && message.contains(&leftovers[0]),
        "{message}"
    );
    let e = client
        .resolve_tenant(resolve(&b.id, ResolveAction::MarkResolved, "again"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    app.stop().await;
}

/// A teardown that stops (its export cannot be written) leaves the tenant
/// NEEDS_ATTENTION; RETRY_COMPENSATION runs the failed step again, and
/// MARK_RESOLVED settles it DEPROVISIONED with its purge time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_teardown_is_retried_or_marked_resolved() {
    let app = TestApp::start_with(
        // A file where the archive directory should be: no export can be
        // written.
        |c| c.archive_dir = std::path::PathBuf::from("/dev/null/archives"),
        Registry::new(),
    )
    .await;
    let mut client = app.client().await;
    let created = app.create("teardown", "").await;
    app.wait_for(&created.id, TenantState::Active).await;
    client
        .deprovision(tenantd::proto::DeprovisionRequest {
            tenant_id: created.id.clone(),
            mode: tenantd::proto::DeprovisionMode::Archive as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let stuck = app.wait_for(&created.id, TenantState::NeedsAttention).await;
    assert_eq!(status(&stuck, "export_archive"), StepStatus::Failed);
    let attempts = |t: &tenantd::proto::Tenant| {
        t.steps
            .iter()
            .find(|s| s.name == "export_archive")
            .unwrap()
            .attempts
    };
    assert_eq!(attempts(&stuck), 5);

    // Retried: the teardown runs its failed step again (and stops again,
    // the directory being what it is).
    let retried = client
        .resolve_tenant(resolve(&created.id, ResolveAction::RetryCompensation, ""))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(retried.state(), TenantState::Deprovisioning);
    let stuck = app.wait_for(&created.id, TenantState::NeedsAttention).await;
    assert_eq!(attempts(&stuck), 5, "counted afresh");
    let events = app.events(&created.id).await;
    let started = events
        .iter()
        .filter(|(kind, step, _)| kind == "STEP_STARTED" && step == "export_archive")
        .count();
    assert_eq!(started, 10, "{events:#?}");

    // Resolved by hand: DEPROVISIONED, with a purge time.
    let done = client
        .resolve_tenant(resolve(
            &created.id,
            ResolveAction::MarkResolved,
            "copied the archived schema to cold storage by hand",
        ))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(done.state(), TenantState::Deprovisioned);
    assert!(done.purge_time.is_some());
    assert!(done.state_reason.contains("cold storage"), "{done:?}");
    app.stop().await;
}
