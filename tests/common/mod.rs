//! Test fixtures: a database per test, cloned from a migrated template, and
//! the real server on a real socket.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use tenantd::config::Config;
use tenantd::outbox::Hooks;
use tenantd::proto::TenantState;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::steps::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Where tests find PostgreSQL: `TEST_DATABASE_URL` (a server URL without a
/// database), by default the machine's trust-auth server.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Serialises template creation across test processes.
const TEMPLATE_LOCK_KEY: i64 = 0x7465_7374_7470_6c00;

/// A test binary that runs longer than this has a test that hangs: it is
/// ended with a message instead of holding CI until its own limit. The
/// whole API suite takes a few minutes on a loaded 2-core machine.
const SUITE_LIMIT: Duration = Duration::from_secs(25 * 60);

/// Started by the first test database; ends the process at [`SUITE_LIMIT`].
fn watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(SUITE_LIMIT);
            eprintln!(
                "test binary still running after {SUITE_LIMIT:?}: a test hangs (libtest names the ones running for over 60 s above)"
            );
            std::process::exit(101);
        });
    });
}

pub mod bind;
pub mod cluster;
pub mod hold;
pub mod oidc;
pub mod patroni;
pub mod pebble;
pub mod process;
pub mod receiver;
pub mod scrape;
pub mod soroban;
pub mod steps;

/// A loopback port free when asked (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the tests run as root (servers that refuse root then run as
/// their own user).
pub fn as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A database of its own, migrated, dropped when the value is dropped, with
/// a role prefix of its own (roles are cluster-wide), whose roles are
/// dropped with it.
pub struct TestDb {
    name: String,
    url: String,
    pub role_prefix: String,
    /// The Soroban network the server processes of this database deploy
    /// to, started with the first of them: replicas share the deployer's
    /// channels through the database, so they must share the network too.
    soroban: std::sync::Arc<tokio::sync::OnceCell<soroban::Net>>,
}

impl TestDb {
    pub async fn new() -> Self {
        watchdog();
        let template = template().await;
        let name = format!("tenantd_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_conn().await;
        diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = format!("{}/{name}", server_url());
        let role_prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        TestDb {
            name,
            url,
            role_prefix,
            soroban: Default::default(),
        }
    }

    /// A database that exists elsewhere (another cluster), under `url`,
    /// with tenant roles named `role_prefix...`. Never dropped: dropping a
    /// `TestDb` drops its database on the tests' server.
    pub fn external(url: String, role_prefix: &str) -> std::mem::ManuallyDrop<TestDb> {
        std::mem::ManuallyDrop::new(TestDb {
            name: String::new(),
            url,
            role_prefix: role_prefix.to_owned(),
            soroban: Default::default(),
        })
    }

    /// The Soroban network of this database's server processes.
    pub async fn soroban(&self) -> &soroban::Net {
        self.soroban.get_or_init(soroban::Net::start).await
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn conn(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Runs SQL that returns a single bigint.
    pub async fn count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.conn().await;
        let row: Count = diesel::sql_query(format!("SELECT ({sql})::bigint AS n"))
            .get_result(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.n
    }

    /// Runs one or more SQL statements for their effect.
    pub async fn exec(&self, sql: &str) {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = self.conn().await;
        conn.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let prefix = self.role_prefix.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // a thread with its own runtime does the async work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = admin_conn().await;
                use diesel_async::SimpleAsyncConnection;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(std::io::Error::other)?;
                // The database held every object of these roles.
                admin
                    .batch_execute(&format!(
                        "DO $$ DECLARE r record; BEGIN
                             FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE '{prefix}%' LOOP
                                 EXECUTE format('DROP ROLE %I', r.rolname);
                             END LOOP;
                         END $$;"
                    ))
                    .await
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("dropping test database {}: {dropped:?}", self.name);
        }
    }
}

async fn admin_conn() -> AsyncPgConnection {
    let url = format!("{}/postgres", server_url());
    AsyncPgConnection::establish(&url)
        .await
        .expect("connect to PostgreSQL (is it running on 127.0.0.1:5432?)")
}

/// The migrated template, named after a digest of migrations/ so that a
/// changed migration gets a fresh template.
async fn template() -> String {
    let name = format!("tenantd_template_{}", migrations_digest());
    let mut admin = admin_conn().await;
    diesel::sql_query(format!("SELECT pg_advisory_lock({TEMPLATE_LOCK_KEY})"))
        .execute(&mut admin)
        .await
        .expect("template lock");
    let exists = {
        #[derive(diesel::QueryableByName)]
        struct Exists {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            e: bool,
        }
        let row: Exists = diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}') AS e"
        ))
        .get_result(&mut admin)
        .await
        .expect("query pg_database");
        row.e
    };
    if !exists {
        let building = format!("{name}_building");
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("drop stale template");
        diesel::sql_query(format!("CREATE DATABASE {building}"))
            .execute(&mut admin)
            .await
            .expect("create template");
        tenantd::db::migrate(&format!("{}/{building}", server_url()))
            .await
            .expect("migrate template");
        diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut admin)
            .await
            .expect("publish template");
    }
    diesel::sql_query(format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK_KEY})"))
        .execute(&mut admin)
        .await
        .expect("template unlock");
    name
}

