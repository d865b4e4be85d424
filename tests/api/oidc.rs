//! `register_oidc_client` against a real OpenID provider (npm
//! `oidc-provider` on loopback): one client per tenant, its secret handed
//! out once, deleted by deprovisioning and by the saga, retries while the
//! provider is away, no retries when it refuses, and one client after a
//! kill -9 between the provider's answer and its record.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tenantd::config::Config;
use tenantd::config::oidc::{ClientAuthMethod, OidcArgs};
use tenantd::proto::{
    DeprovisionMode, DeprovisionRequest, GetTenantCredentialsRequest, StepStatus, TenantState,
};
use tenantd::secrets::SecretKey;
use tenantd::steps::Registry;
use tonic::Code;

use crate::common::oidc::OidcProvider;
use crate::common::process::ServerProcess;
use crate::common::steps::Scripted;
use crate::common::{TestApp, TestDb};

const TEMPLATE: &str = "https://{slug}.app.example.com/auth/callback";

fn args(provider: &OidcProvider, method: ClientAuthMethod) -> OidcArgs {
    OidcArgs {
        oidc_issuer: Some(provider.issuer.clone()),
        oidc_registration_endpoint: None,
        oidc_initial_access_token: Some(provider.initial_access_token.clone()),
        oidc_redirect_uri_template: Some(TEMPLATE.into()),
        oidc_client_auth_method: method,
        oidc_jwks_uri: Some("https://keys.example.com/jwks.json".into()),
    }
}

fn configure(c: &mut Config, args: OidcArgs) {
    c.oidc = args.resolve().expect("flags");
    assert!(c.oidc.is_some());
    c.webhooks.secret_key = Some(Arc::new(
        SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
    ));
}

fn step<'a>(t: &'a tenantd::proto::Tenant, name: &str) -> &'a tenantd::proto::Step {
    t.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

/// The provider's clients whose software_id is the tenant's id.
async fn clients_of(provider: &OidcProvider, tenant: &str) -> Vec<serde_json::Value> {
    provider
        .clients()
        .await
        .into_iter()
        .filter(|c| c["software_id"] == tenant)
        .collect()
}

