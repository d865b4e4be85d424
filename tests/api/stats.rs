//! GetProvisioningStats against the events of scripted runs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tenantd::proto::{
    CancelProvisioningRequest, DeleteTenantRequest, DeprovisionRequest,
    GetProvisioningStatsRequest, GetProvisioningStatsResponse, PipelineOutcomes,
    ResumeTenantRequest, StepStatus, SuspendTenantRequest, TenantState,
};
use tenantd::steps::{Output, Registry, Step, StepCtx, StepError};
use tonic::Code;

use crate::common::steps::Scripted;
use crate::common::{TestApp, violated_fields};
use crate::tenantctl::run as tenantctl;

/// A step that succeeds but cannot be undone: a saga that reaches it ends
/// NEEDS_ATTENTION.
struct Sticky;

#[async_trait]
impl Step for Sticky {
    fn name(&self) -> &'static str {
        "sticky"
    }

    async fn run_external(&self, _ctx: &StepCtx) -> Result<Output, StepError> {
        Ok(Output::new())
    }

    async fn compensate_external(&self, _ctx: &StepCtx) -> Result<Output, StepError> {
        Err(StepError::new("scripted failure to undo"))
    }

    fn database_work(&self) -> bool {
        false
    }
}

/// A tenant of plan `basic` written straight into the tables: created ten
/// days ago, one retried `run_migrations` attempt, ACTIVE an hour later.
/// Only a window longer than ten days sees its events.
const OLD_TIMER: &str = "
    WITH t AS (
        INSERT INTO tenants (id, slug, display_name, admin_email, plan, plan_version, state,
                             create_time, update_time)
        VALUES (gen_random_uuid(), 'old-timer', 'Old Timer', 'admin@old-timer.test', 'basic', 1,
                'ACTIVE', now() - interval '10 days', now() - interval '10 days')
        RETURNING id, create_time
    )
    INSERT INTO events (tenant_id, kind, step, attempt, state, actor, create_time)
    SELECT t.id, e.kind, e.step, e.attempt, e.state, 'system', t.create_time + e.after
    FROM t, (VALUES ('TENANT_CREATED', NULL, NULL, 'PROVISIONING', interval '0'),
                    ('STEP_RETRYING', 'run_migrations', 1, 'PROVISIONING', interval '10 minutes'),
                    ('STATE_CHANGED', 'activate', 1, 'ACTIVE', interval '1 hour'))
         e(kind, step, attempt, state, after)";

const DAY: i64 = 86_400;

fn window(seconds: i64) -> GetProvisioningStatsRequest {
    GetProvisioningStatsRequest {
        window: Some(prost_types::Duration { seconds, nanos: 0 }),
    }
}

async fn stats(
    app: &TestApp,
    request: GetProvisioningStatsRequest,
) -> GetProvisioningStatsResponse {
    app.client
        .clone()
        .get_provisioning_stats(request)
        .await
        .expect("stats")
        .into_inner()
}

/// Counts by state, in the enum's order, without UNSPECIFIED.
fn by_state(s: &GetProvisioningStatsResponse) -> Vec<(TenantState, i64)> {
    s.tenants_by_state
        .iter()
        .map(|c| (TenantState::try_from(c.state).unwrap(), c.count))
        .collect()
}

fn failures(s: &GetProvisioningStatsResponse) -> Vec<(&str, i64, i64)> {
    s.step_failures
        .iter()
        .map(|f| (f.step.as_str(), f.failed_attempts, f.given_up))
        .collect()
}

fn secs(d: Option<prost_types::Duration>) -> f64 {
    let d = d.expect("duration");
    d.seconds as f64 + f64::from(d.nanos) / 1e9
}

