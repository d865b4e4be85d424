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
use crate::domain::{Caller, OnLimit, Period, TenantState, validate_tenant_id};
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

/// Figures read for CheckQuota, the thresholds this process has seen
/// announced (so that a tenant above a threshold all day takes its lock
/// once), and which meters plans limit.
#[derive(Default)]
pub struct QuotaMemory {
    figures: Mutex<HashMap<(Uuid, String), (Figure, Instant)>>,
    announced: Mutex<HashMap<Announced, Instant>>,
    /// Figures being read again in the background.
    refreshing: Mutex<HashSet<(Uuid, String)>>,
    /// The meters some live plan limits through `PlanLimits.meters`, and
    /// when that was read.
    limited: Mutex<Option<(HashSet<String>, Instant)>>,
}

/// A threshold reached: tenant, meter, period, its start, percent.
type Announced = (Uuid, String, Period, DateTime<Utc>, i16);

/// How long this process trusts that a threshold was announced: the limit
/// may have changed since (through any replica), and a changed limit has
/// thresholds of its own. A tenant above its thresholds costs one read per
/// meter per interval.
const ANNOUNCED_TRUST: Duration = Duration::from_secs(30);

fn announced(seen: &HashMap<Announced, Instant>, key: &Announced) -> bool {
    seen.get(key)
        .is_some_and(|at| at.elapsed() < ANNOUNCED_TRUST)
}

impl QuotaMemory {
    /// The figure held for `tenant` and `meter` in the current period, and
    /// whether it is older than [`QUOTA_REFRESH`].
    fn held(&self, tenant: Uuid, meter: &str, now: DateTime<Utc>) -> Option<(Figure, bool)> {
        let figures = self.figures.lock().ok()?;
        let (figure, read) = figures.get(&(tenant, meter.to_owned()))?;
        let same_period = figure.period.start(now) == figure.period_start;
        same_period.then(|| (figure.clone(), read.elapsed() >= QUOTA_REFRESH))
    }

    /// Whether every threshold of `meter` was announced for `tenant` in the
    /// period holding `now`.
    fn all_announced(&self, tenant: Uuid, meter: &str, now: DateTime<Utc>) -> bool {
        self.announced.lock().is_ok_and(|a| {
            [Period::Day, Period::Month].into_iter().any(|period| {
                let start = period.start(now);
                usage::THRESHOLDS
                    .iter()
                    .all(|t| announced(&a, &(tenant, meter.to_owned(), period, start, *t)))
            })
        })
    }

    /// The meters plans limit through `PlanLimits.meters`, if read within
    /// [`QUOTA_REFRESH`].
    fn limited_meters(&self) -> Option<HashSet<String>> {
        let limited = self.limited.lock().ok()?;
        let (meters, read) = limited.as_ref()?;
        (read.elapsed() < QUOTA_REFRESH).then(|| meters.clone())
    }

