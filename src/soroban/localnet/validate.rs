//! The checks stellar-core runs before it accepts a transaction into its
//! queue, in core's order, each failing with core's result code. Two kinds
//! pass: a Soroban transaction of one InvokeHostFunction, and a classic one
//! of CreateAccount and Payment operations ([`classic`](super::classic)).
//! What passes here is charged a fee when its ledger closes, whatever its
//! operations then do.

use ed25519_dalek::{Signature, VerifyingKey};
use soroban_env_host::fees::{TransactionResources, compute_transaction_resource_fee};
use soroban_env_host::xdr::{
    AccountEntry, HostFunction, LedgerEntryData, LedgerKey, Limits, MuxedAccount, OperationBody,
    OperationResult, Preconditions, SorobanAuthorizationEntry, SorobanTransactionData,
    SorobanTransactionDataExt, Transaction, TransactionEnvelope, TransactionExt,
    TransactionResultResult, TransactionV1Envelope, WriteXdr,
};
use soroban_simulation::NetworkConfig;

use super::classic::{self, ClassicOp};
use super::ledger::{Ledger, account_key};
use super::network::{
    BASE_FEE, TX_MAX_DISK_READ_BYTES, TX_MAX_FOOTPRINT_ENTRIES, TX_MAX_INSTRUCTIONS,
    TX_MAX_SIZE_BYTES, TX_MAX_WRITE_BYTES, TX_MAX_WRITE_ENTRIES,
};

/// A transaction that passed every check, with what applying it needs.
#[derive(Debug, Clone)]
pub struct Checked {
    pub hash: [u8; 32],
    pub envelope: TransactionEnvelope,
    pub source: [u8; 32],
    /// The sequence number the transaction consumes.
    pub seq: i64,
    pub body: Body,
}

/// What a checked transaction does.
#[derive(Debug, Clone)]
pub enum Body {
    Invoke(Box<Invoke>),
    Classic(Classic),
}

/// A Soroban transaction: one host function within declared resources.
#[derive(Debug, Clone)]
pub struct Invoke {
    pub host_function: HostFunction,
    pub auth: Vec<SorobanAuthorizationEntry>,
    pub data: SorobanTransactionData,
    /// The part of the resource fee the network keeps whatever happens.
    pub non_refundable_fee: i64,
    /// What the source bid above the resource fee, capped at the base fee.
    pub inclusion_fee: i64,
}

/// A classic transaction of CreateAccount and Payment operations.
#[derive(Debug, Clone)]
pub struct Classic {
    pub ops: Vec<ClassicOp>,
    /// What closing its ledger charges: the base fee per operation (core's
    /// `min(bid, base fee * operations)`; there is no surge pricing here,
    /// and admission made sure the bid covers it).
    pub fee: i64,
}

/// The ed25519 key of a (possibly multiplexed) account.
pub fn muxed_key(account: &MuxedAccount) -> [u8; 32] {
    match account {
        MuxedAccount::Ed25519(key) => key.0,
        MuxedAccount::MuxedEd25519(m) => m.ed25519.0,
    }
}

/// The envelope's v1 body, or the code core gives envelopes it does not take.
pub fn v1(
    envelope: &TransactionEnvelope,
) -> Result<&TransactionV1Envelope, TransactionResultResult> {
    match envelope {
        TransactionEnvelope::Tx(v1) => Ok(v1),
        // Fee bumps are valid on the network but not offered here; v0
        // envelopes are refused by core since protocol 13.
        _ => Err(TransactionResultResult::TxNotSupported),
    }
}

/// Checks `envelope` (whose hash is `hash`) against the latest ledger.
pub fn check(
    ledger: &Ledger,
    config: &NetworkConfig,
    envelope: &TransactionEnvelope,
    hash: [u8; 32],
) -> Result<Checked, TransactionResultResult> {
    let v1 = v1(envelope)?;
    let tx = &v1.tx;
    let source = muxed_key(&tx.source_account);
    check_operations(tx)?;
    // A Soroban operation comes alone (check_operations), so this is core's
    // `isSoroban`, which looks at the first operation.
    let soroban = tx.operations.iter().any(|op| is_soroban_op(&op.body));
    let fee = i64::from(tx.fee);
    // At most MAX_OPS_PER_TX, which the XDR bounds.
    let base_fee = BASE_FEE.saturating_mul(tx.operations.len() as i64);
    let invoke = if soroban {
        Some(check_invoke(envelope, tx, config, ledger.close_time)?)
    } else {
        // From protocol 21 a classic transaction carries no Soroban data.
        if !matches!(tx.ext, TransactionExt::V0) {
            return Err(TransactionResultResult::TxMalformed);
        }
        check_time_bounds(&tx.cond, ledger.close_time)?;
        // The bid must cover the base fee of every operation.
        if fee < base_fee {
            return Err(TransactionResultResult::TxInsufficientFee);
        }
        None
    };

    let account = account(ledger, source).ok_or(TransactionResultResult::TxNoAccount)?;
    check_seq(tx.seq_num.0, account.seq_num.0, ledger.sequence)?;
    let master_only = check_signatures(v1, source, hash)?;
    // The account must keep its reserve after paying the whole bid.
    let available = account
        .balance
        .saturating_sub(classic::min_balance(account));
    if available < fee {
        return Err(TransactionResultResult::TxInsufficientBalance);
    }
    let body = match invoke {
        Some(invoke) => Body::Invoke(Box::new(invoke)),
        None => Body::Classic(Classic {
            ops: check_classic_ops(tx, source)?,
            fee: base_fee,
        }),
    };
    // Core looks for unused signatures last, after the operations' checks.
    if !master_only {
        return Err(TransactionResultResult::TxBadAuthExtra);
    }
    Ok(Checked {
        hash,
        envelope: envelope.clone(),
        source,
        seq: tx.seq_num.0,
        body,
    })
}

