//! ApiKeyService against the real server: keys made, listed, rotated and
//! revoked; VerifyApiKey refusing everything but a good key of an ACTIVE
//! tenant, alike; the rate limit; the tenant's own token.

use std::sync::Arc;
use std::time::Duration;

use tenantd::proto::api_key_service_client::ApiKeyServiceClient;
use tenantd::proto::{
    CreateApiKeyRequest, ListApiKeysRequest, ResumeTenantRequest, RevokeApiKeyRequest,
    RotateApiKeyRequest, SuspendTenantRequest, TenantState, VerifyApiKeyRequest,
    VerifyApiKeyResponse,
};
use tenantd::secrets::SecretKey;
use tenantd::steps::Registry;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::common::{TestApp, token, with_token};

/// Characters of a key's secret part (32 bytes in unpadded base64); the
/// part may itself hold `_`, so it is taken by length.
const SECRET_CHARS: usize = 43;

fn secret_of(key: &str) -> &str {
    &key[key.len() - SECRET_CHARS..]
}

async fn start(tweak: impl FnOnce(&mut tenantd::config::Config)) -> TestApp {
    TestApp::start_with(
        |c| {
            c.webhooks.secret_key = Some(Arc::new(
                SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            ));
            tweak(c);
        },
        Registry::new(),
    )
    .await
}

async fn keys(app: &TestApp) -> ApiKeyServiceClient<Channel> {
    ApiKeyServiceClient::new(app.channel().await)
}

async fn create(
    keys: &mut ApiKeyServiceClient<Channel>,
    tenant: &str,
    name: &str,
) -> Result<(tenantd::proto::ApiKey, String), tonic::Status> {
    keys.create_api_key(CreateApiKeyRequest {
        tenant_id: tenant.to_owned(),
        name: name.to_owned(),
        scopes: vec!["orders:read".into(), "orders:write".into()],
        ttl: None,
    })
    .await
    .map(|r| {
        let r = r.into_inner();
        (r.api_key.unwrap(), r.key)
    })
}

