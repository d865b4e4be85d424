//! The tests' own Soroban network (the network's real host and simulator
//! behind a JSON-RPC server) with a funded deployer, for servers in
//! process and server processes alike.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use stellar_xdr::{ContractExecutable, Hash, LedgerEntryData, ScVal, TransactionEnvelope};
use tenantd::config::Config;
use tenantd::soroban::localnet::{LocalNet, LocalNetConfig};
use tenantd::soroban::tx;
use tokio_util::sync::CancellationToken;

pub const PASSPHRASE: &str = "Standalone Network ; February 2017";

/// The test's own Soroban network and a funded deployer.
pub struct Net {
    pub net: LocalNet,
    pub secret: String,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Net {
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// With more accounts at genesis (key, stroops), beside the deployer's.
    pub async fn start_with(extra: Vec<(stellar_strkey::ed25519::PublicKey, i64)>) -> Self {
        let key = SigningKey::from_bytes(&rand::random());
        let shutdown = CancellationToken::new();
        let mut accounts = vec![(
            stellar_strkey::ed25519::PublicKey(key.verifying_key().to_bytes()),
            100_000_000_000,
        )];
        accounts.extend(extra);
        let net = LocalNet::start(
            LocalNetConfig {
                network_passphrase: PASSPHRASE.to_owned(),
                ledger_interval: Duration::from_millis(50),
                accounts,
                state_file: None,
            },
            "127.0.0.1:0".parse().unwrap(),
            shutdown.clone(),
        )
        .await
        .expect("local network");
        let secret = format!(
            "{}",
            stellar_strkey::ed25519::PrivateKey(key.to_bytes()).as_unredacted()
        );
        Net {
            net,
            secret,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// Points a server's configuration at this network.
    pub fn configure(&self, config: &mut Config) {
        let soroban = &mut config.soroban;
        soroban.soroban_rpc_url = Some(self.net.url());
        soroban.soroban_network_passphrase = Some(PASSPHRASE.to_owned());
        soroban.soroban_deployer_secret = Some(self.secret.clone());
        soroban.soroban_poll_ms = 25;
        soroban.soroban_confirm_timeout_secs = 5;
        soroban.soroban_request_timeout_ms = 1_000;
    }

    /// The same, as a server process's environment.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TENANTD_SOROBAN_RPC_URL", self.net.url()),
            ("TENANTD_SOROBAN_NETWORK_PASSPHRASE", PASSPHRASE.to_owned()),
            ("TENANTD_SOROBAN_DEPLOYER_SECRET", self.secret.clone()),
            ("TENANTD_SOROBAN_POLL_MS", "25".to_owned()),
            ("TENANTD_SOROBAN_CONFIRM_TIMEOUT_SECS", "5".to_owned()),
        ]
    }

    /// The Wasm hash of the contract instance at `address`, if it exists.
    pub async fn instance(&self, address: &str) -> Option<[u8; 32]> {
        let contract = stellar_strkey::Contract::from_string(address).expect("a C... address");
        let entry = self.net.entry(&tx::instance_key(contract.0)).await?;
        match entry.data {
            LedgerEntryData::ContractData(data) => match data.val {
                ScVal::ContractInstance(instance) => match instance.executable {
                    ContractExecutable::Wasm(Hash(hash)) => Some(hash),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }

    /// What the tenant contract at `address` keeps in its instance storage
    /// under `tenant` (what its constructor was given), read from the
    /// ledger entry itself: the tenant id and the owner's strkey.
    pub async fn stored_tenant(&self, address: &str) -> Option<(String, String)> {
        let contract = stellar_strkey::Contract::from_string(address).expect("a C... address");
        let entry = self.net.entry(&tx::instance_key(contract.0)).await?;
        let LedgerEntryData::ContractData(data) = entry.data else {
            return None;
        };
        let ScVal::ContractInstance(instance) = data.val else {
            return None;
        };
        let key = ScVal::Symbol(stellar_xdr::ScSymbol("tenant".try_into().unwrap()));
        let stored = instance
            .storage?
            .0
            .iter()
            .find(|e| e.key == key)?
            .val
            .clone();
        let ScVal::Vec(Some(items)) = stored else {
            return None;
        };
        let [ScVal::String(id), ScVal::Address(owner)] = items.as_slice() else {
            return None;
        };
        let owner = match owner {
            stellar_xdr::ScAddress::Account(stellar_xdr::AccountId(
                stellar_xdr::PublicKey::PublicKeyTypeEd25519(key),
            )) => format!("{}", stellar_strkey::ed25519::PublicKey(key.0)),
            stellar_xdr::ScAddress::Contract(id) => format!("{}", stellar_strkey::Contract(id.0.0)),
            _ => return None,
        };
        Some((id.to_utf8_string_lossy(), owner))
    }

    /// The deployer's account (`G...`).
    pub fn deployer(&self) -> String {
        let key = stellar_strkey::ed25519::PrivateKey::from_string(&self.secret).unwrap();
        let signing = SigningKey::from_bytes(&key.0);
        format!(
            "{}",
            stellar_strkey::ed25519::PublicKey(signing.verifying_key().to_bytes())
        )
    }

    /// The `count` channel accounts a server generates from this deployer
    /// (`--soroban-channels`).
    pub fn channels(&self, count: usize) -> Vec<String> {
        let deployer = tenantd::soroban::SecretKey::from_strkey(&self.secret).unwrap();
        tenantd::soroban::deploy::generated_channels(&deployer, count)
            .iter()
            .map(|key| format!("{}", key.public_key()))
            .collect()
    }

    /// The balance (stroops) of an account, if it exists.
    pub async fn balance(&self, account: &str) -> Option<i64> {
        let key = stellar_strkey::ed25519::PublicKey::from_string(account).unwrap();
        match self.net.entry(&tx::account_key(&key)).await?.data {
            LedgerEntryData::Account(account) => Some(account.balance),
            _ => None,
        }
    }

    /// Waits (at most 30 s) until `account` exists.
    pub async fn wait_for_account(&self, account: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.balance(account).await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "account {account} was never created"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Applied transactions that created `address`, successful or not.
    pub fn creations_of(
        &self,
        address: &str,
    ) -> Vec<tenantd::soroban::localnet::AppliedTransaction> {
        let contract = stellar_strkey::Contract::from_string(address).unwrap();
        self.net
            .applied()
            .into_iter()
            .filter(|applied| creates(&applied.envelope) == Some(contract.0))
            .collect()
    }

    /// Applied Wasm uploads.
    pub fn uploads(&self) -> usize {
        self.net
            .applied()
            .iter()
            .filter(|applied| {
                matches!(
                    host_function(&applied.envelope),
                    Some(stellar_xdr::HostFunction::UploadContractWasm(_))
                )
            })
            .count()
    }
}

pub fn host_function(envelope: &TransactionEnvelope) -> Option<stellar_xdr::HostFunction> {
    let TransactionEnvelope::Tx(v1) = envelope else {
        return None;
    };
    match &v1.tx.operations.first()?.body {
        stellar_xdr::OperationBody::InvokeHostFunction(op) => Some(op.host_function.clone()),
        _ => None,
    }
}

/// The contract a CreateContractV2 transaction creates, by its address bytes.
pub fn creates(envelope: &TransactionEnvelope) -> Option<[u8; 32]> {
    let stellar_xdr::HostFunction::CreateContractV2(args) = host_function(envelope)? else {
        return None;
    };
    let stellar_xdr::ContractIdPreimage::Address(from) = args.contract_id_preimage else {
        return None;
    };
    let stellar_xdr::ScAddress::Account(stellar_xdr::AccountId(
        stellar_xdr::PublicKey::PublicKeyTypeEd25519(deployer),
    )) = from.address
    else {
        return None;
    };
    let address = tenantd::soroban::contract_id(
        PASSPHRASE,
        &stellar_strkey::ed25519::PublicKey(deployer.0),
        from.salt.0,
    );
    Some(address.0)
}
