//! Transaction hashes and signatures, as the network computes and checks them.
//!
//! The network signs and reports `sha256(XDR(TransactionSignaturePayload {
//! network_id, Tx(tx) }))`; a signature is ed25519 over that hash, decorated
//! with the last four bytes of the signer's public key as a hint.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use stellar_strkey::ed25519::{PrivateKey, PublicKey as AccountKey};
use stellar_xdr::{
    AccountId, DecoratedSignature, Hash, HashIdPreimage, HashIdPreimageSorobanAuthorization,
    Limits, PublicKey, ScAddress, ScBytes, ScMap, ScMapEntry, ScSymbol, ScVal, ScVec, Signature,
    SignatureHint, SorobanAuthorizationEntry, SorobanCredentials, Transaction, TransactionEnvelope,
    TransactionSignaturePayload, TransactionSignaturePayloadTaggedTransaction, Uint256, WriteXdr,
};

use super::{Error, network_id};

/// An ed25519 secret key read from an `S...` strkey. Neither `Debug` nor
/// `Display` shows it, and its bytes are zeroed when it is dropped.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Reads an `S...` secret seed strkey.
    pub fn from_strkey(strkey: &str) -> Result<Self, Error> {
        let seed = PrivateKey::from_string(strkey).map_err(Error::SecretKey)?;
        Ok(Self(SigningKey::from_bytes(&seed.0)))
    }

    /// Wraps a key made elsewhere.
    pub fn from_signing_key(key: SigningKey) -> Self {
        Self(key)
    }

    /// The key to sign with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// The account (`G...`) this key signs for.
    pub fn public_key(&self) -> AccountKey {
        AccountKey(self.0.verifying_key().to_bytes())
    }
}

impl FromStr for SecretKey {
    type Err = Error;

