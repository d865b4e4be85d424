//! Building the deployment's transactions and reading what comes back:
//! ledger keys, host functions, the assembly of a simulated transaction, and
//! the names of result codes. Pure functions, no network.

use std::collections::BTreeSet;

use stellar_strkey::ed25519::PublicKey as AccountKey;
use stellar_xdr::{
    AccountId, Asset, BytesM, ContractDataDurability, ContractExecutable, ContractId,
    ContractIdPreimage, ContractIdPreimageFromAddress, CreateAccountOp, CreateContractArgsV2, Hash,
    HostFunction, InvokeContractArgs, InvokeHostFunctionOp, LedgerKey, LedgerKeyAccount,
    LedgerKeyContractCode, LedgerKeyContractData, Limits, MAX_OPS_PER_TX, Memo, MuxedAccount,
    Operation, OperationBody, OperationResult, OperationResultTr, PaymentOp, Preconditions,
    PublicKey, ReadXdr, ScAddress, ScNonceKey, ScSymbol, ScVal, SequenceNumber,
    SorobanAuthorizationEntry, SorobanCredentials, SorobanTransactionData, TimeBounds, TimePoint,
    Transaction, TransactionExt, TransactionResult, TransactionResultResult, Uint256, VecM,
};

/// What a transaction of the deployment does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Stores the contract's Wasm on the ledger.
    UploadWasm,
    /// Creates the tenant's contract instance.
    CreateContract,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::UploadWasm => "upload_wasm",
            Purpose::CreateContract => "create_contract",
        }
    }
}

pub fn account_key(account: &AccountKey) -> LedgerKey {
    LedgerKey::Account(LedgerKeyAccount {
        account_id: account_id(account),
    })
}

pub fn code_key(wasm_hash: [u8; 32]) -> LedgerKey {
    LedgerKey::ContractCode(LedgerKeyContractCode {
        hash: Hash(wasm_hash),
    })
}

pub fn instance_key(contract: [u8; 32]) -> LedgerKey {
    LedgerKey::ContractData(LedgerKeyContractData {
        contract: ScAddress::Contract(ContractId(Hash(contract))),
        key: ScVal::LedgerKeyContractInstance,
        durability: ContractDataDurability::Persistent,
    })
}

fn account_id(account: &AccountKey) -> AccountId {
    AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(account.0)))
}

pub fn upload_wasm(wasm: &[u8]) -> Result<HostFunction, stellar_xdr::Error> {
    Ok(HostFunction::UploadContractWasm(BytesM::try_from(wasm)?))
}

/// Creates the contract of `deployer` and `salt` running `wasm_hash`, its
/// constructor called with `constructor_args`.
pub fn create_contract(
    deployer: &AccountKey,
    salt: [u8; 32],
    wasm_hash: [u8; 32],
    constructor_args: Vec<ScVal>,
) -> Result<HostFunction, stellar_xdr::Error> {
    Ok(HostFunction::CreateContractV2(CreateContractArgsV2 {
        contract_id_preimage: ContractIdPreimage::Address(ContractIdPreimageFromAddress {
            address: account_address(deployer),
            salt: Uint256(salt),
        }),
        executable: ContractExecutable::Wasm(Hash(wasm_hash)),
        constructor_args: constructor_args.try_into()?,
    }))
}

/// Calls `function` of `contract` with no arguments.
pub fn invoke_contract(
    contract: [u8; 32],
    function: &str,
) -> Result<HostFunction, stellar_xdr::Error> {
    Ok(HostFunction::InvokeContract(InvokeContractArgs {
        contract_address: ScAddress::Contract(ContractId(Hash(contract))),
        function_name: ScSymbol(function.try_into()?),
        args: VecM::default(),
    }))
}

/// The address of an account, as contracts see it.
pub fn account_address(account: &AccountKey) -> ScAddress {
    ScAddress::Account(account_id(account))
}

/// The ledger entry that marks an address's authorization nonce as used;
/// a transaction whose authorization carries the nonce writes it.
pub fn nonce_key(account: &AccountKey, nonce: i64) -> LedgerKey {
    LedgerKey::ContractData(LedgerKeyContractData {
        contract: account_address(account),
        key: ScVal::LedgerKeyNonce(ScNonceKey { nonce }),
        durability: ContractDataDurability::Temporary,
    })
}