async fn verify(
    keys: &mut ApiKeyServiceClient<Channel>,
    key: &str,
) -> Result<VerifyApiKeyResponse, tonic::Status> {
    keys.verify_api_key(VerifyApiKeyRequest {
        key: key.to_owned(),
        count_usage: false,
    })
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn keys_are_made_listed_rotated_and_revoked_and_verify_only_while_good() {
    let app = start(|_| {}).await;
    let tenant = app.create("keyed", "").await;
    app.wait_for(&tenant.id, TenantState::Active).await;
    let mut keys = keys(&app).await;

    let (made, text) = create(&mut keys, &tenant.id, "backend").await.unwrap();
    assert!(text.starts_with(&format!("tnd_{}_", made.id)), "{text}");
    assert_eq!(text.len(), 80);
    let v = verify(&mut keys, &text).await.unwrap();
    assert_eq!(v.tenant_id, tenant.id);
    assert_eq!(v.key_id, made.id);
    assert_eq!(v.tenant_state, TenantState::Active as i32);
    assert_eq!(v.scopes, ["orders:read", "orders:write"]);

    let listed = keys
        .list_api_keys(ListApiKeysRequest {
            tenant_id: tenant.id.clone(),
            include_revoked: false,
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    // The key provisioning made, then this one.
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["default", "backend"]);
    assert!(listed[1].revoke_time.is_none());

    // Rotation: both work during the grace, then only the new one.
    let rotated = keys
        .rotate_api_key(RotateApiKeyRequest {
            id: made.id.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let new_text = rotated.key.clone();
    let new = rotated.api_key.unwrap();
    assert_eq!(new.name, "backend");
    assert_eq!(rotated.previous.unwrap().replaced_by, new.id);
    assert!(
        verify(&mut keys, &text).await.is_ok(),
        "the old key in its grace"
    );
    assert_eq!(verify(&mut keys, &new_text).await.unwrap().key_id, new.id);
    let again = keys
        .rotate_api_key(RotateApiKeyRequest {
            id: made.id.clone(),
            grace_period: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        verify(&mut keys, &text).await.unwrap_err().code(),
        Code::Unauthenticated,
        "the old key after its grace"
    );
    assert!(verify(&mut keys, &new_text).await.is_ok());

    // Revocation.
    let revoked = keys
        .revoke_api_key(RevokeApiKeyRequest { id: new.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    assert!(revoked.revoke_time.is_some());
    // The revocation reaches the memory through the event hub: at once
    // when idle, within its one-second poll at worst.
    let refused = eventually_refused(&mut keys, &new_text).await;
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(refused.message(), "invalid API key");
    let all = keys
        .list_api_keys(ListApiKeysRequest {
            tenant_id: tenant.id.clone(),
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(all.len(), 3);
    let live = keys
        .list_api_keys(ListApiKeysRequest {
            tenant_id: tenant.id.clone(),
            include_revoked: false,
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    let live: Vec<&str> = live.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(live, ["default"]);

    // The log names the keys, never their text.
    let events = app.events(&tenant.id).await;
    for what in ["created", "rotated", "revoked"] {
        assert!(
            events
                .iter()
                .any(|(_, _, m)| m.contains("API key") && m.contains(what)),
            "{what}: {events:?}"
        );
    }
    let secret_of = |t: &str| secret_of(t).to_owned();
    for (_, _, m) in &events {
        assert!(!m.contains(&secret_of(&text)) && !m.contains(&secret_of(&new_text)));
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_field_and_change_nothing() {
    let app = start(|_| {}).await;
    let tenant = app.create("checked", "").await;
    app.wait_for(&tenant.id, TenantState::Active).await;
    let mut keys = keys(&app).await;
    let field = |s: &tonic::Status| {
        s.get_error_details()
            .bad_request()
            .map(|b| b.field_violations[0].field.clone())
            .unwrap_or_default()
    };
    let bad = keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: "nope".into(),
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), field(&bad).as_str()),
        (Code::InvalidArgument, "tenant_id")
    );
    let bad = keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: tenant.id.clone(),
            name: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), field(&bad).as_str()),
        (Code::InvalidArgument, "name")
    );
    let bad = keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: tenant.id.clone(),
            name: "x".into(),
            scopes: vec!["has space".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field(&bad), "scopes[0]");
    let bad = keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: tenant.id.clone(),
            name: "x".into(),
            ttl: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field(&bad), "ttl");
    let missing = keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: uuid::Uuid::new_v4().to_string(),
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        keys.revoke_api_key(RevokeApiKeyRequest { id: "nope".into() })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        keys.revoke_api_key(RevokeApiKeyRequest {
            id: uuid::Uuid::new_v4().simple().to_string()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    let (made, _) = create(&mut keys, &tenant.id, "x").await.unwrap();
    let long = keys
        .rotate_api_key(RotateApiKeyRequest {
            id: made.id.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 8 * 86_400,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(field(&long), "grace_period");
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM api_keys WHERE tenant_id = '{}'",
                tenant.id
            ))
            .await,
        2,
        "a refused call made a key (beside the provisioning key)"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_bad_key_is_refused_alike_and_random_input_never_breaks_verification() {
    let app = start(|_| {}).await;
    let tenant = app.create("fuzzed", "").await;
    app.wait_for(&tenant.id, TenantState::Active).await;
    let mut keys = keys(&app).await;
    let (made, text) = create(&mut keys, &tenant.id, "good").await.unwrap();
    let (head, secret) = text.split_at(text.len() - SECRET_CHARS);
    let mut wrong_secret = secret.to_owned().into_bytes();
    wrong_secret[0] = if wrong_secret[0] == b'A' { b'B' } else { b'A' };
    let wrong_secret = format!("{head}{}", String::from_utf8(wrong_secret).unwrap());
    let unknown_id = text.replacen(&made.id, &uuid::Uuid::new_v4().simple().to_string(), 1);
    let other_prefix = text.replacen("tnd_", "abc_", 1);
    let (revoked, revoked_text) = create(&mut keys, &tenant.id, "gone").await.unwrap();
    keys.revoke_api_key(RevokeApiKeyRequest { id: revoked.id })
        .await
        .unwrap();
    let bad = [
        String::new(),
        "tnd".into(),
        "tnd__".into(),
        format!("{text} "),
        text.to_uppercase(),
        text[..text.len() - 1].to_owned(),
        format!("{text}x"),
        wrong_secret,
        unknown_id,
        other_prefix,
        revoked_text,
        "x".repeat(100_000),
        "tnd_\u{0}\u{1}".into(),
    ];
    for key in &bad {
        let refused = verify(&mut keys, key).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{key:.40}");
        assert_eq!(refused.message(), "invalid API key", "{key:.40}");
        assert!(refused.get_error_details().error_info().is_none());
    }
    // 10,000 random strings: each refused alike, the server still answers.
    let alphabet: Vec<char> = "tnd_abcdef0123456789-ABCXYZ\u{e9}\u{1f600} "
        .chars()
        .collect();
    for i in 0..10_000 {
        let len = (i * 7919) % 120;
        let s: String = (0..len)
            .map(|_| alphabet[rand::random_range(0..alphabet.len())])
            .collect();
        let s = if i % 3 == 0 { format!("tnd_{s}") } else { s };
        let refused = verify(&mut keys, &s).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{s:?}");
    }
    assert!(verify(&mut keys, &text).await.is_ok());
    // A deleted tenant's keys stop.
    app.client()
        .await
        .deprovision(tenantd::proto::DeprovisionRequest {
            tenant_id: tenant.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.wait_for(&tenant.id, TenantState::Deprovisioned).await;
    let gone = verify(&mut keys, &text).await.unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated);
    app.client()
        .await
        .delete_tenant(tenantd::proto::DeleteTenantRequest {
            tenant_id: tenant.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Deleted, the tenant is as unknown as a key never made (once the
    // deletion's event has reached the memory).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = verify(&mut keys, &text).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        if refused.message() == "invalid API key" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{refused:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_suspended_tenant_s_key_is_refused_with_its_state_until_it_resumes() {
    let app = start(|_| {}).await;
    let tenant = app.create("paused", "").await;
    app.wait_for(&tenant.id, TenantState::Active).await;
    let mut keys = keys(&app).await;
    let (_, text) = create(&mut keys, &tenant.id, "app").await.unwrap();
    assert!(verify(&mut keys, &text).await.is_ok());
    let mut tenants = app.client().await;
    tenants
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: tenant.id.clone(),
            reason: "unpaid".into(),
        })
        .await
        .unwrap();
    let refused = eventually_refused(&mut keys, &text).await;
    let info = refused.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "TENANT_NOT_ACTIVE");
    assert_eq!(info.metadata["tenant_state"], "SUSPENDED");
    tenants
        .resume_tenant(ResumeTenantRequest {
            tenant_id: tenant.id.clone(),
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while verify(&mut keys, &text).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

/// Verifies until refused (at most 10 s, a guard against a hang); the
/// refusal.
pub(crate) async fn eventually_refused(
    keys: &mut ApiKeyServiceClient<Channel>,
    text: &str,
) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match verify(keys, text).await {
            Err(e) => return e,
            Ok(_) => {
                assert!(tokio::time::Instant::now() < deadline, "still verifies");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[tokio::test]
async fn making_keys_is_rate_limited_per_tenant_with_the_time_to_wait() {
    // Provisioning makes the first of the three.
    let app = start(|c| c.api_keys.rate_limit = "3/1h".parse().unwrap()).await;
    let a = app.create("limited", "").await;
    let b = app.create("other", "").await;
    app.wait_for(&a.id, TenantState::Active).await;
    app.wait_for(&b.id, TenantState::Active).await;
    let mut keys = keys(&app).await;
    let (first, _) = create(&mut keys, &a.id, "one").await.unwrap();
    create(&mut keys, &a.id, "two").await.unwrap();
    let limited = create(&mut keys, &a.id, "three").await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let wait = limited
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap();
    assert!(
        wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600),
        "{wait:?}"
    );
    let rotation = keys
        .rotate_api_key(RotateApiKeyRequest {
            id: first.id,
            grace_period: None,
        })
        .await
        .unwrap_err();
    assert_eq!(rotation.code(), Code::ResourceExhausted);
    // Another tenant has its own allowance.
    create(&mut keys, &b.id, "one").await.unwrap();
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM api_keys WHERE tenant_id = '{}'",
                a.id
            ))
            .await,
        3
    );
    app.stop().await;
}

#[tokio::test]
async fn a_revocation_or_a_suspension_on_one_replica_is_honoured_by_the_other_and_no_key_is_kept_in_clear()
 {
    use crate::common::process::ServerProcess;
    let db = crate::common::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_key = SecretKey::generate_base64();
    let env = [
        (
            "TENANTD_SECRET_KEY",
            secrecy::ExposeSecret::expose_secret(&secret_key),
        ),
        ("RUST_LOG", "tenantd=debug,info"),
    ];
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = ServerProcess::spawn_full(&db, dir.path(), 2_000, 4, &env, Some(&log_a)).await;
    let b = ServerProcess::spawn_full(&db, dir.path(), 2_000, 4, &env, Some(&log_b)).await;
    let tenant = a.create("replicated").await;
    a.wait_active(&tenant.id).await;
    let mut on_a = ApiKeyServiceClient::new(a.channel().await);
    let mut on_b = ApiKeyServiceClient::new(b.channel().await);
    let (made, text) = create(&mut on_a, &tenant.id, "first").await.unwrap();
    let (_, second) = create(&mut on_a, &tenant.id, "second").await.unwrap();
    // B knows both (and keeps them in memory).
    assert_eq!(verify(&mut on_b, &text).await.unwrap().tenant_id, tenant.id);
    assert!(verify(&mut on_b, &second).await.is_ok());

    let revoked = std::time::Instant::now();
    on_a.revoke_api_key(RevokeApiKeyRequest { id: made.id })
        .await
        .unwrap();
    let refused = eventually_refused(&mut on_b, &text).await;
    println!(
        "revoked on A, refused on B after {} ms",
        revoked.elapsed().as_millis()
    );
    assert_eq!(refused.message(), "invalid API key");
    assert!(verify(&mut on_b, &second).await.is_ok());

    let suspended = std::time::Instant::now();
    a.client()
        .await
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: tenant.id.clone(),
            reason: "unpaid".into(),
        })
        .await
        .unwrap();
    let refused = eventually_refused(&mut on_b, &second).await;
    println!(
        "suspended on A, refused on B after {} ms",
        suspended.elapsed().as_millis()
    );
    assert_eq!(
        refused.get_error_details().error_info().unwrap().metadata["tenant_state"],
        "SUSPENDED"
    );

    // Nothing holds a key in clear: not the database, not the logs.
    a.terminate().await;
    b.terminate().await;
    let dump = tokio::process::Command::new("pg_dump")
        .args(["--dbname", db.url(), "--data-only"])
        .output()
        .await
        .expect("pg_dump");
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("replicated"), "the dump holds the data");
    let logs = std::fs::read_to_string(&log_a).unwrap() + &std::fs::read_to_string(&log_b).unwrap();
    assert!(logs.contains("DEBUG"), "the servers logged at debug level");
    for key in [&text, &second] {
        let secret = secret_of(key);
        assert!(!dump.contains(secret), "a key's secret is in the database");
        assert!(!logs.contains(secret), "a key's secret is in a log");
    }
}

/// The code of a call that must fail.
fn code_of<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => panic!("the call succeeded"),
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn a_tenant_s_own_token_manages_its_own_keys_and_a_gateway_only_verifies() {
    use tenantd::auth::Scope;
    let app = start(|c| {
        c.auth = Some(tenantd::auth::Verifier::hs256(
            crate::common::AUTH_SECRET.as_bytes(),
            None,
            None,
        ));
        c.concurrency = 0;
    })
    .await;
    let admin = token(&[Scope::Admin], "someone", None);
    let mut tenants = app.client().await;
    let mut ids = Vec::new();
    for slug in ["own-co", "other-co"] {
        let t = tenants
            .create_tenant(with_token(
                tenantd::proto::CreateTenantRequest {
                    tenant: Some(crate::common::tenant(slug)),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .tenant
            .unwrap();
        ids.push(t.id);
    }
    // No dispatcher: make them ACTIVE by hand, as provisioning would.
    app.db.exec("UPDATE tenants SET state = 'ACTIVE'").await;
    let (own, other) = (ids[0].clone(), ids[1].clone());
    let mut keys = keys(&app).await;
    let mine = token(&[Scope::Write], "someone", Some(&own));
    let request = |tenant: &str| CreateApiKeyRequest {
        tenant_id: tenant.to_owned(),
        name: "app".into(),
        ..Default::default()
    };
    let made = keys
        .create_api_key(with_token(request(&own), &mine))
        .await
        .unwrap()
        .into_inner();
    let theirs = keys
        .create_api_key(with_token(request(&other), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code_of(
            keys.create_api_key(with_token(request(&other), &mine))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code_of(
            keys.list_api_keys(with_token(
                ListApiKeysRequest {
                    tenant_id: other.clone(),
                    include_revoked: true
                },
                &mine
            ))
            .await
        ),
        Code::NotFound
    );
    let other_id = theirs.api_key.unwrap().id;
    assert_eq!(
        code_of(
            keys.revoke_api_key(with_token(RevokeApiKeyRequest { id: other_id }, &mine))
                .await
        ),
        Code::NotFound
    );
    let listed = keys
        .list_api_keys(with_token(
            ListApiKeysRequest {
                tenant_id: own.clone(),
                include_revoked: false,
            },
            &mine,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(listed.len(), 1);
    // Verification is the gateways' scope: not a tenant's, not a writer's.
    let ask = || VerifyApiKeyRequest {
        key: made.key.clone(),
        count_usage: false,
    };
    assert_eq!(
        code_of(keys.verify_api_key(with_token(ask(), &mine)).await),
        Code::PermissionDenied
    );
    let writer = token(&[Scope::Write], "someone", None);
    assert_eq!(
        code_of(keys.verify_api_key(with_token(ask(), &writer)).await),
        Code::PermissionDenied
    );
    let gateway = token(&[Scope::Verify], "someone", None);
    let verified = keys
        .verify_api_key(with_token(ask(), &gateway))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.tenant_id, own);
    assert_eq!(
        code_of(
            keys.create_api_key(with_token(request(&own), &gateway))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code_of(
            tenants
                .get_tenant(with_token(
                    tenantd::proto::GetTenantRequest {
                        tenant_id: own.clone()
                    },
                    &gateway
                ))
                .await
        ),
        Code::PermissionDenied,
        "tenants.verify grants nothing else"
    );
    assert!(keys.verify_api_key(with_token(ask(), &admin)).await.is_ok());
    app.stop().await;
}

/// Undoes quoted-printable soft breaks and `=3D`.
fn unquote(body: &str) -> String {
    body.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

#[tokio::test]
async fn provisioning_issues_a_first_key_that_the_welcome_email_alone_carries() {
    let smtp = tenantd::bench::smtp::SmtpSink::start().await.unwrap();
    let url = smtp.url();
    let app = start(|c| c.smtp_url = Some(url)).await;
    let created = app.create("welcomed", "").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    let key_id = t.outputs["api_key_id"].clone();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let body = unquote(&messages[0]);
    let start = body
        .find(&format!("tnd_{key_id}_"))
        .expect("the email carries the key");
    let text: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let mut keys = keys(&app).await;
    let v = verify(&mut keys, &text).await.unwrap();
    assert_eq!(v.tenant_id, created.id);
    let listed = keys
        .list_api_keys(ListApiKeysRequest {
            tenant_id: created.id.clone(),
            include_revoked: false,
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].created_by.as_str()),
        ("default", "system")
    );
    // Delivered: the sealed copy is gone, only the hash is kept; neither
    // the outputs nor the events hold the key.
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM api_keys WHERE delivery IS NOT NULL")
            .await,
        0
    );
    let secret = secret_of(&text);
    assert!(t.outputs.values().all(|v| !v.contains(secret)));
    assert!(
        app.events(&created.id)
            .await
            .iter()
            .all(|(_, _, m)| !m.contains(secret))
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_secrets_key_provisioning_says_no_key_was_issued_and_goes_on() {
    let app = TestApp::start_with(|_| {}, Registry::new()).await;
    let created = app.create("keyless", "").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    assert!(
        t.outputs["api_key"].contains("TENANTD_SECRET_KEY"),
        "{:?}",
        t.outputs
    );
    let refused = keys(&app)
        .await
        .create_api_key(CreateApiKeyRequest {
            tenant_id: created.id.clone(),
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("TENANTD_SECRET_KEY"));
    app.stop().await;
}

#[tokio::test]
async fn keys_are_managed_and_verified_from_the_command_line_and_their_use_is_recorded() {
    let app = start(|_| {}).await;
    let tenant = app.create("cli", "").await;
    app.wait_for(&tenant.id, TenantState::Active).await;
    let run = |args: Vec<String>| {
        let app = &app;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::tenantctl::run(app, &args).await
        }
    };
    let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let (code, out, err) = run(s(&[
        "apikey",
        "create",
        &tenant.id,
        "--name",
        "ci",
        "--scope",
        "deploy,read",
        "--ttl",
        "30days",
    ]))
    .await;
    assert_eq!(code, Some(0), "{err}");
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .map(|k| k.trim().to_owned())
        .unwrap();
    assert!(key.starts_with("tnd_"), "{out}");
    let (code, out, err) = run(s(&["apikey", "verify", &key, "--count-usage"])).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&tenant.id) && out.contains("deploy read"),
        "{out}"
    );
    let (code, out, _) = run(s(&["apikey", "list", &tenant.id, "-o", "json"])).await;
    assert_eq!(code, Some(0));
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = listed["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The use is recorded within the write interval: last used, and one
    // api_calls counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while app
        .db
        .count("SELECT count(*) FROM api_keys WHERE name = 'ci' AND last_used_time IS NOT NULL")
        .await
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "last use not recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted = format!(
        "SELECT coalesce(sum(value), 0)::bigint FROM usage_events
         WHERE tenant_id = '{}' AND meter = 'api_calls'",
        tenant.id
    );
    while app.db.count(&counted).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call was not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = run(s(&["apikey", "rotate", &id, "--grace", "1h"])).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("previous:") && out.contains(&id), "{out}");
    let (code, _, _) = run(s(&["apikey", "revoke", &id])).await;
    assert_eq!(code, Some(0));
    let (code, _, err) = run(s(&["apikey", "verify", &key])).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid API key"), "{err}");
    assert!(!err.contains(secret_of(&key)), "the key is echoed");
    app.stop().await;
}
