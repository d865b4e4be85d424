//! Classic transactions (CreateAccount, Payment) over real HTTP: what
//! admission refuses, and what a ledger close does with what it accepted.

use stellar_xdr::{
    AccountEntry, AlphaNum4, Asset, AssetCode4, BumpSequenceOp, CreateAccountOp,
    CreateAccountResult, LedgerEntryChange, OperationResult, OperationResultTr, PaymentOp,
    PaymentResult, TransactionMeta,
};

use super::*;
use crate::soroban::tx::result_code;

const XLM: i64 = 10_000_000;
const RESERVE: i64 = network::BASE_RESERVE as i64;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn create(to: &SigningKey, starting_balance: i64) -> OperationBody {
    OperationBody::CreateAccount(CreateAccountOp {
        destination: account_id(to),
        starting_balance,
    })
}

fn pay(to: &SigningKey, amount: i64) -> OperationBody {
    OperationBody::Payment(PaymentOp {
        destination: MuxedAccount::Ed25519(Uint256(account(to).0)),
        asset: Asset::Native,
        amount,
    })
}

fn created(code: CreateAccountResult) -> OperationResult {
    OperationResult::OpInner(OperationResultTr::CreateAccount(code))
}

fn paid(code: PaymentResult) -> OperationResult {
    OperationResult::OpInner(OperationResultTr::Payment(code))
}

