//! Quotas on any meter: limits a plan sets per day or month, a plan that
//! suspends a tenant at its limit, and the server resuming it when the
//! limit is raised or a new period starts, never against an operator.

use std::collections::HashMap;
use std::time::Duration;

use tenantd::proto::plan_service_client::PlanServiceClient;
use tenantd::proto::usage_service_client::UsageServiceClient;
use tenantd::proto::{
    Aggregation, CreateMeterRequest, CreatePlanRequest, DeleteMeterRequest, GetPlanRequest,
    GetUsageSummaryRequest, Meter, MeterLimit, OnLimit, Period, Plan, PlanLimits, PlanStep,
    RecordUsageRequest, ResumeTenantRequest, TenantState, UpdatePlanRequest, UsageEvent,
    UsageResult,
};
use tonic::Code;

use crate::common::{TestApp, violated_fields};

fn limit(limit: f64, period: Period) -> MeterLimit {
    MeterLimit {
        limit,
        period: period as i32,
    }
}

/// A plan that provisions quickly and limits `seats` per day and
/// `exports` per month.
fn metered(seats: MeterLimit, on_limit: i32) -> Plan {
    let steps = [
        "create_schema",
        "run_migrations",
        "seed_roles_and_admin",
        "activate",
    ];
    Plan {
        name: "metered".into(),
        steps: steps
            .iter()
            .map(|name| PlanStep {
                name: (*name).into(),
                critical: true,
                ..Default::default()
            })
            .collect(),
        limits: Some(PlanLimits {
            meters: HashMap::from([
                ("seats".to_owned(), seats),
                ("exports".to_owned(), limit(100.0, Period::Month)),
            ]),
            ..Default::default()
        }),
        on_limit,
        ..Default::default()
    }
}

async fn create_meter(app: &TestApp, name: &str, aggregation: Aggregation) {
    UsageServiceClient::new(app.channel().await)
        .create_meter(CreateMeterRequest {
            meter: Some(Meter {
                name: name.into(),
                aggregation: aggregation as i32,
                unit: name.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create meter");
}

/// Records `value` seats for the tenant under a fresh id.
async fn seats(app: &TestApp, tenant: &str, id: &str, value: f64) {
    let results = UsageServiceClient::new(app.channel().await)
        .record_usage(RecordUsageRequest {
            events: vec![UsageEvent {
                id: id.into(),
                tenant_id: tenant.into(),
                meter: "seats".into(),
                value,
                ..Default::default()
            }],
        })
        .await
        .expect("record usage")
        .into_inner()
        .results;
    assert_eq!(results[0].result(), UsageResult::Accepted, "{results:?}");
}

/// (state, actor, message) of the tenant's state changes, in order.
async fn state_changes(app: &TestApp, tenant: &str) -> Vec<(String, String, String)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        state: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        actor: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        message: String,
    }
    let mut conn = app.db.conn().await;
    let rows: Vec<Row> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT state, actor, message FROM events
             WHERE tenant_id = '{tenant}' AND kind = 'STATE_CHANGED' ORDER BY id"
        )),
        &mut conn,
    )
    .await
    .expect("events");
    rows.into_iter()
        .map(|r| (r.state, r.actor, r.message))
        .collect()
}

fn thresholds(events: &[(String, String, String)]) -> Vec<&str> {
    events
        .iter()
        .filter(|(kind, _, _)| kind == "USAGE_THRESHOLD_REACHED")
        .map(|(_, _, message)| message.as_str())
        .collect()
}

