//! CreateTenant: the one-transaction write, idempotency, validation.

use tenantd::proto::{CreateTenantRequest, GetTenantRequest, TenantState};
use tonic::Code;

use crate::common::{TestApp, tenant, violated_fields};

fn create(slug: &str, request_id: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(tenant(slug)),
        request_id: request_id.into(),
        validate_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_writes_tenant_steps_event_and_outbox_together() {
    let app = TestApp::api_only().await;
    let mut client = app.client.clone();
    let mut req = create("acme", "");
    req.tenant.as_mut().unwrap().labels = [("env".to_owned(), "prod".to_owned())].into();
    let created = client
        .create_tenant(req)
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();

    assert_eq!(created.state, TenantState::Provisioning as i32);
    assert_eq!(created.plan, "default");
    assert_eq!(created.labels["env"], "prod");
    let names: Vec<_> = created.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "create_schema",
            "run_migrations",
            "seed_roles_and_admin",
            "issue_api_key",
            "deploy_contract",
            "send_welcome_email",
            "activate"
        ]
    );
    assert!(!created.steps[3].critical, "the API key is not critical");
    assert!(
        !created.steps[5].critical,
        "the welcome email is not critical"
    );
    assert!(!created.etag.is_empty());

    let id = &created.id;
    assert_eq!(
        app.db
            .count(&format!("SELECT count(*) FROM tenants WHERE id = '{id}'"))
            .await,
        1
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM tenant_steps WHERE tenant_id = '{id}' AND status = 'PENDING'"
            ))
            .await,
        7
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM events WHERE tenant_id = '{id}' AND kind = 'TENANT_CREATED'"
            ))
            .await,
        1
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM outbox WHERE tenant_id = '{id}' AND step = 'create_schema' AND operation = 'PROVISION'"
            ))
            .await,
        1
    );

    let got = client
        .get_tenant(GetTenantRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.tenant.unwrap(), created);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_last_insert_leaves_nothing_behind() {
    let app = TestApp::api_only().await;
    // Test-only fault: this database's outbox refuses every insert, so the
    // last write of CreateTenant's transaction fails.
    app.db
        .exec(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
             CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await;
    let err = app
        .client
        .clone()
        .create_tenant(create("acme", "req-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        !err.message().contains("refused"),
        "internal detail leaked: {}",
        err.message()
    );
    for table in ["tenants", "tenant_steps", "events", "outbox"] {
        assert_eq!(
            app.db.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} kept a row"
        );
    }

    // Once the fault is gone the same request succeeds: the failed attempt
    // did not burn the request id or the slug.
    app.db.exec("DROP TRIGGER refuse_outbox ON outbox").await;
    let created = app
        .client
        .clone()
        .create_tenant(create("acme", "req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.tenant.unwrap().slug, "acme");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_returns_the_same_tenant() {
    let app = TestApp::api_only().await;
    let mut client = app.client.clone();
    let first = client
        .create_tenant(create("acme", "r-42"))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let again = client
        .create_tenant(create("acme", "r-42"))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(app.db.count("SELECT count(*) FROM tenants").await, 1);
    assert_eq!(app.db.count("SELECT count(*) FROM events").await, 1);
    assert_eq!(app.db.count("SELECT count(*) FROM outbox").await, 1);

    let mut different = create("acme", "r-42");
    different.tenant.as_mut().unwrap().display_name = "Someone else".into();
    let err = client.create_tenant(different).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["request_id"]);
    assert_eq!(app.db.count("SELECT count(*) FROM tenants").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_with_one_request_id_make_one_tenant() {
    let app = TestApp::api_only().await;
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut client = app.client().await;
        calls.push(tokio::spawn(async move {
            client.create_tenant(create("acme", "same-request")).await
        }));
    }
    let mut ids = Vec::new();
    for call in calls {
        ids.push(
            call.await
                .unwrap()
                .expect("every replay succeeds")
                .into_inner()
                .tenant
                .unwrap()
                .id,
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "all calls return the same tenant");
    assert_eq!(app.db.count("SELECT count(*) FROM tenants").await, 1);
    assert_eq!(app.db.count("SELECT count(*) FROM outbox").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_slug_let_exactly_one_win() {
    let app = TestApp::api_only().await;
    let mut calls = Vec::new();
    for i in 0..8 {
        let mut client = app.client().await;
        calls.push(tokio::spawn(async move {
            client.create_tenant(create("acme", &format!("r{i}"))).await
        }));
    }
    let (mut won, mut taken) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) if e.code() == Code::AlreadyExists => taken += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((won, taken), (1, 7));
    assert_eq!(app.db.count("SELECT count(*) FROM tenants").await, 1);
    assert_eq!(app.db.count("SELECT count(*) FROM tenant_steps").await, 7);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_error_names_its_field_and_writes_nothing() {
    let app = TestApp::api_only().await;
    let mut client = app.client.clone();
    type Mutation = Box<dyn Fn(&mut CreateTenantRequest)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        ("missing tenant", Box::new(|r| r.tenant = None), "tenant"),
        (
            "empty slug",
            Box::new(|r| r.tenant.as_mut().unwrap().slug.clear()),
            "tenant.slug",
        ),
        (
            "short slug",
            Box::new(|r| r.tenant.as_mut().unwrap().slug = "ab".into()),
            "tenant.slug",
        ),
        (
            "uppercase slug",
            Box::new(|r| r.tenant.as_mut().unwrap().slug = "Acme".into()),
            "tenant.slug",
        ),
        (
            "injection slug",
            Box::new(|r| r.tenant.as_mut().unwrap().slug = "a'; DROP TABLE tenants;--".into()),
            "tenant.slug",
        ),
        (
            "confusable slug",
            Box::new(|r| r.tenant.as_mut().unwrap().slug = "аcme".into()),
            "tenant.slug",
        ),
        (
            "long slug",
            Box::new(|r| r.tenant.as_mut().unwrap().slug = "a".repeat(41)),
            "tenant.slug",
        ),
        (
            "empty name",
            Box::new(|r| r.tenant.as_mut().unwrap().display_name = "  ".into()),
            "tenant.display_name",
        ),
        (
            "1 MB name",
            Box::new(|r| r.tenant.as_mut().unwrap().display_name = "x".repeat(1 << 20)),
            "tenant.display_name",
        ),
        (
            "control char name",
            Box::new(|r| r.tenant.as_mut().unwrap().display_name = "a\u{0}b".into()),
            "tenant.display_name",
        ),
        (
            "empty email",
            Box::new(|r| r.tenant.as_mut().unwrap().admin_email.clear()),
            "tenant.admin_email",
        ),
        (
            "bad email",
            Box::new(|r| r.tenant.as_mut().unwrap().admin_email = "admin at acme".into()),
            "tenant.admin_email",
        ),
        (
            "an email whose domain no mail server can reach",
            Box::new(|r| r.tenant.as_mut().unwrap().admin_email = "FjO@69'cK-7#r4bTR8ub".into()),
            "tenant.admin_email",
        ),
        (
            "an email to an address literal",
            Box::new(|r| r.tenant.as_mut().unwrap().admin_email = "ops@[10.0.0.1]".into()),
            "tenant.admin_email",
        ),
        (
            "long email",
            Box::new(|r| {
                r.tenant.as_mut().unwrap().admin_email = format!("{}@x.test", "a".repeat(300))
            }),
            "tenant.admin_email",
        ),
        (
            "bad plan name",
            Box::new(|r| r.tenant.as_mut().unwrap().plan = "No Plan".into()),
            "tenant.plan",
        ),
        (
            "unknown plan",
            Box::new(|r| r.tenant.as_mut().unwrap().plan = "platinum".into()),
            "tenant.plan",
        ),
        (
            "bad request id",
            Box::new(|r| r.request_id = "a b".into()),
            "request_id",
        ),
        (
            "long request id",
            Box::new(|r| r.request_id = "r".repeat(65)),
            "request_id",
        ),
        (
            "too many labels",
            Box::new(|r| {
                r.tenant.as_mut().unwrap().labels =
                    (0..65).map(|i| (format!("k{i}"), "v".into())).collect()
            }),
            "tenant.labels",
        ),
        (
            "bad label key",
            Box::new(|r| {
                r.tenant.as_mut().unwrap().labels = [("Key!".to_owned(), "v".to_owned())].into()
            }),
            "tenant.labels[\"Key!\"]",
        ),
        (
            "long label value",
            Box::new(|r| {
                r.tenant.as_mut().unwrap().labels = [("k".to_owned(), "v".repeat(64))].into()
            }),
            "tenant.labels[\"k\"]",
        ),
    ];
    for (name, mutate, field) in cases {
        let mut req = create("acme", "");
        mutate(&mut req);
        let err = client.create_tenant(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert_eq!(violated_fields(&err), [field], "{name}");
        assert!(
            err.message().len() < 1000,
            "{name}: message echoes the input"
        );
    }
    assert_eq!(app.db.count("SELECT count(*) FROM tenants").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_only_returns_the_plan_and_writes_nothing() {
    let app = TestApp::api_only().await;
    let mut client = app.client.clone();
    let mut req = create("acme", "");
    req.validate_only = true;
    let preview = client
        .create_tenant(req.clone())
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(preview.id, "");
    assert_eq!(preview.steps.len(), 7);
    assert_eq!(preview.steps[0].name, "create_schema");
    assert_eq!(app.db.count("SELECT count(*) FROM tenants").await, 0);

    client.create_tenant(create("acme", "")).await.unwrap();
    let err = client.create_tenant(req).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::AlreadyExists,
        "validate_only reports a taken slug"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_whole() {
    let app = TestApp::api_only().await;
    let mut req = create("acme", "");
    req.tenant.as_mut().unwrap().display_name = "x".repeat(5 << 20);
    let err = app.client.clone().create_tenant(req).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert_ne!(err.code(), Code::Internal, "{err:?}");
    assert_eq!(app.db.count("SELECT count(*) FROM tenants").await, 0);
    app.stop().await;
}
