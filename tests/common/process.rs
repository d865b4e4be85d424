//! `tenantd serve` as a child process, for tests that kill or multiply it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tenantd::proto::tenant_service_client::TenantServiceClient;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use super::TestDb;

impl TestDb {
    /// The same database under a URL that names its sessions
    /// `application_name` in `pg_stat_activity`: a server process started
    /// on it can be told apart from others, e.g. to see when a killed
    /// process's sessions, and any transaction they had in flight, are gone.
    /// Never dropped, since dropping a `TestDb` drops its database.
    pub fn sessions_named(&self, application_name: &str) -> std::mem::ManuallyDrop<TestDb> {
        std::mem::ManuallyDrop::new(TestDb {
            name: self.name.clone(),
            url: format!("{}?application_name={application_name}", self.url),
            role_prefix: self.role_prefix.clone(),
            soroban: self.soroban.clone(),
        })
    }
}

/// A running server process.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the binary against `db` and waits until it answers health checks.
    pub async fn spawn(db: &TestDb, mail_dir: &Path, lease_ms: u64) -> Self {
        Self::spawn_with(db, mail_dir, lease_ms, 8).await
    }

    /// With `concurrency` dispatcher slots (0: API only).
    pub async fn spawn_with(
        db: &TestDb,
        mail_dir: &Path,
        lease_ms: u64,
        concurrency: usize,
    ) -> Self {
        Self::spawn_full(db, mail_dir, lease_ms, concurrency, &[], None).await
    }

    /// With extra environment (which may turn auth on) and stderr to `log`.
    pub async fn spawn_full(
        db: &TestDb,
        mail_dir: &Path,
        lease_ms: u64,
        concurrency: usize,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::inherit(),
        };
        let shared_soroban = if env.iter().any(|(k, _)| *k == "TENANTD_SOROBAN_RPC_URL") {
            Vec::new()
        } else {
            db.soroban().await.env()
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args([
                "serve",
                "--database-url",
                db.url(),
                "--listen",
                &addr.to_string(),
            ])
            .args(["--tenant-role-prefix", &db.role_prefix])
            .args(
                env.iter()
                    .all(|(k, _)| !k.starts_with("TENANTD_AUTH"))
                    .then_some("--insecure-no-auth"),
            )
            .arg("--mail-dir")
            .arg(mail_dir)
            .arg("--archive-dir")
            .arg(mail_dir.join("archives"))
            .args([
                "--lease-ms",
                &lease_ms.to_string(),
                "--poll-interval-ms",
                "300",
            ])
            .args([
                "--retry-base-ms",
                "20",
                "--retry-cap-ms",
                "200",
                "--concurrency",
                &concurrency.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            // One Soroban network for all the processes of a database,
            // unless the test brings its own.
            .envs(shared_soroban.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tenantd");
        let process = ServerProcess { child, addr };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut health = tonic_health::pb::health_client::HealthClient::new(
                match Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                {
                    Ok(channel) => channel,
                    Err(_) => {
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "tenantd did not start"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            );
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            if health.check(request).await.is_ok() {
                return process;
            }
        }
    }

    /// The operating system's process id, part of the process's lease
    /// owner id (`{HOSTNAME}:{pid}:{random}`).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub async fn client(&self) -> TenantServiceClient<Channel> {
        TenantServiceClient::new(self.channel().await)
    }

    /// A connection for any service's client.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// CreateTenant on the default plan.
    pub async fn create(&self, slug: &str) -> tenantd::proto::Tenant {
        self.client()
            .await
            .create_tenant(tenantd::proto::CreateTenantRequest {
                tenant: Some(crate::common::tenant(slug)),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner()
            .tenant
            .expect("tenant")
    }

    /// Polls GetTenant until the tenant is ACTIVE (at most a minute).
    pub async fn wait_active(&self, id: &str) -> tenantd::proto::Tenant {
        let mut client = self.client().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let t = client
                .get_tenant(tenantd::proto::GetTenantRequest {
                    tenant_id: id.to_owned(),
                })
                .await
                .unwrap()
                .into_inner()
                .tenant
                .unwrap();
            if t.state == tenantd::proto::TenantState::Active as i32 {
                return t;
            }
            assert!(tokio::time::Instant::now() < deadline, "{t:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no chance to release anything.
    pub async fn kill_9(mut self) {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("reap");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill -TERM");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits")
            .unwrap();
        assert!(exit.success(), "graceful exit: {exit:?}");
    }
}
