//! A private BIND 9 `named` on loopback (Debian's `bind9`, installed by
//! `.ci/run`), serving one zone that takes updates signed with a TSIG key
//! of its own, stopped when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::process::{Child, Command};

use super::free_port;

pub const ZONE: &str = "tenants.test";
pub const KEY_NAME: &str = "tenantd-key";

pub struct Named {
    pub port: u16,
    /// The key's secret, base64.
    pub secret: String,
    dir: PathBuf,
    child: Child,
}

impl Named {
    /// Starts `named` with the zone holding `records` (zone-file lines,
    /// relative names) and waits until it answers.
    pub async fn start(records: &[&str]) -> Self {
        assert!(
            std::path::Path::new("/usr/sbin/named").exists(),
            "named is not installed: .ci/run installs Debian's bind9"
        );
        let dir = tempfile::Builder::new()
            .prefix("tenantd-named-")
            .tempdir()
            .unwrap()
            .keep();
        let port = free_port();
        let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        std::fs::create_dir_all(dir.join("zone")).unwrap();
        std::fs::write(
            dir.join("key.conf"),
            format!("key \"{KEY_NAME}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("zone/{ZONE}.db")),
            format!(
                "$ORIGIN {ZONE}.\n$TTL 60\n@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. ( 1 60 30 86400 1 )\n  IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n{}\n",
                records.join("\n")
            ),
        )
        .unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("named.conf"),
            format!(
                "include \"{d}/key.conf\";
options {{
    directory \"{d}/zone\";
    pid-file \"{d}/named.pid\";
    session-keyfile \"{d}/zone/session.key\";
    managed-keys-directory \"{d}/zone\";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    allow-transfer {{ none; }};
    dnssec-validation no;
    notify no;
    query-source address 127.0.0.1;
    notify-source 127.0.0.1;
}};
controls {{ }};
zone \"{ZONE}\" {{
    type primary;
    file \"{ZONE}.db\";
    update-policy {{ grant {KEY_NAME} zonesub ANY; }};
}};
"
            ),
        )
        .unwrap();
        let child = spawn(&dir);
        let named = Named {
            port,
            secret,
            dir,
            child,
        };
        named.wait_answering().await;
        named
    }

    async fn wait_answering(&self) {
        let started = Instant::now();
        while self.dig(ZONE, "SOA").await.is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "named did not answer: {}",
                std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server (it keeps its zone and journal).
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts it again on the same port, with what it had.
    pub async fn start_again(&mut self) {
        self.child = spawn(&self.dir);
        self.wait_answering().await;
    }

    /// `host:port` of the server.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What `dig +short` answers for `name` and `rtype` (one line each).
    pub async fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = Command::new("dig")
            .args(["+short", "+time=1", "+tries=1", "@127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args([name, rtype])
            .output()
            .await
            .expect("dig (bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .collect()
    }
}

/// `named` in the foreground on the configuration in `dir`, as `bind` when
/// the tests run as root.
fn spawn(dir: &std::path::Path) -> Child {
    let mut command = Command::new("/usr/sbin/named");
    command.args(["-g", "-4", "-c"]).arg(dir.join("named.conf"));
    if super::as_root() {
        // named drops to `bind`, which must own what it writes.
        let _ = std::process::Command::new("chown")
            .args(["-R", "bind:bind"])
            .arg(dir)
            .status();
        command.args(["-u", "bind"]);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(dir.join("named.log"))
                .unwrap(),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("start named")
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
