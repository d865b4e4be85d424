//! The checks stellar-core runs before it accepts a Soroban transaction into
//! its queue, in core's order, each failing with core's result code. What
//! passes here is charged a fee when its ledger closes, whatever the
//! invocation then does.

use ed25519_dalek::{Signature, VerifyingKey};
use soroban_env_host::fees::{TransactionResources, compute_transaction_resource_fee};
use soroban_env_host::xdr::{
    AccountEntry, HostFunction, LedgerEntryData, LedgerKey, Limits, MuxedAccount, Operation,
    OperationBody, Preconditions, SorobanAuthorizationEntry, SorobanTransactionData,
    SorobanTransactionDataExt, Transaction, TransactionEnvelope, TransactionResultResult,
    TransactionV1Envelope, WriteXdr,
};
use soroban_simulation::NetworkConfig;

use super::ledger::{Ledger, account_key};
use super::network::{
    BASE_FEE, BASE_RESERVE, TX_MAX_DISK_READ_BYTES, TX_MAX_FOOTPRINT_ENTRIES, TX_MAX_INSTRUCTIONS,
    TX_MAX_SIZE_BYTES, TX_MAX_WRITE_BYTES, TX_MAX_WRITE_ENTRIES,
};

/// A transaction that passed every check, with what applying it needs.
#[derive(Debug, Clone)]
pub struct Checked {
    pub hash: [u8; 32],
    pub envelope: TransactionEnvelope,
    pub source: [u8; 32],
    pub host_function: HostFunction,
    pub auth: Vec<SorobanAuthorizationEntry>,
    pub data: SorobanTransactionData,
    /// The part of the resource fee the network keeps whatever happens.
    pub non_refundable_fee: i64,
    /// What the source bid above the resource fee, capped at the base fee.
    pub inclusion_fee: i64,
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
        // Fee bumps of Soroban transactions are valid on the network but
        // not offered here; v0 envelopes predate Soroban.
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
    let (host_function, auth) = single_invoke(tx)?;
    let data = match &tx.ext {
        soroban_env_host::xdr::TransactionExt::V1(data) => data.clone(),
        soroban_env_host::xdr::TransactionExt::V0 => {
            return Err(TransactionResultResult::TxMalformed);
        }
    };
    check_time_bounds(&tx.cond, ledger.close_time)?;

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
    let non_refundable_fee = check_resources(&data, size, config)?;

    let source = muxed_key(&tx.source_account);
    let account = account(ledger, source).ok_or(TransactionResultResult::TxNoAccount)?;
    if tx.seq_num.0 != account.seq_num.0.saturating_add(1) {
        return Err(TransactionResultResult::TxBadSeq);
    }
    check_signatures(v1, source, hash)?;
    let min_balance =
        2i64.saturating_add(i64::from(account.num_sub_entries)) * i64::from(BASE_RESERVE);
    if account.balance.saturating_sub(min_balance) < fee {
        return Err(TransactionResultResult::TxInsufficientBalance);
    }
    Ok(Checked {
        hash,
        envelope: envelope.clone(),
        source,
        host_function,
        auth,
        inclusion_fee: (fee - data.resource_fee).min(BASE_FEE),
        data,
        non_refundable_fee,
    })
}

fn single_invoke(
    tx: &Transaction,
) -> Result<(HostFunction, Vec<SorobanAuthorizationEntry>), TransactionResultResult> {
    let [op]: &[Operation; 1] = match tx.operations.as_slice().try_into() {
        Ok(op) => op,
        Err(_) if tx.operations.is_empty() => {
            return Err(TransactionResultResult::TxMissingOperation);
        }
        Err(_) => return Err(TransactionResultResult::TxMalformed),
    };
    // An operation source other than the transaction's would need that
    // account's signature too; this network only checks the one signer.
    if let Some(op_source) = &op.source_account
        && muxed_key(op_source) != muxed_key(&tx.source_account)
    {
        return Err(TransactionResultResult::TxMalformed);
    }
    match &op.body {
        OperationBody::InvokeHostFunction(invoke) => {
            Ok((invoke.host_function.clone(), invoke.auth.to_vec()))
        }
        _ => Err(TransactionResultResult::TxMalformed),
    }
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

/// The master key's signature must be there and verify; no other signature
/// may be (core's txBAD_AUTH_EXTRA).
fn check_signatures(
    v1: &TransactionV1Envelope,
    source: [u8; 32],
    hash: [u8; 32],
) -> Result<(), TransactionResultResult> {
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
    if v1.signatures.len() > 1 {
        return Err(TransactionResultResult::TxBadAuthExtra);
    }
    Ok(())
}

/// The account entry at `key`, if it exists.
pub fn account(ledger: &Ledger, key: [u8; 32]) -> Option<&AccountEntry> {
    match &ledger.live(&account_key(key))?.entry.data {
        LedgerEntryData::Account(account) => Some(account),
        _ => None,
    }
}
