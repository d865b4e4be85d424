//! AIP-158 page tokens: opaque to clients, bound to the filters they were
//! issued for, so that a token reused with other filters is rejected instead
//! of silently skipping rows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::FieldViolation;

/// A decoded page token: list after this id, under this filter digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken {
    /// The last id of the previous page.
    #[serde(rename = "a")]
    pub after: Uuid,
    /// Digest of the filters of the request that issued the token.
    #[serde(rename = "f")]
    pub filter_digest: String,
}

impl PageToken {
    pub fn encode(&self) -> String {
        // Serialising a struct of a Uuid and a String cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes `token` and checks it was issued for `filter_digest`.
    pub fn decode(token: &str, filter_digest: &str) -> Result<Option<Self>, FieldViolation> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || FieldViolation::new("page_token", "is not a token this server issued");
        if token.len() > 256 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let decoded: PageToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if decoded.filter_digest != filter_digest {
            return Err(FieldViolation::new(
                "page_token",
                "was issued for different filters; repeat the filters of the first request",
            ));
        }
        Ok(Some(decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_filters_and_garbage() {
        let token = PageToken {
            after: Uuid::now_v7(),
            filter_digest: "abc".into(),
        };
        let encoded = token.encode();
        assert_eq!(PageToken::decode(&encoded, "abc").unwrap(), Some(token));
        assert!(PageToken::decode(&encoded, "xyz").is_err());
        assert!(PageToken::decode("not base64!", "abc").is_err());
        assert_eq!(PageToken::decode("", "abc").unwrap(), None);
    }
}
