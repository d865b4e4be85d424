//! Deploying a tenant's contract, at least once and never twice.
//!
//! ```text
//! getNetwork (passphrase must match)
//!   -> address = contract_id(deployer, HMAC(salt key, tenant id)), recorded
//!   -> [one transaction in flight per deployer: finish the one recorded]
//!   -> instance on the ledger?  same Wasm: done | other Wasm: conflict
//!   -> Wasm code on the ledger?  no: upload it (one transaction)
//!   -> create the instance (one transaction) -> instance on the ledger: done
//!
//! one transaction: sequence from the account -> simulateTransaction ->
//!   check footprint, auth, fee cap -> sign -> record envelope + hash ->
//!   sendTransaction (same bytes again while it can still land) ->
//!   getTransaction until SUCCESS | FAILED | NOT_FOUND after its time bound
//! ```
//!
//! The address depends only on network, deployer and salt, so whatever
//! crashed where, the next attempt looks for that address before it builds
//! anything. A signed transaction is recorded before it is sent; an attempt
//! that finds one recorded re-sends those bytes and waits for their fate
//! instead of building another, and builds a new one only once the old one
//! is provably dead: not found after a ledger closed past its time bound.
//! Replicas share the deployer's one slot through the database, so they
//! must deploy to the same network.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use stellar_strkey::ed25519::PublicKey as AccountKey;
use stellar_xdr::{ContractExecutable, Hash, LedgerEntryData, ScVal};
use uuid::Uuid;

use super::client::{Client, ClientError};
use super::tx::{self, AssemblyError, Footprint, Purpose};
use super::{SecretKey, contract_id, tenant_salt};
use crate::db::{self, DbPool, soroban as store};

mod send;

/// Transactions built per attempt at most: one that expires unapplied is
/// replaced, but a network that lets every one expire fails the attempt
/// rather than spinning.
const MAX_ROUNDS: usize = 3;

/// How long after its last send a transaction still not found is sent
/// again: an RPC node that restarted may have lost it from its queue.
const RESEND_AFTER: Duration = Duration::from_secs(10);

/// Times an attempt finds another replica's transaction holding the
/// deployer's slot, waits for it and tries again, before it gives up.
const MAX_SLOT_WAITS: usize = 20;

/// Domain separation of the salt key derived from the deployer's secret.
const SALT_KEY_CONTEXT: &[u8] = b"tenantd contract salt v1";

/// Where the contract's Wasm comes from.
#[derive(Clone)]
pub enum Wasm {
    /// The code itself; uploaded if the ledger does not have it.
    Code(Arc<[u8]>),
    /// The hash of code uploaded already; deployments fail if it is missing.
    Hash([u8; 32]),
}

impl Wasm {
    pub fn hash(&self) -> [u8; 32] {
        match self {
            Wasm::Code(code) => Sha256::digest(code).into(),
            Wasm::Hash(hash) => *hash,
        }
    }
}

/// How to deploy.
#[derive(Clone)]
pub struct DeployConfig {
    /// Must equal what the RPC server's `getNetwork` answers.
    pub network_passphrase: String,
    /// The deployer account's key; it signs and pays.
    pub secret: SecretKey,
    pub wasm: Wasm,
    /// Largest fee (stroops) one transaction may pay: resources plus
    /// inclusion.
    pub fee_cap: i64,
    /// Stroops bid for inclusion on top of the resource fee.
    pub inclusion_fee: u32,
    /// How long a transaction stays valid (its time bound) and how long
    /// its confirmation is awaited.
    pub confirm_timeout: Duration,
    /// Pause between status polls.
    pub poll_interval: Duration,
}

/// Why a deployment did not complete. Messages name addresses, hashes and
/// result codes, never the secret key.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Rpc(#[from] ClientError),
    #[error("database: {0}")]
    Db(#[from] crate::error::Error),
    #[error(
        "the Soroban RPC server is on network {served:?}, this server deploys to {configured:?}"
    )]
    WrongNetwork { served: String, configured: String },
    #[error("deployer account {0} does not exist on the network")]
    NoAccount(String),
    #[error("contract {address} exists with Wasm {found}, not the configured {expected}")]
    Conflict {
        address: String,
        found: String,
        expected: String,
    },
    #[error("contract Wasm {0} is not on the ledger and no Wasm file is configured to upload")]
    WasmMissing(String),
    #[error("simulating the {purpose} transaction failed: {message}")]
    Simulation {
        purpose: &'static str,
        message: String,
    },
    #[error("the {purpose} transaction was not signed: {error}")]
    Assembly {
        purpose: &'static str,
        error: AssemblyError,
    },
    #[error("the {purpose} transaction {hash} was rejected: {code}")]
    Rejected {
        purpose: String,
        hash: String,
        code: String,
    },
    #[error("the {purpose} transaction {hash} failed in ledger {ledger}: {code}")]
    Failed {
        purpose: String,
        hash: String,
        ledger: u32,
        code: String,
    },
    #[error("transaction {hash} is not confirmed yet; the next attempt resumes it")]
    Unconfirmed { hash: String },
    #[error(
        "deployer {0} stayed busy with other replicas' transactions; the next attempt tries again"
    )]
    Busy(String),
    /// Not a failure: the deployer's one transaction in flight is another
    /// deployment's; this one waits its turn without holding a worker.
    #[error("deployer {0} is sending another deployment's transaction; waiting for its turn")]
    InUse(String),
    #[error("{MAX_ROUNDS} transactions expired unapplied; the network is not including them")]
    Expiring,
    #[error("XDR: {0}")]
    Xdr(#[from] stellar_xdr::Error),
    #[error("signing: {0}")]
    Sign(#[from] super::Error),
}

/// A deployed contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// `C...`
    pub address: String,
    /// Hex of the instance's Wasm hash.
    pub wasm_hash: String,
    /// Hex of the salt: with the deployer and the network it gives the
    /// address (`tenantd contract-id`); it does not reveal the tenant id.
    pub salt: String,
    /// Hex hash of the transaction that created it; `None` when it was
    /// not created by this deployer's recorded transactions.
    pub transaction: Option<String>,
}

