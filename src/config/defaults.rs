//! Defaults, shared by the flags and by
//! [`Config::new`](super::Config::new).

pub const LISTEN: &str = "127.0.0.1:50051";
pub const POOL_SIZE: usize = 16;
pub const NOTIFY_DEBOUNCE_MS: u64 = 10;
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 30;
pub const CONCURRENCY: usize = 16;
pub const LEASE_MS: u64 = 30_000;
pub const POLL_INTERVAL_MS: u64 = 5_000;
pub const RETRY_BASE_MS: u64 = 1_000;
pub const RETRY_CAP_MS: u64 = 300_000;
pub const STEP_TIMEOUT_SECS: u64 = 300;
pub const TENANT_ROLE_PREFIX: &str = "tenant_";
pub const MAIL_FROM: &str = "tenantd <no-reply@tenantd.localhost>";
pub const INVITATION_URL: &str = "http://localhost:8080/invitations/accept";
pub const REAPER_SCHEDULE: &str = "0 * * * * *";
pub const RATE_LIMIT_PER_SEC: u32 = 100;
pub const MAX_WATCHERS: usize = 10_000;
pub const RATE_LIMIT_BURST: u32 = 200;
pub const STALE_AFTER: &str = "30m";
pub const PURGE_SCHEDULE: &str = "30 * * * * *";
pub const PRUNE_SCHEDULE: &str = "0 15 * * * *";
pub const EVENT_RETENTION: &str = "90days";
/// Ten XLM. Uploading the Wasm prepays its rent for the minimum
/// lifetime (about four XLM for the built-in contract at public-network
/// rates); creating an instance costs a fraction of one.
pub const SOROBAN_FEE_CAP: i64 = 100_000_000;
/// The network's minimum inclusion fee per operation.
pub const SOROBAN_INCLUSION_FEE: u32 = 100;
/// Twelve ledgers of five seconds.
pub const SOROBAN_CONFIRM_TIMEOUT_SECS: u64 = 60;
/// A fifth of a ledger.
pub const SOROBAN_POLL_MS: u64 = 1_000;
/// A hundred XLM: a few hundred deployments' fees.
pub const SOROBAN_CHANNEL_BALANCE: i64 = 1_000_000_000;
/// Eleven XLM: the default fee cap plus an account's minimum balance (two
/// base reserves), so a channel above it can pay one more transaction at
/// the cap.
pub const SOROBAN_CHANNEL_MIN_BALANCE: i64 = 110_000_000;
/// Each RPC call; stellar-rpc answers in milliseconds.
pub const SOROBAN_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// A week: a gateway that was down over a weekend can still report, and a
/// day's figures settle soon enough to bill.
pub const USAGE_LATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
pub const USAGE_LATE_WINDOW_TEXT: &str = "7days";
/// Hourly: storage and user counts change slowly, and sampling reads every
/// tenant's catalog.
pub const USAGE_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
pub const USAGE_SAMPLE_INTERVAL_TEXT: &str = "1h";
/// Thirty days, as Let's Encrypt advises for its 90-day certificates: time
/// for several failed attempts (and an operator) before one expires.
pub const ACME_RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
pub const ACME_RENEW_BEFORE_TEXT: &str = "30days";
/// Hourly: renewal has days of slack, and the check is one indexed query.
pub const ACME_RENEW_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
pub const ACME_RENEW_CHECK_INTERVAL_TEXT: &str = "1h";
/// API keys read `tnd_<id>_<secret>`: short, and says whose key it is.
pub const API_KEY_PREFIX: &str = "tnd";
/// Ten keys a tenant per hour: enough to set up a few applications and
/// rotate them, too few to mint keys in a loop.
pub const API_KEY_RATE_LIMIT: &str = "10/1h";
