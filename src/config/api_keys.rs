//! Tenants' API keys: the `--api-key-*` flags of `serve`.

use std::time::Duration;

use clap::Args;

/// How many keys one tenant may create (or rotate) in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRateLimit {
    pub keys: u32,
    pub per: Duration,
}

impl std::str::FromStr for KeyRateLimit {
    type Err = String;

    /// `N/DURATION`, e.g. `10/1h`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (keys, per) = text
            .split_once('/')
            .ok_or_else(|| format!("{text}: expected N/DURATION, e.g. 10/1h"))?;
        let keys: u32 = keys
            .trim()
            .parse()
            .map_err(|_| format!("{text}: {keys} is not a number of keys"))?;
        let per = humantime::parse_duration(per.trim()).map_err(|e| format!("{text}: {e}"))?;
        if keys == 0 || per.is_zero() {
            return Err(format!(
                "{text}: both the keys and the window must be positive"
            ));
        }
        Ok(KeyRateLimit { keys, per })
    }
}

/// Flags of tenants' API keys.
#[derive(Debug, Clone, Args)]
pub struct ApiKeyArgs {
    /// The first part of every key (`<prefix>_<id>_<secret>`): 2-16
    /// lower-case letters and digits. Keys of another prefix do not verify.
    #[arg(long, env = "TENANTD_API_KEY_PREFIX", default_value = super::defaults::API_KEY_PREFIX)]
    pub api_key_prefix: String,
    /// Keys one tenant may create or rotate per window (`N/DURATION`);
    /// more is RESOURCE_EXHAUSTED with the time to wait.
    #[arg(long, env = "TENANTD_API_KEY_RATE_LIMIT", default_value = super::defaults::API_KEY_RATE_LIMIT)]
    pub api_key_rate_limit: KeyRateLimit,
}

/// The API key settings, checked.
#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    pub prefix: String,
    pub rate_limit: KeyRateLimit,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        ApiKeyConfig {
            prefix: super::defaults::API_KEY_PREFIX.to_owned(),
            rate_limit: super::defaults::API_KEY_RATE_LIMIT
                .parse()
                .expect("the default rate limit parses"),
        }
    }
}

impl ApiKeyArgs {
    pub fn resolve(&self) -> Result<ApiKeyConfig, String> {
        if !crate::domain::api_key::is_valid_prefix(&self.api_key_prefix) {
            return Err(format!(
                "--api-key-prefix {}: 2-16 lower-case letters and digits, starting with a letter",
                self.api_key_prefix
            ));
        }
        Ok(ApiKeyConfig {
            prefix: self.api_key_prefix.clone(),
            rate_limit: self.api_key_rate_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_and_bad_ones_are_named() {
        assert_eq!(
            "10/1h".parse::<KeyRateLimit>().unwrap(),
            KeyRateLimit {
                keys: 10,
                per: Duration::from_secs(3600)
            }
        );
        assert_eq!(
            " 3 / 30s ".parse::<KeyRateLimit>().unwrap().per,
            Duration::from_secs(30)
        );
        for bad in ["10", "x/1h", "10/x", "0/1h", "10/0s"] {
            assert!(bad.parse::<KeyRateLimit>().is_err(), "{bad}");
        }
        assert!(ApiKeyConfig::default().rate_limit.keys > 0);
    }
}