/// What became of a transaction this attempt built.
enum Submitted {
    /// Applied; its hash.
    Applied(String),
    /// Never applied; a new one may be built.
    Expired,
    /// Not sent: another replica's transaction holds the deployer's slot.
    SlotTaken,
}

/// A deployment as the ledger has it.
struct OnLedger {
    /// The instance's executable (hex of its Wasm hash) if it exists.
    instance_wasm: Option<String>,
    /// Whether the configured Wasm's code is stored.
    code: bool,
}

/// The executable of a contract instance entry: the hex of its Wasm hash,
/// or what else it is.
fn executable(data: LedgerEntryData) -> String {
    match data {
        LedgerEntryData::ContractData(entry) => match entry.val {
            ScVal::ContractInstance(instance) => match instance.executable {
                ContractExecutable::Wasm(Hash(hash)) => hex::encode(hash),
                other => format!("a {} executable", other.name()),
            },
            other => format!("a {} value", other.name()),
        },
        other => format!("a {} entry", other.name()),
    }
}

/// How a recorded transaction ended.
enum Settled {
    Succeeded,
    /// Will never be applied; a new one may be built.
    Expired,
}

/// Deploys tenants' contracts from one deployer account.
pub struct Deployer {
    client: Client,
    config: DeployConfig,
    account: AccountKey,
    account_text: String,
    salt_key: [u8; 32],
    wasm_hash: [u8; 32],
    pool: DbPool,
    /// One transaction in flight per deployer (its sequence number orders
    /// them); across replicas the partial unique index on
    /// `soroban_transactions` says the same.
    in_flight: tokio::sync::Mutex<()>,
}

impl Deployer {
    /// `pool` is the control-plane database, where deployments and their
    /// transactions are recorded.
    pub fn new(client: Client, config: DeployConfig, pool: DbPool) -> Self {
        let account = config.secret.public_key();
        let salt_key = Sha256::new()
            .chain_update(SALT_KEY_CONTEXT)
            .chain_update(config.secret.signing_key().to_bytes())
            .finalize()
            .into();
        Self {
            client,
            account_text: format!("{account}"),
            account,
            salt_key,
            wasm_hash: config.wasm.hash(),
            config,
            pool,
            in_flight: tokio::sync::Mutex::new(()),
        }
    }

    /// The deployer account (`G...`).
    pub fn account(&self) -> &str {
        &self.account_text
    }

    /// How often a transaction's status is polled: how soon a deployment
    /// waiting for its turn looks again.
    pub fn poll_interval(&self) -> Duration {
        self.config.poll_interval
    }

    pub fn network_passphrase(&self) -> &str {
        &self.config.network_passphrase
    }

    /// The address the tenant's contract has on this network.
    pub fn address(&self, tenant_id: Uuid) -> stellar_strkey::Contract {
        contract_id(
            &self.config.network_passphrase,
            &self.account,
            tenant_salt(&self.salt_key, tenant_id),
        )
    }

