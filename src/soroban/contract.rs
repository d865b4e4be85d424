//! Contract addresses known before the contract exists.
//!
//! A contract deployed by an account gets the address
//! `sha256(XDR(HashIdPreimage::ContractId { network_id, from address(deployer, salt) }))`:
//! the deployer and salt fix it, whatever the code is and however often the
//! deployment is retried. The salt is an HMAC of the tenant id, so the same
//! tenant always maps to the same address while the tenant id itself does not
//! appear on chain.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use stellar_strkey::Contract;
use stellar_strkey::ed25519::PublicKey as AccountKey;
use stellar_xdr::{
    AccountId, ContractIdPreimage, ContractIdPreimageFromAddress, Hash, HashIdPreimage,
    HashIdPreimageContractId, Limits, PublicKey, ScAddress, Uint256, WriteXdr,
};
use uuid::Uuid;

use super::{Error, network_id};

/// Hex characters of a 32-byte salt.
const SALT_HEX_LEN: usize = 64;

/// The address (`C...`) of the contract that `deployer` deploys with `salt`
/// on the network named by `network_passphrase`.
pub fn contract_id(network_passphrase: &str, deployer: &AccountKey, salt: [u8; 32]) -> Contract {
    let preimage = HashIdPreimage::ContractId(HashIdPreimageContractId {
        network_id: Hash(network_id(network_passphrase)),
        contract_id_preimage: ContractIdPreimage::Address(ContractIdPreimageFromAddress {
            address: ScAddress::Account(AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(
                deployer.0,
            )))),
            salt: Uint256(salt),
        }),
    });
    // Invariant: every field of this preimage has a fixed size and the
    // writer is an unlimited in-memory buffer, so encoding cannot fail.
    let xdr = preimage
        .to_xdr(Limits::none())
        .expect("a fixed-size preimage always encodes");
    Contract(Sha256::digest(xdr).into())
}