async fn wait_until_running(app: &TestApp, id: &str, step: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = app.get(id).await;
        if t.steps
            .iter()
            .any(|s| s.name == step && s.status == StepStatus::Running as i32)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{step} never ran: {t:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_the_events_of_a_scripted_run() {
    let gate = Scripted::gated("gate");
    let hold = Scripted::gated("hold");
    let flaky = Scripted {
        fail_first: 1,
        ..Scripted::new("flaky")
    };
    let shaky = Scripted::new("shaky");
    shaky.failing.store(true, Ordering::SeqCst);
    let broken = Scripted::new("broken");
    broken.failing.store(true, Ordering::SeqCst);
    // Replaces the real teardown step: deprovisioning gives up after 5 attempts.
    let archive = Scripted::new("archive_schema");
    archive.failing.store(true, Ordering::SeqCst);
    let mut steps = Registry::new();
    for step in [&gate, &hold, &flaky, &shaky, &broken, &archive] {
        steps.register(step.clone());
    }
    steps.register(Sticky);
    // A short lease: the cancelled step sees its cancellation at a heartbeat.
    let app = TestApp::start_with(|c| c.lease = Duration::from_millis(1500), steps).await;
    for (plan, first) in [
        ("stuck", ("gate", true, 1)),
        ("held", ("hold", true, 1)),
        ("flaky", ("flaky", true, 3)),
        ("warned", ("shaky", false, 2)),
        ("doomed", ("broken", true, 3)),
    ] {
        app.add_plan(plan, &[first, ("activate", true, 1)]).await;
    }
    app.add_plan("sticky", &[("sticky", true, 2), ("broken", true, 1)])
        .await;
    let mut client = app.client.clone();

    // Two pipelines wait at the gate; the first one is the oldest.
    let stuck = app.create("stuck-one", "stuck").await;
    let stuck_two = app.create("stuck-two", "stuck").await;

    // Succeeded: two on the default plan, one after a retried attempt, one
    // despite a non-critical step that gave up.
    let alpha = app.create("alpha", "").await;
    let beta = app.create("beta", "").await;
    let flaky_tenant = app.create("flaky-one", "flaky").await;
    let warned = app.create("warned-one", "warned").await;
    // Failed: `broken` runs out of its 3 attempts. Then deleted.
    let doomed = app.create("doomed-one", "doomed").await;
    // NEEDS_ATTENTION while provisioning: `broken` fails at once and the
    // saga cannot undo `sticky`.
    let sticky = app.create("sticky-one", "sticky").await;
    // Cancelled while its step runs.
    let held = app.create("held-one", "held").await;
    wait_until_running(&app, &held.id, "hold").await;
    client
        .cancel_provisioning(CancelProvisioningRequest {
            tenant_id: held.id.clone(),
            reason: "scripted".into(),
        })
        .await
        .unwrap();

    for (tenant, state) in [
        (&alpha, TenantState::Active),
        (&beta, TenantState::Active),
        (&flaky_tenant, TenantState::Active),
        (&warned, TenantState::Active),
        (&doomed, TenantState::Failed),
        (&sticky, TenantState::NeedsAttention),
        (&held, TenantState::Cancelled),
    ] {
        app.wait_for(&tenant.id, state).await;
    }
    // Back to ACTIVE by ResumeTenant: not the end of a pipeline.
    client
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: alpha.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    client
        .resume_tenant(ResumeTenantRequest {
            tenant_id: alpha.id.clone(),
        })
        .await
        .unwrap();
    // A teardown that gives up ends NEEDS_ATTENTION: not a provisioning
    // pipeline, but its step's failures count.
    client
        .deprovision(DeprovisionRequest {
            tenant_id: beta.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.wait_for(&beta.id, TenantState::NeedsAttention).await;
    // Deleted tenants leave the counts by state, not the event log.
    client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: doomed.id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap();
    app.db.exec(OLD_TIMER).await;

    let day = stats(&app, GetProvisioningStatsRequest::default()).await;
    let as_of = day.as_of_time.unwrap();
    let start = day.window_start_time.unwrap();
    assert_eq!(
        (as_of.seconds - start.seconds, as_of.nanos - start.nanos),
        (DAY, 0),
        "the default window is 24 hours"
    );
    assert_eq!(
        by_state(&day),
        vec![
            (TenantState::Provisioning, 2),
            (TenantState::Active, 4),
            (TenantState::Suspended, 0),
            (TenantState::Failed, 0),
            (TenantState::Cancelled, 1),
            (TenantState::Deprovisioning, 0),
            (TenantState::Deprovisioned, 0),
            (TenantState::NeedsAttention, 2),
        ]
    );
    assert_eq!(
        day.pipelines,
        Some(PipelineOutcomes {
            ended: 7,
            succeeded: 4,
            failed: 1,
            cancelled: 1,
            needs_attention: 1,
            success_rate: 4.0 / 7.0,
        })
    );
    let plans: Vec<_> = day
        .time_to_active
        .iter()
        .map(|t| (t.plan.as_str(), t.count))
        .collect();
    assert_eq!(plans, [("default", 2), ("flaky", 1), ("warned", 1)]);
    for t in &day.time_to_active {
        let (p50, p95) = (secs(t.p50), secs(t.p95));
        assert!(0.0 < p50 && p50 <= p95 && p95 < 60.0, "{t:?}");
    }
    assert_eq!(
        failures(&day),
        [
            ("archive_schema", 5, 1),
            ("broken", 4, 2),
            ("shaky", 2, 1),
            ("flaky", 1, 0),
        ]
    );
    // The same figures straight from the events: every failed attempt is
    // one STEP_RETRYING, STEP_FAILED or STEP_WARNING event.
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) FROM events
                 WHERE kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
                   AND create_time > now() - interval '1 day'"
            )
            .await,
        12
    );
    let oldest = day.oldest_running.clone().expect("a pipeline runs");
    assert_eq!(
        (
            oldest.tenant_id.as_str(),
            oldest.slug.as_str(),
            oldest.step.as_str()
        ),
        (stuck.id.as_str(), "stuck-one", "gate")
    );
    assert_eq!(oldest.state, TenantState::Provisioning as i32);
    assert!(!oldest.compensating);
    assert_eq!(
        oldest.start_time, stuck.create_time,
        "started by CreateTenant"
    );
    let age = secs(oldest.age);
    let since_start = (as_of.seconds - stuck.create_time.unwrap().seconds) as f64;
    assert!(0.0 < age && (age - since_start).abs() <= 1.0, "{age} s");

    // Thirty days reach the old tenant: its ACTIVE an hour after creation
    // and its retried attempt.
    let month = stats(&app, window(30 * DAY)).await;
    assert_eq!(
        by_state(&month),
        by_state(&day),
        "counts by state ignore the window"
    );
    let pipelines = month.pipelines.unwrap();
    assert_eq!((pipelines.ended, pipelines.succeeded), (8, 5));
    assert_eq!(pipelines.success_rate, 5.0 / 8.0);
    let basic = &month.time_to_active[0];
    assert_eq!((basic.plan.as_str(), basic.count), ("basic", 1));
    let hour = prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    };
    assert_eq!((basic.p50, basic.p95), (Some(hour), Some(hour)));
    assert_eq!(month.time_to_active[1..], day.time_to_active[..]);
    assert_eq!(
        failures(&month),
        [
            ("archive_schema", 5, 1),
            ("broken", 4, 2),
            ("shaky", 2, 1),
            ("flaky", 1, 0),
            ("run_migrations", 1, 0),
        ]
    );
    assert_eq!(month.oldest_running.unwrap().tenant_id, stuck.id);

    gate.open(2);
    app.wait_for(&stuck.id, TenantState::Active).await;
    app.wait_for(&stuck_two.id, TenantState::Active).await;
    let after = stats(&app, GetProvisioningStatsRequest::default()).await;
    assert_eq!(after.oldest_running, None, "no pipeline runs");
    assert_eq!(after.pipelines.unwrap().succeeded, 6);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_must_be_positive_and_at_most_90_days() {
    let app = TestApp::api_only().await;
    for (seconds, nanos) in [(0, 0), (-1, 0), (0, -1), (90 * DAY + 1, 0), (i64::MAX, 0)] {
        let request = GetProvisioningStatsRequest {
            window: Some(prost_types::Duration { seconds, nanos }),
        };
        let err = app
            .client
            .clone()
            .get_provisioning_stats(request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{seconds} s {nanos} ns");
        assert_eq!(violated_fields(&err), ["window"]);
    }
    for seconds in [1, 90 * DAY] {
        let s = stats(&app, window(seconds)).await;
        let (start, end) = (s.window_start_time.unwrap(), s.as_of_time.unwrap());
        assert_eq!(end.seconds - start.seconds, seconds);
    }
    let empty = stats(&app, GetProvisioningStatsRequest::default()).await;
    assert_eq!(empty.tenants_by_state.len(), 8, "zeros included");
    assert!(empty.tenants_by_state.iter().all(|c| c.count == 0));
    assert_eq!(empty.pipelines.unwrap(), PipelineOutcomes::default());
    assert!(empty.time_to_active.is_empty() && empty.step_failures.is_empty());
    assert_eq!(empty.oldest_running, None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenantctl_stats_prints_a_report_or_json() {
    // API only: the new tenant's pipeline stays at its first step.
    let app = TestApp::api_only().await;
    let acme = app.create("acme", "").await;
    app.db.exec(OLD_TIMER).await;

    let (code, out, err) = tenantctl(&app, &["stats"]).await;
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "PROVISIONING             1",
        "ACTIVE                   1",
        "pipelines ended: 0 (succeeded 0, failed 0, cancelled 0, needs attention 0)",
        "success rate:    0.0%",
        "time to ACTIVE:  no tenant became ACTIVE in the window",
        "step failures:   none in the window",
        &format!("oldest running:  acme ({})", acme.id),
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    assert!(
        out.contains("PROVISIONING at create_schema, started "),
        "{out}"
    );

    let (code, out, err) = tenantctl(&app, &["stats", "--window", "30days"]).await;
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "pipelines ended: 1 (succeeded 1, failed 0, cancelled 0, needs attention 0)",
        "success rate:    100.0%",
        "basic                    1            1h            1h",
        "run_migrations                          1         0",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }

    let (code, out, err) = tenantctl(&app, &["stats", "--window", "30days", "-o", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(json["pipelines"]["succeeded"], "1", "{json}");
    assert_eq!(json["pipelines"]["successRate"], 1.0, "{json}");
    assert_eq!(json["timeToActive"][0]["plan"], "basic", "{json}");
    assert_eq!(json["timeToActive"][0]["p50"], "3600s", "{json}");
    assert_eq!(json["stepFailures"][0]["step"], "run_migrations", "{json}");
    assert_eq!(json["oldestRunning"]["slug"], "acme", "{json}");
    assert_eq!(json["oldestRunning"]["state"], "TENANT_STATE_PROVISIONING");
    assert_eq!(
        json["tenantsByState"][0],
        serde_json::json!({"state": "TENANT_STATE_PROVISIONING", "count": "1"})
    );

    let (code, _, err) = tenantctl(&app, &["stats", "--window", "91days"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("invalid request") && err.contains("window: must be at most 90 days"),
        "{err}"
    );
    app.stop().await;
}
