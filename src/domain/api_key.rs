//! Tenant API keys: their text form, how they are hashed, and the rules
//! of their fields.
//!
//! A key is `<prefix>_<id>_<secret>`: the server's prefix (e.g. `tnd`), the
//! key's id (32 lower-case hex digits, a UUID: public, it names the key in
//! the API), and 32 random bytes in unpadded URL-safe base64 (43
//! characters). Only `HMAC-SHA256(pepper, id || secret)` is stored, the
//! pepper derived from the secrets key.
//!
//! Why a keyed hash and not a password hash: the secret is 256 random
//! bits, so guessing it from its hash is hopeless however fast the hash
//! is, and a password hash's deliberate slowness (tens of milliseconds)
//! would only make every verification slow for gateways that check a key on
//! each request. The pepper, kept out of the database, means a copy of the
//! database alone cannot even test a guess.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use uuid::Uuid;

use super::FieldViolation;

/// Random bytes of a key's secret.
pub const SECRET_BYTES: usize = 32;
/// Characters of the secret in its base64 form.
const SECRET_CHARS: usize = 43;
/// Characters of the id (a UUID in simple form).
const ID_CHARS: usize = 32;
/// Longest key name.
const MAX_NAME_CHARS: usize = 100;
/// Most scopes on one key, and the longest.
const MAX_SCOPES: usize = 32;
const MAX_SCOPE_CHARS: usize = 100;
/// The longest grace a rotation may give the old key: a week.
pub const MAX_ROTATION_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// A key as a gateway presents it, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub id: Uuid,
    secret: [u8; SECRET_BYTES],
}

/// A new key: its text (given to the caller once) and what is stored.
pub struct NewKey {
    pub id: Uuid,
    pub text: secrecy::SecretString,
    pub hash: [u8; 32],
}

