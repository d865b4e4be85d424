//! Scheduled jobs (tokio-cron-scheduler): the stale-pipeline reaper, the
//! purge of tenants whose grace period ended, and the pruning of old events.
//! Jobs call use cases and nothing else; each runs under a Postgres advisory
//! lock, so one replica at a time runs it, and running it twice is harmless.

use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::ops::{Ops, run_exclusive};

/// Advisory lock keys, one per job ("tenantd" + job number).
const REAPER_LOCK: i64 = 0x7465_6e61_6e74_6401;
const PURGE_LOCK: i64 = 0x7465_6e61_6e74_6402;
const PRUNE_LOCK: i64 = 0x7465_6e61_6e74_6403;

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
}

/// Starts the scheduler; stop it with [`JobScheduler::shutdown`].
pub async fn start(ops: Ops, schedules: &Schedules) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let stale_after = schedules.stale_after;
    let retention = schedules.event_retention;
    scheduler
        .add(job(
            &schedules.reaper,
            "reaper",
            REAPER_LOCK,
            ops.clone(),
            move |ops| async move { ops.reap_stale(stale_after).await },
        )?)
        .await?;
    scheduler
        .add(job(
            &schedules.purge,
            "purge",
            PURGE_LOCK,
            ops.clone(),
            |ops| async move { ops.purge_due().await },
        )?)
        .await?;
    scheduler
        .add(job(
            &schedules.prune,
            "prune",
            PRUNE_LOCK,
            ops,
            move |ops| async move { ops.prune_events(retention).await },
        )?)
        .await?;
    scheduler.start().await?;
    Ok(scheduler)
}

/// A cron job that runs `work` under the advisory lock `key` and logs what
/// it did.
fn job<F, Fut>(
    schedule: &str,
    name: &'static str,
    key: i64,
    ops: Ops,
    work: F,
) -> Result<Job, JobSchedulerError>
where
    F: Fn(Ops) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = crate::error::Result<usize>> + Send + 'static,
{
    Job::new_async(schedule, move |_id, _scheduler| {
        let (ops, work) = (ops.clone(), work.clone());
        Box::pin(async move {
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
    })
}
