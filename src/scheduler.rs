//! Scheduled jobs (tokio-cron-scheduler): the stale-pipeline reaper, the
//! purge of tenants whose grace period ended, the pruning of old events, the
//! sampling of the measured usage meters, the resumption of tenants the
//! quota suspended, and the renewal of certificates close to their end.
//! Jobs call use cases and nothing else; each runs under a Postgres advisory
//! lock, so one replica at a time runs it, and running it twice is harmless.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::ops::{Ops, run_exclusive};

/// Advisory lock keys, one per job ("tenantd" + job number).
const REAPER_LOCK: i64 = 0x7465_6e61_6e74_6401;
const PURGE_LOCK: i64 = 0x7465_6e61_6e74_6402;
const PRUNE_LOCK: i64 = 0x7465_6e61_6e74_6403;
const SAMPLE_LOCK: i64 = 0x7465_6e61_6e74_6404;
const SAMPLE_NEW_LOCK: i64 = 0x7465_6e61_6e74_6405;
const QUOTA_LOCK: i64 = 0x7465_6e61_6e74_6406;
const RECONCILE_LOCK: i64 = 0x7465_6e61_6e74_6407;
const SERVER_CHECK_LOCK: i64 = 0x7465_6e61_6e74_6408;
const RENEW_LOCK: i64 = 0x7465_6e61_6e74_6409;

/// How often tenants that became ACTIVE since they were last looked at get
/// their first usage sample: soon enough that a new tenant shows its size
/// within seconds, and one indexed query when there is none.
pub const NEW_TENANT_SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// How often tenants the quota suspended are looked at again: a new
/// period resumes them within this (a raised limit at once).
pub const QUOTA_RESUME_EVERY: Duration = Duration::from_secs(10);

/// When the jobs run (cron expressions with seconds) and their settings.
#[derive(Debug, Clone)]
pub struct Schedules {
    pub reaper: String,
    pub purge: String,
    pub prune: String,
    /// A PROVISIONING tenant with no event for this long is cancelled.
    pub stale_after: Duration,
    /// Events of deleted tenants older than this are pruned.
    pub event_retention: Duration,
    /// How often every ACTIVE and SUSPENDED tenant's storage and users are
    /// sampled.
    pub usage_sample_interval: Duration,
    /// How often every ACTIVE and SUSPENDED tenant is checked for drift.
    pub reconcile_interval: Duration,
    /// How often every database server is connected to, for placement.
    pub server_check_interval: Duration,
    /// Certificates are renewed this long before they expire.
    pub renew_before: Duration,
    /// How often certificates due for renewal are looked for.
    pub renew_check_interval: Duration,
}

/// The running scheduler.
///
/// tokio-cron-scheduler keeps every job's closure in runner tasks that
/// outlive its `shutdown` (they wait on channels nothing closes), so the
/// jobs reach [`Ops`], and through it the connection pool, only through a
/// slot that [`Scheduler::shutdown`] empties: a stopped server keeps no
/// database connection open.
pub struct Scheduler {
    jobs: JobScheduler,
    ops: OpsSlot,
}

type OpsSlot = Arc<RwLock<Option<Ops>>>;

impl Scheduler {
    /// Stops ticking and lets go of `Ops`; a job running now finishes.
    pub async fn shutdown(mut self) -> Result<(), JobSchedulerError> {
        if let Ok(mut ops) = self.ops.write() {
            ops.take();
        }
        self.jobs.shutdown().await
    }
}

/// Starts the scheduler; stop it with [`Scheduler::shutdown`].
pub async fn start(ops: Ops, schedules: &Schedules) -> Result<Scheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let slot: OpsSlot = Arc::new(RwLock::new(Some(ops)));
    let stale_after = schedules.stale_after;
    let retention = schedules.event_retention;
    scheduler
        .add(job(
            When::Cron(&schedules.reaper),
            "reaper",
            REAPER_LOCK,
            slot.clone(),
            move |ops| async move { ops.reap_stale(stale_after).await },
        )?)
        .await?;
    scheduler
        .add(job(
            When::Cron(&schedules.purge),
            "purge",
            PURGE_LOCK,
            slot.clone(),
            |ops| async move { ops.purge_due().await },
        )?)
        .await?;
    scheduler
        .add(job(
            When::Cron(&schedules.prune),
            "prune",
            PRUNE_LOCK,
            slot.clone(),
            move |ops| async move { ops.prune_events(retention).await },
        )?)
        .await?;
    scheduler
        .add(job(
            When::Every(schedules.usage_sample_interval),
            "usage-sample",
            SAMPLE_LOCK,
            slot.clone(),
            |ops| async move { ops.sample_usage(false).await },
        )?)
        .await?;
    scheduler
        .add(job(
            When::Every(NEW_TENANT_SAMPLE_EVERY.min(schedules.usage_sample_interval)),
            "usage-sample-new",
            SAMPLE_NEW_LOCK,
            slot.clone(),
            |ops| async move { ops.sample_usage(true).await },
        )?)
        .await?;
    scheduler
        .add(job(
            When::Every(QUOTA_RESUME_EVERY),
            "quota-resume",
            QUOTA_LOCK,
            slot.clone(),
            |ops| async move { ops.lift_quota_suspensions(None).await },
        )?)
        .await?;
    scheduler
        .add(job(
            When::Every(schedules.reconcile_interval),
            "reconcile",
            RECONCILE_LOCK,
            slot.clone(),
            |ops| async move { ops.reconcile_all().await },
        )?)
        .await?;
    scheduler
        .add(job(
            When::Every(schedules.server_check_interval),
            "server-check",
            SERVER_CHECK_LOCK,
            slot.clone(),
            |ops| async move { ops.check_database_servers().await },
        )?)
        .await?;
    let renew_before = schedules.renew_before;
    scheduler
        .add(job(
            When::Every(schedules.renew_check_interval),
            "certificate-renewal",
            RENEW_LOCK,
            slot.clone(),
            move |ops| async move { ops.renew_certificates(renew_before).await },
        )?)
        .await?;
    scheduler.start().await?;
    Ok(Scheduler {
        jobs: scheduler,
        ops: slot,
    })
}

/// When a job runs.
enum When<'a> {
    /// A cron expression with seconds.
    Cron(&'a str),
    /// At this interval from the start.
    Every(Duration),
}

/// A job that runs `work` under the advisory lock `key` and logs what it
/// did; after shutdown it does nothing.
fn job<F, Fut>(
    when: When<'_>,
    name: &'static str,
    key: i64,
    slot: OpsSlot,
    work: F,
) -> Result<Job, JobSchedulerError>
where
    F: Fn(Ops) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = crate::error::Result<usize>> + Send + 'static,
{
    let run = move |_id: uuid::Uuid,
                    _scheduler: JobScheduler|
          -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let ops = slot.read().ok().and_then(|ops| ops.clone());
        let work = work.clone();
        Box::pin(async move {
            let Some(ops) = ops else { return };
            let pool = ops.pool().clone();
            match run_exclusive(&pool, key, work(ops)).await {
                Ok(Some(0)) => tracing::debug!(job = name, "nothing to do"),
                Ok(Some(n)) => tracing::info!(job = name, count = n, "job done"),
                Ok(None) => tracing::debug!(job = name, "another replica runs it"),
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "job failed; it runs again at its next time")
                }
            }
        })
    };
    match when {
        When::Cron(schedule) => Job::new_async(schedule, run),
        When::Every(interval) => Job::new_repeated_async(interval.max(Duration::from_secs(1)), run),
    }
}
