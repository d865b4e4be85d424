//! Soroban contract deployment: what the `deploy_contract` step needs, and
//! the local network it deploys to when no Soroban RPC endpoint is
//! configured.
//!
//! | file          | what lives there |
//! |---------------|------------------|
//! | [`contract`]  | the deterministic contract address of a deployer and salt; the per-tenant salt |
//! | [`sign`]      | the transaction hash the network reports, envelope signing, the secret key type |
//! | [`tx`]        | ledger keys, host functions, assembling a simulated transaction, result codes |
//! | [`rpc`]       | the stellar-rpc JSON-RPC wire types, shared by client and local network |
//! | [`client`]    | the Soroban RPC client |
//! | [`deploy`]    | the deployment flow: at least once, never twice |
//! | [`setup`]     | settings to a deployer: a remote endpoint or the local network |
//! | [`localnet`]  | a local Soroban network: the network's own host and simulator behind JSON-RPC |
//! | [`wasm`]      | the built-in minimal contract |
//!
//! Every hash here starts from the network id, `sha256(passphrase)`, so the
//! same deployer, salt or transaction gives different results on testnet and
//! on the public network. The step derives the contract address before it
//! deploys: a retry looks for that address instead of deploying twice.

pub mod client;
pub mod contract;
pub mod deploy;
pub mod localnet;
pub mod rpc;
pub mod setup;
pub mod sign;
pub mod tx;
pub mod wasm;

use sha2::{Digest, Sha256};
use stellar_strkey::DecodeError;

pub use contract::{contract_id, parse_account_id, parse_salt, tenant_salt};
pub use sign::{SecretKey, sign_authorization, sign_envelope, transaction_hash};

/// The passphrase of the public Stellar network.
pub const PUBLIC_NETWORK_PASSPHRASE: &str = "Public Global Stellar Network ; September 2015";
/// The passphrase of the Stellar test network.
pub const TEST_NETWORK_PASSPHRASE: &str = "Test SDF Network ; September 2015";

/// What can go wrong here. No variant carries secret material, and parse
/// errors never echo the text of a secret key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a `G...` account strkey.
    #[error("not a Stellar account id (G...): {0}")]
    AccountId(DecodeError),
    /// Not an `S...` secret seed strkey.
    #[error("not a Stellar secret seed (S...): {0}")]
    SecretKey(DecodeError),
    /// A salt that is not 32 bytes written as 64 hex characters.
    #[error("the salt must be 64 hex characters (32 bytes): {0}")]
    Salt(String),
    /// Fee-bump and pre-protocol-13 (v0) envelopes are not built here.
    #[error("only v1 transaction envelopes can be signed, not {0}")]
    UnsupportedEnvelope(&'static str),
    /// The envelope already holds as many signatures as XDR allows.
    #[error("the envelope already carries the maximum number of signatures")]
    TooManySignatures,
    /// XDR encoding failed.
    #[error("XDR encoding: {0}")]
    Xdr(#[from] stellar_xdr::Error),
}

/// The network id: `sha256(passphrase)`, the prefix of every hash the
/// network signs or derives.
pub fn network_id(network_passphrase: &str) -> [u8; 32] {
    Sha256::digest(network_passphrase.as_bytes()).into()
}

/// `tenantd contract-id`: prints the address a deployer and salt give.
pub fn print_contract_id(args: &crate::config::ContractIdArgs) -> Result<(), Error> {
    let deployer = parse_account_id(&args.deployer)?;
    let salt = parse_salt(&args.salt)?;
    println!("{}", contract_id(&args.network_passphrase, &deployer, salt));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_ids_match_the_published_ones() {
        // The ids Stellar's SDKs publish (e.g. py-stellar-base tests/test_network.py).
        assert_eq!(
            hex::encode(network_id(PUBLIC_NETWORK_PASSPHRASE)),
            "7ac33997544e3175d266bd022439b22cdb16508c01163f26e5cb2a3e1045a979"
        );
        assert_eq!(
            hex::encode(network_id(TEST_NETWORK_PASSPHRASE)),
            "cee0302d59844d32bdca915c8203dd44b33fbb7edc19051ea37abedf28ecd472"
        );
    }
}