fn is_soroban_op(body: &OperationBody) -> bool {
    matches!(
        body,
        OperationBody::InvokeHostFunction(_)
            | OperationBody::ExtendFootprintTtl(_)
            | OperationBody::RestoreFootprint(_)
    )
}

/// At least one operation; a Soroban operation alone (core's
/// `validateSorobanOpsConsistency`); every operation the transaction
/// source's: an operation source other than the transaction's would need
/// that account's signature too, and this network only checks the one signer.
fn check_operations(tx: &Transaction) -> Result<(), TransactionResultResult> {
    if tx.operations.is_empty() {
        return Err(TransactionResultResult::TxMissingOperation);
    }
    let source = muxed_key(&tx.source_account);
    let foreign = tx.operations.iter().any(|op| {
        op.source_account
            .as_ref()
            .is_some_and(|op_source| muxed_key(op_source) != source)
    });
    let soroban = tx.operations.iter().any(|op| is_soroban_op(&op.body));
    if foreign || (soroban && tx.operations.len() != 1) {
        return Err(TransactionResultResult::TxMalformed);
    }
    Ok(())
}

/// The checks of a Soroban transaction that need no account: its one
/// operation is an invocation (extending and restoring are not offered
/// here), with Soroban data, within time bounds, a fee covering the
/// declared resource fee and the inclusion fee, and declared resources
/// within the network's limits.
fn check_invoke(
    envelope: &TransactionEnvelope,
    tx: &Transaction,
    config: &NetworkConfig,
    close_time: u64,
) -> Result<Invoke, TransactionResultResult> {
    let Some(OperationBody::InvokeHostFunction(op)) = tx.operations.first().map(|op| &op.body)
    else {
        return Err(TransactionResultResult::TxMalformed);
    };
    let TransactionExt::V1(data) = &tx.ext else {
        return Err(TransactionResultResult::TxMalformed);
    };
    check_time_bounds(&tx.cond, close_time)?;

    // Fee: the bid must cover the declared resource fee plus the minimum
    // inclusion fee of the one operation.
    let fee = i64::from(tx.fee);
    if data.resource_fee < 0 || fee < data.resource_fee.saturating_add(BASE_FEE) {
        return Err(TransactionResultResult::TxInsufficientFee);
    }
    let size = envelope
        .to_xdr(Limits::none())
        .map_err(|_| TransactionResultResult::TxMalformed)?
        .len();
    let non_refundable_fee = check_resources(data, size, config)?;
    Ok(Invoke {
        host_function: op.host_function.clone(),
        auth: op.auth.to_vec(),
        inclusion_fee: (fee - data.resource_fee).min(BASE_FEE),
        data: data.clone(),
        non_refundable_fee,
    })
}

/// Core's `isBadSeq`: the next number of the account, and never the
/// starting number of an account created in the next ledger.
fn check_seq(tx_seq: i64, account_seq: i64, latest: u32) -> Result<(), TransactionResultResult> {
    let starting = i64::from(latest.saturating_add(1)) << 32;
    if account_seq == i64::MAX || account_seq + 1 != tx_seq || tx_seq == starting {
        return Err(TransactionResultResult::TxBadSeq);
    }
    Ok(())
}

/// Each classic operation's validity check, in order; the first that fails
/// rejects the transaction with txFAILED and the results so far (the
/// operations after it keep the success code core starts them with).
fn check_classic_ops(
    tx: &Transaction,
    source: [u8; 32],
) -> Result<Vec<ClassicOp>, TransactionResultResult> {
    let mut ops = Vec::with_capacity(tx.operations.len());
    for (i, op) in tx.operations.iter().enumerate() {
        match classic::check(source, &op.body) {
            Ok(checked) => ops.push(checked),
            Err(result) => {
                let mut results: Vec<OperationResult> = tx
                    .operations
                    .iter()
                    .map(|op| classic::initial_result(&op.body))
                    .collect();
                results[i] = result.into();
                // As many results as operations, which the XDR already bounds.
                let results = results
                    .try_into()
                    .map_err(|_| TransactionResultResult::TxMalformed)?;
                return Err(TransactionResultResult::TxFailed(results));
            }
        }
    }
    Ok(ops)
}

