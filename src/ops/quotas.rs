//! Quotas: the plan's limits bound to meters, a tenant's usage against
//! them (GetUsageSummary), the thresholds reached (one event each per
//! period), and CheckQuota answered from memory.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use uuid::Uuid;

use super::Ops;
use crate::db;
use crate::domain::usage::{self, Aggregation, Figure, UsageEvent};
use crate::domain::{Caller, validate_tenant_id};
use crate::error::{Error, Result};

/// How long CheckQuota trusts a figure it read before reading it again (in
/// the background): what other replicas record shows within about this, and
/// a tenant's checks cost at most one indexed read per interval.
pub const QUOTA_REFRESH: Duration = Duration::from_secs(2);
/// Figures kept in memory at most; past it the memory starts over (each
/// figure is one read away).
const MAX_CACHED: usize = 100_000;
/// The actor of threshold events.
const QUOTA_ACTOR: &str = "quota";

/// Figures read for CheckQuota, and the thresholds this process has seen
/// announced, so that a tenant above a threshold all day takes its lock
/// once.
#[derive(Default)]
pub struct QuotaMemory {
    figures: Mutex<HashMap<(Uuid, String), (Figure, Instant)>>,
    announced: Mutex<HashSet<Announced>>,
    /// Figures being read again in the background.
    refreshing: Mutex<HashSet<(Uuid, String)>>,
}

/// A threshold reached: tenant, meter, period start, percent.
type Announced = (Uuid, String, DateTime<Utc>, i16);

impl QuotaMemory {
    /// The figure held for `tenant` and `meter` in the current period, and
    /// whether it is older than [`QUOTA_REFRESH`].
    fn held(&self, tenant: Uuid, meter: &str, now: DateTime<Utc>) -> Option<(Figure, bool)> {
        let figures = self.figures.lock().ok()?;
        let (figure, read) = figures.get(&(tenant, meter.to_owned()))?;
        let same_period = now.date_naive() == figure.period_start.date_naive();
        same_period.then(|| (figure.clone(), read.elapsed() >= QUOTA_REFRESH))
    }

    /// Whether every threshold of `meter` was announced for `tenant` in the
    /// period (the UTC day) holding `now`.
    fn all_announced(&self, tenant: Uuid, meter: &str, now: DateTime<Utc>) -> bool {
        let Some(day) = now.date_naive().and_hms_opt(0, 0, 0) else {
            return false;
        };
        let period = day.and_utc();
        self.announced.lock().is_ok_and(|a| {
            usage::THRESHOLDS
                .iter()
                .all(|t| a.contains(&(tenant, meter.to_owned(), period, *t)))
        })
    }

    /// Whether this caller should refresh the figure: one refresh at a time
    /// per tenant and meter.
    fn start_refresh(&self, tenant: Uuid, meter: &str) -> bool {
        self.refreshing
            .lock()
            .is_ok_and(|mut r| r.insert((tenant, meter.to_owned())))
    }

    fn end_refresh(&self, tenant: Uuid, meter: &str) {
        if let Ok(mut r) = self.refreshing.lock() {
            r.remove(&(tenant, meter.to_owned()));
        }
    }

    fn keep(&self, figure: Figure) {
        if let Ok(mut figures) = self.figures.lock() {
            if figures.len() >= MAX_CACHED {
                figures.clear();
            }
            figures.insert(
                (figure.tenant_id, figure.meter.clone()),
                (figure, Instant::now()),
            );
        }
    }

    /// Adds events this process stored to the figures it holds.
    fn add(&self, events: &[&UsageEvent]) {
        let Ok(mut figures) = self.figures.lock() else {
            return;
        };
        for e in events {
            let key = (e.tenant_id, e.meter.clone());
            let Some((figure, _)) = figures.get_mut(&key) else {
                continue;
            };
            let latest = figure.aggregation == Aggregation::Latest;
            if e.time < figure.period_start && !latest {
                continue; // a late event of an earlier period
            }
            if !figure.add(e.value) {
                figures.remove(&key);
            }
        }
    }
}

fn tenant_of(caller: &Caller, id: &str) -> Result<Uuid> {
    let tenant =
        validate_tenant_id("tenant_id", id).map_err(|v| Error::InvalidArgument(vec![v]))?;
    if caller.reaches(tenant) {
        Ok(tenant)
    } else {
        Err(Error::tenant_not_found(tenant))
    }
}

impl Ops {
    /// Every meter's figure for the tenant's current period.
    pub async fn usage_summary(&self, caller: &Caller, tenant_id: &str) -> Result<Vec<Figure>> {
        let tenant = tenant_of(caller, tenant_id)?;
        let mut conn = db::conn(&self.pool).await?;
        let figures = db::usage::figures(&mut conn, &[tenant], None, false).await?;
        if figures.is_empty() {
            return Err(Error::tenant_not_found(tenant));
        }
        Ok(figures)
    }

