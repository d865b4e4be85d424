//! A PostgreSQL 15 cluster made highly available by Patroni, as operators
//! run one: one etcd member and two Patroni nodes on loopback, synchronous
//! replication, short timings so that a failover takes seconds. Debian's
//! `patroni` and `etcd-server` packages (`.ci/run` installs them); run as
//! the `postgres` user when the tests run as root, as PostgreSQL requires.
//! Everything is stopped, and its directory removed, when it is dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::{as_root, free_port};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Patroni's leader lease. A failover takes about this long after the
/// primary dies: the lease must run out before the standby may take over.
const TTL_SECS: u32 = 10;
/// How long the cluster may take to have a leader and a sync standby.
const READY_LIMIT: Duration = Duration::from_secs(90);

pub struct Node {
    pub name: &'static str,
    pub pg_port: u16,
    pub api_port: u16,
}

pub struct Patroni {
    dir: PathBuf,
    pub nodes: [Node; 2],
    etcd_client: u16,
}

/// `program args...` as the postgres user (when root), its pid written to
/// `pidfile` (the program's own, not a wrapper's), in the background.
fn spawn_as_postgres(pidfile: &Path, log: &Path, program: &str, args: &[String]) {
    let mut command = if as_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]);
        c
    } else {
        std::process::Command::new("env")
    };
    command
        .args(["sh", "-c", "echo $$ > \"$0\"; exec \"$@\""])
        .arg(pidfile)
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::options().append(true).open(log).unwrap());
    // Its pid file is what the test signals; a thread reaps the wrapper.
    let mut child = command.spawn().expect("start a cluster process");
    std::thread::spawn(move || child.wait());
}

