//! The deployment's transactions: what the ledger holds, building, signing,
//! recording and sending one transaction on a free channel, and looking at
//! a recorded one once (see the flow in [`super`]).

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use stellar_xdr::{
    HostFunction, Limits, ReadXdr, ScVal, SorobanAuthorizationEntry, SorobanCredentials,
    SorobanTransactionData, TransactionEnvelope, TransactionV1Envelope, VecM, WriteXdr,
};
use uuid::Uuid;

use super::super::client::ClientError;
use super::super::rpc::{SendStatus, TransactionStatus};
use super::super::tx::{self, Footprint, Purpose};
use super::super::{sign_authorization, sign_envelope, transaction_hash};
use super::channels::Channel;
use super::{DeployError, Deployer, OnLedger, Polled, Progress, RESEND_AFTER, Waiting, executable};
use crate::db::{self, soroban as store};

/// Ledgers a deployer's signature on an authorization stays valid: past
/// the transaction's own time bound on any network whose ledgers close at
/// least every 100 ms (an hour of 5-second ledgers), and far inside the
/// networks' largest TTL.
const AUTH_VALID_LEDGERS: u32 = 720;

/// What trying to send one transaction on a channel came to.
enum Attempt {
    Sent(String),
    /// This channel cannot take it now; try the next.
    Skip,
    /// No channel can: why.
    Wait(String),
}

impl Deployer {
    /// What the ledger holds of a deployment, in one call.
    pub(super) async fn look_up(&self, contract: [u8; 32]) -> Result<OnLedger, DeployError> {
        let mut found = self
            .client
            .get_ledger_entries(&[tx::instance_key(contract), tx::code_key(self.wasm_hash)])
            .await?
            .into_iter();
        let (instance, code) = (found.next().flatten(), found.next().flatten());
        Ok(OnLedger {
            instance_wasm: instance.map(executable),
            code: code.is_some(),
        })
    }

    /// Builds, records and sends one transaction for the tenant on the
    /// first free channel. Always "not yet": the next look polls it.
    pub(super) async fn submit<T>(
        &self,
        tenant_id: Uuid,
        purpose: Purpose,
        function: HostFunction,
        allowed: Footprint,
    ) -> Result<Progress<T>, DeployError> {
        let in_flight = {
            let mut conn = db::conn(&self.pool).await?;
            store::pending_of(&mut conn, &self.account_text)
                .await
                .map_err(crate::error::Error::from)?
        };
        if purpose == Purpose::UploadWasm
            && let Some(upload) = in_flight
                .iter()
                .find(|t| t.purpose == Purpose::UploadWasm.as_str())
        {
            return Ok(self.waiting_for_channel(
                format!(
                    "waiting for transaction {} that uploads the contract code",
                    upload.hash
                ),
                Vec::new(),
            ));
        }
        let busy: HashSet<&str> = in_flight.iter().map(|t| t.source.as_str()).collect();
        let mut warnings = Vec::new();
        // Channels this look warned about: a look that fails drops its
        // warnings, so the next look must give them again.
        let mut warned_here = Vec::new();
        for channel in self.channels.in_turn() {
            if busy.contains(channel.text.as_str()) {
                continue;
            }
            // Another look of this process is building on it.
            let Ok(_building) = channel.building.try_lock() else {
                continue;
            };
            let before = warnings.len();
            let attempt = self
                .try_channel(
                    channel,
                    tenant_id,
                    purpose,
                    &function,
                    &allowed,
                    &mut warnings,
                )
                .await;
            if warnings.len() > before {
                warned_here.push(channel.text.as_str());
            }
            let attempt = match attempt {
                Ok(attempt) => attempt,
                Err(e) => {
                    for channel in warned_here {
                        self.channels.unwarn(channel);
                    }
                    return Err(e);
                }
            };
            match attempt {
                Attempt::Sent(hash) => {
                    return Ok(Progress::Waiting(Waiting {
                        why: format!(
                            "transaction {hash} ({}) sent from {}; waiting for a ledger",
                            purpose.as_str(),
                            channel.text
                        ),
                        after: self.config.poll_interval,
                        warnings,
                    }));
                }
                Attempt::Skip => {}
                Attempt::Wait(why) => return Ok(self.waiting_for_channel(why, warnings)),
            }
        }
        // Every channel is busy: a transaction whose look was abandoned
        // (its tenant's pipeline went away) must not hold one for good.
        self.settle_abandoned(&in_flight, tenant_id).await;
        Ok(self.waiting_for_channel(
            format!(
                "all {} channel(s) have a transaction in flight or were passed over",
                self.channels.len()
            ),
            warnings,
        ))
    }

