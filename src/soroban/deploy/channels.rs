//! Channel accounts: the source accounts of deployment transactions, each
//! with one transaction in flight, passed over while their balance is low
//! (the deployer tops them up if configured to), created by the deployer
//! when they are generated.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use stellar_strkey::ed25519::PublicKey as AccountKey;
use stellar_xdr::{LedgerEntryData, Limits, WriteXdr};
use tokio::time::Instant;

use super::send::{envelope, unix_now};
use super::{DeployError, Deployer, Polled};
use crate::db::{self, soroban as store};
use crate::soroban::tx::{self, Payment};
use crate::soroban::{SecretKey, sign_envelope, transaction_hash};
use crate::telemetry::metrics;

/// The purpose recorded for the deployer's own funding transactions.
const FUND_CHANNELS: &str = "fund_channels";

/// How channels are kept funded.
#[derive(Debug, Clone, Copy)]
pub struct Funding {
    /// Below this balance (stroops) a channel is passed over: it may not
    /// cover the fees of one more transaction.
    pub min_balance: i64,
    /// The balance a channel is created with, and topped up to.
    pub balance: i64,
    /// Whether the deployer tops up a channel found below `min_balance`.
    pub top_up: bool,
}

/// One source account.
pub(super) struct Channel {
    pub key: SecretKey,
    pub account: AccountKey,
    /// `G...`
    pub text: String,
    /// Held while a look of this process builds a transaction on it, so
    /// two looks do not simulate on the same sequence number.
    pub building: tokio::sync::Mutex<()>,
}

/// A channel as the ledger has it.
pub(super) struct ChannelState {
    pub sequence: i64,
}

pub(super) struct Channels {
    list: Vec<Channel>,
    /// Where the next look starts, so looks spread over the channels.
    next: AtomicUsize,
    /// The deployer is the only source (no channels configured).
    deployer_only: bool,
    /// Channels passed over and warned about, until they are fine again:
    /// one warning per episode, not one per look.
    warned: Mutex<HashSet<String>>,
    /// The deployer is creating or topping up channels right now: one
    /// still missing is passed over without a warning.
    preparing: AtomicBool,
}

