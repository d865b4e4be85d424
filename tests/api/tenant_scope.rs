//! Tenant-scoped callers: a token with a `tenant_id` claim (minted by
//! `tenantd token --tenant-id`) reaches its own tenant through the RPCs
//! about one tenant, sees another tenant exactly as one that does not
//! exist, lists only its own, and may call nothing else.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tenantd::auth::Verifier;
use tenantd::proto::plan_service_client::PlanServiceClient;
use tenantd::proto::tenant_config_service_client::TenantConfigServiceClient;
use tenantd::proto::usage_service_client::UsageServiceClient;
use tenantd::proto::{
    CancelUsageRequest, CheckQuotaRequest, CreateTenantRequest, GetProvisioningStatsRequest,
    GetTenantConfigRequest, GetTenantRequest, GetUsageSummaryRequest, ListMetersRequest,
    ListPlansRequest, ListTenantsRequest, QueryUsageRequest, RecordUsageRequest,
    StreamProvisioningStatusRequest, SuspendTenantRequest, UsageEvent, UsageResult,
};
use tenantd::steps::Registry;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

use crate::common::{TestApp, tenant};

const SECRET: &str = "a test secret of at least thirty-two bytes";

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// `tenantd token`, as an operator runs it.
async fn mint(args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .arg("token")
        .args(args)
        .env("TENANTD_AUTH_HS256_SECRET", SECRET)
        .output()
        .await
        .expect("tenantd token");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn usage(id: &str, tenant: &str) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        tenant_id: tenant.into(),
        meter: "api_calls".into(),
        value: 1.0,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_tenant_token_reaches_its_own_tenant_and_nothing_else() {
    let app = TestApp::start_with(
        |c| {
            c.auth = Some(Verifier::hs256(SECRET.as_bytes(), None, None));
            c.concurrency = 0;
        },
        Registry::new(),
    )
    .await;
    let operator = mint(&["--scopes", "tenants.admin"]).await;
    let mut tenants = app.client.clone();
    let mut ids = Vec::new();
    for slug in ["own-co", "other-co"] {
        let created = tenants
            .create_tenant(with_token(
                CreateTenantRequest {
                    tenant: Some(tenant(slug)),
                    ..Default::default()
                },
                &operator,
            ))
            .await
            .expect("create")
            .into_inner()
            .tenant
            .unwrap();
        ids.push(created.id);
    }
    let (own, other) = (ids[0].clone(), ids[1].clone());
    let missing = "0190c5d8-0000-7000-8000-000000000000".to_owned();
    let token = mint(&[
        "--scopes",
        "tenants.write",
        "--subject",
        "own-admin",
        "--tenant-id",
        &own,
    ])
    .await;
    let mut config = TenantConfigServiceClient::new(app.channel().await);
    let mut meters = UsageServiceClient::new(app.channel().await);

    // Its own tenant, configuration, stream and usage.
    let got = tenants
        .get_tenant(with_token(
            GetTenantRequest {
                tenant_id: own.clone(),
            },
            &token,
        ))
        .await
        .expect("own tenant")
        .into_inner();
    assert_eq!(got.tenant.unwrap().slug, "own-co");
    config
        .get_tenant_config(with_token(
            GetTenantConfigRequest {
                tenant_id: own.clone(),
            },
            &token,
        ))
        .await
        .expect("own config");
    for name in [own.as_str(), "own-co"] {
        let mut stream = tenants
            .stream_provisioning_status(with_token(
                StreamProvisioningStatusRequest {
                    tenant_id: name.into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("own stream")
            .into_inner();
        assert!(stream.message().await.expect("snapshot").is_some());
    }
    let listed = tenants
        .list_tenants(with_token(ListTenantsRequest::default(), &token))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed
            .tenants
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        [own.as_str()]
    );
    let recorded = meters
        .record_usage(with_token(
            RecordUsageRequest {
                events: vec![
                    usage("u1", &own),
                    usage("u2", &other),
                    usage("u3", &missing),
                ],
            },
            &token,
        ))
        .await
        .expect("record")
        .into_inner()
        .results;
    assert_eq!(recorded[0].result(), UsageResult::Accepted);
    // Another tenant and no tenant at all read the same.
    assert_eq!(recorded[1].result(), UsageResult::Rejected);
    assert_eq!(recorded[1].reason, format!("tenant {other} not found"));
    assert_eq!(recorded[2].reason, format!("tenant {missing} not found"));
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) AS n FROM usage_events WHERE tenant_id = '{other}'"
            ))
            .await,
        0
    );
    meters
        .query_usage(with_token(
            QueryUsageRequest {
                tenant_id: own.clone(),
                meter: "api_calls".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("own usage");
    meters
        .get_usage_summary(with_token(
            GetUsageSummaryRequest {
                tenant_id: own.clone(),
            },
            &token,
        ))
        .await
        .expect("own summary");
    let quota = meters
        .check_quota(with_token(
            CheckQuotaRequest {
                tenant_id: own.clone(),
                meter: "api_calls".into(),
                amount: 1.0,
            },
            &token,
        ))
        .await
        .expect("own quota")
        .into_inner();
    assert_eq!(quota.used, 1.0);

    // Another tenant is NOT_FOUND, worded as for one that does not exist.
    for id in [&other, &missing] {
        let errors = [
            tenants
                .get_tenant(with_token(
                    GetTenantRequest {
                        tenant_id: id.clone(),
                    },
                    &token,
                ))
                .await
                .unwrap_err(),
            config
                .get_tenant_config(with_token(
                    GetTenantConfigRequest {
                        tenant_id: id.clone(),
                    },
                    &token,
                ))
                .await
                .unwrap_err(),
            tenants
                .stream_provisioning_status(with_token(
                    StreamProvisioningStatusRequest {
                        tenant_id: id.clone(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .map(|_| ())
                .unwrap_err(),
            meters
                .query_usage(with_token(
                    QueryUsageRequest {
                        tenant_id: id.clone(),
                        meter: "api_calls".into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .unwrap_err(),
            meters
                .get_usage_summary(with_token(
                    GetUsageSummaryRequest {
                        tenant_id: id.clone(),
                    },
                    &token,
                ))
                .await
                .unwrap_err(),
            meters
                .check_quota(with_token(
                    CheckQuotaRequest {
                        tenant_id: id.clone(),
                        meter: "api_calls".into(),
                        amount: 1.0,
                    },
                    &token,
                ))
                .await
                .unwrap_err(),
        ];
        for e in errors {
            assert_eq!(
                (e.code(), e.message()),
                (Code::NotFound, format!("tenant {id} not found").as_str()),
                "{e:?}"
            );
        }
    }
    let by_slug = tenants
        .stream_provisioning_status(with_token(
            StreamProvisioningStatusRequest {
                tenant_id: "other-co".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        (by_slug.code(), by_slug.message()),
        (Code::NotFound, "tenant other-co not found")
    );

    // Everything else is PERMISSION_DENIED, even on its own tenant.
    let mut plans = PlanServiceClient::new(app.channel().await);
    let denied = [
        tenants
            .create_tenant(with_token(
                CreateTenantRequest {
                    tenant: Some(tenant("third-co")),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .map(|_| ()),
        tenants
            .suspend_tenant(with_token(
                SuspendTenantRequest {
                    tenant_id: own.clone(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .map(|_| ()),
        tenants
            .get_provisioning_stats(with_token(GetProvisioningStatsRequest::default(), &token))
            .await
            .map(|_| ()),
        plans
            .list_plans(with_token(ListPlansRequest::default(), &token))
            .await
            .map(|_| ()),
        meters
            .list_meters(with_token(ListMetersRequest {}, &token))
            .await
            .map(|_| ()),
        meters
            .cancel_usage(with_token(
                CancelUsageRequest {
                    tenant_id: own.clone(),
                    meter: "api_calls".into(),
                    ids: vec!["u1".into()],
                },
                &token,
            ))
            .await
            .map(|_| ()),
    ];
    for (i, result) in denied.into_iter().enumerate() {
        let e = result.expect_err("denied");
        assert_eq!(e.code(), Code::PermissionDenied, "{i}: {e:?}");
    }
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tenants").await, 2);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) AS n FROM tenants WHERE id = '{own}' AND state = 'PROVISIONING'"
            ))
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_claim_that_is_not_a_uuid_is_refused() {
    let app = TestApp::start_with(
        |c| {
            c.auth = Some(Verifier::hs256(SECRET.as_bytes(), None, None));
            c.concurrency = 0;
        },
        Registry::new(),
    )
    .await;
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"sub": "x", "scope": "tenants.admin", "exp": exp, "tenant_id": "everyone"});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let e = app
        .client
        .clone()
        .list_tenants(with_token(ListTenantsRequest::default(), &token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("tenant_id"), "{e:?}");
    // A malformed --tenant-id never becomes a token.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["token", "--scopes", "tenants.read", "--tenant-id", "acme"])
        .env("TENANTD_AUTH_HS256_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    app.stop().await;
}
