//! The dispatcher and the provisioning pipeline, end to end: real steps
//! against real PostgreSQL, a real SMTP listener, the real gRPC server.

use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};
use tenantd::proto::{
    CancelProvisioningRequest, RetryProvisioningRequest, StepStatus, TenantState,
};
use tenantd::steps::Registry;
use tonic::Code;

use crate::common::TestApp;
use crate::common::scrape::sample;
use crate::common::steps::Scripted;
use tenantd::bench::smtp::SmtpSink;

fn status_of(t: &tenantd::proto::Tenant, step: &str) -> StepStatus {
    let s = t
        .steps
        .iter()
        .find(|s| s.name == step)
        .unwrap_or_else(|| panic!("no step {step}"));
    StepStatus::try_from(s.status).unwrap()
}

fn attempts_of(t: &tenantd::proto::Tenant, step: &str) -> i32 {
    t.steps.iter().find(|s| s.name == step).unwrap().attempts
}

/// Undoes quoted-printable soft breaks and `=3D`, enough to read a link.
fn unquote(body: &str) -> String {
    body.replace("=\n", "").replace("=3D", "=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_provisioned_end_to_end() {
    let metrics = tenantd::telemetry::metrics::handle();
    let smtp = SmtpSink::start().await.unwrap();
    let url = smtp.url();
    let app = TestApp::start_with(|c| c.smtp_url = Some(url), Registry::new()).await;
    let created = app.create("acme", "").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;

    for step in &t.steps {
        assert_eq!(step.status, StepStatus::Succeeded as i32, "{step:?}");
        assert_eq!(step.attempts, 1, "{step:?}");
    }
    let role = format!("{}acme", app.db.role_prefix);
    assert_eq!(t.outputs["schema_name"], "tenant_acme");
    assert_eq!(t.outputs["role_name"], role);

    let db = &app.db;
    let owned_by_nologin_role = format!(
        "SELECT count(*) FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
         WHERE n.nspname = 'tenant_acme' AND r.rolname = '{role}' AND NOT r.rolcanlogin"
    );
    assert_eq!(db.count(&owned_by_nologin_role).await, 1);
    let public_grants = "SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a
                         WHERE n.nspname = 'tenant_acme' AND a.grantee = 0";
    assert_eq!(
        db.count(public_grants).await,
        0,
        "nothing granted to PUBLIC"
    );
    let tables = format!(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'tenant_acme' AND tableowner = '{role}'
         AND tablename IN ('roles', 'users', 'invitations', 'audit_logs', 'schema_migrations')"
    );
    assert_eq!(db.count(&tables).await, 5);
    assert_eq!(db.count("SELECT count(*) FROM tenant_acme.roles").await, 3);
    assert_eq!(
        db.count("SELECT count(*) FROM tenant_acme.schema_migrations")
            .await,
        tenantd::steps::TENANT_MIGRATIONS.len() as i64
    );
    let admin =
        "SELECT count(*) FROM tenant_acme.users u JOIN tenant_acme.roles r ON r.id = u.role_id
                 WHERE u.email = 'admin@acme.test' AND r.name = 'admin'";
    assert_eq!(db.count(admin).await, 1);

    let batched = sample(&metrics.render(), "tenantd_completion_batch_size_sum", &[]);
    assert!(
        batched.is_some_and(|n| n >= 2.0),
        "the email and activate completions went through the batched path: {batched:?}"
    );
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "one welcome email");
    let body = unquote(&messages[0]);
    assert!(body.contains("To: admin@acme.test"), "{body}");
    let token: String = body
        .split("token=")
        .nth(1)
        .expect("invitation link")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "256-bit token: {token}");
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let stored =
        format!("SELECT count(*) FROM tenant_acme.invitations WHERE token_hash = '{hash}'");
    assert_eq!(
        db.count(&stored).await,
        1,
        "the emailed token matches the stored hash"
    );
    let plain =
        format!("SELECT count(*) FROM tenant_acme.invitations WHERE token_hash LIKE '%{token}%'");
    assert_eq!(db.count(&plain).await, 0, "the token itself is not stored");
    // Each issued token gets its own Message-ID (a resend after a crash is a
    // new message, not a duplicate to drop), named by its hash, not by it.
    let message_id = format!("<{}.welcome.{}@tenantd>", created.id, &hash[..16]);
    assert!(body.contains(&message_id), "{message_id} in {body}");
    assert!(
        !body.contains(&format!("{token}@")),
        "the token is not in the Message-ID"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fails_twice_then_succeeds_backs_off_between_attempts() {
    let flaky = Scripted {
        fail_first: 2,
        ..Scripted::new("flaky")
    };
    let mut steps = Registry::new();
    steps.register(flaky.clone());
    let app = TestApp::start_with(|_| {}, steps).await;
    app.add_plan("flaky-plan", &[("flaky", true, 5), ("activate", true, 1)])
        .await;
    let created = app.create("acme", "flaky-plan").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    assert_eq!(status_of(&t, "flaky"), StepStatus::Succeeded);
    assert_eq!(attempts_of(&t, "flaky"), 3);
    assert_eq!(flaky.calls(), 3);

    // Each retry announces its delay; the next attempt starts no earlier.
    #[derive(diesel::QueryableByName)]
    struct Gap {
        #[diesel(sql_type = diesel::sql_types::Text)]
        message: String,
        #[diesel(sql_type = diesel::sql_types::Double)]
        gap_ms: f64,
    }
    let mut conn = app.db.conn().await;
    let gaps: Vec<Gap> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT r.message,
                    (extract(epoch FROM (SELECT min(s.create_time) FROM events s
                        WHERE s.tenant_id = r.tenant_id AND s.kind = 'STEP_STARTED' AND s.id > r.id)
                        - r.create_time) * 1000)::float8 AS gap_ms
             FROM events r WHERE r.tenant_id = '{}' AND r.kind = 'STEP_RETRYING' ORDER BY r.id",
            created.id
        )),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(gaps.len(), 2);
    for (i, gap) in gaps.iter().enumerate() {
        let announced: f64 = gap
            .message
            .split("retrying in ")
            .nth(1)
            .unwrap()
            .trim_end_matches(" ms")
            .parse()
            .unwrap();
        let ceiling = app.config.retry_base.as_millis() as f64 * 2f64.powi(i as i32);
        assert!(
            announced <= ceiling,
            "attempt {} delay {announced} ms above its ceiling {ceiling}",
            i + 1
        );
        assert!(
            gap.gap_ms >= announced,
            "attempt {} came {} ms after, before its {announced} ms backoff",
            i + 2,
            gap.gap_ms
        );
        assert!(gap.message.contains("scripted failure"), "{}", gap.message);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_step_that_always_fails_is_compensated_and_the_tenant_fails() {
    let broken = Scripted::new("broken");
    broken.failing.store(true, Ordering::SeqCst);
    let mut steps = Registry::new();
    steps.register(broken.clone());
    let app = TestApp::start_with(|_| {}, steps).await;
    app.add_plan(
        "doomed",
        &[
            ("create_schema", true, 3),
            ("run_migrations", true, 3),
            ("seed_roles_and_admin", true, 3),
            ("broken", true, 3),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("acme", "doomed").await;
    let t = app.wait_for(&created.id, TenantState::Failed).await;

    assert_eq!(broken.calls(), 3);
    assert_eq!(status_of(&t, "broken"), StepStatus::Failed);
    assert_eq!(attempts_of(&t, "broken"), 3);
    for step in ["create_schema", "run_migrations", "seed_roles_and_admin"] {
        assert_eq!(status_of(&t, step), StepStatus::Compensated, "{step}");
    }
    assert_eq!(status_of(&t, "activate"), StepStatus::Pending);
    assert!(
        t.state_reason.contains("broken failed after 3 attempts"),
        "{}",
        t.state_reason
    );

    let role = format!("{}acme", app.db.role_prefix);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'")
            .await,
        0
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
            ))
            .await,
        0
    );

    let undone: Vec<String> = app
        .events(&created.id)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "COMPENSATION_SUCCEEDED")
        .map(|(_, step, _)| step)
        .collect();
    assert_eq!(
        undone,
        ["seed_roles_and_admin", "run_migrations", "create_schema"],
        "reverse order"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_smtp_server_leaves_the_tenant_active_with_a_warning() {
    let smtp = SmtpSink::refusing().await.unwrap();
    let url = smtp.url();
    let app = TestApp::start_with(|c| c.smtp_url = Some(url), Registry::new()).await;
    let created = app.create("acme", "").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    assert_eq!(status_of(&t, "send_welcome_email"), StepStatus::Failed);
    let email = t
        .steps
        .iter()
        .find(|s| s.name == "send_welcome_email")
        .unwrap();
    assert_eq!(email.attempts, email.max_attempts);
    assert!(email.last_error.contains("SMTP"), "{}", email.last_error);
    assert_eq!(status_of(&t, "activate"), StepStatus::Succeeded);
    let warnings = app
        .events(&created.id)
        .await
        .into_iter()
        .filter(|(k, _, _)| k == "STEP_WARNING")
        .count();
    assert_eq!(warnings, 1);
    assert!(smtp.messages().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_pipeline_compensates_and_conflicting_calls_are_refused() {
    let gate = Scripted::gated("gate");
    let mut steps = Registry::new();
    steps.register(gate.clone());
    let app =
        TestApp::start_with(|c| c.lease = std::time::Duration::from_millis(1500), steps).await;
    app.add_plan(
        "gated",
        &[
            ("create_schema", true, 3),
            ("run_migrations", true, 3),
            ("gate", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("acme", "gated").await;
    let id = created.id.clone();
    while status_of(&app.get(&id).await, "gate") != StepStatus::Running || gate.calls() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut client = app.client.clone();

    // A retry while the pipeline runs names what is running.
    let err = client
        .retry_provisioning(RetryProvisioningRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.message().contains("gate"), "{}", err.message());
    let err = client
        .cancel_provisioning(CancelProvisioningRequest {
            tenant_id: id.clone(),
            reason: "x".repeat(501),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let cancel = CancelProvisioningRequest {
        tenant_id: id.clone(),
        reason: "customer changed their mind".into(),
    };
    let t = client
        .cancel_provisioning(cancel.clone())
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert!(t.cancel_requested);
    let again = client.cancel_provisioning(cancel.clone()).await;
    assert!(
        again.is_ok() || again.unwrap_err().code() == Code::FailedPrecondition,
        "cancelling twice is harmless"
    );

    let t = app.wait_for(&id, TenantState::Cancelled).await;
    assert_eq!(status_of(&t, "create_schema"), StepStatus::Compensated);
    assert_eq!(status_of(&t, "run_migrations"), StepStatus::Compensated);
    assert_eq!(status_of(&t, "gate"), StepStatus::Cancelled);
    assert_eq!(status_of(&t, "activate"), StepStatus::Cancelled);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'")
            .await,
        0
    );
    let events = app.events(&id).await;
    assert!(
        events
            .iter()
            .any(|(k, _, m)| k == "CANCEL_REQUESTED" && m.contains("changed their mind"))
    );

    let err = client.cancel_provisioning(cancel).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "a CANCELLED tenant cannot be cancelled"
    );
    let err = client
        .retry_provisioning(RetryProvisioningRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "only FAILED tenants are retried"
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    let err = client
        .retry_provisioning(RetryProvisioningRequest { tenant_id: unknown })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resumes_at_the_first_undone_step_and_skips_what_still_stands() {
    let once = Scripted {
        compensable: false,
        ..Scripted::new("once")
    };
    let switch = Scripted::new("switch");
    switch.failing.store(true, Ordering::SeqCst);
    let mut steps = Registry::new();
    steps.register(once.clone());
    steps.register(switch.clone());
    let app = TestApp::start_with(|_| {}, steps).await;
    app.add_plan(
        "switched",
        &[
            ("once", true, 1),
            ("create_schema", true, 3),
            ("switch", true, 2),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("acme", "switched").await;
    let id = created.id.clone();
    let failed = app.wait_for(&id, TenantState::Failed).await;
    assert_eq!(
        status_of(&failed, "once"),
        StepStatus::Succeeded,
        "not compensable, still stands"
    );
    assert_eq!(status_of(&failed, "create_schema"), StepStatus::Compensated);
    assert_eq!(switch.calls(), 2);

    switch.failing.store(false, Ordering::SeqCst);
    let resumed = app
        .client
        .clone()
        .retry_provisioning(RetryProvisioningRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(resumed.state, TenantState::Provisioning as i32);
    let t = app.wait_for(&id, TenantState::Active).await;
    assert_eq!(once.calls(), 1, "a standing step is not run again");
    assert_eq!(switch.calls(), 3, "the failed step runs again");
    assert_eq!(
        attempts_of(&t, "switch"),
        1,
        "attempts count afresh after a retry"
    );
    assert!(
        t.steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded as i32)
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'")
            .await,
        1
    );
    let events = app.events(&id).await;
    assert!(
        events
            .iter()
            .any(|(k, _, m)| k == "STATE_CHANGED" && m.contains("resuming at create_schema"))
    );
    let schema_runs = events
        .iter()
        .filter(|(k, s, _)| k == "STEP_SUCCEEDED" && s == "create_schema")
        .count();
    assert_eq!(schema_runs, 2, "compensated, so created again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_a_step_that_does_not_finish() {
    let gate = Scripted::gated("gate");
    let mut steps = Registry::new();
    steps.register(gate.clone());
    let mut app = TestApp::start_with(
        |c| c.shutdown_timeout = std::time::Duration::from_secs(2),
        steps,
    )
    .await;
    app.add_plan("gated", &[("gate", true, 3), ("activate", true, 1)])
        .await;
    let created = app.create("acme", "gated").await;
    while gate.calls() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox WHERE lease_owner IS NOT NULL")
            .await,
        1
    );

    app.shutdown().await;
    let released = format!(
        "SELECT count(*) FROM outbox WHERE tenant_id = '{}' AND step = 'gate' AND lease_owner IS NULL
         AND attempt = 0 AND available_at <= now()",
        created.id
    );
    assert_eq!(
        app.db.count(&released).await,
        1,
        "released, due now, the interrupted attempt not counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_seen_at_completion_undoes_the_step_that_just_succeeded() {
    let gate = Scripted::gated("gate");
    let mut steps = Registry::new();
    steps.register(gate.clone());
    // A long lease: no heartbeat sees the cancel before the step completes.
    let app = TestApp::start_with(|c| c.lease = std::time::Duration::from_secs(30), steps).await;
    app.add_plan(
        "gated",
        &[
            ("create_schema", true, 1),
            ("gate", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("acme", "gated").await;
    while gate.calls() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let cancel = CancelProvisioningRequest {
        tenant_id: created.id.clone(),
        reason: String::new(),
    };
    app.client
        .clone()
        .cancel_provisioning(cancel)
        .await
        .unwrap();
    gate.open(1);

    let t = app.wait_for(&created.id, TenantState::Cancelled).await;
    assert_eq!(
        status_of(&t, "gate"),
        StepStatus::Compensated,
        "the step that finished is undone"
    );
    assert_eq!(status_of(&t, "create_schema"), StepStatus::Compensated);
    assert_eq!(status_of(&t, "activate"), StepStatus::Cancelled);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_data_can_live_in_a_database_of_its_own() {
    let tenant_db = crate::common::TestDb::new().await;
    let (url, prefix) = (tenant_db.url().to_owned(), tenant_db.role_prefix.clone());
    // The roles own objects in the tenant database: they go when it goes.
    let app = TestApp::start_with(
        |c| {
            c.tenant_database_url = Some(url);
            c.tenant_role_prefix = prefix;
        },
        Registry::new(),
    )
    .await;
    let created = app.create("acme", "").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    assert!(
        t.steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded as i32)
    );
    let role = format!("{}acme", tenant_db.role_prefix);
    let owned = format!(
        "SELECT count(*) FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
         WHERE n.nspname = 'tenant_acme' AND r.rolname = '{role}'"
    );
    assert_eq!(tenant_db.count(&owned).await, 1);
    let schema = "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'";
    assert_eq!(
        tenant_db.count(schema).await,
        1,
        "the schema is in the tenant database"
    );
    assert_eq!(
        app.db.count(schema).await,
        0,
        "and not in the control plane's"
    );
    assert_eq!(
        tenant_db
            .count("SELECT count(*) FROM tenant_acme.roles")
            .await,
        3
    );
    assert_eq!(
        tenant_db
            .count("SELECT count(*) FROM tenant_acme.invitations")
            .await,
        1
    );
    app.stop().await;
}
