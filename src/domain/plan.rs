//! Plans: named templates that say which steps a tenant's pipeline runs.

use serde::{Deserialize, Serialize};

/// The plan used when CreateTenant names none.
pub const DEFAULT_PLAN: &str = "default";

/// A plan as stored: its steps in the order they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub version: i32,
    pub steps: Vec<PlanStep>,
}

/// One step of a plan and its retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// A name from the step registry.
    pub name: String,
    /// Whether running out of attempts fails the tenant (and compensates).
    pub critical: bool,
    /// Attempts before the step is FAILED.
    pub max_attempts: i32,
}

/// The deprovisioning pipeline, the same for every plan: revoke access,
/// archive or drop the data, tell the admin (not critical).
pub fn deprovision_steps() -> Vec<PlanStep> {
    [
        ("revoke_access", true),
        ("archive_schema", true),
        ("send_deprovision_notice", false),
    ]
    .into_iter()
    .map(|(name, critical)| PlanStep {
        name: name.to_owned(),
        critical,
        max_attempts: 5,
    })
    .collect()
}
