//! Closing a ledger: every queued transaction pays its fee and consumes its
//! sequence number, then its operations run: a host function
//! ([`invoke`](super::invoke)) or classic operations
//! ([`classic`](super::classic)). Only a successful transaction writes
//! anything else; either way its result and meta are recorded.

use std::rc::Rc;

use soroban_env_host::LedgerInfo;
use soroban_env_host::xdr::{
    ExtensionPoint, InvokeHostFunctionResult, LedgerEntryChange, LedgerEntryChanges,
    LedgerEntryData, Limits, OperationMetaV2, OperationResult, OperationResultTr,
    SorobanTransactionMetaExt, SorobanTransactionMetaV2, TransactionMeta, TransactionMetaV4,
    TransactionResult, TransactionResultExt, TransactionResultResult, WriteXdr,
};
use soroban_simulation::NetworkConfig;

use super::Error;
use super::classic;
use super::invoke::invoke;
use super::ledger::{AppliedTransaction, Ledger, account_key};
use super::modules::Modules;
use super::validate::{Body, Checked, Classic, Invoke};

/// What applying one transaction did, to be recorded.
struct Applied {
    fee_charged: i64,
    success: bool,
    /// One per operation.
    results: Vec<OperationResult>,
    /// The source account's fee and sequence number (and refund) changes.
    tx_changes_before: Vec<LedgerEntryChange>,
    tx_changes_after: Vec<LedgerEntryChange>,
    /// One per operation (kept only when the transaction succeeded).
    operations: Vec<OperationMetaV2>,
    soroban_meta: Option<SorobanTransactionMetaV2>,
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
        let applied = match &tx.body {
            Body::Invoke(call) => apply_invoke(ledger, config, modules, info, &tx, call)?,
            Body::Classic(ops) => apply_classic(ledger, info.sequence_number, &tx, ops)?,
        };
        record(ledger, info, tx, order, applied)?;
    }
    Ok(())
}

/// Takes `amount` from the source (at most its balance, as core's fee
/// processing does; a negative amount gives back), sets its sequence number
/// to `seq` when given, and returns what was taken with the State/Updated
/// pair of the account.
fn charge(
    ledger: &mut Ledger,
    source: [u8; 32],
    amount: i64,
    seq: Option<i64>,
    ledger_seq: u32,
) -> (i64, Vec<LedgerEntryChange>) {
    let entries = Rc::make_mut(&mut ledger.entries);
    let Some(stored) = entries.get_mut(&account_key(source)) else {
        return (0, Vec::new());
    };
    let before = stored.entry.clone();
    let LedgerEntryData::Account(account) = &mut stored.entry.data else {
        return (0, Vec::new());
    };
    let taken = amount.min(account.balance);
    account.balance -= taken;
    if let Some(seq) = seq {
        account.seq_num.0 = seq;
    }
    stored.entry.last_modified_ledger_seq = ledger_seq;
    let after = stored.entry.clone();
    (
        taken,
        vec![
            LedgerEntryChange::State(before),
            LedgerEntryChange::Updated(after),
        ],
    )
}

/// A Soroban transaction: the whole bid of inclusion and declared resource
/// fee is taken before the host runs (so it sees the balance core's fee
/// processing leaves), then the unused refundable part goes back.
fn apply_invoke(
    ledger: &mut Ledger,
    config: &NetworkConfig,
    modules: &mut Modules,
    info: &LedgerInfo,
    tx: &Checked,
    call: &Invoke,
) -> Result<Applied, Error> {
    let bid = call.inclusion_fee + call.data.resource_fee;
    let (taken, tx_changes_before) =
        charge(ledger, tx.source, bid, Some(tx.seq), info.sequence_number);
    let outcome = invoke(ledger, config, modules, info, tx, call)?;
    let success = matches!(outcome.result, InvokeHostFunctionResult::Success(_));
    let fee_charged =
        taken.min(call.inclusion_fee + call.non_refundable_fee + outcome.refundable_fee);

    let entries = Rc::make_mut(&mut ledger.entries);
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
    let refund = taken - fee_charged;
    let tx_changes_after = if refund > 0 {
        charge(ledger, tx.source, -refund, None, info.sequence_number).1
    } else {
        Vec::new()
    };
    Ok(Applied {
        fee_charged,
        success,
        results: vec![OperationResult::OpInner(
            OperationResultTr::InvokeHostFunction(outcome.result),
        )],
        tx_changes_before,
        tx_changes_after,
        operations: vec![OperationMetaV2 {
            ext: ExtensionPoint::V0,
            changes: LedgerEntryChanges(op_changes.try_into()?),
            events: outcome.events.try_into()?,
        }],
        soroban_meta: Some(SorobanTransactionMetaV2 {
            ext: SorobanTransactionMetaExt::V0,
            return_value: outcome.return_value,
        }),
    })
}

/// A classic transaction: the base fee per operation is taken, then its
/// operations run all or nothing.
fn apply_classic(
    ledger: &mut Ledger,
    ledger_seq: u32,
    tx: &Checked,
    classic: &Classic,
) -> Result<Applied, Error> {
    let (fee_charged, tx_changes_before) =
        charge(ledger, tx.source, classic.fee, Some(tx.seq), ledger_seq);
    let entries = Rc::make_mut(&mut ledger.entries);
    let outcome = classic::apply(entries, tx.source, &classic.ops, ledger_seq);
    let operations = outcome
        .changes
        .iter()
        .flatten()
        .map(|changes| {
            Ok(OperationMetaV2 {
                ext: ExtensionPoint::V0,
                changes: LedgerEntryChanges(changes.clone().try_into()?),
                events: Default::default(),
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Applied {
        fee_charged,
        success: outcome.changes.is_some(),
        results: outcome.results,
        tx_changes_before,
        tx_changes_after: Vec::new(),
        operations,
        soroban_meta: None,
    })
}

/// Records `tx` as applied: its result and meta as getTransaction reports them.
fn record(
    ledger: &mut Ledger,
    info: &LedgerInfo,
    tx: Checked,
    order: u32,
    applied: Applied,
) -> Result<(), Error> {
    let results = applied.results.try_into()?;
    let result = TransactionResult {
        fee_charged: applied.fee_charged,
        result: if applied.success {
            TransactionResultResult::TxSuccess(results)
        } else {
            TransactionResultResult::TxFailed(results)
        },
        ext: TransactionResultExt::V0,
    };
    let success = applied.success;
    // Core's v4 meta holds neither operation nor Soroban meta for a failed
    // transaction: only what fee and sequence number did.
    let (operations, soroban_meta) = match success {
        true => (applied.operations, applied.soroban_meta),
        false => (Vec::new(), None),
    };
    let meta = TransactionMeta::V4(TransactionMetaV4 {
        ext: ExtensionPoint::V0,
        tx_changes_before: LedgerEntryChanges(applied.tx_changes_before.try_into()?),
        operations: operations.try_into()?,
        tx_changes_after: LedgerEntryChanges(applied.tx_changes_after.try_into()?),
        soroban_meta,
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
    Ok(())
}
