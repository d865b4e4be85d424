//! Plans: named templates that say which steps a tenant's pipeline runs.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use super::validate::FieldViolation;

/// The plan used when CreateTenant names none.
pub const DEFAULT_PLAN: &str = "default";

/// A plan version as stored: its steps in the order they run, what the
/// tenant starts with, and the limits it is held to.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub version: i32,
    pub description: String,
    pub steps: Vec<PlanStep>,
    /// The set of tenant migrations `run_migrations` applies.
    pub migration_set: String,
    pub initial_data: InitialData,
    /// Named limits (`max_users`, ...); absent means unlimited.
    pub limits: BTreeMap<String, i64>,
    /// Limits on other meters, by meter name.
    pub meter_limits: BTreeMap<String, MeterLimit>,
    /// What reaching a usage limit does to a tenant.
    pub on_limit: OnLimit,
    /// Shipped with the server (by a migration).
    pub built_in: bool,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// What a new tenant of the plan starts with besides the standard roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitialData {
    /// Roles seeded besides admin, member and viewer.
    #[serde(default)]
    pub extra_roles: Vec<String>,
    /// Default configuration, `category.name` to its text form.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// A limit on a meter's figure per period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeterLimit {
    /// In the meter's unit.
    pub limit: f64,
    pub period: Period,
}

/// The UTC period a usage limit counts over.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Period {
    #[default]
    Day,
    Month,
}

impl Period {
    /// Where the period holding `at` starts.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        let first = match self {
            Period::Day => day,
            Period::Month => day.with_day(1).unwrap_or(day),
        };
        first.and_time(chrono::NaiveTime::MIN).and_utc()
    }
}

/// What reaching 100% of a usage limit does to a tenant.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum OnLimit {
    /// Events only.
    #[default]
    Notify,
    /// Events, and an ACTIVE tenant is suspended until it is below every
    /// limit again.
    Suspend,
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
    /// First backoff delay; `None`: the server's `--retry-base-ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_base_ms: Option<i32>,
    /// Largest backoff delay; `None`: the server's `--retry-cap-ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_cap_ms: Option<i32>,
    /// Bound on one attempt's external work; `None`: the server's
    /// `--step-timeout-secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i32>,
    /// Set: the step calls the operator's webhook endpoint instead of a
    /// built-in step, under a name of the plan's choosing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStep>,
}

/// A plan step that POSTs to a webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStep {
    /// The endpoint's name.
    pub endpoint: String,
    /// Whether the saga calls the endpoint to undo the step.
    #[serde(default)]
    pub compensate: bool,
}

/// A webhook step's name: `^[a-z][a-z0-9_]{1,39}$`.
fn is_webhook_step_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (2..=40).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Tenant migration sets `run_migrations` knows.
pub const MIGRATION_SETS: &[&str] = &["core"];
/// Limits a plan may set.
pub const LIMIT_NAMES: &[&str] = &["max_users", "max_api_calls_per_day", "max_storage_mb"];
/// Meters the named limits bind, which `meter_limits` cannot name.
pub const BOUND_METERS: &[&str] = &["api_calls", "storage_bytes", "users"];
/// Most meter limits one plan sets.
pub const MAX_METER_LIMITS: usize = 32;
/// Roles every tenant gets; a plan's extra roles come on top.
pub const STANDARD_ROLES: &[&str] = &["admin", "member", "viewer"];
/// Attempts of a step whose plan gives none.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

const MAX_STEPS: usize = 32;
const MAX_ATTEMPTS: i32 = 20;
const MAX_DESCRIPTION_CHARS: usize = 1000;
const MAX_EXTRA_ROLES: usize = 16;
const MAX_CONFIG_ENTRIES: usize = 100;
const MAX_CONFIG_VALUE_CHARS: usize = 1000;
/// Longest retry delay or attempt timeout a plan may ask for: one day.
const MAX_DELAY_MS: i64 = 86_400_000;

/// A plan as a caller wrote it (name, description, steps, initial data,
/// limits), not yet validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanInput {
    pub name: String,
    pub description: String,
    pub steps: Vec<PlanStep>,
    pub migration_set: String,
    pub initial_data: InitialData,
    pub limits: BTreeMap<String, i64>,
    pub meter_limits: BTreeMap<String, MeterLimit>,
    pub on_limit: OnLimit,
}