/// An unsigned transaction from `source` invoking `function`, valid until
/// `max_time` (unix seconds), with no fee or resources yet: what is sent to
/// simulation.
pub fn unsigned(
    source: &AccountKey,
    sequence: i64,
    max_time: u64,
    function: HostFunction,
) -> Transaction {
    let operation = Operation {
        source_account: None,
        body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
            host_function: function,
            auth: VecM::default(),
        }),
    };
    Transaction {
        source_account: MuxedAccount::Ed25519(Uint256(source.0)),
        fee: 0,
        seq_num: SequenceNumber(sequence),
        cond: Preconditions::Time(TimeBounds {
            min_time: TimePoint(0),
            max_time: TimePoint(max_time),
        }),
        memo: Memo::None,
        operations: one_operation(operation),
        ext: TransactionExt::V0,
    }
}

/// The least fee per operation the network takes (stroops).
pub const BASE_FEE: u32 = 100;

/// Native payments from the deployer that keep channels funded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    /// Creates the account with this starting balance (stroops).
    Create { account: AccountKey, amount: i64 },
    /// Pays this many stroops into an existing account.
    TopUp { account: AccountKey, amount: i64 },
}

/// A classic transaction from `source` making `payments`, `fee_per_op`
/// stroops per operation, valid until `max_time`.
pub fn payments(
    source: &AccountKey,
    sequence: i64,
    max_time: u64,
    fee_per_op: u32,
    payments: &[Payment],
) -> Result<Transaction, stellar_xdr::Error> {
    let operations: Vec<Operation> = payments
        .iter()
        .map(|payment| Operation {
            source_account: None,
            body: match *payment {
                Payment::Create { account, amount } => {
                    OperationBody::CreateAccount(CreateAccountOp {
                        destination: account_id(&account),
                        starting_balance: amount,
                    })
                }
                Payment::TopUp { account, amount } => OperationBody::Payment(PaymentOp {
                    destination: MuxedAccount::Ed25519(Uint256(account.0)),
                    asset: Asset::Native,
                    amount,
                }),
            },
        })
        .collect();
    let count = u32::try_from(operations.len()).unwrap_or(u32::MAX);
    Ok(Transaction {
        source_account: MuxedAccount::Ed25519(Uint256(source.0)),
        fee: fee_per_op.saturating_mul(count),
        seq_num: SequenceNumber(sequence),
        cond: Preconditions::Time(TimeBounds {
            min_time: TimePoint(0),
            max_time: TimePoint(max_time),
        }),
        memo: Memo::None,
        operations: operations.try_into()?,
        ext: TransactionExt::V0,
    })
}

/// Why a simulated transaction is not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("the simulated footprint touches {0}, which this deployment must not")]
    UnexpectedKey(String),
    #[error("the simulated footprint does not write {0}")]
    MissingKey(String),
    #[error("the transaction needs an authorization by another account than the deployer")]
    ForeignAuth,
    #[error(
        "fee {fee} stroops (resources {resource_fee} + inclusion {inclusion_fee}) is over the cap of {cap}"
    )]
    FeeOverCap {
        fee: i64,
        resource_fee: i64,
        inclusion_fee: u32,
        cap: i64,
    },
    #[error("the simulation returned a negative resource fee")]
    NegativeFee,
    #[error("only a transaction invoking a host function can be assembled")]
    NotAnInvocation,
}

/// What a simulated transaction may touch: keys it may read, keys it may
/// write, and the ones it must write.
pub struct Footprint {
    pub read_only: Vec<LedgerKey>,
    pub read_write: Vec<LedgerKey>,
    pub must_write: Vec<LedgerKey>,
}

