//! What the built-in tenant contract is told about its tenant: the
//! constructor's arguments (the tenant's id and its owner), and the check
//! after a deployment that `tenant()` answers with them.

use stellar_strkey::ed25519::PublicKey as AccountKey;
use stellar_xdr::{Hash, ScAddress, ScString, ScVal, ScVec};
use uuid::Uuid;

use super::{DeployError, Deployer};
use crate::soroban::tx;

/// The tenant contract's read-only function that returns what its
/// constructor was given.
const TENANT_FUNCTION: &str = "tenant";

impl Deployer {
    /// What the built-in contract's constructor gets, and `tenant()`
    /// returns: the tenant's id and its owner (the deployer by default).
    pub(super) fn tenant_record(
        &self,
        tenant_id: Uuid,
        owner: Option<&ScAddress>,
    ) -> Result<ScVal, DeployError> {
        let owner = owner
            .cloned()
            .unwrap_or_else(|| tx::account_address(&self.account));
        let id = ScVal::String(ScString(tenant_id.to_string().try_into()?));
        Ok(ScVal::Vec(Some(ScVec(
            vec![id, ScVal::Address(owner)].try_into()?,
        ))))
    }

    /// Asks the contract's `tenant()` (by simulation: nothing is sent) and
    /// compares its answer with what its constructor was meant to get.
    pub(super) async fn check_tenant(
        &self,
        contract: [u8; 32],
        expected: &ScVal,
    ) -> Result<(), DeployError> {
        let found = self.simulate_call(contract, TENANT_FUNCTION).await?;
        if &found != expected {
            return Err(DeployError::NotItsTenant {
                address: format!("{}", stellar_strkey::Contract(contract)),
                found: describe(&found),
                expected: describe(expected),
            });
        }
        Ok(())
    }
}

/// The owner in a `[tenant, owner]` record, as a strkey.
pub(super) fn owner_text(record: &ScVal) -> Option<String> {
    match record {
        ScVal::Vec(Some(items)) => match items.get(1)? {
            ScVal::Address(address) => address_text(address),
            _ => None,
        },
        _ => None,
    }
}

/// An account or contract address as its strkey.
fn address_text(address: &ScAddress) -> Option<String> {
    match address {
        ScAddress::Account(stellar_xdr::AccountId(
            stellar_xdr::PublicKey::PublicKeyTypeEd25519(key),
        )) => Some(format!("{}", AccountKey(key.0))),
        ScAddress::Contract(id) => Some(format!("{}", stellar_strkey::Contract(id.0.0))),
        _ => None,
    }
}

/// A value as an operator reads it in an error: strings quoted, addresses
/// as strkeys, vectors in brackets, anything else by its type.
fn describe(value: &ScVal) -> String {
    match value {
        ScVal::String(text) => format!("{:?}", text.to_utf8_string_lossy()),
        ScVal::Address(address) => address_text(address).unwrap_or_else(|| "an address".to_owned()),
        ScVal::Vec(Some(items)) => {
            let items: Vec<String> = items.iter().map(describe).collect();
            format!("[{}]", items.join(", "))
        }
        other => format!("a {} value", other.name()),
    }
}

/// A contract owner given as a strkey: an account (`G...`) or a contract
/// (`C...`).
pub fn parse_owner(text: &str) -> Result<ScAddress, String> {
    if let Ok(account) = text.parse::<AccountKey>() {
        return Ok(tx::account_address(&account));
    }
    if let Ok(contract) = text.parse::<stellar_strkey::Contract>() {
        return Ok(ScAddress::Contract(stellar_xdr::ContractId(Hash(
            contract.0,
        ))));
    }
    Err("the contract owner is not a Stellar account (G...) or contract (C...) address".to_owned())
}
