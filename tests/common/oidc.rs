//! A real OpenID provider (node-oidc-provider 9, tests/examples/node/
//! oidc_provider.mjs) on loopback, with dynamic client registration behind
//! an initial access token, and the script's test-only control endpoints
//! (`/__test/*`): list the stored clients, hold a registration's response,
//! inject failures at the registration endpoint.
//!
//! Its registration endpoint is `<issuer>/reg`. A registration with a
//! `software_id` gets the client id `tenantd-<software_id>` (registering it
//! again overwrites that client), and every client with a secret or keys
//! may use `grant_type=client_credentials` (see the script's header).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

/// How long the provider may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A cold setup downloads the examples' Python and npm packages.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// One request to the provider (a held registration is not one of these).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SIGTERM has before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs tests/examples/setup.sh (which installs oidc-provider) once per
/// test process; it returns at once when nothing changed.
async fn setup() {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let script = root().join("tests/examples/setup.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(SETUP_TIMEOUT, output)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} did not finish within {SETUP_TIMEOUT:?}",
                    script.display()
                )
            })
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed\nstdout:\n{}\nstderr:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    })
    .await;
}

/// Plain HTTP to loopback: no proxy, no pooled connections (they would
/// outlive a restart).
fn http_client() -> reqwest::Client {
    // reqwest builds its TLS configuration up front even for plain HTTP.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS set-up")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(REQUEST_TIMEOUT)
        .build()
        .expect("HTTP client")
}

/// The running provider process.
pub struct OidcProvider {
    /// `http://127.0.0.1:<port>`, where discovery is
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// What registrations must carry as `Authorization: Bearer`.
    pub initial_access_token: String,
    port: u16,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Starts a provider on a free port with a random initial access token.
    pub async fn start() -> Self {
        setup().await;
        let token = format!("iat-{}", uuid::Uuid::new_v4().simple());
        let stderr = Arc::new(Mutex::new(String::new()));
        let (child, port) = spawn(0, &token, &stderr).await;
        OidcProvider {
            issuer: format!("http://127.0.0.1:{port}"),
            initial_access_token: token,
            port,
            child: Some(child),
            stderr,
            http: http_client(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `<issuer>/reg`.
    pub fn registration_endpoint(&self) -> String {
        format!("{}/reg", self.issuer)
    }

    /// What the process wrote to stderr so far (quiet unless it failed).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Ends the process (SIGTERM, then SIGKILL after a while) and waits for
    /// it; a held registration's connection is closed unanswered.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port with the same initial access token;
    /// everything it stored (clients, tokens) is gone.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (child, port) = spawn(self.port, &self.initial_access_token, &self.stderr).await;
        assert_eq!(port, self.port);
        self.child = Some(child);
    }

    async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.issuer);
        let response = self
            .http
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {url}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
    }

    async fn post(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.issuer);
        let response = self
            .http
            .post(&url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST {url}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url}: {e}: {text}"))
    }

    /// The metadata of every stored client (`client_id`, `client_name`,
    /// `software_id`, `redirect_uris`, `grant_types`,
    /// `token_endpoint_auth_method`, `client_secret`, ...).
    pub async fn clients(&self) -> Vec<Value> {
        match self.get("/__test/clients").await {
            Value::Array(clients) => clients,
            other => panic!("/__test/clients: not an array: {other}"),
        }
    }

    /// The next POST to the registration endpoint is processed (the client
    /// stored) but its response is held until [`Self::release`].
    pub async fn hold_next_registration(&self) {
        self.post("/__test/hold").await;
    }

    /// Whether a registration's response is being held now (its client is
    /// stored by then).
    pub async fn holding(&self) -> bool {
        self.get("/__test/held").await["held"]
            .as_bool()
            .expect("/__test/held answers {\"held\": bool}")
    }

    /// Sends the held response, if any (dropped if its client has gone),
    /// and disarms a hold not yet used.
    pub async fn release(&self) {
        self.post("/__test/release").await;
    }

    /// The next `count` requests to the registration endpoint (any method,
    /// `/reg` and `/reg/<client id>`) are answered with `status` and
    /// `{"error":"temporarily_unavailable","error_description":"injected failure"}`
    /// without reaching the provider. `count` 0 clears it.
    pub async fn fail_next(&self, status: u16, count: u32) {
        self.post(&format!("/__test/fail?status={status}&count={count}"))
            .await;
    }

    /// Whether the provider accepts the client's secret: a
    /// `grant_type=client_credentials` request to the discovered
    /// `token_endpoint` with HTTP Basic auth. 200 if so, 401 (invalid_client)
    /// for a wrong secret or an unknown client.
    pub async fn client_credentials_token(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> StatusCode {
        let discovery = self.get("/.well-known/openid-configuration").await;
        let token_endpoint = discovery["token_endpoint"]
            .as_str()
            .expect("discovery has a token_endpoint");
        // RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let response = self
            .http
            .post(token_endpoint)
            .timeout(REQUEST_TIMEOUT)
            .basic_auth(encode(client_id), Some(encode(client_secret)))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {token_endpoint}: {e}"));
        response.status()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Starts the script on `port` (0: a free one) and waits for its ready
/// line; returns the child and its port. A taken port (on a restart) is
/// retried for a few seconds.
async fn spawn(port: u16, token: &str, stderr: &Arc<Mutex<String>>) -> (Child, u16) {
    let script = root().join("tests/examples/node/oidc_provider.mjs");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut child = Command::new("node")
            .arg(&script)
            .current_dir(root().join("tests/examples/node"))
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_INITIAL_ACCESS_TOKEN", token)
            .env_remove("OIDC_VERBOSE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {}: {e}", script.display()));

        // Collects stderr for as long as the process runs.
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(stderr);
        let err_task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match err_pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });

        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
        let issuer = match ready {
            Ok(Ok(Some(line))) => serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["issuer"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("unexpected ready line {line:?}")),
            Ok(Ok(None)) => Err("it exited before its ready line".to_owned()),
            Ok(Err(e)) => Err(format!("reading its stdout: {e}")),
            Err(_) => Err(format!("no ready line within {READY_TIMEOUT:?}")),
        };
        match issuer {
            Ok(issuer) => {
                // Keeps stdout drained (the script prints nothing more).
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                let actual: u16 = issuer
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("issuer without a port: {issuer}"));
                return (child, actual);
            }
            Err(why) => {
                let _ = child.kill().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), err_task).await;
                let log = std::mem::take(&mut *stderr.lock().unwrap());
                if port != 0 && attempt < 20 && log.contains("EADDRINUSE") {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                panic!(
                    "oidc provider ({}) did not start: {why}\nstderr:\n{log}",
                    script.display()
                );
            }
        }
    }
}
