//! Usage metering.

use std::time::Duration;

use clap::Args;

use super::defaults;

/// Flags of usage metering.
#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// How far behind the server's clock a usage event may be dated (e.g.
    /// `7days`, `36h`); older events are REJECTED. Daily figures older than
    /// this no longer change.
    #[arg(long, env = "TENANTD_USAGE_LATE_WINDOW", default_value = defaults::USAGE_LATE_WINDOW_TEXT, value_parser = humantime::parse_duration)]
    pub usage_late_window: Duration,
    /// How often the storage (`storage_bytes`) and users (`users`) of every
    /// ACTIVE and SUSPENDED tenant are sampled (e.g. `1h`, `15m`); a tenant
    /// that becomes ACTIVE is sampled within seconds.
    #[arg(long, env = "TENANTD_USAGE_SAMPLE_INTERVAL", default_value = defaults::USAGE_SAMPLE_INTERVAL_TEXT, value_parser = humantime::parse_duration)]
    pub usage_sample_interval: Duration,
}
