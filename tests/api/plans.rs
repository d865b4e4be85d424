//! PlanService: versioned plans, their per-step settings, and the built-in
//! plans.

use tenantd::proto::plan_service_client::PlanServiceClient;
use tenantd::proto::{
    CreatePlanRequest, CreateTenantRequest, DeletePlanRequest, DeleteTenantRequest,
    DeprovisionMode, DeprovisionRequest, GetPlanRequest, InitialData, ListPlansRequest, Plan,
    PlanLimits, PlanStep, StepStatus, TenantState, UpdatePlanRequest,
};
use tenantd::steps::Registry;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::steps::Scripted;
use crate::common::{TestApp, tenant, violated_fields};

fn millis(ms: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: ms / 1000,
        nanos: (ms % 1000) as i32 * 1_000_000,
    })
}

fn step(name: &str, max_attempts: i32) -> PlanStep {
    PlanStep {
        name: name.into(),
        critical: true,
        max_attempts,
        ..Default::default()
    }
}

async fn plans(app: &TestApp) -> PlanServiceClient<Channel> {
    PlanServiceClient::new(app.channel().await)
}

async fn create_plan(app: &TestApp, plan: Plan) -> Plan {
    plans(app)
        .await
        .create_plan(CreatePlanRequest { plan: Some(plan) })
        .await
        .expect("create plan")
        .into_inner()
        .plan
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_plans_are_listed_with_their_limits() {
    let app = TestApp::api_only().await;
    let mut client = plans(&app).await;
    let first = client
        .list_plans(ListPlansRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_plans(ListPlansRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let third = client
        .list_plans(ListPlansRequest {
            page_size: 2,
            page_token: second.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let all: Vec<&Plan> = first
        .plans
        .iter()
        .chain(&second.plans)
        .chain(&third.plans)
        .collect();
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["basic", "default", "enterprise", "sso", "team"]);
    assert!(third.next_page_token.is_empty());
    // The four first plans got `deploy_contract` as their second version;
    // `default` got `issue_api_key` as its third.
    assert!(all.iter().all(|p| p.built_in
        && p.version
            == match p.name.as_str() {
                "sso" => 1,
                "default" => 3,
                _ => 2,
            }));
    let default: Vec<&str> = all[1].steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(default[3], "issue_api_key");
    assert!(!all[1].steps[3].critical);
    let sso: Vec<&str> = all[3].steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        sso,
        [
            "create_schema",
            "run_migrations",
            "seed_roles_and_admin",
            "register_oidc_client",
            "deploy_contract",
            "send_welcome_email",
            "activate"
        ]
    );

    let team = client
        .get_plan(GetPlanRequest {
            name: "team".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(team.limits.unwrap().max_users, 100);
    let initial = team.initial_data.unwrap();
    assert_eq!(initial.extra_roles, ["auditor"]);
    assert_eq!(initial.config["features.audit_log"], "true");
    assert_eq!(team.etag, "\"2\"");

    let bad = client
        .list_plans(ListPlansRequest {
            page_size: 2,
            page_token: "not-a-token!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let missing = client
        .get_plan(GetPlanRequest {
            name: "gold".into(),
            version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_only_returns_the_resolved_steps_of_the_plan() {
    let app = TestApp::api_only().await;
    let mut t = tenant("acme");
    t.plan = "enterprise".into();
    let preview = app
        .client
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(t),
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(preview.plan, "enterprise");
    assert_eq!(preview.plan_version, 2);
    let names: Vec<&str> = preview.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "create_schema",
            "run_migrations",
            "seed_roles_and_admin",
            "deploy_contract",
            "send_welcome_email",
            "activate"
        ]
    );
    assert!(
        preview
            .steps
            .iter()
            .all(|s| s.max_attempts == 10 && s.critical)
    );
    assert_eq!(preview.steps[0].retry_cap, millis(600_000));
    assert_eq!(preview.steps[1].timeout, millis(900_000));
    assert_eq!(preview.steps[2].timeout, None, "the server's default");
    assert_eq!(app.db.count("SELECT count(*) FROM tenants").await, 0);
    app.stop().await;
}

/// Attempts, backoff and timeout come from the plan, step by step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_step_settings_drive_the_dispatcher() {
    let flaky = Scripted {
        fail_first: 2,
        ..Scripted::new("plan_flaky")
    };
    let hopeless = Scripted {
        fail_first: 100,
        ..Scripted::new("plan_hopeless")
    };
    let stuck = Scripted::gated("plan_stuck");
    let mut steps = Registry::new();
    steps.register(flaky.clone());
    steps.register(hopeless.clone());
    steps.register(stuck.clone());
    // The server's own backoff is far longer than the plan's.
    let app = TestApp::start_with(
        |c| {
            c.retry_base = std::time::Duration::from_secs(30);
            c.retry_cap = std::time::Duration::from_secs(60);
        },
        steps,
    )
    .await;
    let quick = PlanStep {
        retry_base: millis(50),
        retry_cap: millis(100),
        ..step("plan_flaky", 3)
    };
    create_plan(
        &app,
        Plan {
            name: "quick".into(),
            steps: vec![quick, step("activate", 1)],
            ..Default::default()
        },
    )
    .await;
    let t = app.create("acme", "quick").await;
    assert_eq!(t.steps[0].retry_cap, millis(100), "copied onto the tenant");
    let t = app.wait_for(&t.id, TenantState::Active).await;
    assert_eq!(t.steps[0].attempts, 3);
    let retries: Vec<String> = app
        .events(&t.id)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "STEP_RETRYING")
        .map(|(_, _, message)| message)
        .collect();
    assert_eq!(retries.len(), 2, "{retries:?}");
    for message in &retries {
        let ms: u64 = message
            .rsplit("retrying in ")
            .next()
            .and_then(|rest| rest.trim_end_matches(" ms").parse().ok())
            .unwrap_or_else(|| panic!("no delay in {message:?}"));
        assert!(ms <= 100, "the plan's cap, not the server's: {message}");
    }

    create_plan(
        &app,
        Plan {
            name: "twice".into(),
            steps: vec![
                PlanStep {
                    retry_base: millis(10),
                    ..step("plan_hopeless", 2)
                },
                step("activate", 1),
            ],
            ..Default::default()
        },
    )
    .await;
    let t = app.create("hopeless", "twice").await;
    let t = app.wait_for(&t.id, TenantState::Failed).await;
    assert_eq!(t.steps[0].attempts, 2);
    assert_eq!(hopeless.calls(), 2);

    create_plan(
        &app,
        Plan {
            name: "impatient".into(),
            steps: vec![PlanStep {
                timeout: millis(200),
                ..step("plan_stuck", 1)
            }],
            ..Default::default()
        },
    )
    .await;
    let t = app.create("stuck", "impatient").await;
    let t = app.wait_for(&t.id, TenantState::Failed).await;
    assert_eq!(t.steps[0].status, StepStatus::Failed as i32);
    assert!(
        t.steps[0].last_error.contains("timed out after 200ms"),
        "{:?}",
        t.steps[0].last_error
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_changed_mid_pipeline_leaves_the_running_one_alone() {
    let gate = Scripted::gated("plan_gate");
    let mut steps = Registry::new();
    steps.register(gate.clone());
    let app = TestApp::start_with(|_| {}, steps).await;
    let v1 = create_plan(
        &app,
        Plan {
            name: "evolving".into(),
            description: "first".into(),
            steps: vec![step("plan_gate", 4), step("activate", 2)],
            ..Default::default()
        },
    )
    .await;
    let running = app.create("early", "evolving").await;
    // Wait until the gated step runs.
    while gate.calls() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut client = plans(&app).await;
    let v2 = client
        .update_plan(UpdatePlanRequest {
            plan: Some(Plan {
                name: "evolving".into(),
                description: "second".into(),
                steps: vec![step("activate", 7)],
                etag: v1.etag.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(v2.version, 2);
    let stale = client
        .update_plan(UpdatePlanRequest {
            plan: Some(Plan {
                name: "evolving".into(),
                steps: vec![step("activate", 1)],
                etag: v1.etag.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    gate.open(1);
    let done = app.wait_for(&running.id, TenantState::Active).await;
    assert_eq!(done.plan_version, 1);
    let names: Vec<&str> = done.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["plan_gate", "activate"],
        "the version it started with"
    );
    assert_eq!(done.steps[1].max_attempts, 2);

    let later = app.create("later", "evolving").await;
    assert_eq!(later.plan_version, 2);
    assert_eq!(later.steps.len(), 1);
    assert_eq!(later.steps[0].max_attempts, 7);
    app.wait_for(&later.id, TenantState::Active).await;

    let old = client
        .get_plan(GetPlanRequest {
            name: "evolving".into(),
            version: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(old.description, "first");
    assert_eq!(old.steps.len(), 2);
    let none = client
        .get_plan(GetPlanRequest {
            name: "evolving".into(),
            version: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plans_are_refused_and_a_used_plan_cannot_be_deleted() {
    let app = TestApp::start().await;
    let mut client = plans(&app).await;
    let bad = client
        .create_plan(CreatePlanRequest {
            plan: Some(Plan {
                name: "Gold".into(),
                steps: vec![
                    step("no_such_step", 1),
                    PlanStep {
                        retry_base: millis(5000),
                        retry_cap: millis(10),
                        ..step("activate", 50)
                    },
                    step("revoke_access", 1),
                ],
                migration_set: "everything".into(),
                initial_data: Some(InitialData {
                    extra_roles: vec!["admin".into()],
                    ..Default::default()
                }),
                limits: Some(PlanLimits {
                    max_users: -1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let fields = violated_fields(&bad);
    for field in [
        "plan.name",
        "plan.steps[0].name",
        "plan.steps[1].max_attempts",
        "plan.steps[1].retry_cap",
        "plan.steps[2].name",
        "plan.migration_set",
        "plan.initial_data.extra_roles[0]",
        "plan.limits[\"max_users\"]",
    ] {
        assert!(
            fields.contains(&field.to_owned()),
            "{field} not in {fields:?}"
        );
    }
    let sub_ms = client
        .create_plan(CreatePlanRequest {
            plan: Some(Plan {
                name: "fine".into(),
                steps: vec![PlanStep {
                    timeout: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 5,
                    }),
                    ..step("activate", 1)
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&sub_ms), ["plan.steps[0].timeout"]);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM plans WHERE NOT built_in")
            .await,
        0,
        "nothing was written"
    );

    let gold = create_plan(
        &app,
        Plan {
            name: "gold".into(),
            steps: vec![step("activate", 1)],
            ..Default::default()
        },
    )
    .await;
    let taken = client
        .create_plan(CreatePlanRequest {
            plan: Some(gold.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);

    let t = app.create("acme", "gold").await;
    app.wait_for(&t.id, TenantState::Active).await;
    let used = client
        .delete_plan(DeletePlanRequest {
            name: "gold".into(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(used.code(), Code::FailedPrecondition);
    assert!(used.message().contains("1 tenant"), "{}", used.message());

    let mut tenants = app.client.clone();
    tenants
        .deprovision(DeprovisionRequest {
            tenant_id: t.id.clone(),
            mode: DeprovisionMode::Purge as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    app.wait_for(&t.id, TenantState::Deprovisioned).await;
    tenants
        .delete_tenant(DeleteTenantRequest {
            tenant_id: t.id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let stale = client
        .delete_plan(DeletePlanRequest {
            name: "gold".into(),
            etag: "\"9\"".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    client
        .delete_plan(DeletePlanRequest {
            name: "gold".into(),
            etag: gold.etag.clone(),
        })
        .await
        .unwrap();
    let gone = client
        .get_plan(GetPlanRequest {
            name: "gold".into(),
            version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let mut t = tenant("late");
    t.plan = "gold".into();
    let refused = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(t),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), ["tenant.plan"]);
    // A CreateTenant that read the plan before the deletion committed fails
    // at its insert: the guard trigger sees the deletion.
    let mut conn = app.db.conn().await;
    let late_insert = diesel_async::SimpleAsyncConnection::batch_execute(
        &mut conn,
        "INSERT INTO tenants (id, slug, display_name, admin_email, plan, plan_version, state)
         VALUES (gen_random_uuid(), 'sneaky', 'S', 's@x.test', 'gold', 1, 'PROVISIONING')",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        late_insert.contains("plan gold was deleted"),
        "{late_insert}"
    );

    // The name can be used again: the plan comes back as its next version.
    let again = create_plan(
        &app,
        Plan {
            name: "gold".into(),
            steps: vec![step("activate", 2)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(again.version, 2);
    app.stop().await;
}

/// The plan's extra roles and limits reach the tenant's schema, where the
/// database itself refuses a user past `max_users`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_roles_and_limits_are_seeded_and_enforced_in_the_tenant_schema() {
    let app = TestApp::start().await;
    let t = app.create("teamco", "team").await;
    app.wait_for(&t.id, TenantState::Active).await;
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM tenant_teamco.roles WHERE name = 'auditor'")
            .await,
        1
    );
    assert_eq!(
        app.db
            .count("SELECT value FROM tenant_teamco.plan_limits WHERE name = 'max_users'")
            .await,
        100
    );

    create_plan(
        &app,
        Plan {
            name: "duo".into(),
            steps: vec![
                step("create_schema", 1),
                step("run_migrations", 1),
                step("seed_roles_and_admin", 1),
                step("activate", 1),
            ],
            limits: Some(PlanLimits {
                max_users: 2,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let t = app.create("duoco", "duo").await;
    app.wait_for(&t.id, TenantState::Active).await;
    let add = |email: &str| {
        format!(
            "INSERT INTO tenant_duoco.users (id, email, role_id)
             SELECT gen_random_uuid(), '{email}', id FROM tenant_duoco.roles WHERE name = 'member'"
        )
    };
    app.db.exec(&add("second@duo.test")).await;
    let mut conn = app.db.conn().await;
    let refused =
        diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, &add("third@duo.test"))
            .await
            .unwrap_err()
            .to_string();
    assert!(refused.contains("at most 2 users"), "{refused}");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM tenant_duoco.users")
            .await,
        2
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenantctl_manages_plans_as_json_files() {
    let app = TestApp::api_only().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("silver.json");
    std::fs::write(
        &file,
        r#"{"name": "silver", "description": "Mid-size teams",
            "steps": [{"name": "create_schema", "critical": true, "maxAttempts": 3, "retryBase": "0.250s"},
                      {"name": "activate", "critical": true}],
            "initialData": {"extraRoles": ["auditor"], "config": {"general.locale": "de"}},
            "limits": {"maxUsers": "25"}}"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, out, err) = crate::tenantctl::run(&app, &["plan", "create", "--file", path]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("name:         silver") && out.contains("limit:        max_users=25"),
        "{out}"
    );
    assert!(out.contains("retry 250ms..-"), "{out}");

    let (code, out, err) =
        crate::tenantctl::run(&app, &["plan", "get", "silver", "-o", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let got: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(got["plan"]["version"], 1);
    assert_eq!(got["plan"]["steps"][1]["maxAttempts"], 5, "the default");
    let etag = got["plan"]["etag"].as_str().unwrap().to_owned();

    std::fs::write(
        &file,
        r#"{"name": "silver", "steps": [{"name": "activate", "critical": true, "maxAttempts": 2}]}"#,
    )
    .unwrap();
    let (code, _, err) =
        crate::tenantctl::run(&app, &["plan", "update", "--file", path, "--etag", "\"7\""]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("conflict (Aborted)"), "{err}");
    let (code, out, err) =
        crate::tenantctl::run(&app, &["plan", "update", "--file", path, "--etag", &etag]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("version:      2"), "{out}");

    let (code, out, _) = crate::tenantctl::run(&app, &["plan", "list"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.starts_with("silver") && l.contains(" 2 ")),
        "{out}"
    );

    std::fs::write(&file, r#"{"name": "silver", "stepz": []}"#).unwrap();
    let (code, _, err) = crate::tenantctl::run(&app, &["plan", "create", "--file", path]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("not a Plan in proto3 JSON"), "{err}");

    let (code, _, err) = crate::tenantctl::run(&app, &["plan", "delete", "silver"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = crate::tenantctl::run(&app, &["plan", "get", "silver"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("not found (NotFound)"), "{err}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_changed_by_another_replica_is_used_by_the_next_create() {
    let app = TestApp::api_only().await;
    app.add_plan(
        "moving",
        &[("create_schema", true, 2), ("activate", true, 2)],
    )
    .await;
    let first = app.create("first", "moving").await;
    assert_eq!(first.plan_version, 1);
    assert_eq!(first.steps.len(), 2);
    // Another replica writes version 2 straight to the database: this
    // server's cached version 1 is now stale.
    app.db
        .exec(
            r#"UPDATE plans SET version = version + 1,
                   steps = '[{"name": "create_schema", "critical": true, "max_attempts": 2},
                             {"name": "run_migrations", "critical": true, "max_attempts": 2},
                             {"name": "activate", "critical": true, "max_attempts": 2}]'
               WHERE name = 'moving'"#,
        )
        .await;
    let second = app.create("second", "moving").await;
    assert_eq!(
        second.plan_version, 2,
        "the stale cached version was noticed"
    );
    let names: Vec<&str> = second.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["create_schema", "run_migrations", "activate"]);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM tenant_steps WHERE tenant_id = '{}'",
                second.id
            ))
            .await,
        3
    );
    // Deleted by another replica: refused, nothing written.
    app.db
        .exec("UPDATE plans SET delete_time = now() WHERE name = 'moving'")
        .await;
    let refused = app
        .client
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(tenantd::proto::Tenant {
                plan: "moving".into(),
                ..tenant("third")
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&refused), ["tenant.plan"]);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM tenants WHERE slug = 'third'")
            .await,
        0
    );
    app.stop().await;
}
