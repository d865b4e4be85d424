//! TLS and mutual TLS over loopback, with certificates made for the test.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tenantd::config::Tls;
use tenantd::steps::Registry;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::common::TestApp;

struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    client_cert: String,
    client_key: String,
}

/// A CA, a server certificate for `localhost` and a client certificate.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let issue = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue("localhost");
    let (client_cert, client_key) = issue("client");
    std::fs::write(dir.path().join("server.pem"), server_cert).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    Pki {
        dir,
        ca: ca.pem(),
        client_cert,
        client_key,
    }
}

/// A health check over `tls` (plaintext if `None`); an answer of either kind
/// must come within [`ANSWER_WITHIN`], so a handshake that stalls fails the
/// test by name instead of hanging it.
async fn health(app: &TestApp, tls: Option<ClientTlsConfig>) -> Result<i32, String> {
    tokio::time::timeout(ANSWER_WITHIN, check(app, tls))
        .await
        .expect("the server answers or refuses within 30 s")
}

/// Generous on a loaded 2-core machine; a handshake takes milliseconds.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

async fn check(app: &TestApp, tls: Option<ClientTlsConfig>) -> Result<i32, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{}", app.addr)).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.domain_name("localhost")).unwrap();
    }
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_handshakes() {
    let pki = pki();
    let files = |mutual: bool| Tls {
        cert_file: pki.dir.path().join("server.pem"),
        key_file: pki.dir.path().join("server.key"),
        client_ca_file: mutual.then(|| pki.dir.path().join("ca.pem")),
    };
    let trust = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca));

    let app = TestApp::start_with(|c| c.tls = Some(files(false)), Registry::new()).await;
    assert!(
        health(&app, Some(trust())).await.is_ok(),
        "TLS handshake and a call"
    );
    assert!(health(&app, None).await.is_err(), "plaintext is refused");
    let untrusted = ClientTlsConfig::new();
    assert!(
        health(&app, Some(untrusted)).await.is_err(),
        "an unknown CA is refused by the client"
    );
    app.stop().await;

    let app = TestApp::start_with(|c| c.tls = Some(files(true)), Registry::new()).await;
    assert!(
        health(&app, Some(trust())).await.is_err(),
        "mutual TLS wants a client certificate"
    );
    let identity = Identity::from_pem(&pki.client_cert, &pki.client_key);
    assert!(
        health(&app, Some(trust().identity(identity))).await.is_ok(),
        "with one, it works"
    );
    app.stop().await;
}