    /// `Some(why)` when every channel has a transaction in flight: one
    /// query, before anything else is asked of the network.
    pub(super) async fn all_channels_busy(&self) -> Result<Option<String>, DeployError> {
        let in_flight = {
            let mut conn = db::conn(&self.pool).await?;
            store::pending_of(&mut conn, &self.account_text)
                .await
                .map_err(crate::error::Error::from)?
        };
        let busy: HashSet<&str> = in_flight.iter().map(|t| t.source.as_str()).collect();
        if self
            .channels
            .accounts()
            .iter()
            .all(|c| busy.contains(c.as_str()))
        {
            // Abandoned transactions must not hold channels for good.
            self.settle_abandoned(&in_flight, Uuid::nil()).await;
            return Ok(Some(format!(
                "all {} channel(s) have a transaction in flight",
                self.channels.len()
            )));
        }
        Ok(None)
    }

    async fn try_channel(
        &self,
        channel: &Channel,
        tenant_id: Uuid,
        purpose: Purpose,
        function: &HostFunction,
        allowed: &Footprint,
        warnings: &mut Vec<String>,
    ) -> Result<Attempt, DeployError> {
        let Some(state) = self.channel_state(channel, warnings).await? else {
            return Ok(Attempt::Skip);
        };
        let sequence = state.sequence + 1;
        let max_time = unix_now() + self.config.confirm_timeout.as_secs().max(1);
        let unsigned = tx::unsigned(&channel.account, sequence, max_time, function.clone());
        let simulated = self
            .client
            .simulate_transaction(&envelope(unsigned.clone()))
            .await?;
        let simulation_failed = |message: String| DeployError::Simulation {
            purpose: purpose.as_str(),
            message,
        };
        if let Some(message) = simulated.error {
            return Err(simulation_failed(message));
        }
        let data = simulated
            .transaction_data
            .ok_or_else(|| simulation_failed("no transaction data".to_owned()))?;
        let data = SorobanTransactionData::from_xdr_base64(&data, Limits::none())?;
        let recorded_auth = simulated
            .results
            .first()
            .map(|result| {
                result
                    .auth
                    .iter()
                    .map(|a| SorobanAuthorizationEntry::from_xdr_base64(a, Limits::none()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        // The deployer signs each authorization the creation needs from it;
        // its account (read for the signature check) and the nonce it uses
        // up are then part of what the transaction may touch.
        let mut allowed = Footprint {
            read_only: allowed.read_only.clone(),
            read_write: allowed.read_write.clone(),
            must_write: allowed.must_write.clone(),
        };
        let mut auth = Vec::with_capacity(recorded_auth.len());
        for entry in recorded_auth {
            if let SorobanCredentials::Address(credentials) = &entry.credentials
                && credentials.address == tx::account_address(&self.account)
            {
                allowed.read_only.push(tx::account_key(&self.account));
                allowed
                    .read_write
                    .push(tx::nonce_key(&self.account, credentials.nonce));
            }
            auth.push(sign_authorization(
                entry,
                &self.config.network_passphrase,
                self.config.secret.signing_key(),
                simulated.latest_ledger.saturating_add(AUTH_VALID_LEDGERS),
            )?);
        }
        let tx = tx::assemble(
            unsigned,
            data,
            auth,
            &self.account,
            &allowed,
            self.config.inclusion_fee,
            self.config.fee_cap,
        )
        .map_err(|error| DeployError::Assembly {
            purpose: purpose.as_str(),
            error,
        })?;
        let hash = hex::encode(transaction_hash(&tx, &self.config.network_passphrase)?);
        let signed = sign_envelope(
            envelope(tx),
            &self.config.network_passphrase,
            channel.key.signing_key(),
        )?;
        let record = store::PendingTransaction {
            hash: hash.clone(),
            tenant_id: Some(tenant_id),
            purpose: purpose.as_str().to_owned(),
            source: channel.text.clone(),
            sequence,
            max_time: i64::try_from(max_time).unwrap_or(i64::MAX),
            envelope_xdr: signed.to_xdr_base64(Limits::none())?,
            send_time: None,
        };
        match self.record(&record).await? {
            store::Recorded::Yes => {}
            // Taken since we looked, or its number used since we read it:
            // another channel, and this one read afresh next time.
            store::Recorded::SourceBusy | store::Recorded::SequenceUsed => {
                return Ok(Attempt::Skip);
            }
            store::Recorded::TenantBusy => {
                return Ok(Attempt::Wait(
                    "another look of this tenant's deployment sent a transaction".to_owned(),
                ));
            }
            store::Recorded::UploadBusy => {
                return Ok(Attempt::Wait(
                    "another deployment is uploading the contract code".to_owned(),
                ));
            }
        }
        tracing::info!(%hash, purpose = purpose.as_str(), source = %channel.text, sequence, "sending Soroban transaction");
        self.send(&record, &signed).await?;
        Ok(Attempt::Sent(hash))
    }

    /// Records a signed transaction as in flight, before it is sent.
    pub(super) async fn record(
        &self,
        record: &store::PendingTransaction,
    ) -> Result<store::Recorded, DeployError> {
        let mut conn = db::conn(&self.pool).await?;
        Ok(store::insert_pending(&mut conn, &self.account_text, record)
            .await
            .map_err(crate::error::Error::from)?)
    }

    /// Hands the recorded bytes to the RPC server. Whether they arrived is
    /// for the next poll to find out; a refusal is final only if the
    /// transaction is not known either (a copy sent earlier may have been
    /// applied, using up its sequence number).
    pub(super) async fn send(
        &self,
        record: &store::PendingTransaction,
        signed: &TransactionEnvelope,
    ) -> Result<(), DeployError> {
        match self.client.send_transaction(signed).await {
            Ok(sent) => match sent.status {
                SendStatus::Pending | SendStatus::Duplicate => {
                    let mut conn = db::conn(&self.pool).await?;
                    store::mark_sent(&mut conn, &record.hash)
                        .await
                        .map_err(crate::error::Error::from)?;
                }
                SendStatus::TryAgainLater => {
                    tracing::info!(hash = %record.hash, "Soroban RPC asks to try again later");
                }
                SendStatus::Error => {
                    let status = self.client.get_transaction(&hash_bytes(record)?).await?;
                    if status.status == TransactionStatus::NotFound {
                        let code = sent
                            .error_result_xdr
                            .as_deref()
                            .map(tx::result_code)
                            .unwrap_or_else(|| "no result given".to_owned());
                        self.settle(record, "failed", None, Some(&code)).await?;
                        return Err(DeployError::Rejected {
                            purpose: record.purpose.clone(),
                            hash: record.hash.clone(),
                            code,
                        });
                    }
                }
            },
            Err(ClientError::Transport(e)) => {
                tracing::warn!(hash = %record.hash, error = %e, "sending the Soroban transaction failed; the next look sends it again");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Looks at a recorded transaction once: settled (applied, failed,
    /// provably expired) or still waiting, re-sending the same bytes if it
    /// has gone unseen since its last send.
    pub(super) async fn poll(
        &self,
        record: &store::PendingTransaction,
    ) -> Result<Polled, DeployError> {
        let status = match self.client.get_transaction(&hash_bytes(record)?).await {
            Ok(status) => status,
            Err(ClientError::Transport(e)) => {
                return Ok(Polled::Waiting(format!(
                    "transaction {}: the Soroban RPC server did not answer: {e}",
                    record.hash
                )));
            }
            Err(e) => return Err(e.into()),
        };
        match status.status {
            TransactionStatus::Success => {
                self.settle(record, "succeeded", status.ledger, None)
                    .await?;
                tracing::info!(hash = %record.hash, ledger = status.ledger, "Soroban transaction applied");
                Ok(Polled::Applied)
            }
            TransactionStatus::Failed => {
                let code = status
                    .result_xdr
                    .as_deref()
                    .map(tx::result_code)
                    .unwrap_or_else(|| "no result given".to_owned());
                self.settle(record, "failed", status.ledger, Some(&code))
                    .await?;
                Err(DeployError::Failed {
                    purpose: record.purpose.clone(),
                    hash: record.hash.clone(),
                    ledger: status.ledger.unwrap_or_default(),
                    code,
                })
            }
            TransactionStatus::NotFound => {
                let closed = status.latest_ledger_close_time.parse::<u64>().unwrap_or(0);
                if closed > u64::try_from(record.max_time).unwrap_or(0) {
                    self.settle(record, "expired", None, None).await?;
                    tracing::warn!(hash = %record.hash, "Soroban transaction expired unapplied");
                    return Ok(Polled::Expired);
                }
                let unseen = record.send_time.is_none_or(|at| {
                    (chrono::Utc::now() - at)
                        .to_std()
                        .is_ok_and(|d| d >= RESEND_AFTER)
                });
                if unseen {
                    let signed =
                        TransactionEnvelope::from_xdr_base64(&record.envelope_xdr, Limits::none())?;
                    self.send(record, &signed).await?;
                }
                Ok(Polled::Waiting(format!(
                    "transaction {} ({}) from {} is waiting for a ledger",
                    record.hash, record.purpose, record.source
                )))
            }
        }
    }

    /// Polls the transactions in flight that are past their time bound and
    /// not `tenant_id`'s: their own looks may never come again.
    async fn settle_abandoned(&self, in_flight: &[store::PendingTransaction], tenant_id: Uuid) {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        for record in in_flight {
            if record.tenant_id == Some(tenant_id) || record.max_time >= now {
                continue;
            }
            if let Err(e) = self.poll(record).await {
                tracing::warn!(hash = %record.hash, error = %e, "an abandoned Soroban transaction did not apply");
            }
        }
    }

    pub(super) async fn settle(
        &self,
        record: &store::PendingTransaction,
        status: &str,
        ledger: Option<u32>,
        error: Option<&str>,
    ) -> Result<(), DeployError> {
        let mut conn = db::conn(&self.pool).await?;
        store::settle(&mut conn, &record.hash, status, ledger, error)
            .await
            .map_err(crate::error::Error::from)?;
        // Its channel is free: hand it to a deployment waiting for one.
        let channels = i64::try_from(self.channels.len()).unwrap_or(i64::MAX);
        store::wake_waiting(&mut conn, &self.account_text, channels)
            .await
            .map_err(crate::error::Error::from)?;
        Ok(())
    }

    /// Calls a read-only function of a contract by simulation and returns
    /// its answer; nothing is sent.
    pub(super) async fn simulate_call(
        &self,
        contract: [u8; 32],
        function: &'static str,
    ) -> Result<ScVal, DeployError> {
        let call = tx::unsigned(
            &self.account,
            0,
            0,
            tx::invoke_contract(contract, function)?,
        );
        let simulated = self.client.simulate_transaction(&envelope(call)).await?;
        let failed = |message: String| DeployError::Simulation {
            purpose: function,
            message,
        };
        if let Some(message) = simulated.error {
            return Err(failed(message));
        }
        let result = simulated
            .results
            .first()
            .ok_or_else(|| failed("no result".to_owned()))?;
        sc_val(&result.xdr)
    }
}

pub(super) fn envelope(tx: stellar_xdr::Transaction) -> TransactionEnvelope {
    TransactionEnvelope::Tx(TransactionV1Envelope {
        tx,
        signatures: no_signatures(),
    })
}

fn hash_bytes(record: &store::PendingTransaction) -> Result<[u8; 32], DeployError> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&record.hash, &mut hash).map_err(|_| stellar_xdr::Error::Invalid)?;
    Ok(hash)
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The empty vector of signatures an unsigned envelope carries.
fn no_signatures() -> VecM<stellar_xdr::DecoratedSignature, 20> {
    VecM::default()
}

/// Decodes a base64 XDR `ScVal`.
fn sc_val(xdr: &str) -> Result<ScVal, DeployError> {
    Ok(ScVal::from_xdr_base64(xdr, Limits::none())?)
}