/// A fresh key under `prefix`.
pub fn generate(prefix: &str, pepper: &[u8; 32]) -> NewKey {
    let id = Uuid::now_v7();
    let mut secret = [0u8; SECRET_BYTES];
    rand::fill(&mut secret);
    let text = format!(
        "{prefix}_{}_{}",
        id.simple(),
        URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = hash(pepper, id, &secret);
    secret.fill(0);
    NewKey {
        id,
        text: text.into(),
        hash,
    }
}

/// Splits a presented key; `None` for anything that is not exactly a key
/// of `prefix` (no reason is given: the caller learns nothing of which part
/// was wrong).
pub fn parse(prefix: &str, text: &str) -> Option<Presented> {
    let rest = text.strip_prefix(prefix)?.strip_prefix('_')?;
    if rest.len() != ID_CHARS + 1 + SECRET_CHARS || !rest.is_ascii() {
        return None;
    }
    let (id, secret) = rest.split_at(ID_CHARS);
    let secret = secret.strip_prefix('_')?;
    if !id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let id = Uuid::try_parse(id).ok()?;
    let bytes = URL_SAFE_NO_PAD.decode(secret).ok()?;
    // Exactly one encoding per secret: the last character's spare bits
    // must be zero (the decoder checks), and the length is fixed.
    let secret: [u8; SECRET_BYTES] = bytes.try_into().ok()?;
    Some(Presented { id, secret })
}

/// The stored hash of a key.
pub fn hash(pepper: &[u8; 32], id: Uuid, secret: &[u8; SECRET_BYTES]) -> [u8; 32] {
    let mut mac = mac(pepper);
    mac.update(id.as_bytes());
    mac.update(secret);
    mac.finalize().into_bytes().into()
}

fn mac(pepper: &[u8; 32]) -> hmac::Hmac<sha2::Sha256> {
    // HMAC takes keys of any length.
    <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(pepper)
        .expect("HMAC takes any key length")
}

impl Presented {
    /// Whether this is the key whose stored hash is `stored`, compared in
    /// constant time.
    pub fn matches(&self, pepper: &[u8; 32], stored: &[u8]) -> bool {
        let mut mac = mac(pepper);
        mac.update(self.id.as_bytes());
        mac.update(&self.secret);
        mac.verify_slice(stored).is_ok()
    }
}

impl Drop for Presented {
    fn drop(&mut self) {
        self.secret.fill(0);
    }
}

/// A server's key prefix: 2-16 lower-case letters and digits, starting
/// with a letter (no `_`, which separates the parts).
pub fn is_valid_prefix(prefix: &str) -> bool {
    let bytes = prefix.as_bytes();
    (2..=16).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Checks a key's name and scopes (the SaaS's own words: printable,
/// without spaces, at most 32 of at most 100 characters).
pub fn check(name: &str, scopes: &[String]) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        violations.push(FieldViolation::new(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    } else if name.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            "name",
            "must not contain control characters",
        ));
    }
    if scopes.len() > MAX_SCOPES {
        violations.push(FieldViolation::new(
            "scopes",
            format!("at most {MAX_SCOPES} scopes"),
        ));
    }
    for (i, scope) in scopes.iter().enumerate() {
        if scope.is_empty()
            || scope.len() > MAX_SCOPE_CHARS
            || !scope.chars().all(|c| c.is_ascii_graphic())
        {
            violations.push(FieldViolation::new(
                format!("scopes[{i}]"),
                format!("must be 1 to {MAX_SCOPE_CHARS} printable ASCII characters without spaces"),
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEPPER: [u8; 32] = [7; 32];

    #[test]
    fn a_generated_key_parses_and_matches_its_hash() {
        let key = generate("tnd", &PEPPER);
        let text = secrecy::ExposeSecret::expose_secret(&key.text).to_owned();
        assert!(text.starts_with("tnd_"));
        assert_eq!(text.len(), 3 + 1 + 32 + 1 + 43);
        let presented = parse("tnd", &text).unwrap();
        assert_eq!(presented.id, key.id);
        assert!(presented.matches(&PEPPER, &key.hash));
        assert!(!presented.matches(&[8; 32], &key.hash), "another pepper");
        assert!(!presented.matches(&PEPPER, &[0; 32]));
    }

    #[test]
    fn anything_but_a_key_of_the_prefix_is_refused() {
        // Many keys: some secrets hold `_` or `-`, which must not confuse
        // the split.
        for _ in 0..200 {
            refused_around(&generate("tnd", &PEPPER));
        }
    }

    fn refused_around(key: &NewKey) {
        let text = secrecy::ExposeSecret::expose_secret(&key.text).to_owned();
        // The secret may hold `_`: it is the last 43 characters.
        let (head, secret) = text.split_at(text.len() - SECRET_CHARS);
        let mut flipped = secret.to_owned().into_bytes();
        flipped[42] = if flipped[42] == b'A' { b'B' } else { b'A' };
        let bad = [
            String::new(),
            "tnd".into(),
            "tnd_".into(),
            text.replacen("tnd_", "xyz_", 1),
            text.replacen("tnd_", "tndx_", 1),
            text.to_uppercase(),
            format!("{text}A"),
            text[..text.len() - 1].to_owned(),
            format!(" {text}"),
            text.replacen('_', "-", 1),
            format!("{head}{}", String::from_utf8(flipped).unwrap()),
            format!("{head}{}", "é".repeat(21)),
        ];
        for b in &bad {
            // A changed last character either does not decode (spare bits)
            // or decodes to another secret; either way it never matches.
            match parse("tnd", b) {
                None => {}
                Some(p) => assert!(!p.matches(&PEPPER, &key.hash), "{b}"),
            }
        }
        assert!(parse("tnd", &text).is_some());
    }

    #[test]
    fn prefixes_and_fields_are_checked() {
        assert!(is_valid_prefix("tnd"));
        assert!(is_valid_prefix("acme2"));
        for bad in ["", "t", "Tnd", "tn_d", "2nd", "abcdefghijklmnopq"] {
            assert!(!is_valid_prefix(bad), "{bad}");
        }
        assert!(check("ci", &["read".into(), "billing:write".into()]).is_empty());
        let fields: Vec<String> = check("", &["has space".into(), String::new()])
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["name", "scopes[0]", "scopes[1]"]);
    }
}
