//! The local network driven over real HTTP with hand-built transactions.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use stellar_strkey::ed25519::PublicKey as AccountKey;
use stellar_xdr::{
    AccountId, BytesM, ContractDataDurability, ContractExecutable, ContractId, ContractIdPreimage,
    ContractIdPreimageFromAddress, CreateContractArgsV2, Hash, HostFunction, InvokeHostFunctionOp,
    LedgerEntryData, LedgerKey, LedgerKeyContractCode, LedgerKeyContractData, Limits, Memo,
    MuxedAccount, Operation, OperationBody, Preconditions, PublicKey, ReadXdr, ScAddress, ScVal,
    SequenceNumber, SorobanAuthorizationEntry, SorobanTransactionData, TimeBounds, TimePoint,
    Transaction, TransactionEnvelope, TransactionExt, TransactionResult, TransactionResultResult,
    TransactionV1Envelope, Uint256, WriteXdr,
};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::soroban::{TEST_NETWORK_PASSPHRASE, contract_id, rpc, sign_envelope, wasm};

mod classic;

/// Short closes keep the tests fast; polling waits at most this many.
const CLOSE: Duration = Duration::from_millis(50);
const WAIT_POLLS: usize = 200;
const BALANCE: i64 = 10_000 * 10_000_000;

struct Net {
    net: LocalNet,
    key: SigningKey,
    http: reqwest::Client,
    _shutdown: CancellationToken,
}

fn account(key: &SigningKey) -> AccountKey {
    AccountKey(key.verifying_key().to_bytes())
}

fn account_id(key: &SigningKey) -> AccountId {
    AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(account(key).0)))
}

async fn start_with(state_file: Option<std::path::PathBuf>) -> Net {
    // Plain HTTP needs no TLS, but reqwest builds its TLS config up front.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = SigningKey::from_bytes(&[7; 32]);
    let shutdown = CancellationToken::new();
    let net = LocalNet::start(
        LocalNetConfig {
            network_passphrase: TEST_NETWORK_PASSPHRASE.into(),
            ledger_interval: CLOSE,
            accounts: vec![(account(&key), BALANCE)],
            state_file,
        },
        "127.0.0.1:0".parse().unwrap(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    Net {
        net,
        key,
        http: reqwest::Client::new(),
        _shutdown: shutdown,
    }
}

async fn start() -> Net {
    start_with(None).await
}

impl Net {
    async fn raw(&self, body: String) -> Value {
        self.http
            .post(self.net.url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        self.raw(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string())
            .await
    }

    async fn result(&self, method: &str, params: Value) -> Value {
        let response = self.call(method, params).await;
        assert!(response.get("error").is_none(), "{method}: {response}");
        response["result"].clone()
    }

    async fn seq(&self) -> i64 {
        let key = super::ledger::account_key(account(&self.key).0);
        match self.net.entry(&key).await.unwrap().data {
            LedgerEntryData::Account(a) => a.seq_num.0,
            _ => panic!("an account"),
        }
    }

    fn unsigned(&self, seq: i64, host_function: HostFunction) -> Transaction {
        Transaction {
            source_account: MuxedAccount::Ed25519(Uint256(account(&self.key).0)),
            fee: 100,
            seq_num: SequenceNumber(seq),
            cond: Preconditions::None,
            memo: Memo::None,
            operations: vec![Operation {
                source_account: None,
                body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
                    host_function,
                    auth: Default::default(),
                }),
            }]
            .try_into()
            .unwrap(),
            ext: TransactionExt::V0,
        }
    }

    /// simulate -> assemble (data, fee, auth), unsigned.
    async fn assemble(&self, mut tx: Transaction) -> Transaction {
        let sim = self
            .result(
                rpc::SIMULATE_TRANSACTION,
                json!({"transaction": envelope(tx.clone()).to_xdr_base64(Limits::none()).unwrap()}),
            )
            .await;
        assert!(sim.get("error").is_none(), "simulation failed: {sim}");
        let data = SorobanTransactionData::from_xdr_base64(
            sim["transactionData"].as_str().unwrap(),
            Limits::none(),
        )
        .unwrap();
        let fee: i64 = sim["minResourceFee"].as_str().unwrap().parse().unwrap();
        assert_eq!(fee, data.resource_fee);
        tx.fee = u32::try_from(fee + 100).unwrap();
        tx.ext = TransactionExt::V1(data);
        let auth: Vec<SorobanAuthorizationEntry> = sim["results"][0]["auth"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                SorobanAuthorizationEntry::from_xdr_base64(a.as_str().unwrap(), Limits::none())
                    .unwrap()
            })
            .collect();
        let mut ops = tx.operations.to_vec();
        if let OperationBody::InvokeHostFunction(op) = &mut ops[0].body {
            op.auth = auth.try_into().unwrap();
        }
        tx.operations = ops.try_into().unwrap();
        tx
    }

    fn sign(&self, tx: Transaction) -> TransactionEnvelope {
        sign_envelope(envelope(tx), TEST_NETWORK_PASSPHRASE, &self.key).unwrap()
    }

    async fn send(&self, envelope: &TransactionEnvelope) -> Value {
        self.result(
            rpc::SEND_TRANSACTION,
            json!({"transaction": envelope.to_xdr_base64(Limits::none()).unwrap()}),
        )
        .await
    }

    async fn wait(&self, hash: &str) -> Value {
        for _ in 0..WAIT_POLLS {
            let got = self
                .result(rpc::GET_TRANSACTION, json!({"hash": hash}))
                .await;
            if got["status"] != "NOT_FOUND" {
                return got;
            }
            tokio::time::sleep(CLOSE / 2).await;
        }
        panic!("transaction {hash} was never applied");
    }

    /// Sends and waits; returns the getTransaction result.
    async fn submit(&self, envelope: &TransactionEnvelope) -> Value {
        let sent = self.send(envelope).await;
        assert_eq!(sent["status"], "PENDING", "{sent}");
        self.wait(sent["hash"].as_str().unwrap()).await
    }

    async fn upload(&self) -> Hash {
        let tx = self.unsigned(self.seq().await + 1, upload_fn()).clone();
        let tx = self.assemble(tx).await;
        let got = self.submit(&self.sign(tx)).await;
        assert_eq!(got["status"], "SUCCESS", "{got}");
        Hash(sha2::Sha256::digest(wasm::minimal_contract()).into())
    }
}