/// `tx` completed with what simulation returned, once checked: the footprint
/// stays within `allowed`, every authorization is `signer`'s (as the
/// transaction's source, or by its signature on an address credential),
/// and the fee (resources + `inclusion_fee`) is at most `fee_cap`.
pub fn assemble(
    mut tx: Transaction,
    data: SorobanTransactionData,
    auth: Vec<SorobanAuthorizationEntry>,
    signer: &AccountKey,
    allowed: &Footprint,
    inclusion_fee: u32,
    fee_cap: i64,
) -> Result<Transaction, AssemblyError> {
    let footprint = &data.resources.footprint;
    let writable: BTreeSet<&LedgerKey> = allowed.read_write.iter().collect();
    let readable: BTreeSet<&LedgerKey> = allowed
        .read_only
        .iter()
        .chain(&allowed.read_write)
        .collect();
    for key in footprint.read_write.iter() {
        if !writable.contains(key) {
            return Err(AssemblyError::UnexpectedKey(key_name(key)));
        }
    }
    for key in footprint.read_only.iter() {
        if !readable.contains(key) {
            return Err(AssemblyError::UnexpectedKey(key_name(key)));
        }
    }
    for key in &allowed.must_write {
        if !footprint.read_write.contains(key) {
            return Err(AssemblyError::MissingKey(key_name(key)));
        }
    }
    let source_signs = tx.source_account == MuxedAccount::Ed25519(Uint256(signer.0));
    let signers_own = |entry: &SorobanAuthorizationEntry| match &entry.credentials {
        SorobanCredentials::SourceAccount => source_signs,
        SorobanCredentials::Address(credentials) => credentials.address == account_address(signer),
        // Newer credential kinds are not signed here.
        _ => false,
    };
    if !auth.iter().all(signers_own) {
        return Err(AssemblyError::ForeignAuth);
    }
    if data.resource_fee < 0 {
        return Err(AssemblyError::NegativeFee);
    }
    let fee = data.resource_fee.saturating_add(i64::from(inclusion_fee));
    let over = AssemblyError::FeeOverCap {
        fee,
        resource_fee: data.resource_fee,
        inclusion_fee,
        cap: fee_cap,
    };
    if fee > fee_cap {
        return Err(over);
    }
    tx.fee = u32::try_from(fee).map_err(|_| over)?;
    let auth: VecM<SorobanAuthorizationEntry> =
        auth.try_into().map_err(|_| AssemblyError::ForeignAuth)?;
    let operations = std::mem::take(&mut tx.operations).into_vec();
    tx.operations = one_operation(match operations.into_iter().next() {
        Some(Operation {
            body: OperationBody::InvokeHostFunction(op),
            source_account,
        }) => Operation {
            source_account,
            body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
                host_function: op.host_function,
                auth,
            }),
        },
        _ => return Err(AssemblyError::NotAnInvocation),
    });
    tx.ext = TransactionExt::V1(data);
    Ok(tx)
}

fn one_operation(operation: Operation) -> VecM<Operation, MAX_OPS_PER_TX> {
    // Invariant: a transaction holds up to MAX_OPS_PER_TX (100) operations.
    vec![operation]
        .try_into()
        .expect("one operation fits in a transaction")
}

/// A ledger key as operators read it.
fn key_name(key: &LedgerKey) -> String {
    match key {
        LedgerKey::Account(a) => match &a.account_id.0 {
            PublicKey::PublicKeyTypeEd25519(k) => format!("account {}", AccountKey(k.0)),
        },
        LedgerKey::ContractCode(c) => format!("contract code {}", hex::encode(c.hash.0)),
        LedgerKey::ContractData(d) => match &d.contract {
            ScAddress::Contract(ContractId(Hash(id))) => {
                format!("data of contract {}", stellar_strkey::Contract(*id))
            }
            other => format!("contract data of {}", other.name()),
        },
        other => format!("a {} entry", other.name()),
    }
}

/// The network's name of a result code (`txBAD_SEQ`), and for an applied
/// transaction whose operation failed, the operation's
/// (`txFAILED: INVOKE_HOST_FUNCTION_TRAPPED`).
pub fn result_code(result_xdr: &str) -> String {
    let Ok(result) = TransactionResult::from_xdr_base64(result_xdr, Limits::none()) else {
        return "an unreadable result".to_owned();
    };
    let code = xdr_name("tx", result.result.name());
    match &result.result {
        TransactionResultResult::TxFailed(ops) | TransactionResultResult::TxSuccess(ops) => {
            let detail: Vec<String> = ops
                .iter()
                .map(|op| match op {
                    OperationResult::OpInner(OperationResultTr::InvokeHostFunction(r)) => {
                        xdr_name("INVOKE_HOST_FUNCTION", r.name())
                    }
                    OperationResult::OpInner(OperationResultTr::CreateAccount(r)) => {
                        xdr_name("CREATE_ACCOUNT", r.name())
                    }
                    OperationResult::OpInner(OperationResultTr::Payment(r)) => {
                        xdr_name("PAYMENT", r.name())
                    }
                    other => xdr_name("op", other.name()),
                })
                .collect();
            format!("{code}: {}", detail.join(", "))
        }
        _ => code,
    }
}

/// `TxBadSeq` -> `txBAD_SEQ`; `Trapped` under `INVOKE_HOST_FUNCTION` ->
/// `INVOKE_HOST_FUNCTION_TRAPPED`: the spelling of the XDR definitions.
fn xdr_name(prefix: &str, variant: &str) -> String {
    let rest = variant
        .strip_prefix("Tx")
        .or_else(|| variant.strip_prefix("Op"))
        .unwrap_or(variant);
    let mut snake = String::new();
    for (i, c) in rest.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_uppercase());
    }
    if prefix.chars().all(|c| c.is_ascii_lowercase()) {
        format!("{prefix}{snake}")
    } else {
        format!("{prefix}_{snake}")
    }
}

