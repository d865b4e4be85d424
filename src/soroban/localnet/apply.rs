//! Closing a ledger: every queued transaction pays its fee and consumes its
//! sequence number, then runs in a fresh host that sees only its declared
//! footprint, within its declared instructions and bytes. Only a successful
//! invocation writes to the ledger.

use std::rc::Rc;

use sha2::{Digest, Sha256};
use soroban_env_host::budget::Budget;
use soroban_env_host::e2e_invoke::{
    self, LedgerEntryChange as HostChange, TtlLedgerEntryMeta, entry_size_for_rent,
    extract_rent_changes,
};
use soroban_env_host::fees::{
    TransactionResources, compute_rent_fee, compute_transaction_resource_fee,
};
use soroban_env_host::xdr::{
    ContractDataDurability, ContractEvent, ExtensionPoint, Hash, InvokeHostFunctionResult,
    InvokeHostFunctionSuccessPreImage, LedgerEntry, LedgerEntryChange, LedgerEntryChanges,
    LedgerEntryData, LedgerKey, Limits, OperationMetaV2, OperationResult, OperationResultTr,
    ReadXdr, ScVal, SorobanTransactionDataExt, SorobanTransactionMetaExt, SorobanTransactionMetaV2,
    TransactionMeta, TransactionMetaV4, TransactionResult, TransactionResultExt,
    TransactionResultResult, WriteXdr,
};
use soroban_env_host::{HostError, LedgerInfo};
use soroban_simulation::NetworkConfig;

use super::Error;
use super::ledger::{AppliedTransaction, Ledger, Stored, account_key};
use super::modules::Modules;
use super::network::TX_MAX_CONTRACT_EVENTS_SIZE_BYTES;
use super::validate::{Checked, is_soroban};

/// How an invocation ended.
struct Outcome {
    result: InvokeHostFunctionResult,
    /// Entries to write (None = delete) with their new TTLs; empty on failure.
    writes: Vec<(LedgerKey, Option<Stored>)>,
    /// The refundable fee consumed (events and rent); zero on failure.
    refundable_fee: i64,
    return_value: Option<ScVal>,
    events: Vec<ContractEvent>,
}