use sha2::Digest as _;

fn envelope(tx: Transaction) -> TransactionEnvelope {
    TransactionEnvelope::Tx(TransactionV1Envelope {
        tx,
        signatures: Default::default(),
    })
}

fn upload_fn() -> HostFunction {
    HostFunction::UploadContractWasm(BytesM::try_from(wasm::minimal_contract()).unwrap())
}

fn create_fn(key: &SigningKey, wasm_hash: Hash, salt: [u8; 32]) -> HostFunction {
    HostFunction::CreateContractV2(CreateContractArgsV2 {
        contract_id_preimage: ContractIdPreimage::Address(ContractIdPreimageFromAddress {
            address: ScAddress::Account(account_id(key)),
            salt: Uint256(salt),
        }),
        executable: ContractExecutable::Wasm(wasm_hash),
        constructor_args: Default::default(),
    })
}

fn instance_key(contract: stellar_strkey::Contract) -> LedgerKey {
    LedgerKey::ContractData(LedgerKeyContractData {
        contract: ScAddress::Contract(ContractId(Hash(contract.0))),
        key: ScVal::LedgerKeyContractInstance,
        durability: ContractDataDurability::Persistent,
    })
}

fn code_key(hash: Hash) -> LedgerKey {
    LedgerKey::ContractCode(LedgerKeyContractCode { hash })
}

fn error_code(sent: &Value) -> TransactionResultResult {
    assert_eq!(sent["status"], "ERROR", "{sent}");
    let result = TransactionResult::from_xdr_base64(
        sent["errorResultXdr"].as_str().unwrap(),
        Limits::none(),
    )
    .unwrap();
    assert_eq!(result.fee_charged, 0);
    result.result
}

#[tokio::test]
async fn deploys_a_contract_once_and_reports_duplicates() {
    let net = start().await;
    let wasm_hash = net.upload().await;
    assert!(net.net.entry(&code_key(wasm_hash.clone())).await.is_some());

    let salt = [9; 32];
    let tx = net.unsigned(net.seq().await + 1, create_fn(&net.key, wasm_hash, salt));
    let signed = net.sign(net.assemble(tx).await);
    let got = net.submit(&signed).await;
    assert_eq!(got["status"], "SUCCESS", "{got}");
    assert!(got["resultMetaXdr"].is_string() && got["ledger"].is_u64());

    let contract = contract_id(TEST_NETWORK_PASSPHRASE, &account(&net.key), salt);
    let instance = net.net.entry(&instance_key(contract)).await;
    assert!(matches!(
        instance.map(|e| e.data),
        Some(LedgerEntryData::ContractData(_))
    ));

    // The same envelope again: recognised, not applied a second time.
    let again = net.send(&signed).await;
    assert_eq!(again["status"], "DUPLICATE", "{again}");
    tokio::time::sleep(CLOSE * 4).await;
    let hash = hex::decode(again["hash"].as_str().unwrap()).unwrap();
    assert_eq!(
        net.net
            .applied()
            .iter()
            .filter(|t| t.hash[..] == hash[..])
            .count(),
        1
    );
    assert_eq!(net.net.accepted().len(), 2);
}

