//! The pipelines every tenant shares, whatever its plan: deprovisioning,
//! moving its data to another server, renewing its certificate. Plans
//! cannot list their steps.

use super::plan::{DEFAULT_MAX_ATTEMPTS, PlanStep};

/// The deprovisioning pipeline, the same for every plan: revoke access,
/// archive or drop the data, export an archive (verified), tell the admin
/// (not critical).
pub fn deprovision_steps() -> Vec<PlanStep> {
    [
        ("revoke_access", true),
        ("archive_schema", true),
        ("export_archive", true),
        ("send_deprovision_notice", false),
    ]
    .into_iter()
    .map(|(name, critical)| PlanStep {
        name: name.to_owned(),
        critical,
        max_attempts: 5,
        retry_base_ms: None,
        retry_cap_ms: None,
        timeout_ms: None,
        webhook: None,
    })
    .collect()
}

/// The steps that move a tenant's data to another server, in order (see
/// `steps::moves`); the fourth, the switch, is the point of no return.
pub const MOVE_STEPS: [&str; 6] = [
    "move_freeze",
    "move_copy",
    "move_verify",
    "move_switch",
    "move_restore_writes",
    "move_drop_source",
];

/// Attempts of the steps before the switch: a failure that survives them
/// rolls the move back.
const ATTEMPTS_BEFORE_SWITCH: i32 = 5;
/// Attempts of the steps after it, which only go forward (a server that
/// does not answer costs none: its steps wait).
const ATTEMPTS_AFTER_SWITCH: i32 = 20;
/// The copy and the verification read the whole schema: far longer than
/// any other step may take.
const COPY_TIMEOUT_MS: i32 = 6 * 3600 * 1000;

/// The move pipeline's step rows.
pub fn move_steps() -> Vec<PlanStep> {
    MOVE_STEPS
        .iter()
        .enumerate()
        .map(|(i, name)| PlanStep {
            name: (*name).to_owned(),
            critical: true,
            max_attempts: if i < 4 {
                ATTEMPTS_BEFORE_SWITCH
            } else {
                ATTEMPTS_AFTER_SWITCH
            },
            retry_base_ms: None,
            retry_cap_ms: None,
            timeout_ms: matches!(*name, "move_copy" | "move_verify").then_some(COPY_TIMEOUT_MS),
            webhook: None,
        })
        .collect()
}

/// The step of the renewal pipeline: a tenant's certificate renewed (see
/// `steps::tls_certificate`).
pub const RENEW_STEP: &str = "renew_certificate";

/// The renewal pipeline's step row: not critical (a renewal that gives up
/// leaves the certificate in force, with a warning, and the job tries again
/// at its next run), and as many attempts as a provisioning step.
pub fn renew_steps() -> Vec<PlanStep> {
    vec![PlanStep {
        name: RENEW_STEP.to_owned(),
        critical: false,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        retry_base_ms: None,
        retry_cap_ms: None,
        timeout_ms: None,
        webhook: None,
    }]
}

/// A step of the pipelines every tenant shares (deprovisioning, moving,
/// renewing its certificate), which plans cannot list.
pub fn is_lifecycle_step(name: &str) -> bool {
    deprovision_steps().iter().any(|s| s.name == name)
        || MOVE_STEPS.contains(&name)
        || name == RENEW_STEP
}