impl PlanInput {
    /// Checks every field; `steps_known` are the provisioning steps this
    /// build can run. Fills defaults (attempts, migration set).
    pub fn validate(mut self, steps_known: &[&str]) -> Result<Self, Vec<FieldViolation>> {
        let mut out = Vec::new();
        super::validate::check_plan_name("plan.name", &self.name, &mut out);
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            out.push(FieldViolation::new(
                "plan.description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            out.push(FieldViolation::new(
                "plan.steps",
                format!("must list 1 to {MAX_STEPS} steps"),
            ));
        }
        for (i, step) in self.steps.iter_mut().enumerate() {
            let field = |f: &str| format!("plan.steps[{i}].{f}");
            match &step.webhook {
                None if !steps_known.contains(&step.name.as_str()) => {
                    out.push(FieldViolation::new(
                        field("name"),
                        format!(
                            "must be one of {}, or the name of a webhook step",
                            steps_known.join(", ")
                        ),
                    ));
                }
                None => {}
                Some(webhook) => {
                    if !is_webhook_step_name(&step.name)
                        || steps_known.contains(&step.name.as_str())
                        || super::lifecycle::is_lifecycle_step(&step.name)
                    {
                        out.push(FieldViolation::new(
                            field("name"),
                            "a webhook step's name must match ^[a-z][a-z0-9_]{1,39}$ and not be a built-in step's",
                        ));
                    }
                    super::webhook::check_endpoint_name(
                        &field("webhook.endpoint"),
                        &webhook.endpoint,
                        &mut out,
                    );
                }
            }
            if step.max_attempts == 0 {
                step.max_attempts = DEFAULT_MAX_ATTEMPTS;
            }
            if !(1..=MAX_ATTEMPTS).contains(&step.max_attempts) {
                out.push(FieldViolation::new(
                    field("max_attempts"),
                    format!("must be 1 to {MAX_ATTEMPTS} (0: {DEFAULT_MAX_ATTEMPTS})"),
                ));
            }
            for (name, value) in [
                ("retry_base", step.retry_base_ms),
                ("retry_cap", step.retry_cap_ms),
                ("timeout", step.timeout_ms),
            ] {
                if let Some(ms) = value
                    && !(1..=MAX_DELAY_MS).contains(&i64::from(ms))
                {
                    out.push(FieldViolation::new(
                        field(name),
                        "must be more than 0 and at most 24 hours",
                    ));
                }
            }
            if let (Some(base), Some(cap)) = (step.retry_base_ms, step.retry_cap_ms)
                && cap < base
            {
                out.push(FieldViolation::new(
                    field("retry_cap"),
                    "must not be less than retry_base",
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            if !seen.insert(step.name.as_str()) {
                out.push(FieldViolation::new(
                    format!("plan.steps[{i}].name"),
                    "is listed twice",
                ));
            }
        }
        if self.migration_set.is_empty() {
            self.migration_set = MIGRATION_SETS[0].to_owned();
        }
        if !MIGRATION_SETS.contains(&self.migration_set.as_str()) {
            out.push(FieldViolation::new(
                "plan.migration_set",
                format!("must be one of {}", MIGRATION_SETS.join(", ")),
            ));
        }
        let roles = &self.initial_data.extra_roles;
        if roles.len() > MAX_EXTRA_ROLES {
            out.push(FieldViolation::new(
                "plan.initial_data.extra_roles",
                format!("must list at most {MAX_EXTRA_ROLES} roles"),
            ));
        }
        for (i, role) in roles.iter().enumerate() {
            let well_formed = (2..=31).contains(&role.len())
                && role.as_bytes()[0].is_ascii_lowercase()
                && role
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !well_formed || STANDARD_ROLES.contains(&role.as_str()) || roles[..i].contains(role)
            {
                out.push(FieldViolation::new(
                    format!("plan.initial_data.extra_roles[{i}]"),
                    "must be a new role name of 2 to 31 characters [a-z0-9_], starting with a letter",
                ));
            }
        }
        let config = &self.initial_data.config;
        if config.len() > MAX_CONFIG_ENTRIES {
            out.push(FieldViolation::new(
                "plan.initial_data.config",
                format!("must hold at most {MAX_CONFIG_ENTRIES} settings"),
            ));
        }
        for (key, value) in config {
            let well_formed = key.split_once('.').is_some_and(|(category, name)| {
                !category.is_empty()
                    && !name.is_empty()
                    && key.len() <= 64
                    && key.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                    })
            });
            if !well_formed || value.chars().count() > MAX_CONFIG_VALUE_CHARS {
                out.push(FieldViolation::new(
                    format!("plan.initial_data.config[{key:?}]"),
                    "must be a `category.name` key with a value of at most 1000 characters",
                ));
            }
        }
        for (name, value) in &self.limits {
            if !LIMIT_NAMES.contains(&name.as_str()) {
                out.push(FieldViolation::new(
                    format!("plan.limits[{name:?}]"),
                    format!("must be one of {}", LIMIT_NAMES.join(", ")),
                ));
            } else if *value <= 0 {
                out.push(FieldViolation::new(
                    format!("plan.limits[{name:?}]"),
                    "must be more than 0 (leave it out for no limit)",
                ));
            }
        }
        if self.meter_limits.len() > MAX_METER_LIMITS {
            out.push(FieldViolation::new(
                "plan.limits.meters",
                format!("must hold at most {MAX_METER_LIMITS} limits"),
            ));
        }
        for (meter, limit) in &self.meter_limits {
            let field = format!("plan.limits.meters[{meter:?}]");
            super::usage::check_meter_name(&field, meter, &mut out);
            if BOUND_METERS.contains(&meter.as_str()) {
                out.push(FieldViolation::new(
                    field,
                    "is limited by max_api_calls_per_day, max_storage_mb or max_users",
                ));
            } else if !limit.limit.is_finite() || limit.limit <= 0.0 {
                out.push(FieldViolation::new(
                    format!("{field}.limit"),
                    "must be a finite number more than 0",
                ));
            }
        }
        if out.is_empty() { Ok(self) } else { Err(out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str) -> PlanStep {
        PlanStep {
            name: name.to_owned(),
            critical: true,
            max_attempts: 0,
            retry_base_ms: None,
            retry_cap_ms: None,
            timeout_ms: None,
            webhook: None,
        }
    }

    fn webhook(name: &str, endpoint: &str) -> PlanStep {
        PlanStep {
            webhook: Some(WebhookStep {
                endpoint: endpoint.to_owned(),
                compensate: true,
            }),
            ..step(name)
        }
    }

    const KNOWN: &[&str] = &["create_schema", "activate"];

    fn day_limit(limit: f64) -> MeterLimit {
        MeterLimit {
            limit,
            period: Period::Day,
        }
    }

    #[test]
    fn periods_start_at_midnight_utc_and_on_the_first() {
        let at = "2026-03-29T01:30:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            Period::Day.start(at).to_rfc3339(),
            "2026-03-29T00:00:00+00:00"
        );
        assert_eq!(
            Period::Month.start(at).to_rfc3339(),
            "2026-03-01T00:00:00+00:00"
        );
    }

    #[test]
    fn a_good_plan_gets_its_defaults() {
        let plan = PlanInput {
            name: "gold".into(),
            steps: vec![step("create_schema"), step("activate")],
            ..Default::default()
        }
        .validate(KNOWN)
        .unwrap();
        assert_eq!(plan.migration_set, "core");
        assert!(
            plan.steps
                .iter()
                .all(|s| s.max_attempts == DEFAULT_MAX_ATTEMPTS)
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut bad_step = step("activate");
        bad_step.retry_base_ms = Some(5000);
        bad_step.retry_cap_ms = Some(10);
        bad_step.max_attempts = 99;
        let violations = PlanInput {
            name: "X".into(),
            steps: vec![step("nope"), bad_step, step("nope")],
            migration_set: "all".into(),
            initial_data: InitialData {
                extra_roles: vec!["admin".into()],
                config: BTreeMap::from([("nodot".into(), "x".into())]),
            },
            limits: BTreeMap::from([("max_users".into(), 0), ("max_cats".into(), 3)]),
            meter_limits: BTreeMap::from([
                ("api_calls".into(), day_limit(5.0)),
                ("seats".into(), day_limit(f64::NAN)),
                ("Bad".into(), day_limit(1.0)),
            ]),
            ..Default::default()
        }
        .validate(KNOWN)
        .unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        for expected in [
            "plan.name",
            "plan.steps[0].name",
            "plan.steps[1].max_attempts",
            "plan.steps[1].retry_cap",
            "plan.steps[2].name",
            "plan.migration_set",
            "plan.initial_data.extra_roles[0]",
            "plan.initial_data.config[\"nodot\"]",
            "plan.limits[\"max_users\"]",
            "plan.limits[\"max_cats\"]",
            "plan.limits.meters[\"api_calls\"]",
            "plan.limits.meters[\"seats\"].limit",
            "plan.limits.meters[\"Bad\"]",
        ] {
            assert!(
                fields.contains(&expected),
                "{expected} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn webhook_steps_have_names_of_their_own() {
        let plan = PlanInput {
            name: "billing".into(),
            steps: vec![
                step("create_schema"),
                webhook("create_billing_customer", "billing"),
                step("activate"),
            ],
            ..Default::default()
        }
        .validate(KNOWN)
        .unwrap();
        assert_eq!(plan.steps[1].webhook.as_ref().unwrap().endpoint, "billing");
        let violations = PlanInput {
            name: "billing".into(),
            steps: vec![
                webhook("create_schema", "billing"),
                webhook("revoke_access", "billing"),
                webhook("Bad-Name", "billing"),
                webhook("fine_name", "Not_An_Endpoint"),
                webhook("x", "billing"),
            ],
            ..Default::default()
        }
        .validate(KNOWN)
        .unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "plan.steps[0].name",
                "plan.steps[1].name",
                "plan.steps[2].name",
                "plan.steps[3].webhook.endpoint",
                "plan.steps[4].name",
            ]
        );
    }
}
