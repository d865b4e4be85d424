//! Provisioning statistics from the event log: one read-only snapshot, so
//! that the counts, rates and percentiles of one answer agree, and so that
//! a window's rollup buckets and the events of the hour its start cuts are
//! read as of the same moment.

use chrono::TimeDelta;
use strum::VariantArray;

use crate::db::{self, stats::ProvisioningStats};
use crate::domain::TenantState;
use crate::error::{Error, Result};

/// The window when the caller names none: a day of activity.
const DEFAULT_WINDOW: TimeDelta = TimeDelta::hours(24);

/// The longest window: the server's default event retention. The events of
/// deleted tenants are pruned after it, so a longer window would count less
/// than it claims.
const MAX_WINDOW: TimeDelta = TimeDelta::days(90);

impl super::Ops {
    /// The statistics over the `window` before now (`None`: the default).
    pub async fn provisioning_stats(&self, window: Option<TimeDelta>) -> Result<ProvisioningStats> {
        let window = checked_window(window)?;
        let mut conn = db::conn(&self.pool).await?;
        conn.build_transaction()
            .read_only()
            .repeatable_read()
            .run(async |conn| {
                let as_of = db::stats::now(conn).await?;
                let window_start = as_of - window;
                Ok::<_, Error>(ProvisioningStats {
                    as_of,
                    window_start,
                    tenants_by_state: db::stats::tenants_by_state(conn, TenantState::VARIANTS)
                        .await?,
                    pipelines: db::stats::pipeline_outcomes(conn, window_start).await?,
                    time_to_active: db::stats::time_to_active(conn, window_start).await?,
                    step_failures: db::stats::step_failures(conn, window_start).await?,
                    oldest_running: db::stats::oldest_running(conn).await?,
                    outbox: db::stats::backlog(conn).await?,
                })
            })
            .await
    }
}

fn checked_window(window: Option<TimeDelta>) -> Result<TimeDelta> {
    match window {
        None => Ok(DEFAULT_WINDOW),
        Some(w) if w <= TimeDelta::zero() => Err(Error::invalid("window", "must be longer than 0")),
        Some(w) if w > MAX_WINDOW => Err(Error::invalid(
            "window",
            format!("must be at most {} days", MAX_WINDOW.num_days()),
        )),
        Some(w) => Ok(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_defaults_to_a_day_and_is_bounded() {
        assert_eq!(checked_window(None).unwrap(), TimeDelta::hours(24));
        assert_eq!(
            checked_window(Some(TimeDelta::days(90))).unwrap(),
            TimeDelta::days(90)
        );
        for bad in [
            TimeDelta::zero(),
            TimeDelta::seconds(-1),
            TimeDelta::days(90) + TimeDelta::nanoseconds(1),
            TimeDelta::MAX,
        ] {
            assert!(
                matches!(checked_window(Some(bad)), Err(Error::InvalidArgument(v)) if v[0].field == "window"),
                "{bad:?}"
            );
        }
    }
}
