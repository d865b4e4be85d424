//! The clients of other languages under tests/examples (Python with grpcio,
//! Node with @grpc/grpc-js) and the README's `buf curl` session, run against
//! the server process with authentication on. tests/examples/setup.sh
//! installs what they need first (a venv and npm packages, buf included);
//! once done, it returns at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::common::TestDb;
use crate::common::process::ServerProcess;

const SECRET: &str = "examples: a secret of at least thirty-two bytes";
/// The subject of the clients' token, recorded as the actor of their events.
const SUBJECT: &str = "examples";
/// A cold setup downloads grpcio, grpcio-tools and the npm packages.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// One client run or one README command; provisioning takes about a second.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Marks the README block this test runs.
const SESSION_MARKER: &str = "<!-- CI runs the next block";
/// The endpoint the README's commands are written for.
const README_ENDPOINT: &str = "http://localhost:50051";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

async fn run(command: &mut Command, timeout: Duration) -> Output {
    let child = command.kill_on_drop(true).output();
    let output = tokio::time::timeout(timeout, child)
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The examples' Python interpreter, set up (with stellar-sdk).
pub(crate) async fn python() -> std::path::PathBuf {
    setup().await;
    root().join("target/examples/venv/bin/python")
}

/// Runs setup.sh once per test process.
async fn setup() {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let script = root().join("tests/examples/setup.sh");
        let out = run(Command::new("bash").arg(script), SETUP_TIMEOUT).await;
        assert!(out.ok, "tests/examples/setup.sh failed\n{out}");
    })
    .await;
}

/// `tenantd serve` with bearer-token auth on its own database, and a token
/// that may read and write.
struct Server {
    // Declared first so that it stops before its database is dropped.
    process: ServerProcess,
    db: TestDb,
    _mail: tempfile::TempDir,
    token: String,
}

impl Server {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let mail = tempfile::tempdir().expect("mail dir");
        let auth = [("TENANTD_AUTH_HS256_SECRET", SECRET)];
        let process = ServerProcess::spawn_full(&db, mail.path(), 5000, 8, &auth, None).await;
        let minted = run(
            Command::new(env!("CARGO_BIN_EXE_tenantd"))
                .args(["token", "--scopes", "tenants.read tenants.write"])
                .args(["--subject", SUBJECT, "--ttl", "10m"])
                .env("TENANTD_AUTH_HS256_SECRET", SECRET),
            RUN_TIMEOUT,
        )
        .await;
        assert!(minted.ok, "tenantd token\n{minted}");
        Server {
            process,
            db,
            _mail: mail,
            token: minted.stdout.trim().to_owned(),
        }
    }

    /// Runs a client example with the endpoint and, if given, the token.
    async fn client(&self, program: impl AsRef<Path>, script: &str, token: bool) -> Output {
        let mut command = Command::new(program.as_ref());
        command
            .arg(root().join(script))
            .env("TENANTD_ENDPOINT", self.process.addr.to_string())
            .env_remove("TENANTD_TOKEN");
        if token {
            command.env("TENANTD_TOKEN", &self.token);
        }
        run(&mut command, RUN_TIMEOUT).await
    }

    /// Tenants created by the token's subject that reached ACTIVE.
    async fn active_created_by_token(&self) -> i64 {
        self.db
            .count(&format!(
                "SELECT count(*) FROM tenants t WHERE t.state = 'ACTIVE' AND EXISTS (
                     SELECT 1 FROM events e WHERE e.tenant_id = t.id
                     AND e.kind = 'TENANT_CREATED' AND e.actor = '{SUBJECT}')"
            ))
            .await
    }

    async fn stop(self) {
        self.process.terminate().await;
    }
}

