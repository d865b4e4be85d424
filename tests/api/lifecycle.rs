//! Suspend, resume, deprovision, purge, the reaper, and job exclusivity.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tenantd::proto::{
    DeleteTenantRequest, DeprovisionMode, DeprovisionRequest, GetTenantRequest,
    ResumeTenantRequest, SuspendTenantRequest, TenantState,
};
use tenantd::steps::Registry;
use tonic::Code;

use crate::common::steps::Scripted;
use crate::common::{TestApp, TestDb};

/// Reads the tenant's `roles` table as its own role: the row count, or the
/// database's refusal.
async fn read_as_role(db: &TestDb, role: &str, schema: &str) -> Result<i64, String> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    conn.batch_execute(&format!("SET ROLE \"{role}\""))
        .await
        .map_err(|e| e.to_string())?;
    let n: N = diesel::sql_query(format!("SELECT count(*) AS n FROM \"{schema}\".roles"))
        .get_result(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(n.n)
}

fn every_second(c: &mut tenantd::config::Config) {
    c.schedules.reaper = "* * * * * *".into();
    c.schedules.purge = "* * * * * *".into();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_resume_take_the_roles_access_away_and_back() {
    let app = TestApp::start().await;
    let t = app.create("acme", "").await;
    app.wait_for(&t.id, TenantState::Active).await;
    let role = format!("{}acme", app.db.role_prefix);
    assert_eq!(read_as_role(&app.db, &role, "tenant_acme").await, Ok(3));

    let mut client = app.client.clone();
    let suspend = SuspendTenantRequest {
        tenant_id: t.id.clone(),
        reason: "unpaid invoice".into(),
    };
    let suspended = client
        .suspend_tenant(suspend.clone())
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(suspended.state, TenantState::Suspended as i32);
    assert_eq!(suspended.state_reason, "unpaid invoice");
    let refused = read_as_role(&app.db, &role, "tenant_acme")
        .await
        .unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    assert!(
        client.suspend_tenant(suspend).await.is_ok(),
        "suspending twice is harmless"
    );

    let resume = ResumeTenantRequest {
        tenant_id: t.id.clone(),
    };
    let resumed = client
        .resume_tenant(resume)
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(resumed.state, TenantState::Active as i32);
    assert_eq!(read_as_role(&app.db, &role, "tenant_acme").await, Ok(3));
    let changes: Vec<_> = app
        .events(&t.id)
        .await
        .into_iter()
        .filter(|(k, _, _)| k == "STATE_CHANGED")
        .map(|(_, _, m)| m)
        .collect();
    assert!(
        changes
            .iter()
            .any(|m| m.starts_with("SUSPENDED: unpaid invoice")),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|m| m.starts_with("ACTIVE: resumed")),
        "{changes:?}"
    );

    let unknown = uuid::Uuid::now_v7().to_string();
    let err = client
        .resume_tenant(ResumeTenantRequest { tenant_id: unknown })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_calls_on_a_running_pipeline_are_aborted_and_wrong_states_refused() {
    let app = TestApp::api_only().await;
    let t = app.create("acme", "").await;
    let mut client = app.client.clone();
    let err = client
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: t.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(
        err.message().contains("create_schema"),
        "names the running step: {}",
        err.message()
    );
    let deprovision = DeprovisionRequest {
        tenant_id: t.id.clone(),
        ..Default::default()
    };
    assert_eq!(
        client
            .deprovision(deprovision.clone())
            .await
            .unwrap_err()
            .code(),
        Code::Aborted
    );

    app.db
        .exec(&format!(
            "DELETE FROM outbox WHERE tenant_id = '{}'; UPDATE tenants SET state = 'CANCELLED'",
            t.id
        ))
        .await;
    assert_eq!(
        client
            .deprovision(deprovision.clone())
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let resume = ResumeTenantRequest {
        tenant_id: t.id.clone(),
    };
    assert_eq!(
        client.resume_tenant(resume).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let negative = DeprovisionRequest {
        grace_period: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
        ..deprovision.clone()
    };
    let err = client.deprovision(negative).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(crate::common::violated_fields(&err), ["grace_period"]);
    let bad_mode = DeprovisionRequest {
        mode: 42,
        ..deprovision
    };
    assert_eq!(
        client.deprovision(bad_mode).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovision_archives_then_the_purge_job_drops_the_archive() {
    let app = TestApp::start_with(every_second, Registry::new()).await;
    let t = app.create("acme", "").await;
    app.wait_for(&t.id, TenantState::Active).await;
    let role = format!("{}acme", app.db.role_prefix);
    assert_eq!(read_as_role(&app.db, &role, "tenant_acme").await, Ok(3));

    let mut client = app.client.clone();
    let request = DeprovisionRequest {
        tenant_id: t.id.clone(),
        grace_period: Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
        mode: DeprovisionMode::Archive as i32,
        reason: "contract ended".into(),
    };
    let started = client
        .deprovision(request.clone())
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(started.state, TenantState::Deprovisioning as i32);
    let done = app.wait_for(&t.id, TenantState::Deprovisioned).await;
    let archived = done.outputs["archived_schema"].clone();
    assert!(archived.starts_with("archived_acme_"), "{archived}");
    assert!(done.purge_time.is_some());
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'")
            .await,
        0
    );
    let archived_tables = format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{archived}'");
    assert_eq!(
        app.db.count(&archived_tables).await,
        6,
        "the data (five tables and plan_limits) is kept until the purge"
    );
    let refused = read_as_role(&app.db, &role, &archived).await.unwrap_err();
    assert!(
        refused.contains("does not exist"),
        "the role is gone: {refused}"
    );
    for step in ["revoke_access", "archive_schema", "send_deprovision_notice"] {
        let s = done.steps.iter().find(|s| s.name == step).unwrap();
        assert_eq!(
            s.status,
            tenantd::proto::StepStatus::Succeeded as i32,
            "{step}"
        );
    }
    let again = client
        .deprovision(request)
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(again.state, TenantState::Deprovisioned as i32, "idempotent");

    // The purge job runs every second here; the grace period is 2 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !app.get(&t.id).await.outputs.contains_key("purged_at") {
        assert!(tokio::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM pg_namespace WHERE nspname = '{archived}'"
            ))
            .await,
        0
    );

    let deleted = client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: t.id.clone(),
            etag: String::new(),
        })
        .await;
    assert!(deleted.is_ok(), "a deprovisioned tenant can be deleted");
    let gone = client
        .get_tenant(GetTenantRequest {
            tenant_id: t.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deleted_during_its_grace_period_is_still_purged() {
    let app = TestApp::start_with(every_second, Registry::new()).await;
    let t = app.create("acme", "").await;
    app.wait_for(&t.id, TenantState::Active).await;
    let mut client = app.client.clone();
    client
        .deprovision(DeprovisionRequest {
            tenant_id: t.id.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            mode: DeprovisionMode::Archive as i32,
            reason: "contract ended".into(),
        })
        .await
        .unwrap();
    let done = app.wait_for(&t.id, TenantState::Deprovisioned).await;
    let archived = done.outputs["archived_schema"].clone();
    client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: t.id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap();

    let archive = format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{archived}'");
    assert_eq!(
        app.db.count(&archive).await,
        1,
        "kept during the grace period"
    );
    let purged = format!(
        "SELECT count(*) FROM tenants WHERE id = '{}' AND outputs ? 'purged_at' AND delete_time IS NOT NULL",
        t.id
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.db.count(&purged).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.db.count(&archive).await, 0, "the archive is dropped");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovision_in_purge_mode_drops_the_data_at_once() {
    let app = TestApp::start().await;
    let t = app.create("acme", "").await;
    app.wait_for(&t.id, TenantState::Active).await;
    let request = DeprovisionRequest {
        tenant_id: t.id.clone(),
        grace_period: None,
        mode: DeprovisionMode::Purge as i32,
        reason: String::new(),
    };
    app.client.clone().deprovision(request).await.unwrap();
    let done = app.wait_for(&t.id, TenantState::Deprovisioned).await;
    assert_eq!(done.outputs.get("purged").map(String::as_str), Some("true"));
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%acme%'")
            .await,
        0
    );
    let role = format!("{}acme", app.db.role_prefix);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
            ))
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_cancels_a_pipeline_without_progress() {
    let stuck = Scripted::gated("stuck");
    let mut steps = Registry::new();
    steps.register(stuck.clone());
    let app = TestApp::start_with(
        |c| {
            every_second(c);
            c.schedules.stale_after = Duration::from_secs(2);
            c.lease = Duration::from_secs(3);
        },
        steps,
    )
    .await;
    app.add_plan(
        "stuck-plan",
        &[
            ("create_schema", true, 1),
            ("stuck", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let t = app.create("acme", "stuck-plan").await;
    let cancelled = app.wait_for(&t.id, TenantState::Cancelled).await;
    assert!(
        cancelled.state_reason.starts_with("no progress for"),
        "{}",
        cancelled.state_reason
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'")
            .await,
        0,
        "compensated"
    );
    let events = app.events(&t.id).await;
    assert!(
        events
            .iter()
            .any(|(k, _, m)| k == "CANCEL_REQUESTED" && m.contains("no progress"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_run_the_same_job_at_once() {
    let db = TestDb::new().await;
    // Two replicas: two pools on one database.
    let (a, b) = (
        tenantd::db::pool(db.url(), 2).unwrap(),
        tenantd::db::pool(db.url(), 2).unwrap(),
    );
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let job = |running: Arc<AtomicUsize>, most: Arc<AtomicUsize>| async move {
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        running.fetch_sub(1, Ordering::SeqCst);
        Ok(1usize)
    };
    const KEY: i64 = 42;
    let (first, second) = tokio::join!(
        tenantd::ops::run_exclusive(&a, KEY, job(running.clone(), most.clone())),
        tenantd::ops::run_exclusive(&b, KEY, job(running.clone(), most.clone())),
    );
    let ran = [first.unwrap(), second.unwrap()]
        .iter()
        .filter(|r| r.is_some())
        .count();
    assert_eq!(ran, 1, "exactly one replica ran it");
    assert_eq!(AtomicUsize::load(&most, Ordering::SeqCst), 1);
    // The lock was released: running it again works.
    assert_eq!(
        tenantd::ops::run_exclusive(&b, KEY, job(running, most))
            .await
            .unwrap(),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_role_reaches_only_its_own_schema() {
    let app = TestApp::start().await;
    let (a, b) = (app.create("alpha", "").await, app.create("bravo", "").await);
    app.wait_for(&a.id, TenantState::Active).await;
    app.wait_for(&b.id, TenantState::Active).await;
    let alpha = format!("{}alpha", app.db.role_prefix);
    assert_eq!(read_as_role(&app.db, &alpha, "tenant_alpha").await, Ok(3));
    let refused = read_as_role(&app.db, &alpha, "tenant_bravo")
        .await
        .unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");

    // Nor the control plane's tables.
    let mut conn = AsyncPgConnection::establish(app.db.url()).await.unwrap();
    conn.batch_execute(&format!("SET ROLE \"{alpha}\""))
        .await
        .unwrap();
    for table in ["tenants", "events", "outbox", "plans"] {
        let err = conn
            .batch_execute(&format!("SELECT 1 FROM public.{table} LIMIT 1"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{table}: {err}"
        );
    }
    app.stop().await;
}