/// Applies `queued` in order in the ledger `ledger.sequence` (already advanced).
pub fn close(
    ledger: &mut Ledger,
    config: &NetworkConfig,
    modules: &mut Modules,
    info: &LedgerInfo,
    queued: Vec<Checked>,
) -> Result<(), Error> {
    for (i, tx) in queued.into_iter().enumerate() {
        let order = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let fee_before = account_state(ledger, tx.source);
        let outcome = invoke(ledger, config, modules, info, &tx)?;
        let success = matches!(outcome.result, InvokeHostFunctionResult::Success(_));
        // Fee and sequence number are taken whatever the invocation did;
        // the unused refundable part of the resource fee goes back.
        let fee_charged = tx.inclusion_fee + tx.non_refundable_fee + outcome.refundable_fee;
        let seq = match &tx.envelope {
            soroban_env_host::xdr::TransactionEnvelope::Tx(v1) => v1.tx.seq_num.0,
            _ => 0,
        };
        let entries = Rc::make_mut(&mut ledger.entries);
        if let Some(stored) = entries.get_mut(&account_key(tx.source))
            && let LedgerEntryData::Account(account) = &mut stored.entry.data
        {
            account.balance -= fee_charged;
            account.seq_num.0 = seq;
            stored.entry.last_modified_ledger_seq = info.sequence_number;
        }
        let mut op_changes = Vec::new();
        for (key, value) in outcome.writes {
            if let Some(old) = entries.get(&key) {
                op_changes.push(LedgerEntryChange::State(old.entry.clone()));
            }
            match value {
                Some(stored) => {
                    op_changes.push(if entries.contains_key(&key) {
                        LedgerEntryChange::Updated(stored.entry.clone())
                    } else {
                        LedgerEntryChange::Created(stored.entry.clone())
                    });
                    entries.insert(key, stored);
                }
                None => {
                    entries.remove(&key);
                    op_changes.push(LedgerEntryChange::Removed(key));
                }
            }
        }
        let fee_after = account_state(ledger, tx.source);
        let result = TransactionResult {
            fee_charged,
            result: {
                let ops = vec![OperationResult::OpInner(
                    OperationResultTr::InvokeHostFunction(outcome.result),
                )]
                .try_into()?;
                if success {
                    TransactionResultResult::TxSuccess(ops)
                } else {
                    TransactionResultResult::TxFailed(ops)
                }
            },
            ext: TransactionResultExt::V0,
        };
        let tx_changes = [
            fee_before.map(LedgerEntryChange::State),
            fee_after.map(LedgerEntryChange::Updated),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        let meta = TransactionMeta::V4(TransactionMetaV4 {
            ext: ExtensionPoint::V0,
            tx_changes_before: LedgerEntryChanges(tx_changes.try_into()?),
            operations: vec![OperationMetaV2 {
                ext: ExtensionPoint::V0,
                changes: LedgerEntryChanges(op_changes.try_into()?),
                events: outcome.events.try_into()?,
            }]
            .try_into()?,
            tx_changes_after: LedgerEntryChanges::default(),
            soroban_meta: Some(SorobanTransactionMetaV2 {
                ext: SorobanTransactionMetaExt::V0,
                return_value: outcome.return_value,
            }),
            events: Default::default(),
            diagnostic_events: Default::default(),
        });
        tracing::debug!(hash = %hex::encode(tx.hash), ledger = info.sequence_number, success, "applied");
        ledger.applied.push(AppliedTransaction {
            hash: tx.hash,
            ledger: info.sequence_number,
            application_order: order,
            created_at: info.timestamp,
            success,
            envelope: tx.envelope,
            result: result.to_xdr(Limits::none())?,
            meta: meta.to_xdr(Limits::none())?,
        });
    }
    Ok(())
}

fn account_state(ledger: &Ledger, key: [u8; 32]) -> Option<LedgerEntry> {
    ledger
        .entries
        .get(&account_key(key))
        .map(|s| s.entry.clone())
}

fn failed(result: InvokeHostFunctionResult) -> Outcome {
    Outcome {
        result,
        writes: Vec::new(),
        refundable_fee: 0,
        return_value: None,
        events: Vec::new(),
    }
}

/// Runs the host function of `tx` against its footprint.
fn invoke(
    ledger: &Ledger,
    config: &NetworkConfig,
    modules: &mut Modules,
    info: &LedgerInfo,
    tx: &Checked,
) -> Result<Outcome, Error> {
    let resources = &tx.data.resources;
    let footprint = &resources.footprint;
    let restored: Vec<u32> = match &tx.data.ext {
        SorobanTransactionDataExt::V0 => Vec::new(),
        SorobanTransactionDataExt::V1(ext) => ext.archived_soroban_entries.to_vec(),
    };
    let budget = Budget::try_from_configs(
        u64::from(resources.instructions),
        u64::from(config.tx_memory_limit),
        config.cpu_cost_params.clone(),
        config.memory_cost_params.clone(),
    )?;
    // Sizes for rent are measured outside the transaction's budget, as core does.
    let sizing = modules.context().budget();

    let mut inputs = Vec::with_capacity(footprint.read_only.len() + footprint.read_write.len());
    let mut disk_read_bytes: u64 = 0;
    for (i, key) in footprint
        .read_only
        .iter()
        .chain(footprint.read_write.iter())
        .enumerate()
    {
        let Some(stored) = ledger.entries.get(key) else {
            inputs.push((None, None));
            continue;
        };
        let xdr = stored.entry.to_xdr(Limits::none())?;
        let archived = stored
            .live_until
            .is_some_and(|until| until < info.sequence_number);
        let persistent = matches!(key, LedgerKey::ContractCode(_))
            || matches!(key, LedgerKey::ContractData(d) if d.durability == ContractDataDurability::Persistent);
        let rw_index = i.checked_sub(footprint.read_only.len());
        let restoring =
            rw_index.is_some_and(|j| restored.contains(&u32::try_from(j).unwrap_or(u32::MAX)));
        if archived && persistent && !restoring {
            return Ok(failed(InvokeHostFunctionResult::EntryArchived));
        }
        if archived && !persistent {
            // An expired temporary entry is gone.
            inputs.push((None, None));
            continue;
        }
        if !is_soroban(key) || restoring {
            disk_read_bytes += xdr.len() as u64;
        }
        let ttl = match stored.live_until {
            Some(live_until_ledger) => Some(TtlLedgerEntryMeta {
                live_until_ledger,
                entry_size_for_rent: entry_size_for_rent(
                    &sizing,
                    &stored.entry,
                    u32::try_from(xdr.len()).unwrap_or(u32::MAX),
                )?,
            }),
            None => None,
        };
        inputs.push((Some(xdr), ttl));
    }
    if disk_read_bytes > u64::from(resources.disk_read_bytes) {
        return Ok(failed(InvokeHostFunctionResult::ResourceLimitExceeded));
    }

    let auth: Vec<Vec<u8>> = tx
        .auth
        .iter()
        .map(|a| a.to_xdr(Limits::none()))
        .collect::<Result<_, _>>()?;
    let seed: [u8; 32] = Sha256::digest(tx.hash).into();
    let mut diagnostics = Vec::new();
    let invoked = e2e_invoke::invoke_host_function(
        &budget,
        false,
        tx.host_function.to_xdr(Limits::none())?,
        resources.to_xdr(Limits::none())?,
        &restored,
        soroban_env_host::xdr::AccountId(soroban_env_host::xdr::PublicKey::PublicKeyTypeEd25519(
            soroban_env_host::xdr::Uint256(tx.source),
        ))
        .to_xdr(Limits::none())?,
        auth.into_iter(),
        info.clone(),
        inputs.into_iter(),
        seed.to_vec(),
        &mut diagnostics,
        None,
        Some(modules.cache()),
    );
    let over_budget = || -> Result<bool, HostError> {
        Ok(
            budget.get_cpu_insns_consumed()? > u64::from(resources.instructions)
                || budget.get_mem_bytes_consumed()? > u64::from(config.tx_memory_limit),
        )
    };
    let invoked = match invoked {
        Ok(invoked) => invoked,
        Err(e) => {
            tracing::debug!(error = %e, "invocation failed before running");
            return Ok(failed(trap_kind(over_budget()?)));
        }
    };
    let return_xdr = match invoked.encoded_invoke_result {
        Ok(xdr) => xdr,
        Err(e) => {
            tracing::debug!(error = %e, "invocation trapped");
            return Ok(failed(trap_kind(over_budget()?)));
        }
    };
    success(
        ledger,
        config,
        modules,
        info,
        tx,
        return_xdr,
        invoked.ledger_changes,
        invoked.encoded_contract_events,
    )
}

fn trap_kind(over_budget: bool) -> InvokeHostFunctionResult {
    if over_budget {
        InvokeHostFunctionResult::ResourceLimitExceeded
    } else {
        InvokeHostFunctionResult::Trapped
    }
}

/// Checks the write and event limits and the refundable fee of a finished
/// invocation and turns its changes into ledger writes.
#[allow(clippy::too_many_arguments)]
fn success(
    ledger: &Ledger,
    config: &NetworkConfig,
    modules: &mut Modules,
    info: &LedgerInfo,
    tx: &Checked,
    return_xdr: Vec<u8>,
    changes: Vec<HostChange>,
    encoded_events: Vec<Vec<u8>>,
) -> Result<Outcome, Error> {
    let written: usize = changes
        .iter()
        .filter(|c| !c.read_only)
        .filter_map(|c| c.encoded_new_value.as_ref().map(Vec::len))
        .sum();
    if written as u64 > u64::from(tx.data.resources.write_bytes) {
        return Ok(failed(InvokeHostFunctionResult::ResourceLimitExceeded));
    }
    let events_size = encoded_events.iter().map(Vec::len).sum::<usize>() + return_xdr.len();
    let events_size = u32::try_from(events_size).unwrap_or(u32::MAX);
    if events_size > TX_MAX_CONTRACT_EVENTS_SIZE_BYTES {
        return Ok(failed(InvokeHostFunctionResult::ResourceLimitExceeded));
    }
    let rent = compute_rent_fee(
        &extract_rent_changes(&changes),
        &config.rent_fee_configuration,
        info.sequence_number,
    );
    let (_, events_fee) = compute_transaction_resource_fee(
        &TransactionResources {
            instructions: 0,
            disk_read_entries: 0,
            write_entries: 0,
            disk_read_bytes: 0,
            write_bytes: 0,
            contract_events_size_bytes: events_size,
            transaction_size_bytes: 0,
        },
        &config.fee_configuration,
    );
    let refundable_fee = rent.saturating_add(events_fee);
    if tx.non_refundable_fee.saturating_add(refundable_fee) > tx.data.resource_fee {
        return Ok(failed(InvokeHostFunctionResult::InsufficientRefundableFee));
    }

    let mut writes = Vec::new();
    for change in changes {
        let key = LedgerKey::from_xdr(&change.encoded_key, Limits::none())?;
        let new_ttl = change.ttl_change.as_ref().map(|t| t.new_live_until_ledger);
        if change.read_only {
            // A read-only entry can still have its TTL extended.
            if let (Some(ttl), Some(old)) = (new_ttl, ledger.entries.get(&key))
                && old.live_until != Some(ttl)
            {
                let mut stored = old.clone();
                stored.live_until = Some(ttl);
                writes.push((key, Some(stored)));
            }
            continue;
        }
        match change.encoded_new_value {
            Some(xdr) => {
                let mut entry = LedgerEntry::from_xdr(&xdr, Limits::none())?;
                entry.last_modified_ledger_seq = info.sequence_number;
                if let LedgerEntryData::ContractCode(code) = &entry.data {
                    modules.add(&code.code)?;
                }
                let live_until =
                    new_ttl.or_else(|| ledger.entries.get(&key).and_then(|s| s.live_until));
                writes.push((key, Some(Stored { entry, live_until })));
            }
            None => writes.push((key, None)),
        }
    }
    let return_value = ScVal::from_xdr(&return_xdr, Limits::none())?;
    let events: Vec<ContractEvent> = encoded_events
        .iter()
        .map(|e| ContractEvent::from_xdr(e, Limits::none()))
        .collect::<Result<_, _>>()?;
    // Core reports the hash of the return value and the events together.
    let preimage = InvokeHostFunctionSuccessPreImage {
        return_value: return_value.clone(),
        events: events.clone().try_into()?,
    };
    let hash = Hash(Sha256::digest(preimage.to_xdr(Limits::none())?).into());
    Ok(Outcome {
        result: InvokeHostFunctionResult::Success(hash),
        writes,
        refundable_fee,
        return_value: Some(return_value),
        events,
    })
}
