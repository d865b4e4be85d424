//! `tls_certificate` against a real BIND 9 and a real ACME server (Pebble):
//! a certificate for the tenant's name by DNS-01, which verifies against
//! the CA's root and matches its key; the key handed out once; revoked when
//! the tenant goes; an order resumed after a kill; renewal before expiry.

use std::sync::Arc;
use std::time::Duration;

use tenantd::auth::Scope;
use tenantd::config::acme::AcmeConfig;
use tenantd::proto::{
    DeprovisionRequest, GetTenantCertificateRequest, GetTenantCertificateResponse, TenantState,
};
use tenantd::secrets::SecretKey;
use tenantd::steps::Registry;
use tonic::Code;

use crate::common::bind::{KEY_NAME, Named, ZONE};
use crate::common::pebble::Pebble;
use crate::common::process::ServerProcess;
use crate::common::{TestApp, TestDb, token, with_token};

/// The default plan's database steps, then the name and its certificate.
const STEPS: &[(&str, bool, i32)] = &[
    ("create_schema", true, 3),
    ("run_migrations", true, 3),
    ("seed_roles_and_admin", true, 3),
    ("dns_records", true, 3),
    ("tls_certificate", true, 3),
    ("activate", true, 3),
];

fn dns_config(named: &Named) -> tenantd::config::dns::DnsConfig {
    tenantd::config::dns::DnsConfig {
        server: named.server().parse().unwrap(),
        zone: format!("{ZONE}."),
        base_domain: format!("{ZONE}."),
        key_name: format!("{KEY_NAME}."),
        algorithm: tenantd::config::dns::TsigAlgorithm::HmacSha256,
        secret: named.secret.clone().into(),
        target: "app.example.com".into(),
    }
}

async fn start(named: &Named, pebble: &Pebble, renew_before: Duration) -> TestApp {
    start_with(named, pebble, renew_before, |_| {}).await
}

async fn start_with(
    named: &Named,
    pebble: &Pebble,
    renew_before: Duration,
    tweak: impl FnOnce(&mut tenantd::config::Config),
) -> TestApp {
    let (dns, directory_url, ca_file) = (
        dns_config(named),
        pebble.directory_url.clone(),
        pebble.ca_file.clone(),
    );
    let app = TestApp::start_with(
        move |c| {
            c.dns = Some(dns);
            c.acme = Some(AcmeConfig {
                directory_url,
                contact: vec!["mailto:ops@example.com".into()],
                ca_file: Some(ca_file),
            });
            c.webhooks.secret_key = Some(Arc::new(
                SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            ));
            c.schedules.renew_before = renew_before;
            c.schedules.renew_check_interval = Duration::from_secs(1);
            tweak(c);
        },
        Registry::new(),
    )
    .await;
    app.add_plan("tls", STEPS).await;
    app
}

