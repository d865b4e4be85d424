//! Pebble, Let's Encrypt's ACME test server (Debian's `pebble`, installed
//! by `.ci/run`), on loopback, validating DNS-01 challenges against a given
//! DNS server, stopped when dropped.
//!
//! Debian's package ships no certificate for Pebble's own HTTPS listener,
//! so each start makes a throwaway CA and a `localhost`/`127.0.0.1` leaf;
//! `ca_file` is the CA to trust (tenantd's `--acme-ca-file`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::free_port;

pub struct Pebble {
    /// The ACME directory.
    pub directory_url: String,
    /// The CA that signs Pebble's HTTPS certificate, PEM.
    pub ca_file: PathBuf,
    management: String,
    http: reqwest::Client,
    dir: PathBuf,
    child: Child,
}

impl Pebble {
    /// Starts Pebble resolving names at `dns_server` (`host:port`), issuing
    /// certificates valid for `validity`, validating at once, and waits
    /// until it answers.
    pub async fn start(dns_server: &str, validity: Duration) -> Self {
        Self::start_with(dns_server, validity, true).await
    }

    /// [`Pebble::start`]; without `at_once`, Pebble waits a random 0-15 s
    /// before each validation, as it does by default to mimic a real CA.
    pub async fn start_with(dns_server: &str, validity: Duration, at_once: bool) -> Self {
        assert!(
            std::path::Path::new("/usr/bin/pebble").exists(),
            "pebble is not installed: .ci/run installs Debian's pebble"
        );
        let dir = tempfile::Builder::new()
            .prefix("tenantd-pebble-")
            .tempdir()
            .unwrap()
            .keep();
        let (ca_pem, cert_pem, key_pem) = listener_certificate();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), key_pem).unwrap();
        let (port, management_port) = (free_port(), free_port());
        let d = dir.display();
        std::fs::write(
            dir.join("pebble.json"),
            format!(
                r#"{{"pebble": {{
  "listenAddress": "127.0.0.1:{port}",
  "managementListenAddress": "127.0.0.1:{management_port}",
  "certificate": "{d}/cert.pem",
  "privateKey": "{d}/key.pem",
  "httpPort": 5002,
  "tlsPort": 5001,
  "ocspResponderURL": "",
  "externalAccountBindingRequired": false,
  "certificateValidityPeriod": {}
}}}}"#,
                validity.as_secs()
            ),
        )
        .unwrap();
        let mut command = Command::new("/usr/bin/pebble");
        if at_once {
            command.env("PEBBLE_VA_NOSLEEP", "1");
        }
        let child = command
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", dns_server])
            // Accept every nonce, and validate every order afresh (no reuse
            // of an earlier authorization).
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log(&dir))
            .stderr(log(&dir))
            .kill_on_drop(true)
            .spawn()
            .expect("start pebble");
        let http = https_client(&ca_pem);
        let pebble = Pebble {
            directory_url: format!("https://127.0.0.1:{port}/dir"),
            ca_file: dir.join("ca.pem"),
            management: format!("https://127.0.0.1:{management_port}"),
            http,
            dir,
            child,
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = pebble.http.get(&pebble.directory_url).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "pebble did not answer: {}",
                pebble.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pebble
    }

    /// Pebble's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// The root that issues tenants' certificates (new on every start),
    /// and the intermediate under it, PEM.
    pub async fn issuing_roots(&self) -> (String, String) {
        let get = |path: &'static str| async move {
            self.http
                .get(format!("{}{path}", self.management))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        (get("/roots/0").await, get("/intermediates/0").await)
    }

    /// What Pebble says of the certificate with this serial (lower-case
    /// hex): `Valid` or `Revoked`.
    pub async fn status(&self, serial: &str) -> String {
        let body: serde_json::Value = self
            .http
            .get(format!(
                "{}/cert-status-by-serial/{serial}",
                self.management
            ))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        body["Status"].as_str().unwrap_or_default().to_owned()
    }

    /// How many certificates Pebble issued (lines it logged).
    pub fn certificates_issued(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
    }

    /// Freezes the whole server (SIGSTOP): orders wait, requests hang.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets it go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("pebble runs").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} pebble");
    }
}

/// A throwaway CA and a leaf for `localhost` and `127.0.0.1` it signs:
/// (CA PEM, leaf PEM, leaf key PEM).
fn listener_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "tenantd test pebble CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// An HTTPS client that trusts only the CA in `ca_pem`.
fn https_client(ca_pem: &str) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn log(dir: &std::path::Path) -> std::fs::File {
    std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("pebble.log"))
        .unwrap()
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
