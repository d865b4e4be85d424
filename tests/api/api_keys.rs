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

use crate::common::TestApp;

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
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "backend");
    assert!(listed[0].revoke_time.is_none());

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
    let refused = verify(&mut keys, &new_text).await.unwrap_err();
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
    assert_eq!(all.len(), 2);
    let live = keys
        .list_api_keys(ListApiKeysRequest {
            tenant_id: tenant.id.clone(),
            include_revoked: false,
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert!(live.is_empty(), "{live:?}");

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
    let secret_of = |t: &str| t.rsplit('_').next().unwrap().to_owned();
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
        1,
        "a refused call made a key"
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
    let (head, secret) = text.rsplit_once('_').unwrap();
    let mut wrong_secret = secret.to_owned().into_bytes();
    wrong_secret[0] = if wrong_secret[0] == b'A' { b'B' } else { b'A' };
    let wrong_secret = format!("{head}_{}", String::from_utf8(wrong_secret).unwrap());
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
    let app = start(|c| c.api_keys.rate_limit = "2/1h".parse().unwrap()).await;
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
        2
    );
    app.stop().await;
}
