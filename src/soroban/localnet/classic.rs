//! The two classic operations the network takes, CreateAccount and Payment,
//! checked and applied as stellar-core does from protocol 14 on
//! (`CreateAccountOpFrame`, `PaymentOpFrame` and the strict-receive path
//! payment it hands over to): the validity checks run at admission, the
//! effects at ledger close.
//!
//! No trustlines, offers, sponsorships or liabilities exist on this network,
//! so an account's minimum balance is `(2 + sub-entries)` base reserves, all
//! of its balance above that is available, and a payment of a credit asset
//! finds no trustline to move it (see [`pay`]).

use std::collections::BTreeMap;

use soroban_env_host::xdr::{
    AccountEntry, AccountId, Asset, CreateAccountResult, LedgerEntry, LedgerEntryChange,
    LedgerEntryData, LedgerKey, OperationBody, OperationResult, OperationResultTr, PaymentResult,
    PublicKey,
};

use super::ledger::{Stored, account_entry, account_key};
use super::network::BASE_RESERVE;
use super::validate::muxed_key;

/// One well-formed operation, its accounts as ed25519 keys.
#[derive(Debug, Clone)]
pub enum ClassicOp {
    CreateAccount {
        destination: [u8; 32],
        starting_balance: i64,
    },
    Payment {
        destination: [u8; 32],
        asset: Asset,
        amount: i64,
    },
}

/// The least balance an account with `sub_entries` must keep (core's
/// `getMinBalance` without sponsorships).
fn reserve(sub_entries: u32) -> i64 {
    (2 + i64::from(sub_entries)) * i64::from(BASE_RESERVE)
}

/// The least balance `account` must keep.
pub fn min_balance(account: &AccountEntry) -> i64 {
    reserve(account.num_sub_entries)
}

/// What `account` can spend (core's `getAvailableBalance` without liabilities).
fn available(account: &AccountEntry) -> i64 {
    account.balance - min_balance(account)
}

fn key_of(account: &AccountId) -> [u8; 32] {
    let AccountId(PublicKey::PublicKeyTypeEd25519(key)) = account;
    key.0
}

/// An operation's result code: what it reports, without the 192 bytes of
/// an `OperationResult` (clippy's `result_large_err`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpCode {
    CreateAccount(CreateAccountResult),
    Payment(PaymentResult),
    /// opNO_ACCOUNT: the operation's source account is gone.
    NoAccount,
    /// opNOT_SUPPORTED: an operation this network does not run.
    NotSupported,
}

impl From<OpCode> for OperationResult {
    fn from(code: OpCode) -> Self {
        match code {
            OpCode::CreateAccount(code) => {
                OperationResult::OpInner(OperationResultTr::CreateAccount(code))
            }
            OpCode::Payment(code) => OperationResult::OpInner(OperationResultTr::Payment(code)),
            OpCode::NoAccount => OperationResult::OpNoAccount,
            OpCode::NotSupported => OperationResult::OpNotSupported,
        }
    }
}

/// The result core puts in every operation's slot before checking it: the
/// operation's own success code. Operations this network does not run get
/// `opNOT_SUPPORTED`, which is what they would be answered when checked.
pub fn initial_result(body: &OperationBody) -> OperationResult {
    match body {
        OperationBody::CreateAccount(_) => {
            OpCode::CreateAccount(CreateAccountResult::Success).into()
        }
        OperationBody::Payment(_) => OpCode::Payment(PaymentResult::Success).into(),
        _ => OpCode::NotSupported.into(),
    }
}

fn success(op: &ClassicOp) -> OperationResult {
    match op {
        ClassicOp::CreateAccount { .. } => OpCode::CreateAccount(CreateAccountResult::Success),
        ClassicOp::Payment { .. } => OpCode::Payment(PaymentResult::Success),
    }
    .into()
}

/// Core's `doCheckValid` of an operation of `source`: the operation to
/// apply, or the result that rejects its transaction with txFAILED.
pub fn check(source: [u8; 32], body: &OperationBody) -> Result<ClassicOp, OpCode> {
    match body {
        OperationBody::CreateAccount(op) => {
            let destination = key_of(&op.destination);
            // From protocol 14 a zero starting balance is well formed; it
            // fails at apply with LOW_RESERVE instead.
            if op.starting_balance < 0 || destination == source {
                return Err(OpCode::CreateAccount(CreateAccountResult::Malformed));
            }
            Ok(ClassicOp::CreateAccount {
                destination,
                starting_balance: op.starting_balance,
            })
        }
        OperationBody::Payment(op) => {
            if op.amount <= 0 || !asset_valid(&op.asset) {
                return Err(OpCode::Payment(PaymentResult::Malformed));
            }
            Ok(ClassicOp::Payment {
                destination: muxed_key(&op.destination),
                asset: op.asset.clone(),
                amount: op.amount,
            })
        }
        // Every other operation needs ledger entries this network does not keep.
        _ => Err(OpCode::NotSupported),
    }
}