impl Channels {
    pub fn new(deployer: &SecretKey, channels: &[SecretKey]) -> Self {
        let deployer_only = channels.is_empty();
        let keys = if deployer_only {
            vec![deployer.clone()]
        } else {
            channels.to_vec()
        };
        let list = keys
            .into_iter()
            .map(|key| {
                let account = key.public_key();
                Channel {
                    text: format!("{account}"),
                    account,
                    key,
                    building: tokio::sync::Mutex::new(()),
                }
            })
            .collect();
        Self {
            list,
            next: AtomicUsize::new(0),
            deployer_only,
            warned: Mutex::new(HashSet::new()),
            preparing: AtomicBool::new(false),
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn accounts(&self) -> Vec<String> {
        self.list.iter().map(|c| c.text.clone()).collect()
    }

    /// Every channel once, starting one further than the last call did.
    pub fn in_turn(&self) -> impl Iterator<Item = &Channel> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % self.list.len().max(1);
        self.list[start..].iter().chain(&self.list[..start])
    }

    /// Whether `channel` is newly passed over (so worth a warning).
    fn newly_warned(&self, channel: &str) -> bool {
        self.warned
            .lock()
            .map(|mut w| w.insert(channel.to_owned()))
            .unwrap_or(false)
    }

    /// Forgets that `channel` was warned about, whose warning was lost
    /// with a failed look.
    pub fn unwarn(&self, channel: &str) {
        if let Ok(mut w) = self.warned.lock() {
            w.remove(channel);
        }
    }

    fn fine_again(&self, channel: &str) {
        if let Ok(mut w) = self.warned.lock()
            && w.remove(channel)
        {
            tracing::info!(%channel, "Soroban channel is usable again");
        }
    }
}

impl Deployer {
    /// The channel's sequence number, or `None` if it is passed over (it
    /// does not exist, or its balance is low), with a warning the first
    /// time.
    pub(super) async fn channel_state(
        &self,
        channel: &Channel,
        warnings: &mut Vec<String>,
    ) -> Result<Option<ChannelState>, DeployError> {
        let found = self
            .client
            .get_ledger_entries(&[tx::account_key(&channel.account)])
            .await?;
        let account = match found.into_iter().next().flatten() {
            Some(LedgerEntryData::Account(account)) => account,
            _ if self.channels.deployer_only => {
                return Err(DeployError::NoAccount(channel.text.clone()));
            }
            _ if self.channels.preparing.load(Ordering::SeqCst) => return Ok(None),
            _ => {
                metrics::channel_skipped(&channel.text, "missing");
                if self.channels.newly_warned(&channel.text) {
                    let warning = format!(
                        "Soroban channel {} does not exist on the network; passed over",
                        channel.text
                    );
                    tracing::warn!("{warning}");
                    warnings.push(warning);
                }
                return Ok(None);
            }
        };
        metrics::channel_balance(&channel.text, account.balance);
        let funding = self.config.funding;
        if !self.channels.deployer_only && account.balance < funding.min_balance {
            metrics::channel_skipped(&channel.text, "low_balance");
            if self.channels.newly_warned(&channel.text) {
                let warning = format!(
                    "Soroban channel {} has {} stroops, below the minimum of {}; passed over{}",
                    channel.text,
                    account.balance,
                    funding.min_balance,
                    if funding.top_up {
                        " until the deployer's top-up lands"
                    } else {
                        ""
                    }
                );
                tracing::warn!("{warning}");
                warnings.push(warning);
            }
            if funding.top_up {
                let top_up = Payment::TopUp {
                    account: channel.account,
                    amount: funding.balance.saturating_sub(account.balance),
                };
                if let Err(e) = self.fund(&[top_up]).await {
                    tracing::warn!(channel = %channel.text, error = %e, "topping up the Soroban channel failed; a later look tries again");
                }
            }
            return Ok(None);
        }
        self.channels.fine_again(&channel.text);
        Ok(Some(ChannelState {
            sequence: account.seq_num.0,
        }))
    }