fn check_time_bounds(cond: &Preconditions, close_time: u64) -> Result<(), TransactionResultResult> {
    let bounds = match cond {
        Preconditions::None => return Ok(()),
        Preconditions::Time(bounds) => bounds,
        Preconditions::V2(v2) => match &v2.time_bounds {
            Some(bounds) => bounds,
            None => return Ok(()),
        },
    };
    if bounds.min_time.0 > close_time {
        return Err(TransactionResultResult::TxTooEarly);
    }
    if bounds.max_time.0 != 0 && bounds.max_time.0 < close_time {
        return Err(TransactionResultResult::TxTooLate);
    }
    Ok(())
}

/// Declared resources within the network limits and a declared fee that
/// covers their non-refundable part; returns that part.
fn check_resources(
    data: &SorobanTransactionData,
    tx_size: usize,
    config: &NetworkConfig,
) -> Result<i64, TransactionResultResult> {
    let invalid = Err(TransactionResultResult::TxSorobanInvalid);
    let resources = &data.resources;
    let footprint = &resources.footprint;
    if tx_size > TX_MAX_SIZE_BYTES
        || resources.instructions > TX_MAX_INSTRUCTIONS
        || resources.disk_read_bytes > TX_MAX_DISK_READ_BYTES
        || resources.write_bytes > TX_MAX_WRITE_BYTES
        || footprint.read_only.len() + footprint.read_write.len() > TX_MAX_FOOTPRINT_ENTRIES
        || footprint.read_write.len() > TX_MAX_WRITE_ENTRIES
    {
        return invalid;
    }
    let keys: Vec<&LedgerKey> = footprint
        .read_only
        .iter()
        .chain(footprint.read_write.iter())
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let allowed = matches!(
            key,
            LedgerKey::Account(_)
                | LedgerKey::Trustline(_)
                | LedgerKey::ContractData(_)
                | LedgerKey::ContractCode(_)
        );
        // A key declared twice (even once read-only, once read-write) is malformed.
        if !allowed || keys[..i].contains(key) {
            return invalid;
        }
    }
    let archived = match &data.ext {
        SorobanTransactionDataExt::V0 => 0,
        SorobanTransactionDataExt::V1(ext) => ext.archived_soroban_entries.len(),
    };
    let classic = keys.iter().filter(|k| !is_soroban(k)).count();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let declared = TransactionResources {
        instructions: resources.instructions,
        disk_read_entries: count(classic + archived),
        write_entries: count(footprint.read_write.len()),
        disk_read_bytes: resources.disk_read_bytes,
        write_bytes: resources.write_bytes,
        contract_events_size_bytes: 0,
        transaction_size_bytes: count(tx_size),
    };
    let (non_refundable, _) =
        compute_transaction_resource_fee(&declared, &config.fee_configuration);
    if data.resource_fee < non_refundable {
        return invalid;
    }
    Ok(non_refundable)
}

/// Contract data and code live in memory on the network; every other entry
/// is a disk read.
pub fn is_soroban(key: &LedgerKey) -> bool {
    matches!(key, LedgerKey::ContractData(_) | LedgerKey::ContractCode(_))
}

/// The master key's signature must be there and verify (else txBAD_AUTH);
/// returns whether it is the only one (core's txBAD_AUTH_EXTRA otherwise,
/// found after the operations' checks).
fn check_signatures(
    v1: &TransactionV1Envelope,
    source: [u8; 32],
    hash: [u8; 32],
) -> Result<bool, TransactionResultResult> {
    let key = VerifyingKey::from_bytes(&source).map_err(|_| TransactionResultResult::TxBadAuth)?;
    let hint = &source[28..];
    let verifies = |d: &soroban_env_host::xdr::DecoratedSignature| {
        d.hint.0 == hint
            && Signature::from_slice(d.signature.as_slice())
                .is_ok_and(|sig| key.verify_strict(&hash, &sig).is_ok())
    };
    if !v1.signatures.iter().any(verifies) {
        return Err(TransactionResultResult::TxBadAuth);
    }
    Ok(v1.signatures.len() == 1)
}

/// The account entry at `key`, if it exists.
pub fn account(ledger: &Ledger, key: [u8; 32]) -> Option<&AccountEntry> {
    match &ledger.live(&account_key(key))?.entry.data {
        LedgerEntryData::Account(account) => Some(account),
        _ => None,
    }
}