    /// Whether `amount` more stays within the tenant's limit on `meter`:
    /// (allowed, remaining, limit, used).
    pub async fn check_quota(
        &self,
        caller: &Caller,
        tenant_id: &str,
        meter: &str,
        amount: f64,
    ) -> Result<(bool, Option<f64>, Option<f64>, f64)> {
        let mut out = Vec::new();
        usage::check_meter_name("meter", meter, &mut out);
        if !amount.is_finite() || amount < 0.0 {
            out.push(crate::domain::FieldViolation::new(
                "amount",
                "must be a finite number at least 0",
            ));
        }
        let tenant = tenant_of(caller, tenant_id)?;
        if !out.is_empty() {
            return Err(Error::InvalidArgument(out));
        }
        // Answered from memory; a figure past its refresh interval is still
        // answered, and read again in the background, so only a tenant's
        // first check (or the first of a new day) waits for the database.
        let figure = match self.quotas.held(tenant, meter, Utc::now()) {
            Some((figure, stale)) => {
                if stale && self.quotas.start_refresh(tenant, meter) {
                    let (ops, meter) = (self.clone(), meter.to_owned());
                    tokio::spawn(async move {
                        if let Err(e) = ops.read_figure(tenant, &meter).await {
                            tracing::debug!(error = %e, "a quota figure was not refreshed; the next check tries again");
                        }
                        ops.quotas.end_refresh(tenant, &meter);
                    });
                }
                figure
            }
            None => self.read_figure(tenant, meter).await?,
        };
        let (allowed, remaining) = figure.allows(amount);
        Ok((allowed, remaining, figure.limit, figure.value))
    }

    /// Reads a figure and keeps it in memory.
    async fn read_figure(&self, tenant: Uuid, meter: &str) -> Result<Figure> {
        let mut conn = db::conn(&self.pool).await?;
        let Some(figure) =
            db::usage::figures(&mut conn, &[tenant], Some(&[meter.to_owned()]), false)
                .await?
                .pop()
        else {
            return Err(
                if db::usage::existing_tenants(&mut conn, &[tenant])
                    .await?
                    .is_empty()
                {
                    Error::tenant_not_found(tenant)
                } else {
                    Error::NotFound {
                        resource: "meter",
                        id: meter.to_owned(),
                    }
                },
            );
        };
        self.quotas.keep(figure.clone());
        Ok(figure)
    }

    /// After usage committed: the figures in memory follow, and limits
    /// whose thresholds were reached get their events. A failure here is
    /// logged: the usage is stored, and the next event (or sample) of the
    /// tenant checks again.
    pub(super) async fn after_usage(&self, stored: &[&UsageEvent]) {
        self.quotas.add(stored);
        // Limited meters whose thresholds were not all announced today: a
        // tenant past its limit costs no read until the next period.
        let today = Utc::now();
        let mut touched: Vec<(Uuid, &str)> = stored
            .iter()
            .filter(|e| usage::LIMIT_BINDINGS.iter().any(|(m, _, _)| *m == e.meter))
            .map(|e| (e.tenant_id, e.meter.as_str()))
            .filter(|(t, m)| !self.quotas.all_announced(*t, m, today))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        if touched.is_empty() {
            return;
        }
        let mut tenants: Vec<Uuid> = touched.iter().map(|(t, _)| *t).collect();
        tenants.dedup();
        let mut meters: Vec<String> = touched.iter().map(|(_, m)| (*m).to_owned()).collect();
        meters.sort_unstable();
        meters.dedup();
        match self.announce_thresholds(&tenants, &meters).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "usage thresholds reached"),
            Err(e) => {
                tracing::warn!(error = %e, "usage thresholds not checked; the next event checks again")
            }
        }
    }

    /// Writes one USAGE_THRESHOLD_REACHED event per limit threshold these
    /// tenants reached in the current period and have not had announced;
    /// returns how many.
    async fn announce_thresholds(&self, tenants: &[Uuid], meters: &[String]) -> Result<usize> {
        let mut conn = db::conn(&self.pool).await?;
        let reached = |figures: &[Figure]| -> Vec<(Figure, i16)> {
            let announced = self.quotas.announced.lock().ok();
            figures
                .iter()
                .flat_map(|f| f.reached().map(move |t| (f.clone(), t)))
                .filter(|(f, t)| {
                    announced.as_ref().is_none_or(|a| {
                        !a.contains(&(f.tenant_id, f.meter.clone(), f.period_start, *t))
                    })
                })
                .collect()
        };
        let candidates =
            reached(&db::usage::figures(&mut conn, tenants, Some(meters), true).await?);
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut locked: Vec<Uuid> = candidates.iter().map(|(f, _)| f.tenant_id).collect();
        locked.dedup();
        let (written, seen) = conn
            .transaction(async |conn| {
                // Under the tenants' locks, as every writer of their events.
                db::usage::lock_tenants(conn, &locked).await?;
                let now = reached(&db::usage::figures(conn, &locked, Some(meters), true).await?);
                let mut written = 0;
                for (figure, threshold) in &now {
                    if db::usage::record_threshold(conn, figure, *threshold, QUOTA_ACTOR).await? {
                        written += 1;
                    }
                }
                Ok::<_, Error>((written, now))
            })
            .await?;
        if written > 0 {
            self.wakeup.events_committed();
        }
        if let Ok(mut announced) = self.quotas.announced.lock() {
            if announced.len() >= MAX_CACHED {
                announced.clear();
            }
            for (f, t) in seen {
                announced.insert((f.tenant_id, f.meter, f.period_start, t));
            }
        }
        Ok(written)
    }
}