/// Every text the server shows about a tenant: outputs, step errors,
/// events.
async fn shown(app: &TestApp, t: &tenantd::proto::Tenant) -> String {
    let mut text = format!("{:?} {:?}", t.outputs, t.steps);
    for (kind, step, message) in app.events(&t.id).await {
        text.push_str(&format!("\n{kind} {step} {message}"));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_tenant_gets_one_client_its_secret_once_and_loses_the_client_when_deprovisioned() {
    let provider = OidcProvider::start().await;
    let app = TestApp::start_with(
        |c| configure(c, args(&provider, ClientAuthMethod::ClientSecretBasic)),
        Registry::new(),
    )
    .await;
    let created = app.create("acme", "sso").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    let client_id = t.outputs["oidc_client_id"].clone();
    assert_eq!(t.outputs["oidc_issuer"], provider.issuer);
    assert_eq!(step(&t, "register_oidc_client").attempts, 1);

    let clients = clients_of(&provider, &t.id).await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    let client = &clients[0];
    assert_eq!(client["client_id"], client_id.as_str());
    assert_eq!(client["client_name"], t.display_name.as_str());
    assert_eq!(
        client["redirect_uris"],
        serde_json::json!(["https://acme.app.example.com/auth/callback"])
    );
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_basic");
    let grants = client["grant_types"].as_array().unwrap();
    for grant in ["authorization_code", "refresh_token"] {
        assert!(grants.iter().any(|g| g == grant), "{grants:?}");
    }

    // The secret once, to an admin; it works at the provider's token
    // endpoint; the server then forgets it and says who took it.
    let mut client_api = app.client().await;
    let request = GetTenantCredentialsRequest {
        tenant_id: t.id.clone(),
    };
    let first = client_api
        .get_tenant_credentials(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.oidc_client_id, client_id);
    assert_eq!(first.oidc_token_endpoint_auth_method, "client_secret_basic");
    assert_eq!(first.oidc_issuer, provider.issuer);
    let secret = first.oidc_client_secret.clone();
    assert!(secret.len() >= 32, "{first:?}");
    assert_eq!(
        provider.client_credentials_token(&client_id, &secret).await,
        reqwest::StatusCode::OK
    );
    let second = client_api
        .get_tenant_credentials(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.oidc_client_secret, "");
    assert_eq!(second.secret_fetched_by, "anonymous");
    assert!(second.secret_fetch_time.is_some());
    let t = app.get(&t.id).await;
    let seen = shown(&app, &t).await;
    assert!(seen.contains("CREDENTIALS_FETCHED"), "{seen}");
    assert!(!seen.contains(&secret), "the secret is shown: {seen}");
    // At rest: sealed, and no longer there at all.
    let sealed = app
        .db
        .count(&format!(
            "SELECT count(*) FROM oidc_clients WHERE tenant_id = '{}'
               AND client_secret IS NULL AND get_byte(registration_access_token, 0) = 1",
            t.id
        ))
        .await;
    assert_eq!(sealed, 1);

    // Errors: no such tenant, a tenant without a client, a bad id.
    for (id, code) in [
        ("0190c5d8-0000-7000-8000-000000000000", Code::NotFound),
        ("not-a-uuid", Code::InvalidArgument),
    ] {
        let e = client_api
            .get_tenant_credentials(GetTenantCredentialsRequest {
                tenant_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{id}: {e:?}");
    }
    let plain = app.create("plain", "basic").await;
    let plain = app.wait_for(&plain.id, TenantState::Active).await;
    let e = client_api
        .get_tenant_credentials(GetTenantCredentialsRequest {
            tenant_id: plain.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Deprovisioning deletes the client at the provider.
    client_api
        .deprovision(DeprovisionRequest {
            tenant_id: t.id.clone(),
            mode: DeprovisionMode::Purge as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    app.wait_for(&t.id, TenantState::Deprovisioned).await;
    assert!(clients_of(&provider, &t.id).await.is_empty());
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM oidc_clients WHERE tenant_id = '{}'",
                t.id
            ))
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_step_that_fails_makes_the_saga_delete_the_client() {
    let provider = OidcProvider::start().await;
    let broken = Scripted::new("broken");
    broken.failing.store(true, Ordering::SeqCst);
    let mut steps = Registry::new();
    steps.register(broken.clone());
    let app = TestApp::start_with(
        |c| configure(c, args(&provider, ClientAuthMethod::PrivateKeyJwt)),
        steps,
    )
    .await;
    app.add_plan(
        "sso-doomed",
        &[
            ("create_schema", true, 3),
            ("register_oidc_client", true, 3),
            ("broken", true, 2),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("doomed", "sso-doomed").await;
    // While the later step retries, the client exists, without a secret.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = clients_of(&provider, &created.id).await;
        if let Some(c) = found.first() {
            assert_eq!(c["token_endpoint_auth_method"], "private_key_jwt");
            assert_eq!(c["jwks_uri"], "https://keys.example.com/jwks.json");
            assert!(c.get("client_secret").is_none_or(|s| s.is_null()), "{c}");
            break;
        }
        let t = app.get(&created.id).await;
        assert!(
            tokio::time::Instant::now() < deadline && t.state() == TenantState::Provisioning,
            "no client was registered: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = app.wait_for(&created.id, TenantState::Failed).await;
    assert_eq!(
        step(&t, "register_oidc_client").status(),
        StepStatus::Compensated
    );
    assert!(clients_of(&provider, &t.id).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_away_is_retried_and_a_wrong_initial_access_token_fails_at_once() {
    let mut provider = OidcProvider::start().await;
    let app = TestApp::start_with(
        |c| {
            configure(c, args(&provider, ClientAuthMethod::None));
            c.retry_base = Duration::from_millis(300);
            c.retry_cap = Duration::from_millis(600);
        },
        Registry::new(),
    )
    .await;
    // Two 503s, then an answer: three attempts, one client.
    provider.fail_next(503, 2).await;
    let flaky = app.create("flaky", "sso").await;
    let flaky = app.wait_for(&flaky.id, TenantState::Active).await;
    assert_eq!(step(&flaky, "register_oidc_client").attempts, 3);
    assert_eq!(clients_of(&provider, &flaky.id).await.len(), 1);
    let events = app.events(&flaky.id).await;
    assert!(
        events
            .iter()
            .any(|(kind, _, message)| kind == "STEP_RETRYING"
                && message.contains("503: temporarily_unavailable (injected failure)")),
        "{events:?}"
    );

    // The provider down: attempts go on until it is back.
    app.add_plan(
        "sso-patient",
        &[
            ("create_schema", true, 3),
            ("register_oidc_client", true, 20),
            ("activate", true, 1),
        ],
    )
    .await;
    provider.stop().await;
    let patient = app.create("patient", "sso-patient").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = app.get(&patient.id).await;
        let s = step(&t, "register_oidc_client");
        if s.attempts >= 2 {
            assert!(s.last_error.contains("cannot connect"), "{s:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{t:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    provider.restart().await;
    let patient = app.wait_for(&patient.id, TenantState::Active).await;
    assert_eq!(clients_of(&provider, &patient.id).await.len(), 1);
    app.stop().await;

    // A wrong initial access token: the provider's message, one attempt.
    let mut wrong = args(&provider, ClientAuthMethod::None);
    wrong.oidc_initial_access_token = Some("not-the-token".into());
    let app = TestApp::start_with(|c| configure(c, wrong), Registry::new()).await;
    let refused = app.create("refused", "sso").await;
    let refused = app.wait_for(&refused.id, TenantState::Failed).await;
    let s = step(&refused, "register_oidc_client");
    assert_eq!(s.attempts, 1, "no retry storm: {s:?}");
    assert!(
        s.last_error
            .contains("401: invalid_token (invalid token provided)"),
        "{s:?}"
    );
    assert!(!shown(&app, &refused).await.contains("not-the-token"));
    assert!(clients_of(&provider, &refused.id).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_providers_answer_and_its_record_leaves_one_client() {
    let provider = OidcProvider::start().await;
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let key = SecretKey::generate_base64();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let env = [
        ("TENANTD_OIDC_ISSUER", provider.issuer.as_str()),
        (
            "TENANTD_OIDC_INITIAL_ACCESS_TOKEN",
            provider.initial_access_token.as_str(),
        ),
        ("TENANTD_OIDC_REDIRECT_URI_TEMPLATE", TEMPLATE),
        ("TENANTD_OIDC_CLIENT_AUTH_METHOD", "client_secret_basic"),
        ("TENANTD_SECRET_KEY", key.as_str()),
    ];
    let server = ServerProcess::spawn_full(&db, mail.path(), 2_000, 4, &env, None).await;

    // The provider stores the client and holds its answer: kill -9 then.
    provider.hold_next_registration().await;
    let mut sso = crate::common::tenant("crashy");
    sso.plan = "sso".into();
    let tenant = server
        .client()
        .await
        .create_tenant(tenantd::proto::CreateTenantRequest {
            tenant: Some(sso),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !provider.holding().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill_9().await;
    provider.release().await;
    assert_eq!(clients_of(&provider, &tenant.id).await.len(), 1);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM oidc_clients WHERE tenant_id = '{}' AND client_id IS NULL AND unanswered = 1",
            tenant.id
        ))
        .await,
        1,
        "the intent was recorded before the registration went out"
    );

    let server = ServerProcess::spawn_full(&db, mail.path(), 2_000, 4, &env, None).await;
    let active = server.wait_active(&tenant.id).await;
    let clients = clients_of(&provider, &tenant.id).await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(
        clients[0]["client_id"],
        active.outputs["oidc_client_id"].as_str()
    );
    // The recorded registration is the provider's current one: its secret
    // is the one the token endpoint accepts.
    let credentials = server
        .client()
        .await
        .get_tenant_credentials(GetTenantCredentialsRequest {
            tenant_id: tenant.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        provider
            .client_credentials_token(&credentials.oidc_client_id, &credentials.oidc_client_secret)
            .await,
        reqwest::StatusCode::OK
    );
    server.terminate().await;
}

/// An attempt that finds a recorded registration reads it (RFC 7592 GET)
/// instead of registering again: here the first attempt registered and
/// recorded, its lease expired before its success was recorded, and the
/// next attempt found the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_finds_a_recorded_registration_reads_it() {
    use crate::common::hold::HoldOnce;
    use tenantd::outbox::hooks::Point;

    let provider = OidcProvider::start().await;
    let hold = HoldOnce::new("register_oidc_client", "PROVISION", Point::BeforeRecord);
    let app = TestApp::start_with_hooks(
        |c| configure(c, args(&provider, ClientAuthMethod::ClientSecretBasic)),
        Registry::new(),
        hold.hooks(),
    )
    .await;
    let created = app.create("twice", "sso").await;
    let held = hold.held().await;
    let first = clients_of(&provider, &created.id).await;
    assert_eq!(first.len(), 1);
    // The lease ends under the held worker; another claims the row.
    app.db
        .exec(&format!(
            "UPDATE outbox SET locked_until = now(), available_at = now() WHERE lease_token = {}",
            held.lease_token
        ))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = app.get(&created.id).await;
        if step(&t, "register_oidc_client").status() == StepStatus::Succeeded {
            assert_eq!(step(&t, "register_oidc_client").attempts, 2);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hold.release();
    let t = app.wait_for(&created.id, TenantState::Active).await;
    // The same client with the same secret: nothing was registered again.
    let now = clients_of(&provider, &created.id).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["client_id"], first[0]["client_id"]);
    assert_eq!(now[0]["client_secret"], first[0]["client_secret"]);
    assert!(first[0]["client_secret"].is_string(), "{first:?}");
    assert_eq!(
        t.outputs["oidc_client_id"],
        first[0]["client_id"].as_str().unwrap()
    );
    let events = app.events(&created.id).await;
    let succeeded = events
        .iter()
        .filter(|(kind, step, _)| kind == "STEP_SUCCEEDED" && step == "register_oidc_client")
        .count();
    assert_eq!(succeeded, 1, "{events:#?}");
    app.stop().await;
}