    /// Forgets what is known of plans' limits (a plan changed).
    pub(super) fn forget_limits(&self) {
        if let Ok(mut limited) = self.limited.lock() {
            limited.take();
        }
        if let Ok(mut figures) = self.figures.lock() {
            figures.clear();
        }
        if let Ok(mut announced) = self.announced.lock() {
            announced.clear();
        }
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
        let limited = match self.quotas.limited_meters() {
            Some(limited) => limited,
            None => match self.read_limited_meters().await {
                Ok(limited) => limited,
                Err(e) => {
                    tracing::warn!(error = %e, "usage thresholds not checked; the next event checks again");
                    return;
                }
            },
        };
        // Limited meters whose thresholds were not all announced in the
        // period: a tenant past its limit costs no read until the next one.
        let now = Utc::now();
        let mut touched: Vec<(Uuid, &str)> = stored
            .iter()
            .filter(|e| {
                usage::LIMIT_BINDINGS.iter().any(|(m, _, _)| *m == e.meter)
                    || limited.contains(&e.meter)
            })
            .map(|e| (e.tenant_id, e.meter.as_str()))
            .filter(|(t, m)| !self.quotas.all_announced(*t, m, now))
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

    async fn read_limited_meters(&self) -> Result<HashSet<String>> {
        let mut conn = db::conn(&self.pool).await?;
        let limited: HashSet<String> = db::usage::meters_limited_by_plans(&mut conn)
            .await?
            .into_iter()
            .collect();
        if let Ok(mut held) = self.quotas.limited.lock() {
            *held = Some((limited.clone(), Instant::now()));
        }
        Ok(limited)
    }

    /// Writes one USAGE_THRESHOLD_REACHED event per limit threshold these
    /// tenants reached in the current period and have not had announced,
    /// and suspends an ACTIVE tenant whose plan says SUSPEND when it
    /// reaches a whole limit; returns how many events.
    async fn announce_thresholds(&self, tenants: &[Uuid], meters: &[String]) -> Result<usize> {
        let mut conn = db::conn(&self.pool).await?;
        let reached = |figures: &[Figure]| -> Vec<(Figure, i16)> {
            let seen = self.quotas.announced.lock().ok();
            figures
                .iter()
                .flat_map(|f| f.reached().map(move |t| (f.clone(), t)))
                .filter(|(f, t)| {
                    seen.as_ref().is_none_or(|a| {
                        !announced(
                            a,
                            &(f.tenant_id, f.meter.clone(), f.period, f.period_start, *t),
                        )
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
        let quota = Caller::system(QUOTA_ACTOR);
        let (written, suspended, seen) = conn
            .transaction(async |conn| {
                // Under the tenants' locks, as every writer of their events.
                db::usage::lock_tenants(conn, &locked).await?;
                let now = reached(&db::usage::figures(conn, &locked, Some(meters), true).await?);
                let (mut written, mut suspended) = (0, 0);
                for (figure, threshold) in &now {
                    if !db::usage::record_threshold(conn, figure, *threshold, QUOTA_ACTOR).await? {
                        continue;
                    }
                    written += 1;
                    if *threshold == 100
                        && figure.on_limit == OnLimit::Suspend
                        && self.quota_suspend(conn, &quota, figure).await?
                    {
                        suspended += 1;
                    }
                }
                Ok::<_, Error>((written, suspended, now))
            })
            .await?;
        if suspended > 0 {
            self.wakeup.work_committed();
        } else if written > 0 {
            self.wakeup.events_committed();
        }
        if let Ok(mut announced) = self.quotas.announced.lock() {
            if announced.len() >= MAX_CACHED {
                announced.clear();
            }
            let at = Instant::now();
            for (f, t) in seen {
                announced.insert((f.tenant_id, f.meter, f.period, f.period_start, t), at);
            }
        }
        Ok(written)
    }

    /// Suspends a tenant (its row locked) that reached a whole limit, if it
    /// is ACTIVE and nothing runs for it; whether it did. A tenant in any
    /// other state, or with an operation running, keeps its state: the
    /// event says what was reached.
    async fn quota_suspend(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        quota: &Caller,
        figure: &Figure,
    ) -> Result<bool> {
        let Some(row) = db::tenants::lock(conn, figure.tenant_id).await? else {
            return Ok(false);
        };
        if row.state != TenantState::Active.as_str() {
            return Ok(false);
        }
        let reason = format!(
            "{} reached the plan's limit of {} {}",
            figure.meter,
            figure.limit.unwrap_or_default(),
            figure.unit
        );
        match self
            .switch_locked(
                conn,
                quota,
                &row,
                TenantState::Active,
                TenantState::Suspended,
                &reason,
                Some(figure),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(Error::Aborted(why)) => {
                tracing::info!(tenant = %figure.tenant_id, %why, "a tenant past its limit was not suspended");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Resumes the tenants the quota suspended (of `plan`, when given) that
    /// are below every limit of their plan again, or whose plan no longer
    /// suspends; returns how many. Run by the quota job, and after a plan
    /// changes.
    pub async fn lift_quota_suspensions(&self, plan: Option<&str>) -> Result<usize> {
        let mut conn = db::conn(&self.pool).await?;
        let held = db::usage::quota_suspended(&mut conn, plan).await?;
        if held.is_empty() {
            return Ok(0);
        }
        let figures = db::usage::figures(&mut conn, &held, None, true).await?;
        let quota = Caller::system(QUOTA_ACTOR);
        let mut resumed = 0;
        for tenant in held {
            let mine = || figures.iter().filter(move |f| f.tenant_id == tenant);
            if mine().any(|f| f.exhausted() && f.on_limit == OnLimit::Suspend) {
                continue;
            }
            // Under the lock, the tenant must still be held by the quota.
            let done = conn
                .transaction(async |conn| {
                    let Some(row) = db::tenants::lock(conn, tenant).await? else {
                        return Ok(false);
                    };
                    if !db::usage::held_by_quota(conn, tenant).await? {
                        return Ok(false);
                    }
                    self.switch_locked(
                        conn,
                        &quota,
                        &row,
                        TenantState::Suspended,
                        TenantState::Active,
                        "resumed: below every usage limit of its plan again",
                        None,
                    )
                    .await?;
                    Ok::<_, Error>(true)
                })
                .await;
            match done {
                Ok(true) => resumed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "a tenant below its limits was not resumed; the quota job tries again")
                }
            }
        }
        if resumed > 0 {
            self.wakeup.work_committed();
        }
        Ok(resumed)
    }
}