fn pid_in(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn kill(pid: i32, signal: &str) {
    // A process already gone is what was wanted.
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

impl Patroni {
    /// Starts etcd and both nodes and waits for a leader with a streaming
    /// synchronous standby.
    pub async fn start() -> Self {
        for program in ["patroni", "patronictl", "etcd"] {
            assert!(
                std::process::Command::new("which")
                    .arg(program)
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "{program} is not installed: .ci/run installs Debian's patroni and etcd-server"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("tenantd-patroni-")
            .tempdir()
            .unwrap()
            .keep();
        let nodes = [
            Node {
                name: "node1",
                pg_port: free_port(),
                api_port: free_port(),
            },
            Node {
                name: "node2",
                pg_port: free_port(),
                api_port: free_port(),
            },
        ];
        let (etcd_client, etcd_peer) = (free_port(), free_port());
        for n in &nodes {
            std::fs::create_dir_all(dir.join(n.name)).unwrap();
        }
        std::fs::create_dir_all(dir.join("etcd")).unwrap();
        let cluster = Patroni {
            dir,
            nodes,
            etcd_client,
        };
        cluster.chown();
        spawn_as_postgres(
            &cluster.dir.join("etcd.pid"),
            &cluster.dir.join("etcd.log"),
            "etcd",
            &[
                "--name",
                "e1",
                "--data-dir",
                &cluster.path("etcd/data"),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-cluster",
                &format!("e1=http://127.0.0.1:{etcd_peer}"),
                "--initial-cluster-state",
                "new",
                "--log-level",
                "warn",
            ]
            .map(str::to_owned),
        );
        for n in &cluster.nodes {
            std::fs::write(
                cluster.dir.join(format!("{}.yml", n.name)),
                cluster.config(n),
            )
            .unwrap();
        }
        cluster.chown();
        for i in 0..2 {
            cluster.start_node(i);
        }
        cluster.wait_ready().await;
        cluster
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    fn chown(&self) {
        if as_root() {
            let _ = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.dir)
                .status();
        }
    }

    /// The node's Patroni configuration: synchronous mode (a commit is
    /// acknowledged once the standby has it), pg_rewind so that an old
    /// primary rejoins, trust on loopback.
    fn config(&self, n: &Node) -> String {
        let d = self.dir.join(n.name);
        format!(
            "scope: tenantd-test
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: {TTL_SECS}
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: 'on'
        max_connections: 100
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data}
  bin_dir: {BIN_DIR}
  pgpass: {pgpass}
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
  parameters:
    unix_socket_directories: '{sockets}'
    fsync: 'off'
watchdog:
  mode: off
",
            name = n.name,
            api = n.api_port,
            etcd = self.etcd_client,
            pg = n.pg_port,
            data = d.join("data").display(),
            pgpass = d.join("pgpass").display(),
            sockets = d.display(),
        )
    }

    fn start_node(&self, i: usize) {
        let n = &self.nodes[i];
        let d = self.dir.join(n.name);
        spawn_as_postgres(
            &d.join("patroni.pid"),
            &d.join("patroni.log"),
            "patroni",
            &[self.path(&format!("{}.yml", n.name))],
        );
    }

    /// libpq's multi-host URL of `database`, following the primary.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs=read-write&connect_timeout=2",
            self.nodes[0].pg_port, self.nodes[1].pg_port
        )
    }

    /// A URL of `database` on one node only.
    pub fn node_url(&self, i: usize, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            self.nodes[i].pg_port
        )
    }

    /// The cluster as Patroni's REST API reports it.
    async fn cluster(&self) -> Option<serde_json::Value> {
        // Plain HTTP needs no TLS, but reqwest builds its TLS config up front.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        for n in &self.nodes {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{}/cluster", n.api_port))
                .send()
                .await
                && let Ok(v) = r.json::<serde_json::Value>().await
            {
                return Some(v);
            }
        }
        None
    }

    /// The index of the node that leads, if one does.
    pub async fn leader(&self) -> Option<usize> {
        let cluster = self.cluster().await?;
        let name = cluster["members"]
            .as_array()?
            .iter()
            .find(|m| m["role"] == "leader" && m["state"] == "running")?["name"]
            .as_str()?
            .to_owned();
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Whether a leader runs with a synchronous standby that streams to
    /// it (Patroni 3.0 shows a streaming standby as `running` in
    /// `/cluster`; the leader's own `/patroni` has the replication state).
    async fn ready(&self) -> bool {
        let Some(cluster) = self.cluster().await else {
            return false;
        };
        let members = cluster["members"].as_array().cloned().unwrap_or_default();
        let Some(leader_api) = members
            .iter()
            .find(|m| m["role"] == "leader" && m["state"] == "running")
            .and_then(|m| m["api_url"].as_str().map(str::to_owned))
        else {
            return false;
        };
        if !members
            .iter()
            .any(|m| m["role"] == "sync_standby" && m["state"] == "running")
        {
            return false;
        }
        let Ok(response) = reqwest::get(&leader_api).await else {
            return false;
        };
        let Ok(leader) = response.json::<serde_json::Value>().await else {
            return false;
        };
        leader["replication"].as_array().is_some_and(|r| {
            r.iter()
                .any(|s| s["state"] == "streaming" && s["sync_state"] == "sync")
        })
    }

    pub async fn wait_ready(&self) {
        let started = Instant::now();
        while !self.ready().await {
            assert!(
                started.elapsed() < READY_LIMIT,
                "no leader with a sync standby after {READY_LIMIT:?}: {:?}\n{}",
                self.cluster().await,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL node `i`'s postmaster and its Patroni: the machine died.
    pub fn kill(&self, i: usize) {
        let d = self.dir.join(self.nodes[i].name);
        let postmaster = pid_in(&d.join("data/postmaster.pid")).expect("postmaster running");
        let patroni = pid_in(&d.join("patroni.pid")).expect("patroni running");
        kill(postmaster, "-KILL");
        kill(patroni, "-KILL");
    }

    /// Starts a killed node's Patroni again; it rejoins as a standby.
    pub fn restart(&self, i: usize) {
        self.start_node(i);
    }

    /// `patronictl switchover` from the leader to the other node; returns
    /// when the command does.
    pub async fn switchover(&self, from: usize) {
        let to = 1 - from;
        let mut command = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "patronictl"]);
            c
        } else {
            Command::new("patronictl")
        };
        let out = command
            .arg("-c")
            .arg(self.dir.join("node1.yml"))
            .args([
                "switchover",
                "--leader",
                self.nodes[from].name,
                "--candidate",
                self.nodes[to].name,
                "--force",
            ])
            .output()
            .await
            .expect("patronictl");
        assert!(
            out.status.success(),
            "switchover: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(self.dir.join(n.name).join("patroni.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {}:\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        // Patroni first (or it restarts PostgreSQL), then PostgreSQL, then etcd.
        let mut pids = Vec::new();
        for n in &self.nodes {
            let d = self.dir.join(n.name);
            pids.extend(pid_in(&d.join("patroni.pid")));
        }
        for pid in &pids {
            kill(*pid, "-KILL");
        }
        let mut postmasters = Vec::new();
        for n in &self.nodes {
            postmasters.extend(pid_in(&self.dir.join(n.name).join("data/postmaster.pid")));
        }
        for pid in &postmasters {
            // Immediate shutdown: the cluster is thrown away.
            kill(*pid, "-QUIT");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while postmasters.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(etcd) = pid_in(&self.dir.join("etcd.pid")) {
            kill(etcd, "-KILL");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