/// Core's `isAssetValid`: a credit asset's code is ASCII letters and digits
/// padded with trailing zeros, at least 1 character long for AlphaNum4 and
/// at least 5 for AlphaNum12.
fn asset_valid(asset: &Asset) -> bool {
    let (code, least): (&[u8], usize) = match asset {
        Asset::Native => return true,
        Asset::CreditAlphanum4(a) => (&a.asset_code.0, 1),
        Asset::CreditAlphanum12(a) => (&a.asset_code.0, 5),
    };
    let len = code.iter().position(|&b| b == 0).unwrap_or(code.len());
    let (chars, padding) = code.split_at(len);
    len >= least && chars.iter().all(u8::is_ascii_alphanumeric) && padding.iter().all(|&b| b == 0)
}

/// What the operations of one transaction did.
pub struct Outcome {
    /// One result per operation, in order; every operation runs, even after one failed.
    pub results: Vec<OperationResult>,
    /// Per operation, the changes it made, when every operation succeeded;
    /// None otherwise, and then nothing is written (core's operation meta is
    /// empty for a failed transaction).
    pub changes: Option<Vec<Vec<LedgerEntryChange>>>,
}

/// An account before and after an operation (before = None: created).
type Change = (Option<LedgerEntry>, LedgerEntry);

/// Applies `ops` of `source` (whose fee and sequence number are already
/// taken) in ledger `ledger_seq`, all or nothing, as core's
/// `applyOperations` does: each operation sees what the earlier successful
/// ones did; one that fails changes nothing; if any failed, the
/// transaction writes nothing.
pub fn apply(
    entries: &mut BTreeMap<LedgerKey, Stored>,
    source: [u8; 32],
    ops: &[ClassicOp],
    ledger_seq: u32,
) -> Outcome {
    // Accounts as the successful operations so far left them.
    let mut written: BTreeMap<[u8; 32], LedgerEntry> = BTreeMap::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut changes = Some(Vec::with_capacity(ops.len()));
    for op in ops {
        let load = |key: [u8; 32]| {
            written
                .get(&key)
                .or_else(|| entries.get(&account_key(key)).map(|s| &s.entry))
                .cloned()
        };
        let applied = match op {
            ClassicOp::CreateAccount {
                destination,
                starting_balance,
            } => create_account(&load, source, *destination, *starting_balance, ledger_seq),
            ClassicOp::Payment {
                destination,
                asset,
                amount,
            } => pay(&load, source, *destination, asset, *amount, ledger_seq),
        };
        match applied {
            Ok(changed) => {
                results.push(success(op));
                if let Some(changes) = &mut changes {
                    changes.push(meta(&changed));
                }
                for (_, after) in changed {
                    if let LedgerEntryData::Account(account) = &after.data {
                        written.insert(key_of(&account.account_id), after);
                    }
                }
            }
            Err(code) => {
                results.push(code.into());
                changes = None;
            }
        }
    }
    if changes.is_some() {
        for (key, entry) in written {
            entries.insert(
                account_key(key),
                Stored {
                    entry,
                    live_until: None,
                },
            );
        }
    }
    Outcome { results, changes }
}

fn meta(changed: &[Change]) -> Vec<LedgerEntryChange> {
    let mut meta = Vec::with_capacity(2 * changed.len());
    for (before, after) in changed {
        match before {
            Some(before) => {
                meta.push(LedgerEntryChange::State(before.clone()));
                meta.push(LedgerEntryChange::Updated(after.clone()));
            }
            None => meta.push(LedgerEntryChange::Created(after.clone())),
        }
    }
    meta
}

/// `entry` with its balance moved by `delta`, last modified in `ledger_seq`.
fn with_balance(entry: &LedgerEntry, delta: i64, ledger_seq: u32) -> Option<LedgerEntry> {
    let mut after = entry.clone();
    let LedgerEntryData::Account(account) = &mut after.data else {
        return None;
    };
    account.balance = account.balance.checked_add(delta)?;
    after.last_modified_ledger_seq = ledger_seq;
    Some(after)
}

fn account(entry: &LedgerEntry) -> Option<&AccountEntry> {
    match &entry.data {
        LedgerEntryData::Account(account) => Some(account),
        _ => None,
    }
}

/// What an operation changed, or why it failed.
type Applied = Result<Vec<Change>, OpCode>;

/// CreateAccountOpFrame::doApply (protocol 14+): the destination must not
/// exist, the starting balance must cover a new account's reserve, and the
/// source must be able to spend it.
fn create_account(
    load: &impl Fn([u8; 32]) -> Option<LedgerEntry>,
    source: [u8; 32],
    destination: [u8; 32],
    starting_balance: i64,
    ledger_seq: u32,
) -> Applied {
    let fail = |code| Err(OpCode::CreateAccount(code));
    if load(destination).is_some() {
        return fail(CreateAccountResult::AlreadyExist);
    }
    if starting_balance < reserve(0) {
        return fail(CreateAccountResult::LowReserve);
    }
    // Core checks at apply that the source still exists (opNO_ACCOUNT);
    // without account merges it always does here.
    let source_before = load(source).ok_or(OpCode::NoAccount)?;
    if account(&source_before).is_none_or(|a| available(a) < starting_balance) {
        return fail(CreateAccountResult::Underfunded);
    }
    let source_after =
        with_balance(&source_before, -starting_balance, ledger_seq).ok_or(OpCode::NoAccount)?;
    let created = account_entry(destination, starting_balance, ledger_seq);
    Ok(vec![(Some(source_before), source_after), (None, created)])
}

