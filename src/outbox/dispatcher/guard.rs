//! External work under guard: a timeout, a heartbeat that keeps the lease
//! (and notices a stale claim or a cancellation), and the shutdown grace.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use super::super::hooks::Point;
use super::super::store::{self, Claim};
use super::{Shared, panic_message};
use crate::db;
use crate::steps::StepError;

/// Why guarded work did not produce a value.
pub(super) enum Stop {
    /// The attempt failed (error, panic, timeout, lost lease, cancellation).
    Failed(StepError),
    /// Shutdown interrupted it; the row is released, the attempt not counted.
    Interrupted,
    /// A heartbeat found the claim stale (the row was claimed again): the
    /// attempt is abandoned, nothing recorded.
    Stale,
}

/// Runs external work with a timeout and a heartbeat that keeps the lease;
/// stops early if the claim turns out stale or cancellation is asked for,
/// and at shutdown after the grace period.
pub(super) async fn guarded<T>(
    shared: &Shared,
    claim: &Claim,
    work: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, Stop> {
    let lease = shared.config.lease;
    let mut beat = tokio::time::interval(lease / 3);
    beat.tick().await; // the first tick is immediate
    let timeout = claim.timeout(shared.config.step_timeout);
    let work = tokio::time::timeout(timeout, AssertUnwindSafe(work).catch_unwind());
    tokio::pin!(work);
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let mut stopping = false;
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled(), if !stopping => {
                stopping = true;
                grace.as_mut().reset(tokio::time::Instant::now() + shared.config.shutdown_grace);
            }
            () = &mut grace, if stopping => return Err(Stop::Interrupted),
            done = &mut work => {
                return match done {
                    Ok(Ok(result)) => result.map_err(Stop::Failed),
                    Ok(Err(panic)) => Err(Stop::Failed(StepError::new(format!(
                        "step panicked: {}",
                        panic_message(&panic)
                    )))),
                    Err(_) => Err(Stop::Failed(StepError::new(format!(
                        "timed out after {timeout:?}"
                    )))),
                };
            }
            _ = beat.tick() => {
                shared.config.hooks.at(Point::BeforeHeartbeat, claim).await;
                let Ok(mut conn) = db::conn(&shared.pool).await else { continue };
                match store::heartbeat(&mut conn, claim, lease).await {
                    Ok(Some(true)) if claim.operation == "PROVISION" => {
                        return Err(Stop::Failed(StepError::new("cancelled while running")));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        store::refused_stale(claim, "heartbeat");
                        return Err(Stop::Stale);
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        }
    }
}
