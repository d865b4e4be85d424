//! A local Soroban network: the network's own host, simulator and fee rules
//! behind a loopback JSON-RPC server speaking the stellar-rpc protocol, so
//! the production RPC client runs unchanged against it, in tests and when
//! `tenantd serve` has no Soroban RPC URL.
//!
//! It takes two kinds of transactions: Soroban ones of one
//! InvokeHostFunction, and classic ones of CreateAccount and native Payment
//! operations (how channel accounts are funded). It checks what it receives
//! as stellar-core and stellar-rpc would: envelopes, signatures, sequence
//! numbers, fees, operations, declared resources and footprints, and
//! applies accepted transactions at the next ledger close.
//!
//! ```text
//! HTTP POST /  --JSON-RPC-->  server (decode, faults)  --Command-->  ledger thread
//!                                                                     | simulate, validate, queue
//!                                   every ledger_interval: close  --> | apply (host), save state
//! ```
//!
//! | file          | what lives there |
//! |---------------|------------------|
//! | [`server`]    | the JSON-RPC front and injected faults |
//! | `worker`      | the thread that owns the ledger; its commands |
//! | `validate`    | core's admission checks for `sendTransaction` |
//! | `apply`       | ledger close: fees, sequence numbers, results and meta |
//! | `invoke`      | a host function run against its footprint |
//! | `classic`     | CreateAccount and Payment: their checks and effects |
//! | `simulate`    | `simulateTransaction` |
//! | [`ledger`]    | entries, transactions, the state file |
//! | [`network`]   | fees, limits, TTLs, the calibrated cost model |
//! | `modules`     | the parsed-Wasm cache core keeps |

mod apply;
mod classic;
mod invoke;
pub mod ledger;
mod modules;
pub mod network;
pub mod server;
mod simulate;
#[cfg(test)]
mod tests;
mod validate;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use ledger::AppliedTransaction;

/// Largest XDR value a request may carry: the largest transaction the
/// network accepts, with room for base64 framing slack.
pub const MAX_XDR_BYTES: usize = 2 * network::TX_MAX_SIZE_BYTES;

/// What the local network starts with.
#[derive(Debug, Clone)]
pub struct LocalNetConfig {
    pub network_passphrase: String,
    /// Time between ledger closes (a queued transaction is applied at the next close).
    pub ledger_interval: Duration,
    /// Accounts that exist at genesis, with their balance in stroops.
    pub accounts: Vec<(stellar_strkey::ed25519::PublicKey, i64)>,
    /// Where the ledger is kept across restarts (written at every close that
    /// changed something, atomically: write temp + rename); None = memory only.
    pub state_file: Option<PathBuf>,
}

/// A failure the tests inject into the next calls of a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// sendTransaction answers TRY_AGAIN_LATER (nothing queued).
    TryAgainLater,
    /// sendTransaction answers ERROR with a TransactionResult of code txINTERNAL_ERROR (nothing queued).
    Error,
    /// The method answers a JSON-RPC error object (code -32603, a message).
    RpcError,
    /// The request is served (its effect happens!) but the HTTP response is
    /// delayed by this long, so a client timeout fires after the server already acted.
    Delay(Duration),
}

/// What can go wrong starting or running the network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("local network I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("local network XDR: {0}")]
    Xdr(#[from] soroban_env_host::xdr::Error),
    #[error("local network host: {0}")]
    Host(#[from] soroban_env_host::HostError),
    #[error("local network state: {0}")]
    State(String),
    #[error("the local network thread stopped")]
    Stopped,
}

/// A running local network. Clones share it; it stops when `shutdown` is
/// cancelled or the last clone is dropped.
#[derive(Clone)]
pub struct LocalNet {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    passphrase: String,
    server: Arc<server::ServerState>,
    shared: Arc<worker::Shared>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl LocalNet {
    /// Binds `listen` (tests pass 127.0.0.1:0), starts the ledger thread and
    /// the HTTP server (POST / with JSON-RPC bodies). Stops when `shutdown` is cancelled.
    pub async fn start(
        config: LocalNetConfig,
        listen: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<LocalNet, Error> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(worker::Shared::default());
        let (commands, receiver) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let setup = worker::Setup {
            passphrase: config.network_passphrase.clone(),
            interval: config.ledger_interval,
            accounts: config.accounts,
            state_file: config.state_file,
            shared: Arc::clone(&shared),
        };
        std::thread::Builder::new()
            .name("soroban-localnet".into())
            .spawn(move || worker::run(setup, receiver, ready_tx))?;
        ready_rx.await.map_err(|_| Error::Stopped)??;

        let stop = shutdown.child_token();
        let server = Arc::new(server::ServerState {
            passphrase: config.network_passphrase.clone(),
            commands: Mutex::new(commands.clone()),
            faults: Mutex::new(HashMap::new()),
        });
        let app = axum::Router::new()
            .route("/", axum::routing::post(server::handle))
            .with_state(Arc::clone(&server));
        let server_stop = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(server_stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "local network HTTP server failed");
            }
        });
        let thread_stop = stop.clone();
        tokio::spawn(async move {
            thread_stop.cancelled().await;
            // The thread may be gone already; then there is nothing to stop.
            let _ = commands.send(worker::Command::Stop);
        });
        tracing::debug!(%addr, "local Soroban network listening");
        Ok(LocalNet {
            inner: Arc::new(Inner {
                url: format!("http://{addr}/"),
                passphrase: config.network_passphrase,
                server,
                shared,
                stop,
            }),
        })
    }

    /// "http://127.0.0.1:PORT/"
    pub fn url(&self) -> String {
        self.inner.url.clone()
    }

    pub fn passphrase(&self) -> &str {
        &self.inner.passphrase
    }

    /// Test controls: the next `count` calls of `method` (an rpc.rs method
    /// name) get `fault` instead of being served. TRY_AGAIN_LATER and ERROR
    /// only exist for sendTransaction; other methods answer them as RpcError.
    pub fn inject(&self, method: &str, fault: Fault, count: usize) {
        if let Ok(mut faults) = self.inner.server.faults.lock() {
            faults
                .entry(method.to_owned())
                .or_default()
                .extend(std::iter::repeat_n(fault, count));
        }
    }

    /// Stop / resume closing ledgers: accepted transactions stay PENDING
    /// (getTransaction NOT_FOUND) while paused.
    pub fn pause(&self, paused: bool) {
        self.inner.shared.paused.store(paused, Ordering::SeqCst);
    }

    /// Hashes of every transaction accepted by sendTransaction (status
    /// PENDING), in order. Duplicates are not repeated.
    pub fn accepted(&self) -> Vec<[u8; 32]> {
        self.inner
            .shared
            .accepted
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Every applied transaction, in ledger order.
    pub fn applied(&self) -> Vec<AppliedTransaction> {
        self.inner
            .shared
            .applied
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// The current value of a ledger entry (None if absent or archived).
    pub async fn entry(&self, key: &stellar_xdr::LedgerKey) -> Option<stellar_xdr::LedgerEntry> {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .inner
            .server
            .commands
            .lock()
            .ok()?
            .send(worker::Command::Entry(key.clone(), tx));
        sent.ok()?;
        rx.await.ok().flatten()
    }
}