/// PaymentOpFrame::doApply: native XLM to oneself succeeds at once; any
/// other payment is a strict-receive path payment without a path. The
/// destination is credited before the source is debited, so LINE_FULL is
/// found before UNDERFUNDED.
///
/// A credit asset moves between trustlines, and none exist here: only its
/// issuer, which core lets hold its own asset without one, can take part.
/// So a payment to the issuer succeeds if the issuer sends it (changing
/// nothing) and is SRC_NO_TRUST otherwise; any other destination is
/// NO_DESTINATION when missing, NO_TRUST when present.
fn pay(
    load: &impl Fn([u8; 32]) -> Option<LedgerEntry>,
    source: [u8; 32],
    destination: [u8; 32],
    asset: &Asset,
    amount: i64,
    ledger_seq: u32,
) -> Applied {
    let fail = |code| Err(OpCode::Payment(code));
    let issuer = match asset {
        Asset::Native if destination == source => return Ok(Vec::new()),
        Asset::Native => None,
        Asset::CreditAlphanum4(a) => Some(key_of(&a.issuer)),
        Asset::CreditAlphanum12(a) => Some(key_of(&a.issuer)),
    };
    if let Some(issuer) = issuer {
        return match (destination == issuer, source == issuer) {
            (true, true) => Ok(Vec::new()),
            (true, false) => fail(PaymentResult::SrcNoTrust),
            (false, _) if load(destination).is_none() => fail(PaymentResult::NoDestination),
            (false, _) => fail(PaymentResult::NoTrust),
        };
    }
    let Some(destination_before) = load(destination) else {
        return fail(PaymentResult::NoDestination);
    };
    let Some(destination_after) = with_balance(&destination_before, amount, ledger_seq) else {
        return fail(PaymentResult::LineFull);
    };
    // Core answers MALFORMED for a source gone missing; it cannot go here.
    let Some(source_before) = load(source) else {
        return fail(PaymentResult::Malformed);
    };
    if account(&source_before).is_none_or(|a| amount > available(a)) {
        return fail(PaymentResult::Underfunded);
    }
    let Some(source_after) = with_balance(&source_before, -amount, ledger_seq) else {
        return fail(PaymentResult::Underfunded);
    };
    Ok(vec![
        (Some(source_before), source_after),
        (Some(destination_before), destination_after),
    ])
}

#[cfg(test)]
mod tests {
    use soroban_env_host::xdr::{AlphaNum4, AlphaNum12, AssetCode4, AssetCode12, Uint256};

    use super::*;

    fn id(key: [u8; 32]) -> AccountId {
        AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)))
    }

    #[test]
    fn asset_codes_are_checked_as_core_does() {
        let four = |code: [u8; 4]| {
            Asset::CreditAlphanum4(AlphaNum4 {
                asset_code: AssetCode4(code),
                issuer: id([1; 32]),
            })
        };
        let twelve = |code: &[u8]| {
            let mut padded = [0; 12];
            padded[..code.len()].copy_from_slice(code);
            Asset::CreditAlphanum12(AlphaNum12 {
                asset_code: AssetCode12(padded),
                issuer: id([1; 32]),
            })
        };
        assert!(asset_valid(&Asset::Native));
        assert!(asset_valid(&four(*b"USD\0")));
        assert!(asset_valid(&four(*b"A\0\0\0")));
        assert!(!asset_valid(&four([0; 4])));
        assert!(!asset_valid(&four(*b"U\0SD")));
        assert!(!asset_valid(&four(*b"US-D")));
        assert!(asset_valid(&twelve(b"ABCDE")));
        assert!(!asset_valid(&twelve(b"ABCD")));
    }

    #[test]
    fn credit_payments_find_no_trustline() {
        let (issuer, holder, missing) = ([1; 32], [2; 32], [3; 32]);
        let entry = account_entry(holder, 100 * i64::from(BASE_RESERVE), 1);
        let load = |key: [u8; 32]| (key == holder || key == issuer).then(|| entry.clone());
        let usd = Asset::CreditAlphanum4(AlphaNum4 {
            asset_code: AssetCode4(*b"USD\0"),
            issuer: id(issuer),
        });
        let code = |source, destination| pay(&load, source, destination, &usd, 5, 2);
        // The issuer paying itself changes nothing.
        assert_eq!(code(issuer, issuer), Ok(Vec::new()));
        let failed = |code| Err(OpCode::Payment(code));
        assert_eq!(code(holder, issuer), failed(PaymentResult::SrcNoTrust));
        assert_eq!(code(issuer, holder), failed(PaymentResult::NoTrust));
        assert_eq!(code(issuer, missing), failed(PaymentResult::NoDestination));
    }
}