#[cfg(test)]
mod tests {
    use stellar_xdr::{
        InvokeHostFunctionResult, LedgerFootprint, SorobanResources, SorobanTransactionDataExt,
        WriteXdr,
    };

    use super::*;

    fn deployer() -> AccountKey {
        AccountKey([7; 32])
    }

    fn data(
        read_only: Vec<LedgerKey>,
        read_write: Vec<LedgerKey>,
        fee: i64,
    ) -> SorobanTransactionData {
        SorobanTransactionData {
            ext: SorobanTransactionDataExt::V0,
            resources: SorobanResources {
                footprint: LedgerFootprint {
                    read_only: read_only.try_into().unwrap(),
                    read_write: read_write.try_into().unwrap(),
                },
                instructions: 1_000_000,
                disk_read_bytes: 1_000,
                write_bytes: 1_000,
            },
            resource_fee: fee,
        }
    }

    fn create_footprint() -> Footprint {
        Footprint {
            read_only: vec![code_key([1; 32])],
            read_write: vec![instance_key([2; 32])],
            must_write: vec![instance_key([2; 32])],
        }
    }

    fn create_tx() -> Transaction {
        unsigned(
            &deployer(),
            5,
            100,
            create_contract(&deployer(), [3; 32], [1; 32], vec![]).unwrap(),
        )
    }

    #[test]
    fn assembly_sets_fee_resources_and_auth() {
        let auth = SorobanAuthorizationEntry {
            credentials: SorobanCredentials::SourceAccount,
            root_invocation: stellar_xdr::SorobanAuthorizedInvocation {
                function: stellar_xdr::SorobanAuthorizedFunction::CreateContractV2HostFn(
                    match create_contract(&deployer(), [3; 32], [1; 32], vec![]).unwrap() {
                        HostFunction::CreateContractV2(args) => args,
                        _ => unreachable!(),
                    },
                ),
                sub_invocations: VecM::default(),
            },
        };
        let d = data(vec![code_key([1; 32])], vec![instance_key([2; 32])], 5_000);
        let tx = assemble(
            create_tx(),
            d.clone(),
            vec![auth],
            &deployer(),
            &create_footprint(),
            100,
            10_000,
        )
        .unwrap();
        assert_eq!(tx.fee, 5_100);
        assert_eq!(tx.ext, TransactionExt::V1(d));
        let OperationBody::InvokeHostFunction(op) = &tx.operations[0].body else {
            panic!("not an invocation");
        };
        assert_eq!(op.auth.len(), 1);
        assert_eq!(tx.seq_num, SequenceNumber(5));
    }