/// Moves the tenant's usage and thresholds into the previous day, as if
/// the day had passed.
async fn a_day_passes(app: &TestApp, tenant: &str) {
    app.db
        .exec(&format!(
            "UPDATE usage_rollups SET bucket = bucket - interval '1 day' WHERE tenant_id = '{tenant}';
             UPDATE usage_subjects SET bucket = bucket - interval '1 day' WHERE tenant_id = '{tenant}';
             UPDATE usage_events SET time = time - interval '1 day' WHERE tenant_id = '{tenant}';
             UPDATE usage_thresholds SET period_start = period_start - interval '1 day'
             WHERE tenant_id = '{tenant}'"
        ))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_suspends_at_its_limit_is_lifted_by_a_raised_limit_or_a_new_period() {
    let app = TestApp::start().await;
    let mut plans = PlanServiceClient::new(app.channel().await);
    create_meter(&app, "seats", Aggregation::Sum).await;
    create_meter(&app, "exports", Aggregation::Count).await;

    // Bad limits are named, and nothing is stored.
    let suspend = OnLimit::Suspend as i32;
    let with_meters = |meters: Vec<(&str, MeterLimit)>, on_limit: i32| {
        let mut plan = metered(limit(10.0, Period::Day), on_limit);
        plan.limits.as_mut().unwrap().meters =
            meters.into_iter().map(|(m, l)| (m.to_owned(), l)).collect();
        plan
    };
    for (plan, field) in [
        (
            with_meters(vec![("nope", limit(5.0, Period::Day))], suspend),
            "plan.limits.meters[\"nope\"]",
        ),
        (
            with_meters(vec![("api_calls", limit(5.0, Period::Day))], suspend),
            "plan.limits.meters[\"api_calls\"]",
        ),
        (
            with_meters(vec![("seats", limit(f64::NAN, Period::Day))], suspend),
            "plan.limits.meters[\"seats\"].limit",
        ),
        (
            with_meters(vec![("seats", limit(-1.0, Period::Day))], suspend),
            "plan.limits.meters[\"seats\"].limit",
        ),
        (
            with_meters(
                vec![(
                    "seats",
                    MeterLimit {
                        limit: 5.0,
                        period: 9,
                    },
                )],
                suspend,
            ),
            "plan.limits.meters[\"seats\"].period",
        ),
        (
            with_meters(vec![("seats", limit(5.0, Period::Day))], 9),
            "plan.on_limit",
        ),
    ] {
        let e = plans
            .create_plan(CreatePlanRequest { plan: Some(plan) })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(violated_fields(&e).contains(&field.to_owned()), "{e:?}");
    }
    let e = plans
        .get_plan(GetPlanRequest {
            name: "metered".into(),
            version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let plan = plans
        .create_plan(CreatePlanRequest {
            plan: Some(metered(limit(10.0, Period::Day), suspend)),
        })
        .await
        .expect("create plan")
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(plan.on_limit(), OnLimit::Suspend);
    let limits = plan.limits.clone().unwrap().meters;
    assert_eq!(limits["seats"], limit(10.0, Period::Day));
    assert_eq!(limits["exports"], limit(100.0, Period::Month));

    // A meter a plan limits stays.
    let e = UsageServiceClient::new(app.channel().await)
        .delete_meter(DeleteMeterRequest {
            name: "seats".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("metered"), "{e:?}");

    let tenant = app.create("capped", "metered").await;
    let t = tenant.id.as_str();
    app.wait_for(t, TenantState::Active).await;
    let summary = UsageServiceClient::new(app.channel().await)
        .get_usage_summary(GetUsageSummaryRequest {
            tenant_id: t.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .meters;
    let exports = summary.iter().find(|m| m.meter == "exports").unwrap();
    assert_eq!(
        (exports.limit, exports.period()),
        (Some(100.0), Period::Month)
    );
    let start = exports.period_start_time.unwrap();
    let start = chrono::DateTime::from_timestamp(start.seconds, 0).unwrap();
    assert_eq!(start.format("%d %H:%M").to_string(), "01 00:00");

    // 80 % is an event; 100 % suspends, through the suspend path.
    seats(&app, t, "s1", 8.0).await;
    assert_eq!(thresholds(&app.events(t).await).len(), 1);
    assert_eq!(app.get(t).await.state(), TenantState::Active);
    seats(&app, t, "s2", 2.0).await;
    let suspended = app.get(t).await;
    assert_eq!(suspended.state(), TenantState::Suspended);
    assert!(
        suspended
            .state_reason
            .contains("seats reached the plan's limit of 10 seats"),
        "{suspended:?}"
    );
    let changes = state_changes(&app, t).await;
    let (state, actor, _) = changes.last().unwrap();
    assert_eq!((state.as_str(), actor.as_str()), ("SUSPENDED", "quota"));

    // Raising the limit resumes it at once; the new limit has thresholds
    // of its own.
    let raised = plans
        .update_plan(UpdatePlanRequest {
            plan: Some(Plan {
                etag: plan.etag.clone(),
                ..metered(limit(20.0, Period::Day), suspend)
            }),
        })
        .await
        .expect("update plan")
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(app.get(t).await.state(), TenantState::Active);
    let changes = state_changes(&app, t).await;
    let (state, actor, message) = changes.last().unwrap();
    assert_eq!((state.as_str(), actor.as_str()), ("ACTIVE", "quota"));
    assert!(message.contains("below every usage limit"), "{message}");
    seats(&app, t, "s3", 10.0).await;
    let events = app.events(t).await;
    let reached = thresholds(&events);
    assert_eq!(reached.len(), 4, "{reached:?}");
    assert!(reached[3].contains("100%") && reached[3].contains("20 of 20"));
    assert_eq!(app.get(t).await.state(), TenantState::Suspended);

    // A new period resumes it (the quota job looks every few seconds).
    a_day_passes(&app, t).await;
    let resumed = wait_state(&app, t, TenantState::Active).await;
    assert_eq!(
        resumed.state_reason,
        "resumed: below every usage limit of its plan again"
    );

    // Suspended again; an operator who resumes it keeps it resumed for the
    // rest of the period, and the quota forgets it. (The server remembers
    // what it announced today; a day that passed by moving the data does
    // not reach that memory, a plan change does.)
    let raised = plans
        .update_plan(UpdatePlanRequest {
            plan: Some(Plan {
                etag: raised.etag.clone(),
                description: "a day later".into(),
                ..metered(limit(20.0, Period::Day), suspend)
            }),
        })
        .await
        .expect("update plan")
        .into_inner()
        .plan
        .unwrap();
    seats(&app, t, "s4", 25.0).await;
    assert_eq!(app.get(t).await.state(), TenantState::Suspended);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM quota_suspensions WHERE tenant_id = '{t}'"
            ))
            .await,
        1
    );
    app.client
        .clone()
        .resume_tenant(ResumeTenantRequest {
            tenant_id: t.into(),
        })
        .await
        .expect("resume");
    seats(&app, t, "s5", 1.0).await;
    assert_eq!(app.get(t).await.state(), TenantState::Active);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM quota_suspensions WHERE tenant_id = '{t}'"
            ))
            .await,
        0
    );
    let changes = state_changes(&app, t).await;
    let (state, actor, _) = changes.last().unwrap();
    assert_eq!((state.as_str(), actor.as_str()), ("ACTIVE", "anonymous"));

    // NOTIFY: the events only.
    plans
        .update_plan(UpdatePlanRequest {
            plan: Some(Plan {
                etag: raised.etag.clone(),
                ..metered(limit(5.0, Period::Day), OnLimit::Notify as i32)
            }),
        })
        .await
        .expect("update plan");
    seats(&app, t, "s6", 1.0).await;
    let reached = thresholds(&app.events(t).await).len();
    assert!(reached >= 8, "the lowered limit's thresholds: {reached}");
    assert_eq!(app.get(t).await.state(), TenantState::Active);
    app.stop().await;
}

async fn wait_state(app: &TestApp, id: &str, state: TenantState) -> tenantd::proto::Tenant {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let t = app.get(id).await;
        if t.state() == state {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {state:?}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
