//! Webhooks and the key that protects stored secrets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::secrets::SecretKey;

/// Flags of webhook delivery and secrets at rest.
#[derive(Clone, Args)]
pub struct WebhookArgs {
    /// Key-encryption key of every stored secret (webhook secrets, ...): 32
    /// bytes in base64, e.g. from `openssl rand -base64 32`. The embedded
    /// default generates one into <data-dir>/secret.key; with a DATABASE_URL
    /// the server refuses to start without it once a webhook endpoint exists.
    #[arg(long, env = "TENANTD_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Let webhook endpoints use http and private, loopback or link-local
    /// addresses (on for the embedded default). Off, only https URLs that
    /// resolve to public addresses are called.
    #[arg(long, env = "TENANTD_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Seconds one webhook request may take before it counts as failed.
    #[arg(long, env = "TENANTD_WEBHOOK_TIMEOUT_SECS", default_value_t = 15)]
    pub webhook_timeout_secs: u64,
    /// Webhook requests this replica has in flight at once.
    #[arg(long, env = "TENANTD_WEBHOOK_CONCURRENCY", default_value_t = 64)]
    pub webhook_concurrency: usize,
    /// Delays before a failed event delivery's next attempts (each with full
    /// jitter); when they run out the delivery is FAILED.
    #[arg(long, env = "TENANTD_WEBHOOK_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,24h", value_parser = parse_schedule)]
    pub webhook_retry_schedule: Schedule,
}

impl fmt::Debug for WebhookArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookArgs")
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_allow_private", &self.webhook_allow_private)
            .finish_non_exhaustive()
    }
}

/// A retry schedule: delays, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<Duration>);

fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let delays = text
        .split(',')
        .map(|d| humantime::parse_duration(d.trim()).map_err(|e| format!("{d:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() || delays.len() > 20 {
        return Err("give 1 to 20 delays, e.g. 5s,5m,30m".into());
    }
    Ok(Schedule(delays))
}

/// Webhook settings, resolved.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `None`: webhook endpoints cannot be created.
    pub secret_key: Option<Arc<SecretKey>>,
    pub allow_private: bool,
    pub timeout: Duration,
    pub concurrency: usize,
    pub schedule: Vec<Duration>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            secret_key: None,
            allow_private: false,
            timeout: Duration::from_secs(15),
            concurrency: 64,
            schedule: crate::webhooks::DEFAULT_SCHEDULE.to_vec(),
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_private", &self.allow_private)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("schedule", &self.schedule)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_schedule("5s, 5m,2h").unwrap().0,
            [
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200)
            ]
        );
        assert!(parse_schedule("5s,soon").unwrap_err().contains("soon"));
    }
}