    /// Deploys the tenant's contract unless it is on the ledger already.
    pub async fn deploy(&self, tenant_id: Uuid) -> Result<Deployed, DeployError> {
        self.check_network().await?;
        let salt = tenant_salt(&self.salt_key, tenant_id);
        let address = self.address(tenant_id);
        let address_text = format!("{address}");
        let wasm_hash_text = hex::encode(self.wasm_hash);
        {
            let mut conn = db::conn(&self.pool).await?;
            store::reserve(
                &mut conn,
                &store::Reservation {
                    tenant_id,
                    network_passphrase: &self.config.network_passphrase,
                    deployer: &self.account_text,
                    contract_address: &address_text,
                    wasm_hash: &wasm_hash_text,
                },
            )
            .await
            .map_err(crate::error::Error::from)?;
        }
        // Another deployment of this process holds the slot: come back
        // rather than hold a worker while it confirms.
        let Ok(_slot) = self.in_flight.try_lock() else {
            return Err(DeployError::InUse(self.account_text.clone()));
        };
        self.finish_in_flight().await?;
        let mut transaction = None;
        let mut slot_waits = 0;
        let mut round = 0;
        loop {
            let ledger = self.look_up(address.0).await?;
            if let Some(found) = ledger.instance_wasm {
                if found != wasm_hash_text {
                    return Err(DeployError::Conflict {
                        address: address_text,
                        found,
                        expected: wasm_hash_text,
                    });
                }
                self.set_status(tenant_id, "deployed").await?;
                if transaction.is_none() {
                    // Created by an earlier attempt, or by a process that
                    // crashed before it could report it.
                    let mut conn = db::conn(&self.pool).await?;
                    transaction = store::creation(&mut conn, tenant_id)
                        .await
                        .map_err(crate::error::Error::from)?;
                }
                return Ok(Deployed {
                    address: address_text,
                    wasm_hash: wasm_hash_text,
                    salt: hex::encode(salt),
                    transaction,
                });
            }
            if round == MAX_ROUNDS {
                return Err(DeployError::Expiring);
            }
            if !ledger.code {
                let Wasm::Code(code) = &self.config.wasm else {
                    return Err(DeployError::WasmMissing(wasm_hash_text));
                };
                let upload = tx::upload_wasm(code)?;
                let allowed = Footprint {
                    read_only: vec![],
                    read_write: vec![tx::code_key(self.wasm_hash)],
                    must_write: vec![tx::code_key(self.wasm_hash)],
                };
                match self
                    .submit(tenant_id, Purpose::UploadWasm, upload, &allowed)
                    .await
                {
                    Ok(Submitted::Applied(_)) => {}
                    Ok(Submitted::Expired) => {
                        round += 1;
                        continue;
                    }
                    Ok(Submitted::SlotTaken) => {
                        self.wait_for_slot(&mut slot_waits).await?;
                        continue;
                    }
                    // Another replica's upload landed since the look: the
                    // simulation no longer writes the code. Look again.
                    Err(DeployError::Assembly { .. }) if self.look_up(address.0).await?.code => {
                        round += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let create = tx::create_contract(&self.account, salt, self.wasm_hash);
            let allowed = Footprint {
                read_only: vec![tx::code_key(self.wasm_hash)],
                read_write: vec![tx::instance_key(address.0)],
                must_write: vec![tx::instance_key(address.0)],
            };
            match self
                .submit(tenant_id, Purpose::CreateContract, create, &allowed)
                .await?
            {
                Submitted::Applied(hash) => transaction = Some(hash),
                Submitted::Expired => round += 1,
                Submitted::SlotTaken => self.wait_for_slot(&mut slot_waits).await?,
            }
        }
    }

    /// Another replica's transaction holds the deployer's slot: see it to
    /// its end (it re-sends and polls the same bytes), then try again.
    async fn wait_for_slot(&self, waits: &mut usize) -> Result<(), DeployError> {
        *waits += 1;
        if *waits > MAX_SLOT_WAITS {
            return Err(DeployError::Busy(self.account_text.clone()));
        }
        self.finish_in_flight().await
    }

    /// The compensation: a contract cannot be deleted, so a deployed one is
    /// recorded as orphaned. Returns its address if there is one.
    pub async fn orphan(&self, tenant_id: Uuid) -> Result<Option<String>, DeployError> {
        let deployment = {
            let mut conn = db::conn(&self.pool).await?;
            store::deployment(&mut conn, tenant_id)
                .await
                .map_err(crate::error::Error::from)?
        };
        let Some(deployment) = deployment else {
            return Ok(None);
        };
        if deployment.network_passphrase != self.config.network_passphrase
            || deployment.deployer != self.account_text
        {
            // Another network or deployer: this server cannot look, so it
            // reports the contract as left behind rather than guess.
            self.set_status(tenant_id, "orphaned").await?;
            return Ok(Some(deployment.contract_address));
        }
        self.check_network().await?;
        {
            // A transaction in flight may still create it.
            let _slot = self.in_flight.lock().await;
            self.finish_in_flight().await?;
        }
        let address = self.address(tenant_id);
        if self.look_up(address.0).await?.instance_wasm.is_none() {
            return Ok(None);
        }
        self.set_status(tenant_id, "orphaned").await?;
        Ok(Some(format!("{address}")))
    }

    /// The Wasm hash (hex) of the contract instance at `address` on the
    /// ledger, `None` if there is no instance; for the drift check.
    pub async fn instance_wasm(&self, address: &str) -> Result<Option<String>, DeployError> {
        let Ok(contract) = address.parse::<stellar_strkey::Contract>() else {
            return Ok(None);
        };
        Ok(self.look_up(contract.0).await?.instance_wasm)
    }

    async fn check_network(&self) -> Result<(), DeployError> {
        let network = self.client.get_network().await?;
        if network.passphrase != self.config.network_passphrase {
            return Err(DeployError::WrongNetwork {
                served: network.passphrase,
                configured: self.config.network_passphrase.clone(),
            });
        }
        Ok(())
    }

    async fn set_status(&self, tenant_id: Uuid, status: &str) -> Result<(), DeployError> {
        let mut conn = db::conn(&self.pool).await?;
        store::set_deployment_status(&mut conn, tenant_id, status)
            .await
            .map_err(crate::error::Error::from)?;
        Ok(())
    }
}
