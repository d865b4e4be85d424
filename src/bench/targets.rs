//! What each figure should reach on the benchmark machine, in one place.
//! The report prints every target next to its figure and whether it was
//! met; a missed target is read, not failed on. A figure compared with a
//! baseline has its target on the ratio of the two.

use std::fmt;

/// Which side of its limit a figure must lie on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Throughputs and ratios to a baseline: at least the limit.
    AtLeast(f64),
    /// Latencies and costs: at most the limit.
    AtMost(f64),
}

impl Bound {
    /// Whether `value` lies within the bound. A figure that could not be
    /// measured (NaN) does not.
    pub fn met(self, value: f64) -> bool {
        match self {
            Bound::AtLeast(limit) => value >= limit,
            Bound::AtMost(limit) => value <= limit,
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::AtLeast(limit) => write!(f, ">= {limit}"),
            Bound::AtMost(limit) => write!(f, "<= {limit}"),
        }
    }
}

/// `create_vs_raw`: CreateTenant through the server reaches nine tenths of
/// the rate at which its rows insert in plain SQL; the gRPC layer and the
/// use case cost the rest.
pub const CREATE_VS_RAW: Bound = Bound::AtLeast(0.9);
/// `provision_vs_raw`: tenants reach ACTIVE at four fifths of the rate of
/// the same DDL in plain SQL transactions; the pipeline (outbox,
/// dispatcher, events) costs the rest.
pub const PROVISION_VS_RAW: Bound = Bound::AtLeast(0.8);
/// `noop_steps_per_sec`: the dispatcher's own ceiling (steps that do
/// nothing), far above what real steps reach, so it never limits them.
pub const NOOP_STEPS_PER_SEC: Bound = Bound::AtLeast(30_000.0);
/// `wake_p50_ms`: a NOTIFY wakes the dispatcher in a couple of
/// milliseconds; figures near the fallback poll mean missed notifications.
pub const WAKE_P50_MS: Bound = Bound::AtMost(2.0);
/// `wake_p99_ms`: the tail of the same wake-ups, on an idle server.
pub const WAKE_P99_MS: Bound = Bound::AtMost(10.0);
/// `watch.delivery_p99_ms`: an event reaches every stream that follows its
/// tenant within 50 ms, at `--event-rate` and `--watchers`.
pub const WATCH_DELIVERY_P99_MS: Bound = Bound::AtMost(50.0);
/// `watch.rss_per_watcher_kib`: at 20 KiB a stream, 50,000 watchers fit in
/// a GiB of one process.
pub const WATCH_RSS_PER_WATCHER_KIB: Bound = Bound::AtMost(20.0);
/// `watch.stream_db_connections`: streams share the event hub's reader and
/// hold no connection of their own, however many there are.
pub const WATCH_STREAM_DB_CONNECTIONS: Bound = Bound::AtMost(2.0);
/// `stats_ms_at_100k.window_30d_p50_ms`: GetProvisioningStats reads a
/// month of 100k tenants' events (about a million) from its partial
/// indexes in 50 ms.
pub const STATS_30D_P50_MS: Bound = Bound::AtMost(50.0);
/// `list_page_p99_ms.ratio`: keyset pagination reads one index range per
/// page, so a page at 100k tenants costs about what it costs at 1k.
pub const LIST_100K_VS_1K: Bound = Bound::AtMost(1.5);
/// `webhook_deliveries_per_sec`: a burst of events drains to one healthy
/// receiver at 3,000 deliveries a second.
pub const WEBHOOK_DELIVERIES_PER_SEC: Bound = Bound::AtLeast(3_000.0);
/// `webhook_p99_ms`: an idle server delivers an event within 20 ms of its
/// commit.
pub const WEBHOOK_P99_MS: Bound = Bound::AtMost(20.0);
/// `usage.usage_vs_raw`: RecordUsage stores events and their rollups at
/// 0.7 of the rate the same statement reaches over plain connections.
pub const USAGE_VS_RAW: Bound = Bound::AtLeast(0.7);
/// `usage.query_usage_30d_p99_ms`: a month of daily figures reads the
/// rollups, not the events, in 20 ms with ten million events stored.
pub const QUERY_USAGE_30D_P99_MS: Bound = Bound::AtMost(20.0);
/// `usage.check_quota_p99_ms`: CheckQuota is fast enough for an
/// application's hot path.
pub const CHECK_QUOTA_P99_MS: Bound = Bound::AtMost(2.0);

/// `placement.move_vs_dump_restore`: MoveTenant (freeze, copy, verify on
/// both sides, switch, drop) moves a schema at four fifths of the rate of
/// `pg_dump | pg_restore` typed by hand.
pub const MOVE_VS_DUMP_RESTORE: Bound = Bound::AtLeast(0.8);
/// `placement.three_vs_one`: choosing among three servers costs CreateTenant
/// at most a twentieth of its rate.
pub const THREE_SERVERS_VS_ONE: Bound = Bound::AtLeast(0.95);

/// `contracts.deploys_per_channel`: deployments per second per channel on
/// a network with one-second ledgers; each channel can land one
/// transaction per ledger, and the pipeline may lose a fifth of that.
pub const DEPLOYS_PER_CHANNEL_PER_SEC: Bound = Bound::AtLeast(0.8);
/// `contracts.wake_during_vs_idle`: other tenants' steps start at most
/// twice as late while contract deployments queue as on an idle server.
pub const WAKE_DURING_DEPLOYS_VS_IDLE: Bound = Bound::AtMost(2.0);

/// `api_keys.verify_api_key_per_sec`: a gateway fleet checks a key on every
/// request it serves; from memory, one 2-core machine should answer tens
/// of thousands a second.
pub const VERIFY_API_KEY_PER_SEC: Bound = Bound::AtLeast(20_000.0);
/// `api_keys.verify_api_key_p99_ms`: what the check adds to a request.
pub const VERIFY_API_KEY_P99_MS: Bound = Bound::AtMost(2.0);

#[cfg(test)]
mod tests {
    use super::Bound;

    #[test]
    fn a_figure_below_an_at_least_target_is_not_met() {
        assert!(!Bound::AtLeast(0.9).met(0.89));
        assert!(Bound::AtLeast(0.9).met(0.9));
        assert!(Bound::AtLeast(0.9).met(1.2));
    }

    #[test]
    fn a_figure_above_an_at_most_target_is_not_met() {
        assert!(!Bound::AtMost(2.0).met(2.01));
        assert!(Bound::AtMost(2.0).met(2.0));
        assert!(Bound::AtMost(2.0).met(0.5));
    }

    #[test]
    fn an_unmeasured_figure_meets_no_target() {
        assert!(!Bound::AtLeast(0.9).met(f64::NAN));
        assert!(!Bound::AtMost(2.0).met(f64::NAN));
    }

    #[test]
    fn bounds_read_as_comparisons() {
        assert_eq!(Bound::AtLeast(30_000.0).to_string(), ">= 30000");
        assert_eq!(Bound::AtMost(1.5).to_string(), "<= 1.5");
    }
}