    #[test]
    fn assembly_refuses_what_the_deployment_must_not_do() {
        let allowed = create_footprint();
        let foreign = instance_key([9; 32]);
        let extra_write = data(
            vec![code_key([1; 32])],
            vec![instance_key([2; 32]), foreign.clone()],
            1,
        );
        assert!(matches!(
            assemble(create_tx(), extra_write, vec![], &deployer(), &allowed, 100, 10_000),
            Err(AssemblyError::UnexpectedKey(k)) if k.starts_with("data of contract C")
        ));
        let code_written = data(vec![], vec![code_key([1; 32]), instance_key([2; 32])], 1);
        assert!(matches!(
            assemble(
                create_tx(),
                code_written,
                vec![],
                &deployer(),
                &allowed,
                100,
                10_000
            ),
            Err(AssemblyError::UnexpectedKey(_))
        ));
        let nothing_written = data(vec![code_key([1; 32])], vec![], 1);
        assert!(matches!(
            assemble(
                create_tx(),
                nothing_written,
                vec![],
                &deployer(),
                &allowed,
                100,
                10_000
            ),
            Err(AssemblyError::MissingKey(_))
        ));
        let expensive = data(vec![code_key([1; 32])], vec![instance_key([2; 32])], 9_901);
        assert_eq!(
            assemble(
                create_tx(),
                expensive,
                vec![],
                &deployer(),
                &allowed,
                100,
                10_000
            ),
            Err(AssemblyError::FeeOverCap {
                fee: 10_001,
                resource_fee: 9_901,
                inclusion_fee: 100,
                cap: 10_000
            })
        );
        let signed_elsewhere = SorobanAuthorizationEntry {
            credentials: SorobanCredentials::Address(stellar_xdr::SorobanAddressCredentials {
                address: ScAddress::Account(account_id(&AccountKey([8; 32]))),
                nonce: 1,
                signature_expiration_ledger: 10,
                signature: ScVal::Void,
            }),
            root_invocation: stellar_xdr::SorobanAuthorizedInvocation {
                function: stellar_xdr::SorobanAuthorizedFunction::CreateContractHostFn(
                    Default::default(),
                ),
                sub_invocations: VecM::default(),
            },
        };
        let fine = data(vec![code_key([1; 32])], vec![instance_key([2; 32])], 1);
        assert_eq!(
            assemble(
                create_tx(),
                fine,
                vec![signed_elsewhere],
                &deployer(),
                &allowed,
                100,
                10_000
            ),
            Err(AssemblyError::ForeignAuth)
        );

        // From a channel account: the deployer's address credential is
        // accepted, a source-account credential (the channel's) is not.
        let channel = AccountKey([9; 32]);
        let from_channel = || {
            unsigned(
                &channel,
                5,
                100,
                create_contract(&deployer(), [3; 32], [1; 32], vec![]).unwrap(),
            )
        };
        let deployer_signs = SorobanAuthorizationEntry {
            credentials: SorobanCredentials::Address(stellar_xdr::SorobanAddressCredentials {
                address: account_address(&deployer()),
                nonce: 1,
                signature_expiration_ledger: 10,
                signature: ScVal::Void,
            }),
            root_invocation: signed_elsewhere_invocation(),
        };
        let fine = || data(vec![code_key([1; 32])], vec![instance_key([2; 32])], 1);
        assert!(
            assemble(
                from_channel(),
                fine(),
                vec![deployer_signs],
                &deployer(),
                &allowed,
                100,
                10_000
            )
            .is_ok()
        );
        let channel_signs = SorobanAuthorizationEntry {
            credentials: SorobanCredentials::SourceAccount,
            root_invocation: signed_elsewhere_invocation(),
        };
        assert_eq!(
            assemble(
                from_channel(),
                fine(),
                vec![channel_signs],
                &deployer(),
                &allowed,
                100,
                10_000
            ),
            Err(AssemblyError::ForeignAuth)
        );
    }

    fn signed_elsewhere_invocation() -> stellar_xdr::SorobanAuthorizedInvocation {
        stellar_xdr::SorobanAuthorizedInvocation {
            function: stellar_xdr::SorobanAuthorizedFunction::CreateContractHostFn(
                Default::default(),
            ),
            sub_invocations: VecM::default(),
        }
    }

    #[test]
    fn result_codes_use_the_xdr_spelling() {
        let rejected = TransactionResult {
            fee_charged: 0,
            result: TransactionResultResult::TxBadSeq,
            ext: stellar_xdr::TransactionResultExt::V0,
        };
        let xdr = rejected.to_xdr_base64(Limits::none()).unwrap();
        assert_eq!(result_code(&xdr), "txBAD_SEQ");
        let trapped = TransactionResult {
            fee_charged: 100,
            result: TransactionResultResult::TxFailed(
                vec![OperationResult::OpInner(
                    OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Trapped),
                )]
                .try_into()
                .unwrap(),
            ),
            ext: stellar_xdr::TransactionResultExt::V0,
        };
        let xdr = trapped.to_xdr_base64(Limits::none()).unwrap();
        assert_eq!(result_code(&xdr), "txFAILED: INVOKE_HOST_FUNCTION_TRAPPED");
        let funding = TransactionResult {
            fee_charged: 200,
            result: TransactionResultResult::TxFailed(
                vec![
                    OperationResult::OpInner(OperationResultTr::CreateAccount(
                        stellar_xdr::CreateAccountResult::AlreadyExist,
                    )),
                    OperationResult::OpInner(OperationResultTr::Payment(
                        stellar_xdr::PaymentResult::Underfunded,
                    )),
                ]
                .try_into()
                .unwrap(),
            ),
            ext: stellar_xdr::TransactionResultExt::V0,
        };
        let xdr = funding.to_xdr_base64(Limits::none()).unwrap();
        assert_eq!(
            result_code(&xdr),
            "txFAILED: CREATE_ACCOUNT_ALREADY_EXIST, PAYMENT_UNDERFUNDED"
        );
        assert_eq!(result_code("not base64!"), "an unreadable result");
    }
}