#[tokio::test]
async fn admission_rejects_what_core_rejects() {
    let net = start().await;
    let seq = net.seq().await;
    let tx = net.assemble(net.unsigned(seq + 1, upload_fn())).await;

    let stranger = SigningKey::from_bytes(&[8; 32]);
    let wrong_key =
        sign_envelope(envelope(tx.clone()), TEST_NETWORK_PASSPHRASE, &stranger).unwrap();
    assert_eq!(
        error_code(&net.send(&wrong_key).await),
        TransactionResultResult::TxBadAuth
    );

    let wrong_network = sign_envelope(
        envelope(tx.clone()),
        crate::soroban::PUBLIC_NETWORK_PASSPHRASE,
        &net.key,
    )
    .unwrap();
    assert_eq!(
        error_code(&net.send(&wrong_network).await),
        TransactionResultResult::TxBadAuth
    );

    let mut bad_seq = tx.clone();
    bad_seq.seq_num = SequenceNumber(seq + 2);
    assert_eq!(
        error_code(&net.send(&net.sign(bad_seq)).await),
        TransactionResultResult::TxBadSeq
    );

    let mut low_fee = tx.clone();
    low_fee.fee -= 101;
    assert_eq!(
        error_code(&net.send(&net.sign(low_fee)).await),
        TransactionResultResult::TxInsufficientFee
    );

    let mut underdeclared = tx.clone();
    if let TransactionExt::V1(data) = &mut underdeclared.ext {
        data.resource_fee = 1;
    }
    assert_eq!(
        error_code(&net.send(&net.sign(underdeclared)).await),
        TransactionResultResult::TxSorobanInvalid
    );

    let mut late = tx.clone();
    late.cond = Preconditions::Time(TimeBounds {
        min_time: TimePoint(0),
        max_time: TimePoint(1),
    });
    assert_eq!(
        error_code(&net.send(&net.sign(late)).await),
        TransactionResultResult::TxTooLate
    );

    let mut classic = tx.clone();
    classic.ext = TransactionExt::V0;
    assert_eq!(
        error_code(&net.send(&net.sign(classic)).await),
        TransactionResultResult::TxMalformed
    );

    assert!(net.net.accepted().is_empty());
    assert_eq!(net.seq().await, seq);
}

#[tokio::test]
async fn a_footprint_missing_a_key_fails_without_writing() {
    let net = start().await;
    let seq = net.seq().await;
    let mut tx = net.assemble(net.unsigned(seq + 1, upload_fn())).await;
    if let TransactionExt::V1(data) = &mut tx.ext {
        data.resources.footprint.read_write = Default::default();
    }
    let got = net.submit(&net.sign(tx)).await;
    assert_eq!(got["status"], "FAILED", "{got}");
    let wasm_hash = Hash(sha2::Sha256::digest(wasm::minimal_contract()).into());
    assert!(net.net.entry(&code_key(wasm_hash)).await.is_none());
    // The fee was charged and the sequence number consumed all the same.
    assert_eq!(net.seq().await, seq + 1);
    let applied = net.net.applied();
    assert_eq!(applied.len(), 1);
    assert!(!applied[0].success);
}

#[tokio::test]
async fn too_few_declared_instructions_fail() {
    let net = start().await;
    let mut tx = net
        .assemble(net.unsigned(net.seq().await + 1, upload_fn()))
        .await;
    if let TransactionExt::V1(data) = &mut tx.ext {
        data.resources.instructions = 10_000;
    }
    let got = net.submit(&net.sign(tx)).await;
    assert_eq!(got["status"], "FAILED", "{got}");
    let result =
        TransactionResult::from_xdr_base64(got["resultXdr"].as_str().unwrap(), Limits::none())
            .unwrap();
    assert!(matches!(
        result.result,
        TransactionResultResult::TxFailed(_)
    ));
    assert!(result.fee_charged > 0);
}

