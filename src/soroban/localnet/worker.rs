//! The ledger thread. The Soroban host and its snapshots are `!Send`, so
//! one dedicated thread owns the ledger and does everything that touches it
//! (simulation, validation, closes); the HTTP handlers send it [`Command`]s
//! and await the answer on a oneshot channel.
//!
//! The command channel is a std channel: `recv_timeout` gives the thread its
//! ledger-close timer without a runtime of its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use soroban_env_host::xdr::{
    LedgerEntry, LedgerKey, Limits, TransactionEnvelope, TransactionResult, TransactionResultExt,
    TransactionResultResult, WriteXdr,
};
use soroban_simulation::NetworkConfig;
use tokio::sync::oneshot;

use super::ledger::{AppliedTransaction, Ledger, Stored};
use super::modules::Modules;
use super::validate::{self, Checked};
use super::{Error, apply, network, simulate};
use crate::soroban::rpc::{SendStatus, SendTransactionResult, SimulateTransactionResult};
use crate::soroban::{network_id, transaction_hash};

/// What the latest ledger looks like.
#[derive(Debug, Clone, Copy)]
pub struct Latest {
    pub sequence: u32,
    pub close_time: u64,
    pub hash: [u8; 32],
    pub oldest: u32,
    pub oldest_close_time: u64,
}

/// A request to the ledger thread.
pub enum Command {
    Latest(oneshot::Sender<Latest>),
    Entries(
        Vec<LedgerKey>,
        oneshot::Sender<(Vec<(LedgerKey, Stored)>, Latest)>,
    ),
    Entry(LedgerKey, oneshot::Sender<Option<LedgerEntry>>),
    Simulate(
        Box<TransactionEnvelope>,
        oneshot::Sender<SimulateTransactionResult>,
    ),
    Send(
        Box<TransactionEnvelope>,
        oneshot::Sender<SendTransactionResult>,
    ),
    Transaction(
        [u8; 32],
        oneshot::Sender<(Option<AppliedTransaction>, Latest)>,
    ),
    Stop,
}

/// What the handle reads without asking the thread.
#[derive(Default)]
pub struct Shared {
    pub paused: AtomicBool,
    pub accepted: Mutex<Vec<[u8; 32]>>,
    pub applied: Mutex<Vec<AppliedTransaction>>,
}

/// Everything the thread needs to start.
pub struct Setup {
    pub passphrase: String,
    pub interval: Duration,
    pub accounts: Vec<(stellar_strkey::ed25519::PublicKey, i64)>,
    pub state_file: Option<PathBuf>,
    pub shared: Arc<Shared>,
}

