//! Deploying a tenant's contract, at least once and never twice, one short
//! look at a time.
//!
//! ```text
//! each look (the step answers "not yet" until the last one):
//!   getNetwork (passphrase must match)
//!   -> address = contract_id(deployer, HMAC(salt key, tenant id)), recorded
//!   -> the tenant's transaction in flight?  poll it once (re-send the same
//!      bytes if it has gone unseen for a while): waiting -> not yet
//!   -> instance on the ledger?  same Wasm: check tenant(), done
//!                               other Wasm: conflict
//!   -> Wasm code on the ledger?  no: upload it (one transaction at a time
//!      per deployer) -> not yet
//!   -> create the instance (its constructor gets the tenant) -> not yet
//!
//! one transaction: a free channel (source account) -> its sequence number
//!   and balance from the ledger -> simulateTransaction -> the deployer signs
//!   its authorization -> check footprint, auth, fee cap -> the channel signs
//!   -> record envelope + hash (one in flight per channel, per tenant) ->
//!   sendTransaction
//! ```
//!
//! The address depends only on network, deployer and salt, so whatever
//! crashed where, the next look finds that address before it builds
//! anything. A signed transaction is recorded before it is sent; a look
//! that finds one recorded polls it (and re-sends those bytes) instead of
//! building another, and builds a new one only once the old one is
//! provably dead: not found after a ledger closed past its time bound.
//!
//! Channels: transactions come from channel accounts, each with one in
//! flight (a partial unique index across replicas), so deployments are not
//! one per ledger. The deployer authorises each creation with an address
//! credential, so it stays the contract's deployer and the addresses stay
//! what `tenantd contract-id` derives. Without channels the deployer is the
//! only source, authorising as the source account. A channel's sequence
//! number is read from the ledger for every transaction, and a number a
//! recorded transaction used since is refused when recording. Replicas
//! share the channels through the database, so they must deploy to the same
//! network.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use stellar_strkey::ed25519::PublicKey as AccountKey;
use stellar_xdr::{ContractExecutable, Hash, LedgerEntryData, ScAddress, ScVal, ScVec};
use uuid::Uuid;

use super::client::{Client, ClientError};
use super::tx::{self, AssemblyError, Footprint, Purpose};
use super::{SecretKey, contract_id, tenant_salt};
use crate::db::{self, DbPool, soroban as store};

mod channels;
mod send;
mod tenant;

pub use channels::{Funding, generated_channels};
pub use tenant::parse_owner;

/// How long after its last send a transaction still not found is sent
/// again: an RPC node that restarted may have lost it from its queue.
const RESEND_AFTER: Duration = Duration::from_secs(10);

/// A deployment that found no free channel looks again after this many
/// poll intervals (at least [`MIN_CHANNEL_WAIT`]) if nothing wakes it
/// sooner: a settled transaction makes the oldest waiting deployments due
/// as channels free up, so the wait is only a fallback, and a long one
/// keeps hundreds of queued deployments from polling.
const CHANNEL_WAIT_POLLS: u32 = 20;
const MIN_CHANNEL_WAIT: Duration = Duration::from_secs(2);

/// Domain separation of the salt key derived from the deployer's secret.
const SALT_KEY_CONTEXT: &[u8] = b"tenantd contract salt v1";

/// Where the contract's Wasm comes from.
#[derive(Clone)]
pub enum Wasm {
    /// tenantd's own tenant contract ([`super::wasm::tenant_contract`]):
    /// uploaded if missing; its constructor gets the tenant's id and owner,
    /// which `tenant()` is asked for after the deployment.
    BuiltIn(Arc<[u8]>),
    /// The operator's code; uploaded if the ledger does not have it; no
    /// constructor arguments.
    Code(Arc<[u8]>),
    /// The hash of code uploaded already; deployments fail if it is missing.
    Hash([u8; 32]),
}

impl Wasm {
    /// tenantd's own tenant contract.
    pub fn built_in() -> Self {
        Wasm::BuiltIn(super::wasm::tenant_contract().into())
    }

    pub fn hash(&self) -> [u8; 32] {
        match self {
            Wasm::BuiltIn(code) | Wasm::Code(code) => Sha256::digest(code).into(),
            Wasm::Hash(hash) => *hash,
        }
    }

    fn code(&self) -> Option<&[u8]> {
        match self {
            Wasm::BuiltIn(code) | Wasm::Code(code) => Some(code),
            Wasm::Hash(_) => None,
        }
    }
}

