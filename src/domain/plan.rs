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