    /// Sees every channel exist and (with top-up) be funded, in the
    /// background: creates the missing ones (`create_missing`, for channels
    /// generated from the deployer's key) and tops up low ones, with
    /// transactions from the deployer. Deployments meanwhile use the
    /// channels that are ready. Gives up when `shutdown` is cancelled.
    pub fn prepare_channels(
        self: &Arc<Self>,
        create_missing: bool,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.channels.preparing.store(true, Ordering::SeqCst);
        let deployer = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                prepared = deployer.prepare(create_missing) => match prepared {
                    Ok(()) => tracing::info!(
                        channels = deployer.channels.len(),
                        "Soroban channel accounts ready"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "Soroban channels not all ready; deployments use the funded ones"
                    ),
                },
            }
            deployer.channels.preparing.store(false, Ordering::SeqCst);
        })
    }

    async fn prepare(&self, create_missing: bool) -> Result<(), DeployError> {
        if self.channels.deployer_only {
            return Ok(());
        }
        let funding = self.config.funding;
        let deadline = Instant::now() + 2 * self.config.confirm_timeout;
        loop {
            let mut waiting = false;
            for record in self.funding_in_flight().await? {
                match self.poll(&record).await {
                    Ok(Polled::Waiting(_)) => waiting = true,
                    Ok(Polled::Applied | Polled::Expired) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "a channel funding transaction did not apply")
                    }
                }
            }
            let mut needed = Vec::new();
            if !waiting {
                let keys: Vec<_> = self
                    .channels
                    .list
                    .iter()
                    .map(|c| tx::account_key(&c.account))
                    .collect();
                let mut found = Vec::with_capacity(keys.len());
                for chunk in keys.chunks(MAX_KEYS_PER_LOOKUP) {
                    found.extend(self.client.get_ledger_entries(chunk).await?);
                }
                for (channel, entry) in self.channels.list.iter().zip(found) {
                    match entry {
                        Some(LedgerEntryData::Account(account))
                            if funding.top_up && account.balance < funding.min_balance =>
                        {
                            needed.push(Payment::TopUp {
                                account: channel.account,
                                amount: funding.balance.saturating_sub(account.balance),
                            });
                        }
                        Some(LedgerEntryData::Account(_)) => {}
                        _ if create_missing => needed.push(Payment::Create {
                            account: channel.account,
                            amount: funding.balance,
                        }),
                        _ => {}
                    }
                }
                if needed.is_empty() {
                    return Ok(());
                }
                // One funding transaction in flight at a time (the deployer's
                // sequence number); the rest in the next rounds.
                let batch = needed.len().min(stellar_xdr::MAX_OPS_PER_TX as usize);
                self.fund(&needed[..batch]).await?;
            }
            if Instant::now() >= deadline {
                return Err(DeployError::Funding(format!(
                    "{} channel account(s) still missing or low after {:?}",
                    needed.len().max(1),
                    2 * self.config.confirm_timeout
                )));
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    async fn funding_in_flight(&self) -> Result<Vec<store::PendingTransaction>, DeployError> {
        let mut conn = db::conn(&self.pool).await?;
        let all = store::pending_of(&mut conn, &self.account_text)
            .await
            .map_err(crate::error::Error::from)?;
        Ok(all
            .into_iter()
            .filter(|t| t.purpose == FUND_CHANNELS)
            .collect())
    }

    /// Records and sends one transaction from the deployer that creates or
    /// tops up channels. `None` when the deployer has one in flight already
    /// (another replica's, or an earlier top-up).
    async fn fund(&self, payments: &[Payment]) -> Result<Option<String>, DeployError> {
        let found = self
            .client
            .get_ledger_entries(&[tx::account_key(&self.account)])
            .await?;
        let Some(LedgerEntryData::Account(deployer)) = found.into_iter().next().flatten() else {
            return Err(DeployError::NoAccount(self.account_text.clone()));
        };
        let sequence = deployer.seq_num.0 + 1;
        let max_time = unix_now() + self.config.confirm_timeout.as_secs().max(1);
        let fee_per_op = self.config.inclusion_fee.max(tx::BASE_FEE);
        let unsigned = tx::payments(&self.account, sequence, max_time, fee_per_op, payments)?;
        let hash = hex::encode(transaction_hash(
            &unsigned,
            &self.config.network_passphrase,
        )?);
        let signed = sign_envelope(
            envelope(unsigned),
            &self.config.network_passphrase,
            self.config.secret.signing_key(),
        )?;
        let record = store::PendingTransaction {
            hash: hash.clone(),
            tenant_id: None,
            purpose: FUND_CHANNELS.to_owned(),
            source: self.account_text.clone(),
            sequence,
            max_time: i64::try_from(max_time).unwrap_or(i64::MAX),
            envelope_xdr: signed.to_xdr_base64(Limits::none())?,
            send_time: None,
        };
        if self.record(&record).await? != store::Recorded::Yes {
            return Ok(None);
        }
        tracing::info!(%hash, payments = payments.len(), "funding Soroban channels from the deployer");
        self.send(&record, &signed).await?;
        Ok(Some(hash))
    }
}

/// Ledger keys one getLedgerEntries call may ask for (stellar-rpc's limit).
const MAX_KEYS_PER_LOOKUP: usize = 200;

/// Channel keys derived from the deployer's: the same deployer always
/// gives the same channels, so replicas and restarts agree without storing
/// a key.
pub fn generated_channels(deployer: &SecretKey, count: usize) -> Vec<SecretKey> {
    use sha2::{Digest, Sha256};
    (0..count)
        .map(|i| {
            let seed: [u8; 32] = Sha256::new()
                .chain_update(b"tenantd channel account v1")
                .chain_update(deployer.signing_key().to_bytes())
                .chain_update((i as u64).to_be_bytes())
                .finalize()
                .into();
            SecretKey::from_signing_key(ed25519_dalek::SigningKey::from_bytes(&seed))
        })
        .collect()
}