struct Worker {
    ledger: Ledger,
    config: NetworkConfig,
    modules: Modules,
    queue: Vec<Checked>,
    passphrase: String,
    network_id: [u8; 32],
    state_file: Option<PathBuf>,
    shared: Arc<Shared>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Builds the ledger (from the state file when there is one), reports
/// readiness on `ready`, then serves `commands` until told to stop.
pub fn run(setup: Setup, commands: Receiver<Command>, ready: oneshot::Sender<Result<(), Error>>) {
    let mut worker = match Worker::new(&setup) {
        Ok(worker) => {
            let _ = ready.send(Ok(()));
            worker
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut next_close = Instant::now() + setup.interval;
    loop {
        let wait = next_close.saturating_duration_since(Instant::now());
        match commands.recv_timeout(wait) {
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(command) => worker.handle(command),
            Err(RecvTimeoutError::Timeout) => {
                if !worker.shared.paused.load(Ordering::SeqCst) {
                    worker.close();
                }
                next_close = Instant::now() + setup.interval;
            }
        }
    }
    tracing::debug!("local network stopped");
}

impl Worker {
    fn new(setup: &Setup) -> Result<Self, Error> {
        let config = network::network_config()?;
        let ledger = match &setup.state_file {
            Some(path) if path.exists() => Ledger::load(path)?,
            _ => Ledger::genesis(&setup.accounts, now()),
        };
        if let Some(path) = &setup.state_file {
            ledger.save(path)?;
        }
        let modules = Modules::new(
            &ledger,
            (&config.cpu_cost_params, &config.memory_cost_params),
        )?;
        if let Ok(mut applied) = setup.shared.applied.lock() {
            applied.clone_from(&ledger.applied);
        }
        Ok(Self {
            ledger,
            config,
            modules,
            queue: Vec::new(),
            passphrase: setup.passphrase.clone(),
            network_id: network_id(&setup.passphrase),
            state_file: setup.state_file.clone(),
            shared: Arc::clone(&setup.shared),
        })
    }

    fn latest(&self) -> Latest {
        Latest {
            sequence: self.ledger.sequence,
            close_time: self.ledger.close_time,
            hash: self.ledger.header_hash,
            oldest: super::ledger::GENESIS_LEDGER,
            oldest_close_time: self.ledger.genesis_close_time,
        }
    }

    // A dropped reply channel means the HTTP request went away; nothing to do.
    fn handle(&mut self, command: Command) {
        match command {
            Command::Latest(reply) => {
                let _ = reply.send(self.latest());
            }
            Command::Entries(keys, reply) => {
                let found = keys
                    .into_iter()
                    .filter_map(|k| self.ledger.live(&k).cloned().map(|s| (k, s)))
                    .collect();
                let _ = reply.send((found, self.latest()));
            }
            Command::Entry(key, reply) => {
                let _ = reply.send(self.ledger.live(&key).map(|s| s.entry.clone()));
            }
            Command::Simulate(envelope, reply) => {
                let result = simulate::simulate(
                    &self.ledger,
                    &self.config,
                    self.network_id,
                    &envelope,
                    now(),
                );
                let _ = reply.send(result);
            }
            Command::Send(envelope, reply) => {
                let _ = reply.send(self.send(*envelope));
            }
            Command::Transaction(hash, reply) => {
                let _ = reply.send((self.ledger.find(&hash).cloned(), self.latest()));
            }
            Command::Stop => {}
        }
    }

    fn send(&mut self, envelope: TransactionEnvelope) -> SendTransactionResult {
        let latest = self.latest();
        let answer = |status, hash: [u8; 32], error: Option<TransactionResultResult>| {
            SendTransactionResult {
                status,
                hash: hex::encode(hash),
                latest_ledger: latest.sequence,
                latest_ledger_close_time: latest.close_time.to_string(),
                error_result_xdr: error.map(error_result_xdr),
            }
        };
        let hash = match validate::v1(&envelope) {
            Ok(v1) => transaction_hash(&v1.tx, &self.passphrase).unwrap_or_default(),
            Err(code) => return answer(SendStatus::Error, [0; 32], Some(code)),
        };
        if self.queue.iter().any(|t| t.hash == hash) || self.ledger.find(&hash).is_some() {
            return answer(SendStatus::Duplicate, hash, None);
        }
        let checked = match validate::check(&self.ledger, &self.config, &envelope, hash) {
            Ok(checked) => checked,
            Err(code) => {
                tracing::debug!(hash = %hex::encode(hash), code = code.name(), "rejected");
                return answer(SendStatus::Error, hash, Some(code));
            }
        };
        // Core keeps one transaction per source account in its queue.
        if self.queue.iter().any(|t| t.source == checked.source) {
            return answer(SendStatus::TryAgainLater, hash, None);
        }
        self.queue.push(checked);
        if let Ok(mut accepted) = self.shared.accepted.lock() {
            accepted.push(hash);
        }
        answer(SendStatus::Pending, hash, None)
    }

    fn close(&mut self) {
        self.ledger.advance(now());
        let info = network::ledger_info(
            &self.config,
            self.network_id,
            self.ledger.sequence,
            self.ledger.close_time,
        );
        let queued = std::mem::take(&mut self.queue);
        let changed = !queued.is_empty();
        if let Err(e) = apply::close(
            &mut self.ledger,
            &self.config,
            &mut self.modules,
            &info,
            queued,
        ) {
            tracing::error!(error = %e, ledger = self.ledger.sequence, "closing the ledger failed");
        }
        if let Ok(mut applied) = self.shared.applied.lock() {
            applied.clone_from(&self.ledger.applied);
        }
        if changed
            && let Some(path) = &self.state_file
            && let Err(e) = self.ledger.save(path)
        {
            tracing::error!(error = %e, path = %path.display(), "saving the ledger failed");
        }
    }
}

/// A base64 `TransactionResult` rejecting a transaction with `code`, fee 0.
pub fn error_result_xdr(code: TransactionResultResult) -> String {
    TransactionResult {
        fee_charged: 0,
        result: code,
        ext: TransactionResultExt::V0,
    }
    .to_xdr_base64(Limits::none())
    // A result without operation results is a few fixed-size words.
    .unwrap_or_default()
}