#[tokio::test]
async fn injected_faults_answer_as_announced() {
    let net = start().await;
    let tx = net
        .assemble(net.unsigned(net.seq().await + 1, upload_fn()))
        .await;
    let signed = net.sign(tx);

    net.net
        .inject(rpc::SEND_TRANSACTION, Fault::TryAgainLater, 1);
    assert_eq!(net.send(&signed).await["status"], "TRY_AGAIN_LATER");
    net.net.inject(rpc::SEND_TRANSACTION, Fault::Error, 1);
    assert_eq!(
        error_code(&net.send(&signed).await),
        TransactionResultResult::TxInternalError
    );
    assert!(net.net.accepted().is_empty());

    net.net.inject(rpc::GET_LATEST_LEDGER, Fault::RpcError, 2);
    for _ in 0..2 {
        let answer = net.call(rpc::GET_LATEST_LEDGER, Value::Null).await;
        assert_eq!(answer["error"]["code"], rpc::code::INTERNAL_ERROR);
    }
    assert!(net.call(rpc::GET_LATEST_LEDGER, Value::Null).await["result"]["sequence"].is_u64());

    // Delayed: the client gives up, but the transaction was accepted.
    net.net.inject(
        rpc::SEND_TRANSACTION,
        Fault::Delay(Duration::from_secs(2)),
        1,
    );
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": rpc::SEND_TRANSACTION,
        "params": {"transaction": signed.to_xdr_base64(Limits::none()).unwrap()}});
    let timed_out = net
        .http
        .post(net.net.url())
        .json(&body)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(timed_out.is_err());
    assert_eq!(net.net.accepted().len(), 1);
    let hash = hex::encode(net.net.accepted()[0]);
    assert_eq!(net.wait(&hash).await["status"], "SUCCESS");
}

#[tokio::test]
async fn a_paused_network_keeps_transactions_pending() {
    let net = start().await;
    net.net.pause(true);
    let tx = net
        .assemble(net.unsigned(net.seq().await + 1, upload_fn()))
        .await;
    let sent = net.send(&net.sign(tx)).await;
    assert_eq!(sent["status"], "PENDING");
    tokio::time::sleep(CLOSE * 4).await;
    let hash = sent["hash"].as_str().unwrap();
    assert_eq!(
        net.result(rpc::GET_TRANSACTION, json!({"hash": hash}))
            .await["status"],
        "NOT_FOUND"
    );
    // A second transaction of the same account waits for the first.
    let next = net.sign(net.unsigned(net.seq().await + 2, upload_fn()));
    assert!(net.net.applied().is_empty());
    net.net.pause(false);
    assert_eq!(net.wait(hash).await["status"], "SUCCESS");
    drop(next);
}

#[tokio::test]
async fn the_state_file_keeps_the_ledger_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.json");
    let salt = [3; 32];
    {
        let net = start_with(Some(path.clone())).await;
        let wasm_hash = net.upload().await;
        let tx = net.unsigned(net.seq().await + 1, create_fn(&net.key, wasm_hash, salt));
        let got = net.submit(&net.sign(net.assemble(tx).await)).await;
        assert_eq!(got["status"], "SUCCESS");
        net._shutdown.cancel();
    }
    let net = start_with(Some(path)).await;
    let contract = contract_id(TEST_NETWORK_PASSPHRASE, &account(&net.key), salt);
    assert!(net.net.entry(&instance_key(contract)).await.is_some());
    assert_eq!(net.net.applied().len(), 2);
    // The restarted network still knows the deployment and still runs contracts.
    let got = net.result(rpc::GET_LATEST_LEDGER, Value::Null).await;
    assert!(got["sequence"].as_u64().unwrap() > 1);
}

#[tokio::test]
async fn protocol_errors_use_json_rpc_codes() {
    let net = start().await;
    assert_eq!(
        net.raw("{not json".into()).await["error"]["code"],
        rpc::code::PARSE_ERROR
    );
    assert_eq!(
        net.raw(json!({"jsonrpc": "1.0", "id": 1, "method": "getNetwork"}).to_string())
            .await["error"]["code"],
        rpc::code::INVALID_REQUEST
    );
    assert_eq!(
        net.call("getFeeStats", Value::Null).await["error"]["code"],
        rpc::code::METHOD_NOT_FOUND
    );
    assert_eq!(
        net.call(rpc::SEND_TRANSACTION, json!({"transaction": "!!"}))
            .await["error"]["code"],
        rpc::code::INVALID_PARAMS
    );
    assert_eq!(
        net.call(rpc::GET_LEDGER_ENTRIES, json!({"keys": ["AAAA"]}))
            .await["error"]["code"],
        rpc::code::INVALID_PARAMS
    );
    let key = super::ledger::account_key(account(&net.key).0)
        .to_xdr_base64(Limits::none())
        .unwrap();
    let many = vec![key.clone(); 201];
    assert_eq!(
        net.call(rpc::GET_LEDGER_ENTRIES, json!({"keys": many}))
            .await["error"]["code"],
        rpc::code::INVALID_PARAMS
    );
    let found = net
        .result(rpc::GET_LEDGER_ENTRIES, json!({"keys": [key]}))
        .await;
    assert_eq!(found["entries"].as_array().unwrap().len(), 1);
    let network = net.result(rpc::GET_NETWORK, Value::Null).await;
    assert_eq!(network["passphrase"], TEST_NETWORK_PASSPHRASE);
    assert_eq!(network["protocolVersion"], 30);
}