/// The salt of a tenant's contract: HMAC-SHA256 under `key` of the tenant
/// id's 16 bytes (RFC 9562 order). Without the key, the salt on chain does
/// not say which tenant it belongs to.
pub fn tenant_salt(key: &[u8], tenant_id: Uuid) -> [u8; 32] {
    hmac_sha256(key, tenant_id.as_bytes())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // Invariant: HMAC takes keys of any length (longer ones are hashed
    // first), so `new_from_slice` never fails.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A `G...` account strkey.
pub fn parse_account_id(strkey: &str) -> Result<AccountKey, Error> {
    AccountKey::from_string(strkey).map_err(Error::AccountId)
}

/// A salt written as exactly 64 hex characters.
pub fn parse_salt(hex: &str) -> Result<[u8; 32], Error> {
    if hex.len() != SALT_HEX_LEN {
        return Err(Error::Salt(format!(
            "got {} characters",
            hex.chars().count()
        )));
    }
    let mut salt = [0; 32];
    hex::decode_to_slice(hex, &mut salt).map_err(|e| Error::Salt(e.to_string()))?;
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use stellar_xdr::{
        HostFunction, LedgerKey, Limits, OperationBody, ReadXdr, TransactionEnvelope,
    };

    use super::*;
    use crate::soroban::TEST_NETWORK_PASSPHRASE;

    const DEPLOYER: &str = "GCYTFXNAFGBZ5BCKCVXGQ7N57PM6EZLTLRKI2TNQCTSS4GXTHIV2ZC7U";
    const SALT: &str = "cf72be055811cd78a0fc1873d532f9432f886efe9c0ef09f75a02d04c3053dc6";
    const CONTRACT: &str = "CC5CKCWU5QZLE3ZLIM3ETKZEC3DIY2RY66EAMW27CEFWI7ADZBHF3NOC";

    /// A testnet transaction that deployed a contract (py-stellar-base,
    /// tests/test_soroban_server_sync.py, `test_get_transactions`, the fourth
    /// entry's `envelopeXdr`): its host function carries the deployer and
    /// salt, and its footprint the address the network gave the contract.
    const DEPLOY_ENVELOPE: &str = "AAAAAgAAAACxMt2gKYOehEoVbmh9vfvZ4mVzXFSNTbAU5S4a8zorrAA4wrwAHLqRAAAADAAAAAAAAAAAAAAAAQAAAAAAAAAYAAAAAQAAAAAAAAAAAAAAALEy3aApg56EShVuaH29+9niZXNcVI1NsBTlLhrzOiusz3K+BVgRzXig/Bhz1TL5Qy+Ibv6cDvCfdaAtBMMFPcYAAAAAHXUVmJM11pdJSKKV52UJrVYlvxaPLmmg17nMe0HGy0MAAAABAAAAAAAAAAEAAAAAAAAAAAAAAACxMt2gKYOehEoVbmh9vfvZ4mVzXFSNTbAU5S4a8zorrM9yvgVYEc14oPwYc9Uy+UMviG7+nA7wn3WgLQTDBT3GAAAAAB11FZiTNdaXSUiiledlCa1WJb8Wjy5poNe5zHtBxstDAAAAAAAAAAEAAAAAAAAAAQAAAAcddRWYkzXWl0lIopXnZQmtViW/Fo8uaaDXucx7QcbLQwAAAAEAAAAGAAAAAbolCtTsMrJvK0M2SaskFsaMajj3iAZbXxELZHwDyE5dAAAAFAAAAAEABf2jAAAd1AAAAGgAAAAAADjCWAAAAAHzOiusAAAAQM+qaiMKxMoCVNjdRIh3X9CSxkjAm0BpXYDB9Fd+DS0guYKiY3TMaVe243UB008iBn5ynQv724rReXlg7iFqXQA=";

    #[test]
    fn contract_id_matches_the_published_testnet_vector() {
        let deployer = parse_account_id(DEPLOYER).unwrap();
        let salt = parse_salt(SALT).unwrap();
        let id = contract_id(TEST_NETWORK_PASSPHRASE, &deployer, salt);
        assert_eq!(id.to_string(), CONTRACT);
    }

    #[test]
    fn the_vector_is_what_the_network_assigned_on_chain() {
        let TransactionEnvelope::Tx(envelope) =
            TransactionEnvelope::from_xdr_base64(DEPLOY_ENVELOPE, Limits::none()).unwrap()
        else {
            panic!("a v1 envelope");
        };
        let [op] = envelope.tx.operations.as_slice() else {
            panic!("one operation");
        };
        let OperationBody::InvokeHostFunction(invoke) = &op.body else {
            panic!("an InvokeHostFunction operation");
        };
        let HostFunction::CreateContract(create) = &invoke.host_function else {
            panic!("a CreateContract host function");
        };
        let ContractIdPreimage::Address(from) = &create.contract_id_preimage else {
            panic!("a contract deployed by an address");
        };
        let ScAddress::Account(AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(deployer)))) =
            &from.address
        else {
            panic!("deployed by an account");
        };
        assert_eq!(AccountKey(*deployer).to_string(), DEPLOYER);
        assert_eq!(hex::encode(from.salt.0), SALT);

        let stellar_xdr::TransactionExt::V1(soroban) = &envelope.tx.ext else {
            panic!("Soroban transaction data");
        };
        let written: Vec<String> = soroban
            .resources
            .footprint
            .read_write
            .iter()
            .filter_map(|key| match key {
                LedgerKey::ContractData(data) => match &data.contract {
                    ScAddress::Contract(id) => Some(format!("{}", Contract(id.0.0))),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(written, [CONTRACT]);
    }

    #[test]
    fn the_network_changes_the_address() {
        let deployer = parse_account_id(DEPLOYER).unwrap();
        let salt = parse_salt(SALT).unwrap();
        let public = contract_id(crate::soroban::PUBLIC_NETWORK_PASSPHRASE, &deployer, salt);
        assert_ne!(public.to_string(), CONTRACT);
        assert!(public.to_string().starts_with('C'));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test cases 1 and 2.
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tenant_salt_is_stable_per_tenant_and_key() {
        let tenant = Uuid::parse_str("0192f3a4-5b6c-7d8e-9f00-112233445566").unwrap();
        let other = Uuid::parse_str("0192f3a4-5b6c-7d8e-9f00-112233445567").unwrap();
        let salt = tenant_salt(b"deployment key", tenant);
        assert_eq!(salt, tenant_salt(b"deployment key", tenant));
        assert_eq!(salt, hmac_sha256(b"deployment key", tenant.as_bytes()));
        assert_ne!(salt, tenant_salt(b"deployment key", other));
        assert_ne!(salt, tenant_salt(b"another key", tenant));
    }

    #[test]
    fn bad_account_ids_are_refused() {
        // A checksum off by one character.
        let typo = format!("{}A", &DEPLOYER[..DEPLOYER.len() - 1]);
        for bad in [
            "",
            "not a key",
            typo.as_str(),
            CONTRACT,
            "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH",
        ] {
            let err = parse_account_id(bad).unwrap_err();
            assert!(matches!(err, Error::AccountId(_)), "{bad}: {err:?}");
            assert!(
                err.to_string()
                    .starts_with("not a Stellar account id (G...)")
            );
        }
    }

    #[test]
    fn salts_must_be_64_hex_characters() {
        for (bad, why) in [
            ("", "got 0 characters"),
            ("cf72", "got 4 characters"),
            (&SALT[..63], "got 63 characters"),
            (&format!("{SALT}00"), "got 66 characters"),
        ] {
            let err = parse_salt(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("the salt must be 64 hex characters (32 bytes): {why}")
            );
        }
        let not_hex = format!("zz{}", &SALT[2..]);
        assert!(matches!(parse_salt(&not_hex), Err(Error::Salt(_))));
        assert_eq!(hex::encode(parse_salt(SALT).unwrap()), SALT);
        assert_eq!(
            parse_salt(&SALT.to_uppercase()).unwrap(),
            parse_salt(SALT).unwrap()
        );
    }
}
