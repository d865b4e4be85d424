//! Running one transaction's host function in a fresh host that sees only
//! its declared footprint, within its declared instructions and bytes, and
//! checking what it wrote and emitted against its declared limits and
//! refundable fee. Nothing here touches the ledger; [`apply`](super::apply)
//! writes what a successful invocation returns.

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
    ContractDataDurability, ContractEvent, Hash, InvokeHostFunctionResult,
    InvokeHostFunctionSuccessPreImage, LedgerEntry, LedgerEntryData, LedgerKey, Limits, ReadXdr,
    ScVal, SorobanTransactionDataExt, WriteXdr,
};
use soroban_env_host::{HostError, LedgerInfo};
use soroban_simulation::NetworkConfig;

use super::Error;
use super::ledger::{Ledger, Stored};
use super::modules::Modules;
use super::network::TX_MAX_CONTRACT_EVENTS_SIZE_BYTES;
use super::validate::{Checked, Invoke, is_soroban};

/// How an invocation ended.
pub struct Outcome {
    pub result: InvokeHostFunctionResult,
    /// Entries to write (None = delete) with their new TTLs; empty on failure.
    pub writes: Vec<(LedgerKey, Option<Stored>)>,
    /// The refundable fee consumed (events and rent); zero on failure.
    pub refundable_fee: i64,
    pub return_value: Option<ScVal>,
    pub events: Vec<ContractEvent>,
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

/// Runs the host function of `tx` (`call`) against its footprint.
pub fn invoke(
    ledger: &Ledger,
    config: &NetworkConfig,
    modules: &mut Modules,
    info: &LedgerInfo,
    tx: &Checked,
    call: &Invoke,
) -> Result<Outcome, Error> {
    let resources = &call.data.resources;
    let footprint = &resources.footprint;
    let restored: Vec<u32> = match &call.data.ext {
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

    let auth: Vec<Vec<u8>> = call
        .auth
        .iter()
        .map(|a| a.to_xdr(Limits::none()))
        .collect::<Result<_, _>>()?;
    let seed: [u8; 32] = Sha256::digest(tx.hash).into();
    let mut diagnostics = Vec::new();
    let invoked = e2e_invoke::invoke_host_function(
        &budget,
        false,
        call.host_function.to_xdr(Limits::none())?,
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
        call,
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
    call: &Invoke,
    return_xdr: Vec<u8>,
    changes: Vec<HostChange>,
    encoded_events: Vec<Vec<u8>>,
) -> Result<Outcome, Error> {
    let written: usize = changes
        .iter()
        .filter(|c| !c.read_only)
        .filter_map(|c| c.encoded_new_value.as_ref().map(Vec::len))
        .sum();
    if written as u64 > u64::from(call.data.resources.write_bytes) {
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
    if call.non_refundable_fee.saturating_add(refundable_fee) > call.data.resource_fee {
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
