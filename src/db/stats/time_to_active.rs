//! Time to ACTIVE per plan: how many tenants became ACTIVE in the window,
//! and the median and 95th percentile of the time from their creation.
//!
//! Percentiles do not add up across buckets, so the rollup keeps every
//! value (`stats_activations`: plan, bin, interval) beside a daily count of
//! values per plan and bin (`stats_activation_days`). A bin is a range of
//! intervals (each 5% wider than the last), so ordering by bin orders the
//! values. The answer is exactly `percentile_cont` over the window's values:
//!
//! ```text
//! 1. counts per plan and bin:  days from the start on  +  the values of
//!                              the day the start cuts, from the start
//! 2. percentile_cont(f) over n values reads ranks floor(f*(n-1)) and
//!    ceil(f*(n-1)): the running counts say which bin holds each rank,
//!    and where in that bin
//! 3. those bins' values in the window, sorted, at those positions
//!    (stats_activations_bin_idx)
//! 4. interpolate as percentile_cont does: lo + (hi - lo) * (f*(n-1) - floor)
//! ```
//!
//! The cost follows the days times the bins a plan fills in a day, plus
//! the values of the few bins read, not the values in the window.

use chrono::{DateTime, Utc};
use diesel::sql_types::Timestamptz;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::PlanTiming;
use crate::error::Result;

/// Per plan, the median and 95th percentile of the time from a tenant's
/// creation to its pipeline's ACTIVE event, for the events from `since` on.
pub async fn time_to_active(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<PlanTiming>> {
    let rows = diesel::sql_query(
        "WITH window_bins AS (
             SELECT w.plan, w.bin, sum(w.n)::int8 AS n
             FROM (
                 SELECT d.plan, d.bin, d.activations AS n
                 FROM stats_activation_days d
                 WHERE d.day >= $1
                 UNION ALL
                 SELECT a.plan, a.bin, 1
                 FROM stats_activations a
                 WHERE a.create_time >= $1 AND a.create_time < stats_day($1) + interval '1 day'
                   AND stats_day(a.create_time) < $1
             ) w
             GROUP BY w.plan, w.bin
             HAVING sum(w.n) > 0
         ), ranked AS (
             SELECT b.plan, b.bin, b.n,
                    (sum(b.n) OVER (PARTITION BY b.plan ORDER BY b.bin) - b.n)::int8 AS below,
                    (sum(b.n) OVER (PARTITION BY b.plan))::int8 AS total
             FROM window_bins b
         ), wanted AS (
             SELECT p.plan, p.total, f.name, x.pos,
                    floor(x.pos)::int8 AS lo, ceil(x.pos)::int8 AS hi
             FROM (SELECT DISTINCT plan, total FROM ranked) p
             CROSS JOIN unnest(ARRAY['p50', 'p95'], ARRAY[0.5, 0.95]::float8[]) f(name, fraction)
             CROSS JOIN LATERAL (SELECT f.fraction * (p.total - 1)::float8 AS pos) x
         ), needed AS (
             SELECT r.plan, r.bin, r.below, min(k.rank) AS first, max(k.rank) AS last
             FROM (SELECT plan, unnest(ARRAY[lo, hi]) AS rank FROM wanted) k
             JOIN ranked r ON r.plan = k.plan AND r.below <= k.rank AND k.rank < r.below + r.n
             GROUP BY r.plan, r.bin, r.below
         ), picked AS (
             SELECT n.plan, v.rank, v.time_to_active
             FROM needed n
             CROSS JOIN LATERAL (
                 SELECT a.time_to_active,
                        n.below + row_number() OVER (ORDER BY a.time_to_active) - 1 AS rank
                 FROM stats_activations a
                 WHERE a.plan = n.plan AND a.bin = n.bin AND a.create_time >= $1
                 ORDER BY a.time_to_active
                 OFFSET n.first - n.below
                 LIMIT n.last - n.first + 1
             ) v
         ), percentiles AS (
             SELECT w.plan, w.total, w.name,
                    CASE WHEN w.hi = w.lo THEN l.time_to_active
                         ELSE (h.time_to_active - l.time_to_active) * (w.pos - w.lo)
                              + l.time_to_active
                    END AS value
             FROM wanted w
             JOIN picked l ON l.plan = w.plan AND l.rank = w.lo
             JOIN picked h ON h.plan = w.plan AND h.rank = w.hi
         )
         SELECT plan, total AS count,
                extract(epoch FROM max(value) FILTER (WHERE name = 'p50'))::float8 AS p50_secs,
                extract(epoch FROM max(value) FILTER (WHERE name = 'p95'))::float8 AS p95_secs
         FROM percentiles
         GROUP BY plan, total
         ORDER BY plan",
    )
    .bind::<Timestamptz, _>(since)
    .load(conn)
    .await?;
    Ok(rows)
}
