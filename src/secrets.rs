//! Secrets at rest: every stored secret (a webhook's signing secret, a
//! token of an identity provider, a database password) is sealed under one
//! key-encryption key, `TENANTD_SECRET_KEY`, with XChaCha20-Poly1305: a
//! random 192-bit nonce per value (random nonces of that size never
//! repeat in practice) and the owning row's id as associated data, so a
//! sealed value copied into another row does not open.
//!
//! A sealed value is `version (1 byte) || nonce (24) || ciphertext + tag`.
//! The key and every opened secret live in `secrecy` types: no Debug or
//! Display output shows them, and they are zeroed when dropped.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// The format of sealed values this build writes.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// Length of the key, in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key or a sealed value could not be used. Never carries key or
/// secret material.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "TENANTD_SECRET_KEY must be {KEY_LEN} bytes in standard base64 (e.g. from `openssl rand -base64 32`)"
    )]
    MalformedKey,
    #[error(
        "a stored secret does not open under this TENANTD_SECRET_KEY (another key, or altered data)"
    )]
    WrongKeyOrTampered,
    #[error("a stored secret has an unknown format (version {0})")]
    UnknownFormat(u8),
    #[error("the secret key file {path}: {error}")]
    KeyFile { path: String, error: std::io::Error },
}

/// The key-encryption key.
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
    /// The key's bytes, for the keys derived from it.
    bytes: SecretBox<Vec<u8>>,
}

impl SecretKey {
    /// The key from its base64 text.
    pub fn from_base64(text: &SecretString) -> Result<Self, SecretError> {
        let bytes = SecretBox::new(Box::new(
            STANDARD
                .decode(text.expose_secret().trim())
                .map_err(|_| SecretError::MalformedKey)?,
        ));
        if bytes.expose_secret().len() != KEY_LEN {
            return Err(SecretError::MalformedKey);
        }
        let cipher = XChaCha20Poly1305::new_from_slice(bytes.expose_secret())
            .map_err(|_| SecretError::MalformedKey)?;
        Ok(SecretKey { cipher, bytes })
    }

    /// A key for `purpose` derived from this one (HMAC-SHA256 of the
    /// purpose under the key): what needs a secret of its own (the pepper
    /// of API key hashes) gets one without another key to manage, and it
    /// never opens sealed values.
    pub fn derive(&self, purpose: &str) -> SecretBox<[u8; 32]> {
        use hmac::Mac as _;
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(self.bytes.expose_secret())
                // HMAC takes keys of any length.
                .expect("HMAC takes any key length");
        mac.update(b"tenantd derived key\0");
        mac.update(purpose.as_bytes());
        SecretBox::new(Box::new(mac.finalize().into_bytes().into()))
    }

    /// A fresh random key, as base64 text.
    pub fn generate_base64() -> SecretString {
        let mut bytes = [0u8; KEY_LEN];
        rand::fill(&mut bytes);
        let text = STANDARD.encode(bytes);
        bytes.fill(0);
        text.into()
    }

    /// The key in `path`, created (owner-only permissions) if missing: the
    /// embedded default keeps its key in its data directory.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let key_file = |error| SecretError::KeyFile {
            path: path.display().to_string(),
            error,
        };
        if !path.exists() {
            let text = Self::generate_base64();
            write_private(path, text.expose_secret().as_bytes()).map_err(key_file)?;
        }
        let text: SecretString = std::fs::read_to_string(path).map_err(key_file)?.into();
        Self::from_base64(&text)
    }

    /// Seals `plaintext` for the row identified by `row_id`.
    pub fn seal(&self, plaintext: &[u8], row_id: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: row_id,
                },
            )
            // Encryption fails only for messages of gigabytes; ours are
            // short secrets.
            .expect("a short secret always encrypts");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value sealed for `row_id`.
    pub fn open(&self, sealed: &[u8], row_id: &[u8]) -> Result<SecretBox<Vec<u8>>, SecretError> {
        let (&version, rest) = sealed
            .split_first()
            .ok_or(SecretError::WrongKeyOrTampered)?;
        if version != VERSION {
            return Err(SecretError::UnknownFormat(version));
        }
        if rest.len() < NONCE_LEN {
            return Err(SecretError::WrongKeyOrTampered);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: row_id,
                },
            )
            .map_err(|_| SecretError::WrongKeyOrTampered)?;
        Ok(SecretBox::new(Box::new(plain)))
    }

    /// Seals a text secret.
    pub fn seal_str(&self, secret: &SecretString, row_id: &[u8]) -> Vec<u8> {
        self.seal(secret.expose_secret().as_bytes(), row_id)
    }

    /// Opens a text secret.
    pub fn open_str(&self, sealed: &[u8], row_id: &[u8]) -> Result<SecretString, SecretError> {
        let bytes = self.open(sealed, row_id)?;
        let text = std::str::from_utf8(bytes.expose_secret())
            .map_err(|_| SecretError::WrongKeyOrTampered)?;
        Ok(text.to_owned().into())
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// Writes `bytes` to a new file (never overwriting one) readable by its
/// owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_base64(&SecretKey::generate_base64()).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_row() {
        let key = key();
        let secret: SecretString = "whsec_c2VjcmV0".to_owned().into();
        let sealed = key.seal_str(&secret, b"endpoint-1");
        assert!(
            !sealed
                .windows(secret.expose_secret().len())
                .any(|w| w == secret.expose_secret().as_bytes()),
            "no plaintext in the sealed value"
        );
        assert_eq!(
            key.open_str(&sealed, b"endpoint-1")
                .unwrap()
                .expose_secret(),
            secret.expose_secret()
        );
        assert!(matches!(
            key.open_str(&sealed, b"endpoint-2"),
            Err(SecretError::WrongKeyOrTampered)
        ));
        assert!(matches!(
            self::key().open_str(&sealed, b"endpoint-1"),
            Err(SecretError::WrongKeyOrTampered)
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(key.open(&flipped, b"endpoint-1").is_err());
        assert!(matches!(
            key.open(&[9, 1, 2], b"endpoint-1"),
            Err(SecretError::UnknownFormat(9))
        ));
        assert!(key.open(&[], b"endpoint-1").is_err());
    }

    #[test]
    fn two_seals_of_one_secret_differ() {
        let key = key();
        assert_ne!(key.seal(b"same", b"row"), key.seal(b"same", b"row"));
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        for text in ["", "not base64!", "c2hvcnQ=", &STANDARD.encode([7u8; 33])] {
            let error = SecretKey::from_base64(&text.to_owned().into()).unwrap_err();
            assert!(matches!(error, SecretError::MalformedKey));
            if !text.is_empty() {
                assert!(!error.to_string().contains(text));
            }
        }
        assert_eq!(format!("{:?}", key()), "SecretKey([redacted])");
    }

    #[test]
    fn the_key_file_is_created_once_with_owner_only_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = SecretKey::load_or_create(&path).unwrap();
        let sealed = first.seal(b"value", b"row");
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(
            again.open(&sealed, b"row").unwrap().expose_secret(),
            b"value"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