/// What every client example prints on the way to success.
fn assert_client_flow(out: &Output) {
    assert!(out.ok, "the example failed\n{out}");
    for expected in [
        "snapshot: PROVISIONING",
        "TENANT_CREATED -> PROVISIONING",
        "STEP_SUCCEEDED create_schema",
        "STATE_CHANGED activate -> ACTIVE",
        "is ACTIVE",
        "among them: ACTIVE",
    ] {
        assert!(out.stdout.contains(expected), "no {expected:?} in\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_creates_follows_and_lists_a_tenant() {
    setup().await;
    let server = Server::start().await;
    let python = root().join("target/examples/venv/bin/python");
    let script = "tests/examples/python/tenants.py";

    let refused = server.client(&python, script, false).await;
    assert!(
        !refused.ok && refused.stderr.contains("UNAUTHENTICATED"),
        "without a token the example fails\n{refused}"
    );
    let out = server.client(&python, script, true).await;
    assert_client_flow(&out);
    assert_eq!(server.active_created_by_token().await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_creates_follows_and_lists_a_tenant() {
    setup().await;
    let server = Server::start().await;
    let script = "tests/examples/node/tenants.js";

    let refused = server.client("node", script, false).await;
    assert!(
        !refused.ok && refused.stderr.contains("UNAUTHENTICATED"),
        "without a token the example fails\n{refused}"
    );
    let out = server.client("node", script, true).await;
    assert_client_flow(&out);
    assert_eq!(server.active_created_by_token().await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_buf_curl_session_runs_as_written() {
    setup().await;
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let (buf_block, grpcurl_block) = session_blocks(&readme);
    for path in method_paths(&buf_block) {
        assert!(
            grpcurl_block.contains(&path),
            "the grpcurl session next to the buf curl one has no {path}"
        );
    }

    let server = Server::start().await;
    let endpoint = format!("http://{}", server.process.addr);
    let bin: PathBuf = root().join("tests/examples/node/node_modules/.bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for command in commands(&buf_block) {
        let command = command.replace(README_ENDPOINT, &endpoint);
        let out = run(
            Command::new("bash")
                .args(["-e", "-o", "pipefail", "-c", &command])
                .env("PATH", &path)
                .env("TOKEN", &server.token),
            RUN_TIMEOUT,
        )
        .await;
        assert!(out.ok, "README command failed:\n{command}\n{out}");
        outputs.push((command, out.stdout));
    }
    let output_of = |what: &str| {
        outputs
            .iter()
            .find(|(command, _)| command.contains(what))
            .map(|(_, stdout)| stdout.as_str())
            .unwrap_or_else(|| panic!("the README's buf curl session has no {what}"))
    };

    assert!(output_of("--list-methods").contains("tenancy.v1.TenantService/CreateTenant"));
    assert!(output_of("Health/Check").contains("\"SERVING\""));
    let created = &json_values(output_of("/CreateTenant"))[0]["tenant"];
    let id = created["id"].as_str().expect("a tenant id");
    assert_eq!(created["state"], "TENANT_STATE_PROVISIONING");

    let stream = json_values(output_of("/StreamProvisioningStatus"));
    assert_eq!(
        stream[0]["snapshot"]["tenant"]["id"], id,
        "a snapshot first"
    );
    let events: Vec<&Value> = stream[1..].iter().map(|m| &m["event"]).collect();
    assert!(
        events.iter().all(|e| e["tenantId"] == id),
        "events of the created tenant"
    );
    assert_eq!(
        events[0]["kind"], "EVENT_KIND_TENANT_CREATED",
        "from the first event"
    );
    assert_eq!(
        events.last().expect("events")["state"],
        "TENANT_STATE_ACTIVE",
        "the stream reaches ACTIVE and ends"
    );

    let listed = &json_values(output_of("/ListTenants"))[0]["tenants"];
    let listed = listed.as_array().expect("a tenant list");
    assert!(
        listed
            .iter()
            .any(|t| t["id"] == id && t["state"] == "TENANT_STATE_ACTIVE"),
        "the created tenant is listed, ACTIVE: {listed:?}"
    );
    assert_eq!(server.active_created_by_token().await, 1);
    server.stop().await;
}

/// The ```sh block after [`SESSION_MARKER`] (the buf curl session) and the
/// next one (its grpcurl equivalent).
fn session_blocks(readme: &str) -> (String, String) {
    let after = readme
        .split_once(SESSION_MARKER)
        .unwrap_or_else(|| panic!("README.md has no {SESSION_MARKER:?}"))
        .1;
    let mut blocks = after.split("```sh\n").skip(1).map(|rest| {
        rest.split_once("\n```")
            .expect("a closed code block")
            .0
            .to_owned()
    });
    let buf = blocks.next().expect("the buf curl block");
    let grpcurl = blocks.next().expect("the grpcurl block");
    assert!(
        buf.contains("buf curl") && grpcurl.contains("grpcurl"),
        "{buf}\n{grpcurl}"
    );
    (buf, grpcurl)
}

/// Shell commands of a block: comments and blank lines dropped, lines joined
/// while they end in `\` or a single-quoted argument is still open.
fn commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        let open_quote = current.matches('\'').count() % 2 == 1;
        if !line.ends_with('\\') && !open_quote {
            commands.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "unfinished command: {current}");
    commands
}

/// The `service/Method` paths the buf curl commands call.
fn method_paths(block: &str) -> Vec<String> {
    let prefix = format!("{README_ENDPOINT}/");
    block
        .split_whitespace()
        .filter_map(|word| word.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

/// The JSON messages buf curl printed, one after the other.
fn json_values(stdout: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("buf curl printed JSON: {e}\n{stdout}"))
}
