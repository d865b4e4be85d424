//! A real SMTP listener on loopback that keeps what it receives, or refuses
//! every message when told to. The benchmark sends its welcome emails here,
//! and the tests use it to read what tenantd sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The listener; messages are kept in arrival order.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    pub messages: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    /// Accepts every message.
    pub async fn start() -> std::io::Result<Self> {
        Self::spawn(false).await
    }

    /// Answers every MAIL FROM with a permanent failure.
    pub async fn refusing() -> std::io::Result<Self> {
        Self::spawn(true).await
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    async fn spawn(refuse: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let _ = session(socket, refuse, kept).await;
                });
            }
        });
        Ok(SmtpSink { addr, messages })
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    refuse: bool,
    kept: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink ESMTP ready\r\n").await?;
    while let Some(line) = lines.next_line().await? {
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
            // Any credentials are accepted: the listener checks no secret.
            "AUTH" => b"235 2.7.0 accepted\r\n",
            "HELO" | "RSET" | "NOOP" | "RCPT" => b"250 OK\r\n",
            "MAIL" if refuse => b"554 5.7.1 refused by test server\r\n",
            "MAIL" => b"250 OK\r\n",
            "DATA" => {
                write.write_all(b"354 end with .\r\n").await?;
                let mut body = String::new();
                while let Some(line) = lines.next_line().await? {
                    if line == "." {
                        break;
                    }
                    body.push_str(line.strip_prefix('.').unwrap_or(&line));
                    body.push('\n');
                }
                if let Ok(mut kept) = kept.lock() {
                    kept.push(body);
                }
                b"250 OK queued\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
    Ok(())
}