/// How to deploy.
#[derive(Clone)]
pub struct DeployConfig {
    /// Must equal what the RPC server's `getNetwork` answers.
    pub network_passphrase: String,
    /// The deployer account's key: it authorises every creation (and with
    /// no channels, signs and pays).
    pub secret: SecretKey,
    pub wasm: Wasm,
    /// Largest fee (stroops) one transaction may pay: resources plus
    /// inclusion.
    pub fee_cap: i64,
    /// Stroops bid for inclusion on top of the resource fee.
    pub inclusion_fee: u32,
    /// How long a transaction stays valid (its time bound).
    pub confirm_timeout: Duration,
    /// How soon a look comes back to a transaction in flight.
    pub poll_interval: Duration,
    /// The source accounts of deployment transactions; empty: the deployer.
    pub channels: Vec<SecretKey>,
    /// Balances of the channels.
    pub funding: Funding,
}

/// Why a deployment did not complete. Messages name addresses, hashes and
/// result codes, never a secret key.
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
    #[error("account {0} does not exist on the network")]
    NoAccount(String),
    #[error("contract {address} exists with Wasm {found}, not the configured {expected}")]
    Conflict {
        address: String,
        found: String,
        expected: String,
    },
    #[error("contract {address} answers tenant() with {found}, not {expected}")]
    NotItsTenant {
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
    #[error("the channels could not be funded: {0}")]
    Funding(String),
    #[error("XDR: {0}")]
    Xdr(#[from] stellar_xdr::Error),
    #[error("signing: {0}")]
    Sign(#[from] super::Error),
}

impl DeployError {
    /// No later attempt can do better: the contract at the tenant's
    /// address was made for someone else.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeployError::NotItsTenant { .. })
    }
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
    /// The owner its constructor was given (`G...` or `C...`), for the
    /// built-in contract.
    pub owner: Option<String>,
}

/// Where a look left the work.
#[derive(Debug)]
pub enum Progress<T> {
    Done(T),
    /// Not done yet: a transaction is waiting for a ledger, or for a free
    /// channel. Look again after the poll interval.
    Waiting(Waiting),
}

/// Why a look did not finish, and what an operator should hear about.
#[derive(Debug)]
pub struct Waiting {
    pub why: String,
    /// When to look again: the poll interval for a transaction in flight,
    /// longer for a free channel (a settled transaction wakes the oldest
    /// waiting deployments as channels free up).
    pub after: Duration,
    /// Channels passed over (low balance, missing), once per episode.
    pub warnings: Vec<String>,
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

/// What one look at a recorded transaction found.
enum Polled {
    Applied,
    /// Will never be applied; a new one may be built.
    Expired,
    /// Not settled yet; why.
    Waiting(String),
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
    channels: channels::Channels,
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
            channels: channels::Channels::new(&config.secret, &config.channels),
            config,
            pool,
        }
    }

    /// The deployer account (`G...`).
    pub fn account(&self) -> &str {
        &self.account_text
    }

    /// The channel accounts transactions come from (`G...`); the deployer
    /// alone when none are configured.
    pub fn channel_accounts(&self) -> Vec<String> {
        self.channels.accounts()
    }

    /// How soon a look comes back to a transaction in flight.
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

    /// One look at the tenant's deployment: done, or what it waits for.
    /// `owner` is the owner the built-in contract records (`None`: the
    /// deployer).
    pub async fn deploy(
        &self,
        tenant_id: Uuid,
        owner: Option<&ScAddress>,
    ) -> Result<Progress<Deployed>, DeployError> {
        // The tenant's own transaction in flight decides first, in one
        // query and one call: most looks end here.
        let mut transaction = None;
        if let Some(record) = self.pending_for(tenant_id).await? {
            match self.poll(&record).await? {
                Polled::Waiting(why) => return Ok(self.waiting_for_ledger(why)),
                Polled::Applied if record.purpose == Purpose::CreateContract.as_str() => {
                    transaction = Some(record.hash);
                }
                Polled::Applied | Polled::Expired => {}
            }
        } else if let Some(why) = self.all_channels_busy().await? {
            return Ok(self.waiting_for_channel(why, Vec::new()));
        }
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
        let record = match &self.config.wasm {
            Wasm::BuiltIn(_) => Some(self.tenant_record(tenant_id, owner)?),
            Wasm::Code(_) | Wasm::Hash(_) => None,
        };
        let ledger = self.look_up(address.0).await?;
        if let Some(found) = ledger.instance_wasm {
            if found != wasm_hash_text {
                return Err(DeployError::Conflict {
                    address: address_text,
                    found,
                    expected: wasm_hash_text,
                });
            }
            if let Some(expected) = &record {
                self.check_tenant(address.0, expected).await?;
            }
            self.set_status(tenant_id, "deployed").await?;
            if transaction.is_none() {
                // Created by an earlier look, or by a process that
                // crashed before it could report it.
                let mut conn = db::conn(&self.pool).await?;
                transaction = store::creation(&mut conn, tenant_id)
                    .await
                    .map_err(crate::error::Error::from)?;
            }
            return Ok(Progress::Done(Deployed {
                address: address_text,
                wasm_hash: wasm_hash_text,
                salt: hex::encode(salt),
                transaction,
                owner: record.as_ref().and_then(tenant::owner_text),
            }));
        }
        if !ledger.code {
            let Some(code) = self.config.wasm.code() else {
                return Err(DeployError::WasmMissing(wasm_hash_text));
            };
            let allowed = Footprint {
                read_only: vec![],
                read_write: vec![tx::code_key(self.wasm_hash)],
                must_write: vec![tx::code_key(self.wasm_hash)],
            };
            return self
                .submit(
                    tenant_id,
                    Purpose::UploadWasm,
                    tx::upload_wasm(code)?,
                    allowed,
                )
                .await;
        }
        let args = match record {
            Some(ScVal::Vec(Some(ScVec(items)))) => items.to_vec(),
            _ => Vec::new(),
        };
        let create = tx::create_contract(&self.account, salt, self.wasm_hash, args)?;
        let allowed = Footprint {
            read_only: vec![tx::code_key(self.wasm_hash)],
            read_write: vec![tx::instance_key(address.0)],
            must_write: vec![tx::instance_key(address.0)],
        };
        self.submit(tenant_id, Purpose::CreateContract, create, allowed)
            .await
    }

    /// The compensation: a contract cannot be deleted, so a deployed one is
    /// recorded as orphaned. Done with its address if there is one.
    pub async fn orphan(&self, tenant_id: Uuid) -> Result<Progress<Option<String>>, DeployError> {
        let deployment = {
            let mut conn = db::conn(&self.pool).await?;
            store::deployment(&mut conn, tenant_id)
                .await
                .map_err(crate::error::Error::from)?
        };
        let Some(deployment) = deployment else {
            return Ok(Progress::Done(None));
        };
        if deployment.network_passphrase != self.config.network_passphrase
            || deployment.deployer != self.account_text
        {
            // Another network or deployer: this server cannot look, so it
            // reports the contract as left behind rather than guess.
            self.set_status(tenant_id, "orphaned").await?;
            return Ok(Progress::Done(Some(deployment.contract_address)));
        }
        self.check_network().await?;
        // A transaction in flight may still create it.
        if let Some(record) = self.pending_for(tenant_id).await? {
            match self.poll(&record).await {
                Ok(Polled::Waiting(why)) => return Ok(self.waiting_for_ledger(why)),
                Ok(Polled::Applied | Polled::Expired) => {}
                // Settled, so no longer in flight; what it was meant to do
                // is checked on the ledger next.
                Err(e @ (DeployError::Rejected { .. } | DeployError::Failed { .. })) => {
                    tracing::warn!(error = %e, "a Soroban transaction sent earlier did not apply");
                }
                Err(e) => return Err(e),
            }
        }
        let address = self.address(tenant_id);
        if self.look_up(address.0).await?.instance_wasm.is_none() {
            return Ok(Progress::Done(None));
        }
        self.set_status(tenant_id, "orphaned").await?;
        Ok(Progress::Done(Some(format!("{address}"))))
    }

    /// The Wasm hash (hex) of the contract instance at `address` on the
    /// ledger, `None` if there is no instance; for the drift check.
    pub async fn instance_wasm(&self, address: &str) -> Result<Option<String>, DeployError> {
        let Ok(contract) = address.parse::<stellar_strkey::Contract>() else {
            return Ok(None);
        };
        Ok(self.look_up(contract.0).await?.instance_wasm)
    }

    /// A transaction of the tenant's is in flight: look again after the
    /// poll interval.
    fn waiting_for_ledger<T>(&self, why: String) -> Progress<T> {
        Progress::Waiting(Waiting {
            why,
            after: self.config.poll_interval,
            warnings: Vec::new(),
        })
    }

    /// No channel can take a transaction now: look again much later, unless
    /// a settled transaction wakes this deployment first.
    fn waiting_for_channel<T>(&self, why: String, warnings: Vec<String>) -> Progress<T> {
        Progress::Waiting(Waiting {
            why,
            after: (self.config.poll_interval * CHANNEL_WAIT_POLLS).max(MIN_CHANNEL_WAIT),
            warnings,
        })
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

    async fn pending_for(
        &self,
        tenant_id: Uuid,
    ) -> Result<Option<store::PendingTransaction>, DeployError> {
        let mut conn = db::conn(&self.pool).await?;
        Ok(store::pending_for_tenant(&mut conn, tenant_id)
            .await
            .map_err(crate::error::Error::from)?)
    }

    async fn set_status(&self, tenant_id: Uuid, status: &str) -> Result<(), DeployError> {
        let mut conn = db::conn(&self.pool).await?;
        store::set_deployment_status(&mut conn, tenant_id, status)
            .await
            .map_err(crate::error::Error::from)?;
        Ok(())
    }
}
