//! The deployer's transactions: what the ledger holds, building, signing,
//! recording and sending one transaction, and driving it to its end (see
//! the flow in [`super`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stellar_xdr::{
    LedgerEntryData, Limits, ReadXdr, SorobanAuthorizationEntry, SorobanTransactionData,
    TransactionEnvelope, TransactionV1Envelope, VecM, WriteXdr,
};
use tokio::time::Instant;
use uuid::Uuid;

use super::super::client::ClientError;
use super::super::rpc::{SendStatus, TransactionStatus};
use super::super::tx::{self, Footprint, Purpose};
use super::super::{sign_envelope, transaction_hash};
use super::{DeployError, Deployer, OnLedger, RESEND_AFTER, Settled, Submitted, executable};
use crate::db::{self, soroban as store};

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

    /// Builds, records and sends one transaction, and waits for its end.
    pub(super) async fn submit(
        &self,
        tenant_id: Uuid,
        purpose: Purpose,
        function: stellar_xdr::HostFunction,
        allowed: &Footprint,
    ) -> Result<Submitted, DeployError> {
        let sequence = self.next_sequence().await?;
        let max_time = unix_now() + self.config.confirm_timeout.as_secs().max(1);
        let unsigned = tx::unsigned(&self.account, sequence, max_time, function);
        let simulated = self
            .client
            .simulate_transaction(&envelope(unsigned.clone(), VecM::default()))
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
        let auth = simulated
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
        let tx = tx::assemble(
            unsigned,
            data,
            auth,
            allowed,
            self.config.inclusion_fee,
            self.config.fee_cap,
        )
        .map_err(|error| DeployError::Assembly {
            purpose: purpose.as_str(),
            error,
        })?;
        let hash = hex::encode(transaction_hash(&tx, &self.config.network_passphrase)?);
        let signed = sign_envelope(
            envelope(tx, VecM::default()),
            &self.config.network_passphrase,
            self.config.secret.signing_key(),
        )?;
        let record = store::PendingTransaction {
            hash: hash.clone(),
            tenant_id,
            purpose: purpose.as_str().to_owned(),
            sequence,
            max_time: i64::try_from(max_time).unwrap_or(i64::MAX),
            envelope_xdr: signed.to_xdr_base64(Limits::none())?,
        };
        let recorded = {
            let mut conn = db::conn(&self.pool).await?;
            store::insert_pending(&mut conn, &self.account_text, &record)
                .await
                .map_err(crate::error::Error::from)?
        };
        if !recorded {
            // Another replica's transaction took the slot since we looked.
            return Ok(Submitted::SlotTaken);
        }
        tracing::info!(%hash, purpose = purpose.as_str(), sequence, "sending Soroban transaction");
        match self.drive(&record).await? {
            Settled::Succeeded => Ok(Submitted::Applied(hash)),
            Settled::Expired => Ok(Submitted::Expired),
        }
    }

    /// Drives the deployer's recorded transaction, if any, to its end:
    /// whichever tenant it was for, the next one needs its sequence number
    /// settled.
    pub(super) async fn finish_in_flight(&self) -> Result<(), DeployError> {
        let recorded = {
            let mut conn = db::conn(&self.pool).await?;
            store::pending(&mut conn, &self.account_text)
                .await
                .map_err(crate::error::Error::from)?
        };
        if let Some(record) = recorded {
            tracing::info!(hash = %record.hash, purpose = %record.purpose, "resuming a Soroban transaction sent earlier");
            match self.drive(&record).await {
                Ok(_) => {}
                // Settled, so no longer in flight; what it was meant to do
                // is checked on the ledger next.
                Err(e @ (DeployError::Rejected { .. } | DeployError::Failed { .. })) => {
                    tracing::warn!(error = %e, "a Soroban transaction sent earlier did not apply");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends a recorded transaction (again) and polls until it is applied,
    /// rejected, or provably dead.
    pub(super) async fn drive(
        &self,
        record: &store::PendingTransaction,
    ) -> Result<Settled, DeployError> {
        let signed = TransactionEnvelope::from_xdr_base64(&record.envelope_xdr, Limits::none())?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&record.hash, &mut hash).map_err(|_| stellar_xdr::Error::Invalid)?;
        let max_time = u64::try_from(record.max_time).unwrap_or(0);
        let until_bound = Duration::from_secs(max_time.saturating_sub(unix_now()));
        let deadline = Instant::now() + until_bound + self.config.confirm_timeout;
        let mut last_send: Option<Instant> = None;
        loop {
            if last_send.is_none_or(|at| at.elapsed() >= RESEND_AFTER) {
                match self.client.send_transaction(&signed).await {
                    Ok(sent) => match sent.status {
                        SendStatus::Pending | SendStatus::Duplicate => {
                            last_send = Some(Instant::now());
                        }
                        SendStatus::TryAgainLater => {
                            tracing::info!(hash = %record.hash, "Soroban RPC asks to try again later");
                        }
                        SendStatus::Error => {
                            // A copy sent earlier may have been applied (its
                            // sequence number is used now): its fate decides.
                            let status = self.client.get_transaction(&hash).await?;
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
                            last_send = Some(Instant::now());
                        }
                    },
                    // Whether it arrived is unknown: its status tells, and
                    // the same bytes go out again.
                    Err(ClientError::Transport(e)) => {
                        tracing::warn!(hash = %record.hash, error = %e, "sending the Soroban transaction failed");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match self.client.get_transaction(&hash).await {
                Ok(status) => match status.status {
                    TransactionStatus::Success => {
                        self.settle(record, "succeeded", status.ledger, None)
                            .await?;
                        tracing::info!(hash = %record.hash, ledger = status.ledger, "Soroban transaction applied");
                        return Ok(Settled::Succeeded);
                    }
                    TransactionStatus::Failed => {
                        let code = status
                            .result_xdr
                            .as_deref()
                            .map(tx::result_code)
                            .unwrap_or_else(|| "no result given".to_owned());
                        self.settle(record, "failed", status.ledger, Some(&code))
                            .await?;
                        return Err(DeployError::Failed {
                            purpose: record.purpose.clone(),
                            hash: record.hash.clone(),
                            ledger: status.ledger.unwrap_or_default(),
                            code,
                        });
                    }
                    TransactionStatus::NotFound => {
                        let closed = status.latest_ledger_close_time.parse::<u64>().unwrap_or(0);
                        if closed > max_time {
                            self.settle(record, "expired", None, None).await?;
                            tracing::warn!(hash = %record.hash, "Soroban transaction expired unapplied");
                            return Ok(Settled::Expired);
                        }
                    }
                },
                Err(ClientError::Transport(e)) => {
                    tracing::warn!(hash = %record.hash, error = %e, "polling the Soroban transaction failed");
                }
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(DeployError::Unconfirmed {
                    hash: record.hash.clone(),
                });
            }
            tokio::time::sleep(self.config.poll_interval).await;
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
        Ok(())
    }

    /// The sequence number the deployer's next transaction must carry.
    pub(super) async fn next_sequence(&self) -> Result<i64, DeployError> {
        let found = self
            .client
            .get_ledger_entries(&[tx::account_key(&self.account)])
            .await?;
        match found.into_iter().next().flatten() {
            Some(LedgerEntryData::Account(account)) => Ok(account.seq_num.0 + 1),
            _ => Err(DeployError::NoAccount(self.account_text.clone())),
        }
    }
}

fn envelope(
    tx: stellar_xdr::Transaction,
    signatures: VecM<stellar_xdr::DecoratedSignature, 20>,
) -> TransactionEnvelope {
    TransactionEnvelope::Tx(TransactionV1Envelope { tx, signatures })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