/// A classic transaction of `from` bidding the base fee per operation.
fn classic(from: &SigningKey, seq: i64, ops: Vec<OperationBody>) -> Transaction {
    let fee = 100 * u32::try_from(ops.len()).unwrap();
    Transaction {
        source_account: MuxedAccount::Ed25519(Uint256(account(from).0)),
        fee,
        seq_num: SequenceNumber(seq),
        cond: Preconditions::None,
        memo: Memo::None,
        operations: ops
            .into_iter()
            .map(|body| Operation {
                source_account: None,
                body,
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
        ext: TransactionExt::V0,
    }
}

fn signed(tx: Transaction, by: &SigningKey) -> TransactionEnvelope {
    sign_envelope(envelope(tx), TEST_NETWORK_PASSPHRASE, by).unwrap()
}

/// The result of an applied transaction: its tx-level code as
/// `result_code` names it, the fee charged, the operation results.
fn outcome(got: &Value) -> (String, i64, Vec<OperationResult>) {
    let xdr = got["resultXdr"].as_str().unwrap();
    let result = TransactionResult::from_xdr_base64(xdr, Limits::none()).unwrap();
    let code = result_code(xdr);
    let code = code.split(':').next().unwrap().to_owned();
    let ops = match result.result {
        TransactionResultResult::TxSuccess(ops) | TransactionResultResult::TxFailed(ops) => {
            ops.to_vec()
        }
        other => panic!("no operation results in {other:?}"),
    };
    (code, result.fee_charged, ops)
}

/// The operation results of a transaction refused with txFAILED.
fn refused_ops(sent: &Value) -> Vec<OperationResult> {
    match error_code(sent) {
        TransactionResultResult::TxFailed(ops) => ops.to_vec(),
        other => panic!("expected txFAILED, got {other:?}"),
    }
}

impl Net {
    /// Accounts as getLedgerEntries reports them (None: absent), with
    /// their last-modified ledgers.
    async fn accounts(&self, keys: &[&SigningKey]) -> Vec<Option<(AccountEntry, u32)>> {
        let wire: Vec<String> = keys
            .iter()
            .map(|k| {
                super::ledger::account_key(account(k).0)
                    .to_xdr_base64(Limits::none())
                    .unwrap()
            })
            .collect();
        let found = self
            .result(rpc::GET_LEDGER_ENTRIES, json!({"keys": wire}))
            .await;
        let entries = found["entries"].as_array().unwrap();
        wire.iter()
            .map(|k| {
                let entry = entries.iter().find(|e| e["key"] == *k)?;
                let data = LedgerEntryData::from_xdr_base64(
                    entry["xdr"].as_str().unwrap(),
                    Limits::none(),
                )
                .unwrap();
                let LedgerEntryData::Account(account) = data else {
                    panic!("an account entry");
                };
                let modified = entry["lastModifiedLedgerSeq"].as_u64().unwrap();
                Some((account, u32::try_from(modified).unwrap()))
            })
            .collect()
    }

    async fn balance(&self, key: &SigningKey) -> i64 {
        self.accounts(&[key]).await[0].as_ref().unwrap().0.balance
    }

    async fn seq_of(&self, key: &SigningKey) -> i64 {
        self.accounts(&[key]).await[0].as_ref().unwrap().0.seq_num.0
    }

    /// Creates `to` with `balance` from the genesis account; returns the ledger.
    async fn fund(&self, to: &SigningKey, balance: i64) -> u64 {
        let tx = classic(&self.key, self.seq().await + 1, vec![create(to, balance)]);
        let got = self.submit(&signed(tx, &self.key)).await;
        assert_eq!(got["status"], "SUCCESS", "{got}");
        got["ledger"].as_u64().unwrap()
    }
}

#[tokio::test]
async fn created_accounts_exist_and_send_their_own_transactions() {
    let net = start().await;
    let seq = net.seq().await;
    let channels = [key(11), key(12), key(13)];
    let starting = [100 * XLM, 50 * XLM, 2 * RESERVE];
    let ops = channels
        .iter()
        .zip(starting)
        .map(|(k, balance)| create(k, balance))
        .collect();
    let got = net
        .submit(&signed(classic(&net.key, seq + 1, ops), &net.key))
        .await;
    assert_eq!(got["status"], "SUCCESS", "{got}");
    let (code, fee, ops) = outcome(&got);
    assert_eq!((code.as_str(), fee), ("txSUCCESS", 300));
    assert_eq!(ops, vec![created(CreateAccountResult::Success); 3]);

    let ledger = u32::try_from(got["ledger"].as_u64().unwrap()).unwrap();
    let found = net
        .accounts(&[&channels[0], &channels[1], &channels[2]])
        .await;
    for (found, balance) in found.into_iter().zip(starting) {
        let (account, modified) = found.expect("created");
        assert_eq!(account.balance, balance);
        assert_eq!(account.seq_num.0, i64::from(ledger) << 32);
        assert_eq!(account.thresholds.0, [1, 0, 0, 0]);
        assert!(account.signers.is_empty() && account.num_sub_entries == 0);
        assert_eq!(modified, ledger);
    }
    let spent: i64 = starting.iter().sum();
    assert_eq!(net.balance(&net.key).await, BALANCE - spent - 300);
    assert_eq!(net.seq().await, seq + 1);

    // The meta: fee and sequence number, then per operation the source
    // debited and the account created.
    let meta =
        TransactionMeta::from_xdr_base64(got["resultMetaXdr"].as_str().unwrap(), Limits::none())
            .unwrap();
    let TransactionMeta::V4(meta) = meta else {
        panic!("v4 meta");
    };
    assert!(meta.soroban_meta.is_none());
    assert_eq!(meta.tx_changes_before.0.len(), 2);
    assert_eq!(meta.operations.len(), 3);
    for op in meta.operations.iter() {
        let kinds: Vec<&str> = op.changes.0.iter().map(LedgerEntryChange::name).collect();
        assert_eq!(kinds, ["State", "Updated", "Created"]);
    }
    let applied = net.net.applied();
    assert!(
        applied
            .last()
            .is_some_and(|t| t.success && t.ledger == ledger)
    );

    // A channel signs and sends its own Soroban transaction, with the
    // sequence number read from the ledger.
    let channel = &channels[0];
    let mut upload = net.unsigned(net.seq_of(channel).await + 1, upload_fn());
    upload.source_account = MuxedAccount::Ed25519(Uint256(account(channel).0));
    let upload = net.assemble(upload).await;
    let got = net.submit(&signed(upload, channel)).await;
    assert_eq!(got["status"], "SUCCESS", "{got}");
    assert_eq!(net.seq_of(channel).await, (i64::from(ledger) << 32) + 1);
    // The whole bid was taken up front and the unused refundable fee given back.
    let (_, fee, _) = outcome(&got);
    assert!(fee > 100);
    assert_eq!(net.balance(channel).await, 100 * XLM - fee);
}

#[tokio::test]
async fn a_hundred_operations_see_each_others_effects() {
    let net = start().await;
    let seq = net.seq().await;
    let channels: Vec<SigningKey> = (100..150).map(key).collect();
    // Each channel is created, then paid by a later operation of the same
    // transaction, which sees the account the earlier one created.
    let ops: Vec<OperationBody> = channels
        .iter()
        .map(|k| create(k, 10 * XLM))
        .chain(channels.iter().map(|k| pay(k, XLM)))
        .collect();
    assert_eq!(ops.len(), stellar_xdr::MAX_OPS_PER_TX as usize);
    let mut cheap = classic(&net.key, seq + 1, ops.clone());
    cheap.fee -= 1;
    assert_eq!(
        error_code(&net.send(&signed(cheap, &net.key)).await),
        TransactionResultResult::TxInsufficientFee
    );
    let got = net
        .submit(&signed(classic(&net.key, seq + 1, ops), &net.key))
        .await;
    assert_eq!(got["status"], "SUCCESS", "{got}");
    let (code, fee, results) = outcome(&got);
    assert_eq!((code.as_str(), fee), ("txSUCCESS", 10_000));
    assert_eq!(results.len(), 100);
    let found = net.accounts(&channels.iter().collect::<Vec<_>>()).await;
    assert!(
        found
            .iter()
            .all(|a| a.as_ref().unwrap().0.balance == 11 * XLM)
    );
    assert_eq!(
        net.balance(&net.key).await,
        BALANCE - 50 * 11 * XLM - 10_000
    );
}

#[tokio::test]
async fn a_failed_operation_undoes_the_whole_transaction() {
    let net = start().await;
    let existing = key(21);
    net.fund(&existing, 10 * XLM).await;
    let before = net.balance(&net.key).await;
    let seq = net.seq().await;

    let (first, last) = (key(22), key(23));
    let ops = vec![
        create(&first, 10 * XLM),
        create(&existing, 10 * XLM),
        create(&last, 10 * XLM),
    ];
    let got = net
        .submit(&signed(classic(&net.key, seq + 1, ops), &net.key))
        .await;
    assert_eq!(got["status"], "FAILED", "{got}");
    let (code, fee, ops) = outcome(&got);
    assert_eq!((code.as_str(), fee), ("txFAILED", 300));
    // Core runs every operation and reports each; the transaction fails.
    assert_eq!(
        ops,
        [
            created(CreateAccountResult::Success),
            created(CreateAccountResult::AlreadyExist),
            created(CreateAccountResult::Success),
        ]
    );
    assert_eq!(net.accounts(&[&first, &last]).await, [None, None]);
    assert_eq!(net.balance(&existing).await, 10 * XLM);
    // Only the fee and the sequence number were taken.
    assert_eq!(net.balance(&net.key).await, before - 300);
    assert_eq!(net.seq().await, seq + 1);
    let meta =
        TransactionMeta::from_xdr_base64(got["resultMetaXdr"].as_str().unwrap(), Limits::none())
            .unwrap();
    assert!(matches!(meta, TransactionMeta::V4(m) if m.operations.is_empty()));
    assert!(net.net.applied().last().is_some_and(|t| !t.success));
}

#[tokio::test]
async fn create_account_fails_on_reserve_and_funds() {
    let net = start().await;
    let seq = net.seq().await;
    let low = key(31);
    let ops = vec![create(&low, 2 * RESERVE - 1)];
    let got = net
        .submit(&signed(classic(&net.key, seq + 1, ops), &net.key))
        .await;
    assert_eq!(outcome(&got).2, [created(CreateAccountResult::LowReserve)]);
    // Zero is well formed since protocol 14, and short of the reserve.
    let ops = vec![create(&low, 0)];
    let got = net
        .submit(&signed(classic(&net.key, seq + 2, ops), &net.key))
        .await;
    assert_eq!(outcome(&got).2, [created(CreateAccountResult::LowReserve)]);
    assert_eq!(net.accounts(&[&low]).await, [None]);

    // A poor account: its reserve plus 10,000 stroops. After the fee it can
    // spend 9,900, not a new account's reserve.
    let poor = key(32);
    net.fund(&poor, 2 * RESERVE + 10_000).await;
    let poor_seq = net.seq_of(&poor).await;
    let ops = vec![create(&key(33), 2 * RESERVE)];
    let got = net
        .submit(&signed(classic(&poor, poor_seq + 1, ops), &poor))
        .await;
    let (code, fee, ops) = outcome(&got);
    assert_eq!((code.as_str(), fee), ("txFAILED", 100));
    assert_eq!(ops, [created(CreateAccountResult::Underfunded)]);
    assert_eq!(net.balance(&poor).await, 2 * RESERVE + 9_900);
    assert_eq!(net.seq_of(&poor).await, poor_seq + 1);

    // An account at its reserve cannot even pay the fee.
    let broke = key(34);
    net.fund(&broke, 2 * RESERVE).await;
    let tx = classic(&broke, net.seq_of(&broke).await + 1, vec![pay(&poor, 1)]);
    assert_eq!(
        error_code(&net.send(&signed(tx, &broke)).await),
        TransactionResultResult::TxInsufficientBalance
    );
}

#[tokio::test]
async fn admission_refuses_malformed_classic_transactions() {
    let net = start().await;
    let seq = net.seq().await;
    let other = key(41);
    let send = async |ops: Vec<OperationBody>| {
        net.send(&signed(classic(&net.key, seq + 1, ops), &net.key))
            .await
    };

    let refused = refused_ops(&send(vec![create(&other, -1)]).await);
    assert_eq!(refused, [created(CreateAccountResult::Malformed)]);
    let refused = refused_ops(&send(vec![create(&net.key, 10 * XLM)]).await);
    assert_eq!(refused, [created(CreateAccountResult::Malformed)]);
    // The first malformed operation decides; the others keep core's
    // initial success code.
    let refused = refused_ops(
        &send(vec![
            create(&other, 10 * XLM),
            pay(&other, 0),
            pay(&other, -5),
        ])
        .await,
    );
    assert_eq!(
        refused,
        [
            created(CreateAccountResult::Success),
            paid(PaymentResult::Malformed),
            paid(PaymentResult::Success),
        ]
    );
    let bad_code = OperationBody::Payment(PaymentOp {
        destination: MuxedAccount::Ed25519(Uint256(account(&other).0)),
        asset: Asset::CreditAlphanum4(AlphaNum4 {
            asset_code: AssetCode4(*b"U$D\0"),
            issuer: account_id(&other),
        }),
        amount: 1,
    });
    assert_eq!(
        refused_ops(&send(vec![bad_code]).await),
        [paid(PaymentResult::Malformed)]
    );
    let bump = OperationBody::BumpSequence(BumpSequenceOp {
        bump_to: SequenceNumber(seq + 10),
    });
    assert_eq!(
        refused_ops(&send(vec![bump]).await),
        [OperationResult::OpNotSupported]
    );

    // Transaction-level checks.
    let three = vec![pay(&other, 1), pay(&other, 2), pay(&other, 3)];
    let mut low_fee = classic(&net.key, seq + 1, three.clone());
    low_fee.fee = 299;
    assert_eq!(
        error_code(&net.send(&signed(low_fee, &net.key)).await),
        TransactionResultResult::TxInsufficientFee
    );
    let bad_seq = classic(&net.key, seq + 2, three.clone());
    assert_eq!(
        error_code(&net.send(&signed(bad_seq, &net.key)).await),
        TransactionResultResult::TxBadSeq
    );
    let stranger = classic(&other, 1, three.clone());
    assert_eq!(
        error_code(&net.send(&signed(stranger, &other)).await),
        TransactionResultResult::TxNoAccount
    );
    let foreign_key = classic(&net.key, seq + 1, three.clone());
    assert_eq!(
        error_code(&net.send(&signed(foreign_key, &other)).await),
        TransactionResultResult::TxBadAuth
    );
    let mut mixed = net.unsigned(seq + 1, upload_fn());
    let mut ops = mixed.operations.to_vec();
    ops.push(Operation {
        source_account: None,
        body: pay(&other, 1),
    });
    mixed.operations = ops.try_into().unwrap();
    mixed.fee = 200;
    assert_eq!(
        error_code(&net.send(&signed(mixed, &net.key)).await),
        TransactionResultResult::TxMalformed
    );
    let mut other_source = classic(&net.key, seq + 1, three.clone());
    let mut ops = other_source.operations.to_vec();
    ops[1].source_account = Some(MuxedAccount::Ed25519(Uint256(account(&other).0)));
    other_source.operations = ops.try_into().unwrap();
    assert_eq!(
        error_code(&net.send(&signed(other_source, &net.key)).await),
        TransactionResultResult::TxMalformed
    );
    let empty = classic(&net.key, seq + 1, Vec::new());
    assert_eq!(
        error_code(&net.send(&signed(empty, &net.key)).await),
        TransactionResultResult::TxMissingOperation
    );

    // stellar-rpc simulates only Soroban operations.
    let tx = classic(&net.key, seq + 1, vec![create(&other, 10 * XLM)]);
    let sim = net
        .result(
            rpc::SIMULATE_TRANSACTION,
            json!({"transaction": envelope(tx).to_xdr_base64(Limits::none()).unwrap()}),
        )
        .await;
    assert_eq!(
        sim["error"],
        "Transaction contains unsupported operation type: OperationTypeCreateAccount"
    );

    assert!(net.net.accepted().is_empty());
    assert_eq!(net.seq().await, seq);
    assert_eq!(net.balance(&net.key).await, BALANCE);
}

#[tokio::test]
async fn payments_move_exactly_the_amount() {
    let net = start().await;
    let (holder, missing) = (key(51), key(52));
    net.fund(&holder, 10 * XLM).await;
    let before = net.balance(&net.key).await;

    let tx = classic(&net.key, net.seq().await + 1, vec![pay(&holder, 12_345)]);
    let got = net.submit(&signed(tx, &net.key)).await;
    assert_eq!(got["status"], "SUCCESS", "{got}");
    assert_eq!(outcome(&got).2, [paid(PaymentResult::Success)]);
    assert_eq!(net.balance(&holder).await, 10 * XLM + 12_345);
    assert_eq!(net.balance(&net.key).await, before - 12_345 - 100);

    let tx = classic(&net.key, net.seq().await + 1, vec![pay(&missing, 1)]);
    let got = net.submit(&signed(tx, &net.key)).await;
    let (code, fee, ops) = outcome(&got);
    assert_eq!((code.as_str(), fee), ("txFAILED", 100));
    assert_eq!(ops, [paid(PaymentResult::NoDestination)]);

    // The holder can spend what it has above its reserve, after the fee.
    let spendable = 10 * XLM + 12_345 - 2 * RESERVE - 100;
    let holder_seq = net.seq_of(&holder).await;
    let tx = classic(&holder, holder_seq + 1, vec![pay(&net.key, spendable + 1)]);
    let got = net.submit(&signed(tx, &holder)).await;
    assert_eq!(outcome(&got).2, [paid(PaymentResult::Underfunded)]);
    let tx = classic(
        &holder,
        holder_seq + 2,
        vec![pay(&net.key, spendable - 100)],
    );
    let got = net.submit(&signed(tx, &holder)).await;
    assert_eq!(outcome(&got).2, [paid(PaymentResult::Success)]);
    assert_eq!(net.balance(&holder).await, 2 * RESERVE);

    // To oneself: succeeds, only the fee moves.
    let before = net.balance(&net.key).await;
    let tx = classic(&net.key, net.seq().await + 1, vec![pay(&net.key, XLM)]);
    let got = net.submit(&signed(tx, &net.key)).await;
    assert_eq!(outcome(&got).2, [paid(PaymentResult::Success)]);
    assert_eq!(net.balance(&net.key).await, before - 100);

    // A credit asset finds no trustline on this network.
    let usd = OperationBody::Payment(PaymentOp {
        destination: MuxedAccount::Ed25519(Uint256(account(&holder).0)),
        asset: Asset::CreditAlphanum4(AlphaNum4 {
            asset_code: AssetCode4(*b"USD\0"),
            issuer: account_id(&missing),
        }),
        amount: 1,
    });
    let tx = classic(&net.key, net.seq().await + 1, vec![usd]);
    let got = net.submit(&signed(tx, &net.key)).await;
    assert_eq!(outcome(&got).2, [paid(PaymentResult::NoTrust)]);
}

#[tokio::test]
async fn created_accounts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.json");
    let channel = key(61);
    {
        let net = start_with(Some(path.clone())).await;
        net.fund(&channel, 5 * XLM).await;
        net._shutdown.cancel();
    }
    let net = start_with(Some(path)).await;
    assert_eq!(net.balance(&channel).await, 5 * XLM);
    assert!(net.net.applied().last().is_some_and(|t| t.success));
}