async fn certificate(
    app: &TestApp,
    id: &str,
    include_private_key: bool,
) -> Result<GetTenantCertificateResponse, tonic::Status> {
    app.client()
        .await
        .get_tenant_certificate(GetTenantCertificateRequest {
            tenant_id: id.to_owned(),
            include_private_key,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Runs `openssl` with `args` in `dir`; its standard output.
fn openssl(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks a chain against Pebble's issuing root with `openssl verify`, for
/// `name`, and that `key_pem` is its key.
async fn assert_verifies(pebble: &Pebble, chain_pem: &str, name: &str, key_pem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (root, intermediate) = pebble.issuing_roots().await;
    std::fs::write(dir.path().join("root.pem"), root).unwrap();
    std::fs::write(dir.path().join("intermediate.pem"), intermediate).unwrap();
    std::fs::write(dir.path().join("chain.pem"), chain_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), key_pem).unwrap();
    let verified = openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "-verify_hostname",
            name,
            "chain.pem",
        ],
    );
    assert_eq!(verified.trim(), "chain.pem: OK");
    let from_cert = openssl(
        dir.path(),
        &["x509", "-in", "chain.pem", "-noout", "-pubkey"],
    );
    let from_key = openssl(dir.path(), &["pkey", "-in", "key.pem", "-pubout"]);
    assert_eq!(from_cert, from_key, "the key is not the certificate's");
    let text = openssl(dir.path(), &["pkey", "-in", "key.pem", "-noout", "-text"]);
    assert!(text.contains("prime256v1"), "not a P-256 key: {text}");
}

#[tokio::test]
async fn a_tenant_gets_a_certificate_for_its_name_and_it_is_revoked_when_the_tenant_goes() {
    let named = Named::start(&[]).await;
    let pebble = Pebble::start(&named.server(), Duration::from_secs(90 * 86_400)).await;
    let app = start(&named, &pebble, Duration::from_secs(30 * 86_400)).await;
    let started = std::time::Instant::now();
    let created = app.create("acme", "tls").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    println!(
        "create to ACTIVE with a DNS name and a certificate: {} ms",
        started.elapsed().as_millis()
    );
    let name = format!("acme.{ZONE}");
    let serial = t.outputs["tls_serial"].clone();
    assert!(!serial.is_empty());
    assert!(chrono::DateTime::parse_from_rfc3339(&t.outputs["tls_not_after"]).is_ok());
    assert_eq!(pebble.status(&serial).await, "Valid");
    assert!(
        named
            .dig(&format!("_acme-challenge.{name}"), "TXT")
            .await
            .is_empty(),
        "a challenge record was left behind"
    );

    // The chain for readers; the key once, for an admin.
    let chain = certificate(&app, &created.id, false).await.unwrap();
    assert_eq!(chain.dns_name, name);
    assert_eq!(chain.serial, serial);
    assert!(chain.private_key_pem.is_empty());
    // The key, once, through tenantctl into a file of the owner's alone.
    let files = tempfile::tempdir().unwrap();
    let key_file = files.path().join("key.pem");
    let (code, out, err) = crate::tenantctl::run(
        &app,
        &[
            "certificate",
            &created.id,
            "--key-out",
            key_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&serial) && out.contains("BEGIN CERTIFICATE"),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_pem = std::fs::read_to_string(&key_file).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_verifies(&pebble, &chain.certificate_chain_pem, &name, &key_pem).await;
    let again = certificate(&app, &created.id, true).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(again.message().contains("handed out already"), "{again:?}");
    let second_file = files.path().join("again.pem");
    let (code, _, err) = crate::tenantctl::run(
        &app,
        &[
            "certificate",
            &created.id,
            "--key-out",
            second_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("handed out already"), "{err}");
    assert!(!second_file.exists());
    let later = certificate(&app, &created.id, false).await.unwrap();
    assert!(later.key_fetch_time.is_some());
    assert!(!later.key_fetched_by.is_empty());
    let events = app.events(&created.id).await;
    let fetched: Vec<_> = events
        .iter()
        .filter(|(kind, _, message)| {
            kind == "CREDENTIALS_FETCHED" && message.contains("private key of TLS certificate")
        })
        .collect();
    assert_eq!(fetched.len(), 1, "{events:?}");
    let key_body = key_pem.lines().nth(1).unwrap().to_owned();
    assert!(
        events
            .iter()
            .all(|(_, _, message)| !message.contains(&key_body)),
        "the key is in an event"
    );
    // The key at rest is sealed.
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM tls_certificates WHERE tenant_id = '{}' AND private_key IS NULL",
                created.id
            ))
            .await,
        1,
        "a fetched key is kept"
    );

    // Bad input: a bad id, an unknown tenant, a tenant without a certificate.
    assert_eq!(
        certificate(&app, "nope", false).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        certificate(&app, &uuid::Uuid::new_v4().to_string(), false)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let plain = app.create("plain", "").await;
    app.wait_for(&plain.id, TenantState::Active).await;
    assert_eq!(
        certificate(&app, &plain.id, false)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    app.client()
        .await
        .deprovision(DeprovisionRequest {
            tenant_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.wait_for(&created.id, TenantState::Deprovisioned).await;
    assert_eq!(pebble.status(&serial).await, "Revoked");
    assert_eq!(
        certificate(&app, &created.id, false)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(named.dig(&name, "CNAME").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_certificate_close_to_its_end_is_renewed_and_the_new_serial_recorded() {
    let named = Named::start(&[]).await;
    // Certificates of two minutes, renewed in their last 100 seconds: the
    // job renews each about 20 seconds after it is issued.
    let pebble = Pebble::start(&named.server(), Duration::from_secs(120)).await;
    let mut app = start(&named, &pebble, Duration::from_secs(100)).await;
    let created = app.create("renewed", "tls").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    let first = t.outputs["tls_serial"].clone();
    let first_key = certificate(&app, &created.id, true)
        .await
        .unwrap()
        .private_key_pem;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let renewed = loop {
        let t = app.get(&created.id).await;
        if t.outputs["tls_serial"] != first {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not renewed: {:?}",
            app.events(&created.id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let second = renewed.outputs["tls_serial"].clone();
    assert_eq!(renewed.state, TenantState::Active as i32);
    let current = certificate(&app, &created.id, true).await.unwrap();
    assert_eq!(current.serial, second);
    assert!(current.not_after.unwrap().seconds > not_after_of(&t));
    assert_ne!(
        current.private_key_pem, first_key,
        "a renewal brings a new key"
    );
    assert_verifies(
        &pebble,
        &current.certificate_chain_pem,
        &format!("renewed.{ZONE}"),
        &current.private_key_pem,
    )
    .await;
    let events = app.events(&created.id).await;
    assert!(
        events
            .iter()
            .any(|(_, step, message)| step == "renew_certificate" && message.contains(&second)),
        "{events:?}"
    );
    assert!(
        named
            .dig(&format!("_acme-challenge.renewed.{ZONE}"), "TXT")
            .await
            .is_empty()
    );
    app.shutdown().await;
}

/// The `tls_not_after` output, in seconds since the epoch.
fn not_after_of(t: &tenantd::proto::Tenant) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&t.outputs["tls_not_after"])
        .unwrap()
        .timestamp()
}

#[tokio::test]
async fn readers_get_the_chain_and_only_an_admin_gets_the_key() {
    let named = Named::start(&[]).await;
    let pebble = Pebble::start(&named.server(), Duration::from_secs(86_400)).await;
    let app = start_with(&named, &pebble, Duration::from_secs(3600), |c| {
        c.auth = Some(tenantd::auth::Verifier::hs256(
            crate::common::AUTH_SECRET.as_bytes(),
            None,
            None,
        ))
    })
    .await;
    let admin = token(&[Scope::Admin], "ops-admin", None);
    let mut client = app.client().await;
    let mut ids = Vec::new();
    for slug in ["own-co", "other-co"] {
        let created = client
            .create_tenant(with_token(
                tenantd::proto::CreateTenantRequest {
                    tenant: Some(tenantd::proto::Tenant {
                        plan: "tls".into(),
                        ..crate::common::tenant(slug)
                    }),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .tenant
            .unwrap();
        ids.push(created.id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app
        .db
        .count("SELECT count(*) FROM tenants WHERE state = 'ACTIVE'")
        .await
        < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "not ACTIVE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (own, other) = (ids[0].clone(), ids[1].clone());
    let ask = |id: &str, include_private_key: bool, token: &str| {
        with_token(
            GetTenantCertificateRequest {
                tenant_id: id.to_owned(),
                include_private_key,
            },
            token,
        )
    };
    let reader = token(&[Scope::Read], "reader", None);
    let chain = client
        .get_tenant_certificate(ask(&own, false, &reader))
        .await
        .unwrap()
        .into_inner();
    assert!(chain.certificate_chain_pem.contains("BEGIN CERTIFICATE"));
    assert!(chain.private_key_pem.is_empty());
    let writer = token(&[Scope::Write], "writer", None);
    let refused = client
        .get_tenant_certificate(ask(&own, true, &writer))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let own_token = token(&[Scope::Admin], "own-admin", Some(&own));
    let mine = client
        .get_tenant_certificate(ask(&own, false, &own_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.serial, chain.serial);
    assert_eq!(
        client
            .get_tenant_certificate(ask(&other, false, &own_token))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound,
        "another tenant shows"
    );
    assert_eq!(
        client
            .get_tenant_certificate(ask(&own, true, &own_token))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // None of the refusals took the key.
    let key = client
        .get_tenant_certificate(ask(&own, true, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(key.private_key_pem.contains("PRIVATE KEY"));
    assert_eq!(key.key_fetched_by, "ops-admin");
    let fetched = app.events(&own).await;
    assert!(
        fetched
            .iter()
            .any(|(kind, _, message)| kind == "CREDENTIALS_FETCHED"
                && message.contains("fetched by ops-admin")),
        "{fetched:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_certificate_authority_that_does_not_answer_is_retried_then_the_name_is_removed() {
    let named = Named::start(&[]).await;
    let dns = dns_config(&named);
    let port = crate::common::free_port();
    let app = TestApp::start_with(
        move |c| {
            c.dns = Some(dns);
            c.acme = Some(AcmeConfig {
                directory_url: format!("https://127.0.0.1:{port}/dir"),
                contact: Vec::new(),
                ca_file: None,
            });
            c.webhooks.secret_key = Some(Arc::new(
                SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            ));
        },
        Registry::new(),
    )
    .await;
    app.add_plan("tls", STEPS).await;
    let created = app.create("unreached", "tls").await;
    let t = app.wait_for(&created.id, TenantState::Failed).await;
    let step = t
        .steps
        .iter()
        .find(|s| s.name == "tls_certificate")
        .unwrap();
    assert_eq!(step.attempts, 3, "{step:?}");
    assert!(
        step.last_error.contains("creating the ACME account"),
        "{step:?}"
    );
    assert!(
        named
            .dig(&format!("unreached.{ZONE}"), "CNAME")
            .await
            .is_empty(),
        "the saga left the name"
    );
    assert_eq!(app.db.count("SELECT count(*) FROM acme_accounts").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn without_a_certificate_authority_the_step_fails_at_once_with_a_clear_error() {
    let named = Named::start(&[]).await;
    let dns = dns_config(&named);
    let app = TestApp::start_with(|c| c.dns = Some(dns), Registry::new()).await;
    app.add_plan("tls", STEPS).await;
    let created = app.create("noca", "tls").await;
    let t = app.wait_for(&created.id, TenantState::Failed).await;
    let step = t
        .steps
        .iter()
        .find(|s| s.name == "tls_certificate")
        .unwrap();
    assert_eq!(step.attempts, 1);
    assert!(step.last_error.contains("--acme-directory-url"), "{step:?}");
    // The saga removed the name again.
    assert!(named.dig(&format!("noca.{ZONE}"), "CNAME").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_kill_while_the_order_waits_for_validation_ends_with_one_certificate_and_no_challenge_left()
 {
    let named = Named::start(&[]).await;
    // Pebble waits a random 0-15 s before it validates, as a real CA takes
    // its time.
    let pebble = Pebble::start_with(&named.server(), Duration::from_secs(86_400), false).await;
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let steps: Vec<_> = STEPS
        .iter()
        .map(|(n, c, m)| serde_json::json!({"name": n, "critical": c, "max_attempts": m}))
        .collect();
    db.exec(&format!(
        "INSERT INTO plans (name, steps) VALUES ('tls', '{}')",
        serde_json::Value::Array(steps)
    ))
    .await;
    let (server, secret) = (named.server(), named.secret.clone());
    let ca_file = pebble.ca_file.display().to_string();
    let secret_key = SecretKey::generate_base64();
    let env = [
        ("TENANTD_DNS_SERVER", server.as_str()),
        ("TENANTD_DNS_ZONE", ZONE),
        ("TENANTD_DNS_TSIG_KEY_NAME", KEY_NAME),
        ("TENANTD_DNS_TSIG_SECRET", secret.as_str()),
        ("TENANTD_DNS_TARGET", "app.example.com"),
        ("TENANTD_ACME_DIRECTORY_URL", pebble.directory_url.as_str()),
        ("TENANTD_ACME_CA_FILE", ca_file.as_str()),
        (
            "TENANTD_SECRET_KEY",
            secrecy::ExposeSecret::expose_secret(&secret_key),
        ),
    ];
    let process = ServerProcess::spawn_full(&db, mail.path(), 2_000, 4, &env, None).await;
    let created = process
        .client()
        .await
        .create_tenant(tenantd::proto::CreateTenantRequest {
            tenant: Some(tenantd::proto::Tenant {
                plan: "tls".into(),
                ..crate::common::tenant("killed")
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let challenge = format!("_acme-challenge.killed.{ZONE}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while named.dig(&challenge, "TXT").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no challenge answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The answer is out: the CA is to validate it. Freeze the CA, kill the
    // server, let the CA go on, start another server.
    pebble.pause();
    process.kill_9().await;
    let waiting = db
        .count(
            "SELECT count(*) FROM tls_certificates
             WHERE order_url IS NOT NULL AND order_key IS NULL AND chain_pem IS NULL",
        )
        .await;
    println!("at the kill: {waiting} order(s) waiting for validation");
    pebble.resume();
    let restarted = std::time::Instant::now();
    let process = ServerProcess::spawn_full(&db, mail.path(), 2_000, 4, &env, None).await;
    let t = process.wait_active(&created.id).await;
    println!(
        "restart to ACTIVE: {} ms (Pebble's random wait before validating included)",
        restarted.elapsed().as_millis()
    );
    assert_eq!(pebble.certificates_issued(), 1, "{}", pebble.log());
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM tls_certificates
             WHERE tenant_id = '{}' AND serial = '{}' AND order_url IS NULL
               AND private_key IS NOT NULL",
            created.id, t.outputs["tls_serial"]
        ))
        .await,
        1
    );
    assert_eq!(pebble.status(&t.outputs["tls_serial"]).await, "Valid");
    assert!(
        named.dig(&challenge, "TXT").await.is_empty(),
        "a challenge record was left behind"
    );
    assert_eq!(db.count("SELECT count(*) FROM outbox").await, 0);
    process.terminate().await;
}
