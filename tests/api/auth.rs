//! Bearer-token authentication and scopes, with tokens from a standard JWT
//! library and from `tenantd token`.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tenantd::auth::Verifier;
use tenantd::proto::{
    CreateTenantRequest, DeprovisionRequest, GetTenantRequest, ListTenantsRequest,
};
use tenantd::steps::Registry;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::common::{TestApp, tenant};

const SECRET: &str = "a test secret of at least thirty-two bytes";

fn token(subject: &str, scope: &str, expires_in: i64, secret: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({"sub": subject, "scope": scope, "exp": now + expires_in});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

fn create(slug: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(tenant(slug)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_authenticate_and_scopes_authorize() {
    let app = TestApp::start_with(
        |c| c.auth = Some(Verifier::hs256(SECRET.as_bytes(), None, None)),
        Registry::new(),
    )
    .await;
    let mut client = app.client.clone();

    for (name, request) in [
        ("no token", Request::new(create("acme"))),
        ("garbage", with_token(create("acme"), "not.a.jwt")),
        (
            "expired",
            with_token(
                create("acme"),
                &token("alice", "tenants.admin", -120, SECRET),
            ),
        ),
        (
            "other secret",
            with_token(
                create("acme"),
                &token(
                    "alice",
                    "tenants.admin",
                    600,
                    "another secret of at least 32 bytes!!",
                ),
            ),
        ),
    ] {
        let err = client.create_tenant(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{name}");
        assert!(
            !err.message().contains("eyJ"),
            "{name}: the token is not echoed: {}",
            err.message()
        );
    }

    let reader = token("reader", "tenants.read", 600, SECRET);
    let err = client
        .create_tenant(with_token(create("acme"), &reader))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("tenants.write"));
    let listed = client
        .list_tenants(with_token(ListTenantsRequest::default(), &reader))
        .await;
    assert!(listed.is_ok(), "read scope lists");

    let writer = token(
        "alice@example.com",
        "tenants.read tenants.write",
        600,
        SECRET,
    );
    let created = client
        .create_tenant(with_token(create("acme"), &writer))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let actor = app
        .db
        .count(&format!(
            "SELECT count(*) FROM events WHERE tenant_id = '{}' AND kind = 'TENANT_CREATED' AND actor = 'alice@example.com'",
            created.id
        ))
        .await;
    assert_eq!(actor, 1, "the token's subject is the event's actor");
    let get = GetTenantRequest {
        tenant_id: created.id.clone(),
    };
    assert!(
        client.get_tenant(with_token(get, &writer)).await.is_ok(),
        "write includes read"
    );
    let deprovision = DeprovisionRequest {
        tenant_id: created.id.clone(),
        ..Default::default()
    };
    let err = client
        .deprovision(with_token(deprovision, &writer))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "deprovisioning needs tenants.admin"
    );

    // A label selector is anyone's; naming a server outright is an
    // operator's, and a refusal writes nothing.
    let placed = |slug: &str, placement: &str| CreateTenantRequest {
        tenant: Some(tenantd::proto::Tenant {
            placement: placement.into(),
            ..tenant(slug)
        }),
        ..Default::default()
    };
    let err = client
        .create_tenant(with_token(placed("named", "server=default"), &writer))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("tenants.admin"), "{}", err.message());
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM tenants WHERE slug = 'named'")
            .await,
        0
    );
    let err = client
        .create_tenant(with_token(placed("labelled", "region=eu"), &writer))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "a selector no server matches: {err:?}"
    );
    let admin = token("ops", "tenants.admin", 600, SECRET);
    let named = client
        .create_tenant(with_token(placed("named", "server=default"), &admin))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(named.database_server, "default");

    // Health stays open.
    let mut health = HealthClient::new(app.channel().await);
    assert!(
        health
            .check(HealthCheckRequest {
                service: String::new()
            })
            .await
            .is_ok()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenantd_token_mints_tokens_the_server_accepts() {
    let app = TestApp::start_with(
        |c| c.auth = Some(Verifier::hs256(SECRET.as_bytes(), None, None)),
        Registry::new(),
    )
    .await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args([
            "token",
            "--scopes",
            "tenants.read,tenants.write",
            "--subject",
            "ops-bot",
            "--ttl",
            "5m",
        ])
        .env("TENANTD_AUTH_HS256_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let minted = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let mut client = app.client.clone();
    let created = client
        .create_tenant(with_token(create("acme"), &minted))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let by_bot = format!(
        "SELECT count(*) FROM events WHERE tenant_id = '{}' AND actor = 'ops-bot'",
        created.id
    );
    assert_eq!(app.db.count(&by_bot).await, 1);

    // `serve` with a database but without auth refuses to start.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args([
            "serve",
            "--database-url",
            app.db.url(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("TENANTD_AUTH_HS256_SECRET")
        .env_remove("TENANTD_INSECURE_NO_AUTH")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--insecure-no-auth"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_principal_has_its_own_rate_limit() {
    let app = TestApp::start_with(
        |c| {
            c.auth = Some(Verifier::hs256(SECRET.as_bytes(), None, None));
            c.rate_limit = Some((1, 3));
        },
        Registry::new(),
    )
    .await;
    let mut client = app.client.clone();
    let (busy, calm) = (
        token("busy", "tenants.read", 600, SECRET),
        token("calm", "tenants.read", 600, SECRET),
    );
    for _ in 0..3 {
        client
            .list_tenants(with_token(ListTenantsRequest::default(), &busy))
            .await
            .unwrap();
    }
    let err = client
        .list_tenants(with_token(ListTenantsRequest::default(), &busy))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let retry = err
        .get_details_retry_info()
        .expect("retry info")
        .retry_delay
        .expect("a delay");
    assert!(
        retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(1),
        "{retry:?}"
    );
    assert!(
        client
            .list_tenants(with_token(ListTenantsRequest::default(), &calm))
            .await
            .is_ok(),
        "others are not limited"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_tokens_with_issuer_and_audience() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let public = key.public_key_pem();
    let verifier = Verifier::public_key(
        public.as_bytes(),
        Some("https://idp.example"),
        Some("tenantd"),
    )
    .unwrap();
    let app = TestApp::start_with(|c| c.auth = Some(verifier), Registry::new()).await;
    let signing = EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |iss: &str, aud: &str| {
        let claims = serde_json::json!({"sub": "svc", "scope": "tenants.read", "exp": now + 600, "iss": iss, "aud": aud});
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &signing).unwrap()
    };
    let mut client = app.client.clone();
    let good = sign("https://idp.example", "tenantd");
    assert!(
        client
            .list_tenants(with_token(ListTenantsRequest::default(), &good))
            .await
            .is_ok()
    );
    for (iss, aud) in [
        ("https://evil.example", "tenantd"),
        ("https://idp.example", "other"),
    ] {
        let err = client
            .list_tenants(with_token(ListTenantsRequest::default(), &sign(iss, aud)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{iss} {aud}");
    }
    // An HS256 token is not accepted by an EdDSA server.
    let hs = token("svc", "tenants.read", 600, SECRET);
    let err = client
        .list_tenants(with_token(ListTenantsRequest::default(), &hs))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    app.stop().await;
}
