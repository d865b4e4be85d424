//! Points in a worker's life where this crate's own tests can hold it, to
//! replay races deterministically (a lease that expires under a live
//! worker, say). The hold exists only with the `test-hooks` feature, which
//! only the crate's tests enable; in every other build `Hooks` is empty and
//! [`Hooks::at`] does nothing.

#[cfg(feature = "test-hooks")]
use std::sync::Arc;

use super::store::Claim;

/// Where a worker may be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The attempt's work is done (or failed); its outcome is not recorded yet.
    BeforeRecord,
    /// A heartbeat is about to extend the lease.
    BeforeHeartbeat,
}

/// What a test runs at a [`Point`]; the worker waits for the future.
#[cfg(feature = "test-hooks")]
pub type Hold = Arc<dyn Fn(Point, &Claim) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The dispatcher's hooks: none unless a test installs one.
#[derive(Clone, Default)]
pub struct Hooks {
    #[cfg(feature = "test-hooks")]
    hold: Option<Hold>,
}

impl Hooks {
    /// Hooks that run `hold` at every point.
    #[cfg(feature = "test-hooks")]
    pub fn new(hold: Hold) -> Self {
        Hooks { hold: Some(hold) }
    }

    /// In a `test-hooks` build, the hold a test that runs the binary asks
    /// for in its environment: `TENANTD_TEST_PARK_BEFORE_RECORD` names
    /// steps (comma-separated); the first worker to finish one of them
    /// (not its compensation) writes a file of the step's name into
    /// `TENANTD_TEST_PARK_DIR` and waits forever, so the test can kill the
    /// process exactly there. In every other build, none.
    pub fn from_env() -> Self {
        #[cfg(feature = "test-hooks")]
        if let (Ok(steps), Ok(dir)) = (
            std::env::var("TENANTD_TEST_PARK_BEFORE_RECORD"),
            std::env::var("TENANTD_TEST_PARK_DIR"),
        ) {
            let steps: Vec<String> = steps.split(',').map(str::to_owned).collect();
            let dir = std::path::PathBuf::from(dir);
            return Hooks::new(Arc::new(move |point, claim| {
                let park = point == Point::BeforeRecord
                    && claim.operation != "COMPENSATE"
                    && steps.contains(&claim.step);
                let marker = dir.join(&claim.step);
                Box::pin(async move {
                    if park {
                        let _ = std::fs::write(&marker, b"parked");
                        std::future::pending::<()>().await;
                    }
                })
            }));
        }
        Hooks::default()
    }

    /// Waits for the installed hold, if any.
    #[cfg_attr(not(feature = "test-hooks"), allow(unused_variables))]
    pub async fn at(&self, point: Point, claim: &Claim) {
        #[cfg(feature = "test-hooks")]
        if let Some(hold) = &self.hold {
            hold(point, claim).await;
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}