fn migrations_digest() -> String {
    fn walk(dir: &Path, hasher: &mut Sha256) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read migrations")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            hasher.update(path.to_string_lossy().as_bytes());
            if path.is_dir() {
                walk(&path, hasher);
            } else {
                hasher.update(std::fs::read(&path).expect("read migration"));
            }
        }
    }
    let mut hasher = Sha256::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"),
        &mut hasher,
    );
    hex::encode(&hasher.finalize()[..6])
}

/// The real server on 127.0.0.1:0 against its own test database.
pub struct TestApp {
    pub db: TestDb,
    pub addr: SocketAddr,
    pub client: TenantServiceClient<Channel>,
    pub config: Config,
    /// Where `.eml` files land when no SMTP server is configured.
    pub mail_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(|_| {}, Registry::new()).await
    }

    /// The API only: no dispatcher, so pipelines stay where tests put them.
    pub async fn api_only() -> Self {
        Self::start_with(|c| c.concurrency = 0, Registry::new()).await
    }

    /// Starts with a configuration adjusted by `tweak` and extra steps.
    /// Test defaults: short retries, leases and polls, so nothing waits long.
    pub async fn start_with(tweak: impl FnOnce(&mut Config), steps: Registry) -> Self {
        Self::start_with_hooks(tweak, steps, Hooks::default()).await
    }

    /// [`TestApp::start_with`], with `hooks` in the dispatcher.
    pub async fn start_with_hooks(
        tweak: impl FnOnce(&mut Config),
        steps: Registry,
        hooks: Hooks,
    ) -> Self {
        let db = TestDb::new().await;
        let mail_dir = tempfile::tempdir().expect("mail dir");
        let mut config = Config::new(db.url());
        config.pool_size = 8;
        config.concurrency = 8;
        config.tenant_role_prefix = db.role_prefix.clone();
        config.mail_dir = mail_dir.path().to_owned();
        config.archive_dir = mail_dir.path().join("archives");
        config.retry_base = Duration::from_millis(20);
        config.retry_cap = Duration::from_millis(200);
        config.lease = Duration::from_secs(10);
        config.poll_interval = Duration::from_millis(500);
        config.shutdown_timeout = Duration::from_secs(10);
        // Tests make bursts of calls from one address; the limit has its own test.
        config.rate_limit = None;
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let server_config = config.clone();
        let server = tokio::spawn(async move {
            tenantd::server::run_with_hooks(server_config, listener, token, steps, hooks)
                .await
                .expect("server failed");
        });
        let client = TenantServiceClient::new(channel(addr).await);
        TestApp {
            db,
            addr,
            client,
            config,
            mail_dir,
            shutdown,
            server: Some(server),
        }
    }

    /// A fresh client on its own connection.
    pub async fn client(&self) -> TenantServiceClient<Channel> {
        TenantServiceClient::new(channel(self.addr).await)
    }

    pub async fn channel(&self) -> Channel {
        channel(self.addr).await
    }

    /// Creates a tenant (default plan unless `plan` is set) and returns it.
    pub async fn create(&self, slug: &str, plan: &str) -> tenantd::proto::Tenant {
        let mut t = tenant(slug);
        t.plan = plan.into();
        self.client
            .clone()
            .create_tenant(tenantd::proto::CreateTenantRequest {
                tenant: Some(t),
                ..Default::default()
            })
            .await
            .expect("create tenant")
            .into_inner()
            .tenant
            .expect("tenant")
    }

    pub async fn get(&self, id: &str) -> tenantd::proto::Tenant {
        self.client
            .clone()
            .get_tenant(tenantd::proto::GetTenantRequest {
                tenant_id: id.into(),
            })
            .await
            .expect("get tenant")
            .into_inner()
            .tenant
            .expect("tenant")
    }

    /// Polls until the tenant is in `state` (panics after 30 s).
    pub async fn wait_for(&self, id: &str, state: TenantState) -> tenantd::proto::Tenant {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let t = self.get(id).await;
            if t.state == state as i32 {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tenant {id} never reached {state:?}: {t:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events of a tenant as (kind, step, message), in order.
    pub async fn events(&self, id: &str) -> Vec<(String, String, String)> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            kind: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            step: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            message: String,
        }
        let mut conn = self.db.conn().await;
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT kind, coalesce(step, '') AS step, message FROM events WHERE tenant_id = '{id}' ORDER BY id"
        ))
        .load(&mut conn)
        .await
        .expect("events");
        rows.into_iter()
            .map(|r| (r.kind, r.step, r.message))
            .collect()
    }

    /// Adds a plan with the given (step, critical, max_attempts) list.
    pub async fn add_plan(&self, name: &str, steps: &[(&str, bool, i32)]) {
        let steps: Vec<_> = steps
            .iter()
            .map(|(n, c, m)| serde_json::json!({"name": n, "critical": c, "max_attempts": m}))
            .collect();
        let json = serde_json::Value::Array(steps).to_string();
        self.db
            .exec(&format!(
                "INSERT INTO plans (name, steps) VALUES ('{name}', '{json}')"
            ))
            .await;
    }

    /// Graceful shutdown. With a dispatcher, first waits for the outbox to
    /// drain and fails if work is left in it.
    pub async fn stop(mut self) {
        if self.config.concurrency > 0 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while self.db.count("SELECT count(*) FROM outbox").await > 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "work left in the outbox"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.shutdown().await;
    }

    /// Graceful shutdown without waiting for the outbox; panics if the
    /// server does not stop.
    pub async fn shutdown(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server)
                .await
                .expect("server stops within 30 s")
                .expect("server task");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    // Lazy: the server may still be starting, or speak TLS only.
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy()
}

/// A valid CreateTenant request body.
pub fn tenant(slug: &str) -> tenantd::proto::Tenant {
    tenantd::proto::Tenant {
        slug: slug.into(),
        display_name: format!("Tenant {slug}"),
        admin_email: format!("admin@{slug}.test"),
        ..Default::default()
    }
}

/// The google.rpc.BadRequest field names of an error.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|br| br.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The HS256 secret of tests that turn authentication on.
pub const AUTH_SECRET: &str = "a test secret of at least thirty-two bytes";

/// A token signed with [`AUTH_SECRET`] for `subject`, limited to `tenant`
/// when given, valid ten minutes.
pub fn token(scopes: &[tenantd::auth::Scope], subject: &str, tenant: Option<&str>) -> String {
    tenantd::auth::mint_hs256_for(
        AUTH_SECRET.as_bytes(),
        subject,
        scopes,
        Duration::from_secs(600),
        None,
        None,
        tenant.map(|t| t.parse().expect("a tenant id")),
    )
    .expect("a token")
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("an ASCII token"),
    );
    request
}
