//! No secret in a log line, an error, an event or a webhook delivery: a
//! full run of the server process with debug JSON logs, then a search of
//! everything it wrote and sent.

use std::time::Duration;

use secrecy::ExposeSecret;
use tenantd::bench::smtp::SmtpSink;
use tenantd::proto::webhook_service_client::WebhookServiceClient;
use tenantd::proto::{
    CreateEndpointRequest, CreateTenantRequest, DeprovisionRequest, Endpoint, GetTenantRequest,
    RotateEndpointSecretRequest, TenantState,
};
use tonic::Request;
use tonic::metadata::MetadataValue;

use crate::common::process::ServerProcess;
use crate::common::receiver::Receiver;
use crate::common::{TestDb, tenant};

const AUTH_SECRET: &str = "jwt-secret-0123456789-abcdefghijklmnop";
const SMTP_PASSWORD: &str = "smtp-password-s3cr3t";

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_or_events() {
    let db = TestDb::new().await;
    let smtp = SmtpSink::start().await.unwrap();
    let mail = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("tenantd.log");
    let smtp_url = format!("smtp://bot:{SMTP_PASSWORD}@{}", smtp.addr);
    let receiver = Receiver::start().await;
    let secret_key = tenantd::secrets::SecretKey::generate_base64();
    let env = [
        ("TENANTD_AUTH_HS256_SECRET", AUTH_SECRET),
        ("TENANTD_SMTP_URL", smtp_url.as_str()),
        ("TENANTD_SECRET_KEY", secret_key.expose_secret()),
        ("TENANTD_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("TENANTD_LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
    ];
    let server = ServerProcess::spawn_full(&db, mail.path(), 5000, 8, &env, Some(&log)).await;
    let mint = |scopes: &str| {
        let secret = AUTH_SECRET.as_bytes();
        let scopes = tenantd::auth::parse_scopes(scopes).unwrap();
        tenantd::auth::mint_hs256(
            secret,
            "auditor",
            &scopes,
            Duration::from_secs(600),
            None,
            None,
        )
        .unwrap()
    };
    let admin = mint("tenants.admin");
    let mut client = server.client().await;

    // A refused token, then a whole life: create, provision, deprovision.
    let refused = client
        .get_tenant(bearer(
            GetTenantRequest {
                tenant_id: uuid::Uuid::now_v7().to_string(),
            },
            "x.y.z",
        ))
        .await;
    assert!(refused.is_err());
    // A subscribed endpoint whose secret is rotated once: two secrets.
    let mut webhooks = WebhookServiceClient::new(server.channel().await);
    let endpoint = Endpoint {
        name: "audit".into(),
        url: receiver.url("/hook"),
        event_types: vec!["*".into()],
        ..Default::default()
    };
    let first_secret = webhooks
        .create_endpoint(bearer(
            CreateEndpointRequest {
                endpoint: Some(endpoint),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let webhook_secret = webhooks
        .rotate_endpoint_secret(bearer(
            RotateEndpointSecretRequest {
                name: "audit".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let create = CreateTenantRequest {
        tenant: Some(tenant("acme")),
        ..Default::default()
    };
    let id = client
        .create_tenant(bearer(create, &admin))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
        .id;
    let reader = client.clone();
    let wait = |state: TenantState| {
        let (mut client, id, admin) = (reader.clone(), id.clone(), admin.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let t = client
                    .get_tenant(bearer(
                        GetTenantRequest {
                            tenant_id: id.clone(),
                        },
                        &admin,
                    ))
                    .await
                    .unwrap();
                if t.into_inner().tenant.unwrap().state == state as i32 {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "never {state:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait(TenantState::Active).await;
    let deprovision = DeprovisionRequest {
        tenant_id: id.clone(),
        ..Default::default()
    };
    client
        .deprovision(bearer(deprovision, &admin))
        .await
        .unwrap();
    wait(TenantState::Deprovisioned).await;
    receiver
        .wait("the deprovisioned event", |r| {
            r.iter().any(|r| r.json()["type"] == "tenant.deprovisioned")
        })
        .await;
    server.terminate().await;
    for r in receiver.received() {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        for secret in [
            first_secret.as_str(),
            webhook_secret.as_str(),
            secret_key.expose_secret(),
        ] {
            assert!(!body.contains(secret), "a secret in a delivery: {body}");
        }
    }

    let messages = smtp.messages();
    assert_eq!(
        messages.len(),
        2,
        "welcome and deprovision notice, sent with the SMTP credentials"
    );
    let body = messages[0].replace("=\n", "").replace("=3D", "=");
    let invitation: String = body
        .split("token=")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(invitation.len(), 43);

    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.lines().count() > 10, "debug logs were captured");
    assert!(written.contains(&id), "the logs cover the tenant's run");
    let stored = db
        .count(&format!(
            "SELECT count(*) FROM (SELECT message AS t FROM events UNION ALL SELECT coalesce(last_error, '') || output::text FROM tenant_steps
             UNION ALL SELECT outputs::text || state_reason FROM tenants
             UNION ALL SELECT payload::text || coalesce(last_error, '') FROM webhook_deliveries
             UNION ALL SELECT url || description || disabled_reason FROM webhook_endpoints) x
             WHERE t LIKE '%{AUTH_SECRET}%' OR t LIKE '%{SMTP_PASSWORD}%' OR t LIKE '%{invitation}%' OR t LIKE '%{admin}%'
                OR t LIKE '%{first_secret}%' OR t LIKE '%{webhook_secret}%' OR t LIKE '%{}%'",
            secret_key.expose_secret()
        ))
        .await;
    assert_eq!(
        stored, 0,
        "a secret in the database's events, steps or outputs"
    );
    for (name, secret) in [
        ("JWT secret", AUTH_SECRET),
        ("SMTP password", SMTP_PASSWORD),
        ("invitation token", invitation.as_str()),
        ("bearer token", admin.as_str()),
        ("refused token", "x.y.z"),
        ("webhook secret", first_secret.as_str()),
        ("rotated webhook secret", webhook_secret.as_str()),
        ("secret key", secret_key.expose_secret()),
    ] {
        assert!(!written.contains(secret), "the {name} appears in the logs");
    }
}