    fn from_str(strkey: &str) -> Result<Self, Error> {
        Self::from_strkey(strkey)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("public_key", &format_args!("{}", self.public_key()))
            .field("seed", &format_args!("[REDACTED]"))
            .finish()
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// The hash the network reports for `tx` and that its signers sign.
pub fn transaction_hash(tx: &Transaction, network_passphrase: &str) -> Result<[u8; 32], Error> {
    let payload = TransactionSignaturePayload {
        network_id: Hash(network_id(network_passphrase)),
        tagged_transaction: TransactionSignaturePayloadTaggedTransaction::Tx(tx.clone()),
    };
    Ok(Sha256::digest(payload.to_xdr(Limits::none())?).into())
}

/// `envelope` with one more signature, by `key`, for the network named by
/// `network_passphrase`. Signatures already there are kept.
pub fn sign_envelope(
    envelope: TransactionEnvelope,
    network_passphrase: &str,
    key: &SigningKey,
) -> Result<TransactionEnvelope, Error> {
    let mut v1 = match envelope {
        TransactionEnvelope::Tx(v1) => v1,
        other => return Err(Error::UnsupportedEnvelope(other.name())),
    };
    let hash = transaction_hash(&v1.tx, network_passphrase)?;
    let [.., a, b, c, d] = key.verifying_key().to_bytes();
    let signature = DecoratedSignature {
        hint: SignatureHint([a, b, c, d]),
        signature: Signature(key.sign(&hash).to_bytes().try_into()?),
    };
    let mut signatures: Vec<DecoratedSignature> = v1.signatures.into();
    signatures.push(signature);
    v1.signatures = signatures
        .try_into()
        .map_err(|_| Error::TooManySignatures)?;
    Ok(TransactionEnvelope::Tx(v1))
}

/// `entry` signed by `key` for the network named by `network_passphrase`,
/// valid until ledger `expiration_ledger`, if it is an address credential
/// of `key`'s account; any other entry is returned unchanged.
///
/// The host verifies `sha256(XDR(HashIdPreimage::SorobanAuthorization {
/// network_id, nonce, signature_expiration_ledger, invocation }))` against
/// the signature, a vector of `{public_key, signature}` maps (the account
/// contract's `AccountEd25519Signature`), and the signer's weight against
/// the account's medium threshold.
pub fn sign_authorization(
    mut entry: SorobanAuthorizationEntry,
    network_passphrase: &str,
    key: &SigningKey,
    expiration_ledger: u32,
) -> Result<SorobanAuthorizationEntry, Error> {
    let public = key.verifying_key().to_bytes();
    let SorobanCredentials::Address(credentials) = &mut entry.credentials else {
        return Ok(entry);
    };
    let own = ScAddress::Account(AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(public))));
    if credentials.address != own {
        return Ok(entry);
    }
    credentials.signature_expiration_ledger = expiration_ledger;
    let preimage = HashIdPreimage::SorobanAuthorization(HashIdPreimageSorobanAuthorization {
        network_id: Hash(network_id(network_passphrase)),
        nonce: credentials.nonce,
        signature_expiration_ledger: expiration_ledger,
        invocation: entry.root_invocation.clone(),
    });
    let payload: [u8; 32] = Sha256::digest(preimage.to_xdr(Limits::none())?).into();
    let signature = key.sign(&payload).to_bytes();
    let field = |name: &str, bytes: &[u8]| -> Result<ScMapEntry, Error> {
        Ok(ScMapEntry {
            key: ScVal::Symbol(ScSymbol(name.try_into()?)),
            val: ScVal::Bytes(ScBytes(bytes.try_into()?)),
        })
    };
    // Map keys in the host's order: `public_key` < `signature`.
    let one = ScVal::Map(Some(ScMap(
        vec![
            field("public_key", &public)?,
            field("signature", &signature)?,
        ]
        .try_into()?,
    )));
    credentials.signature = ScVal::Vec(Some(ScVec(vec![one].try_into()?)));
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Verifier, VerifyingKey};
    use stellar_xdr::{ReadXdr, TransactionEnvelope, VecM};

    use super::*;
    use crate::soroban::{PUBLIC_NETWORK_PASSPHRASE, TEST_NETWORK_PASSPHRASE};

    /// py-stellar-base, tests/test_transaction_envelope.py, `test_to_xdr_v1`:
    /// a v1 payment signed by this secret for the public network.
    const SECRET: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
    const PUBLIC: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";
    const SIGNED_V1: &str = "AAAAAgAAAADL13HWIyocdKsZ7A7HM8Srqmv+uZWc+rI4xx3M8oedCQAAAMgAAAAAAAAAAQAAAAEAAAAAAAAwOQAAAAAAAN3VAAAAAgAAAAAAAABkAAAAAQAAAAAAAAABAAAAANKYxYFXEWWR6TIJ6Vx6W/8SGy4dP2GLaND8yO/l5eRwAAAAAAAAAAJUC+QAAAAAAAAAAAHyh50JAAAAQCXOQnmno3he687bKRtDc6+BXRUf8t+RnTuHy+sKf35UjfFiQbIge+txehmg0N61JsFWfwbL0JtgOjzyeZw5JAs=";

    fn unsigned(xdr: &str) -> TransactionEnvelope {
        let mut envelope = TransactionEnvelope::from_xdr_base64(xdr, Limits::none()).unwrap();
        let TransactionEnvelope::Tx(v1) = &mut envelope else {
            panic!("a v1 envelope");
        };
        assert_eq!(v1.signatures.len(), 1);
        v1.signatures = VecM::default();
        envelope
    }

    #[test]
    fn re_signing_the_published_envelope_gives_it_back_byte_for_byte() {
        let key = SecretKey::from_strkey(SECRET).unwrap();
        assert_eq!(key.public_key().to_string(), PUBLIC);
        let signed = sign_envelope(
            unsigned(SIGNED_V1),
            PUBLIC_NETWORK_PASSPHRASE,
            key.signing_key(),
        )
        .unwrap();
        assert_eq!(signed.to_xdr_base64(Limits::none()).unwrap(), SIGNED_V1);
    }

    #[test]
    fn the_hash_is_what_the_signature_covers_and_what_stellar_xdr_computes() {
        let TransactionEnvelope::Tx(v1) =
            TransactionEnvelope::from_xdr_base64(SIGNED_V1, Limits::none()).unwrap()
        else {
            panic!("a v1 envelope");
        };
        let hash = transaction_hash(&v1.tx, PUBLIC_NETWORK_PASSPHRASE).unwrap();
        let public = stellar_strkey::ed25519::PublicKey::from_string(PUBLIC).unwrap();
        let verifying = VerifyingKey::from_bytes(&public.0).unwrap();
        let published: [u8; 64] = v1.signatures[0].signature.0.as_slice().try_into().unwrap();
        verifying
            .verify(&hash, &ed25519_dalek::Signature::from_bytes(&published))
            .expect("the published signature covers this hash");
        assert_eq!(
            hash,
            v1.tx.hash(network_id(PUBLIC_NETWORK_PASSPHRASE)).unwrap()
        );
        assert_ne!(
            hash,
            transaction_hash(&v1.tx, TEST_NETWORK_PASSPHRASE).unwrap()
        );
    }

    #[test]
    fn signing_appends_to_the_signatures_already_there() {
        let first = SecretKey::from_strkey(SECRET).unwrap();
        let second = SigningKey::from_bytes(&[7; 32]);
        let once = sign_envelope(
            unsigned(SIGNED_V1),
            PUBLIC_NETWORK_PASSPHRASE,
            first.signing_key(),
        )
        .unwrap();
        let TransactionEnvelope::Tx(twice) =
            sign_envelope(once, PUBLIC_NETWORK_PASSPHRASE, &second).unwrap()
        else {
            panic!("a v1 envelope");
        };
        assert_eq!(twice.signatures.len(), 2);
        let hint = &second.verifying_key().to_bytes()[28..];
        assert_eq!(twice.signatures[1].hint.0, hint);
    }

    #[test]
    fn only_v1_envelopes_are_signed() {
        let TransactionEnvelope::Tx(v1) = unsigned(SIGNED_V1) else {
            unreachable!()
        };
        let v0 = TransactionEnvelope::TxV0(stellar_xdr::TransactionV0Envelope {
            tx: stellar_xdr::TransactionV0 {
                source_account_ed25519: stellar_xdr::Uint256([1; 32]),
                fee: v1.tx.fee,
                seq_num: v1.tx.seq_num.clone(),
                time_bounds: None,
                memo: v1.tx.memo.clone(),
                operations: v1.tx.operations.clone(),
                ext: stellar_xdr::TransactionV0Ext::V0,
            },
            signatures: VecM::default(),
        });
        let key = SecretKey::from_strkey(SECRET).unwrap();
        let err = sign_envelope(v0, PUBLIC_NETWORK_PASSPHRASE, key.signing_key()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedEnvelope("TxV0")), "{err:?}");
    }

    #[test]
    fn a_full_envelope_is_refused() {
        let key = SecretKey::from_strkey(SECRET).unwrap();
        let mut envelope = unsigned(SIGNED_V1);
        for _ in 0..20 {
            envelope =
                sign_envelope(envelope, PUBLIC_NETWORK_PASSPHRASE, key.signing_key()).unwrap();
        }
        let err =
            sign_envelope(envelope, PUBLIC_NETWORK_PASSPHRASE, key.signing_key()).unwrap_err();
        assert!(matches!(err, Error::TooManySignatures), "{err:?}");
    }

    #[test]
    fn the_secret_never_prints() {
        let key: SecretKey = SECRET.parse().unwrap();
        let debug = format!("{key:?}");
        let alternate = format!("{key:#?}");
        let display = key.to_string();
        for shown in [&debug, &alternate, &display] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains(&SECRET[1..12]), "{shown}");
            assert!(
                !shown.contains(&hex::encode(key.signing_key().to_bytes())),
                "{shown}"
            );
            assert!(shown.contains("[REDACTED]"), "{shown}");
        }
        assert_eq!(
            debug,
            format!("SecretKey {{ public_key: {PUBLIC}, seed: [REDACTED] }}")
        );
    }

    #[test]
    fn bad_secret_keys_are_refused_without_echoing_them() {
        let typo = format!("{}A", &SECRET[..SECRET.len() - 1]);
        for bad in ["", "not a key", typo.as_str(), PUBLIC] {
            let err = SecretKey::from_strkey(bad).unwrap_err();
            assert!(matches!(err, Error::SecretKey(_)), "{err:?}");
            let message = err.to_string();
            assert!(message.starts_with("not a Stellar secret seed (S...)"));
            if !bad.is_empty() {
                assert!(!message.contains(bad), "{message}");
            }
        }
    }
}
