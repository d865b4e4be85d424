//! Plain functions between protobuf messages and domain types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::domain::{
    Event, EventKind, FieldViolation, InitialData, MeterLimit, OnLimit, Period, Plan, PlanInput,
    PlanStep, Step, StepStatus, Tenant, TenantInput, TenantPatch, TenantState,
};
use crate::error::Error;
use crate::ops::DeprovisionMode;
use crate::proto as pb;
use crate::stream::WatchItem;

/// Mutable fields UpdateTenant accepts in its mask.
const MUTABLE_FIELDS: [&str; 3] = ["display_name", "admin_email", "labels"];

pub fn tenant(t: Tenant) -> pb::Tenant {
    let etag = t.etag();
    pb::Tenant {
        id: if t.id.is_nil() {
            String::new()
        } else {
            t.id.to_string()
        },
        slug: t.slug,
        display_name: t.display_name,
        admin_email: t.admin_email,
        plan: t.plan,
        plan_version: t.plan_version,
        labels: t.labels.into_iter().collect(),
        state: tenant_state(t.state) as i32,
        steps: t.steps.into_iter().map(step).collect(),
        legal_hold: t.legal_hold,
        legal_hold_reason: t.legal_hold_reason,
        database_server: t.database_server,
        placement: t.placement,
        contract_owner: t.contract_owner,
        drift: t
            .drift
            .into_iter()
            .map(|d| pb::DriftCondition {
                resource: d.resource,
                expected: d.expected,
                found: d.found,
                since_time: Some(timestamp(d.since)),
            })
            .collect(),
        contract_address: t
            .outputs
            .get(crate::db::soroban::CONTRACT_ADDRESS)
            .cloned()
            .unwrap_or_default(),
        outputs: t.outputs.into_iter().collect(),
        create_time: Some(timestamp(t.create_time)),
        update_time: Some(timestamp(t.update_time)),
        delete_time: t.delete_time.map(timestamp),
        purge_time: t.purge_time.map(timestamp),
        etag: if t.revision == 0 { String::new() } else { etag },
        cancel_requested: t.cancel_requested,
        state_reason: t.state_reason,
        leftover_resources: t.leftover_resources,
    }
}

fn step(s: Step) -> pb::Step {
    pb::Step {
        name: s.name,
        status: step_status(s.status) as i32,
        critical: s.critical,
        attempts: s.attempts,
        max_attempts: s.max_attempts,
        last_error: s.last_error.unwrap_or_default(),
        start_time: s.start_time.map(timestamp),
        finish_time: s.finish_time.map(timestamp),
        output: s.output.into_iter().collect(),
        retry_base: s.retry_base_ms.map(duration_ms),
        retry_cap: s.retry_cap_ms.map(duration_ms),
        timeout: s.timeout_ms.map(duration_ms),
        webhook_endpoint: s.webhook.map(|w| w.endpoint).unwrap_or_default(),
    }
}

fn duration_ms(ms: i32) -> prost_types::Duration {
    let ms = i64::from(ms);
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: (ms % 1000) as i32 * 1_000_000,
    }
}

/// A duration field in whole milliseconds: unset stays unset; negative,
/// sub-millisecond or too long is a violation of `field`.
fn millis(field: &str, d: Option<prost_types::Duration>) -> Result<Option<i32>, FieldViolation> {
    let Some(d) = d else { return Ok(None) };
    let invalid = || {
        FieldViolation::new(
            field,
            "must be whole milliseconds, more than 0, at most 24 hours",
        )
    };
    if d.seconds < 0 || d.nanos < 0 || d.nanos % 1_000_000 != 0 {
        return Err(invalid());
    }
    let ms = d
        .seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(d.nanos / 1_000_000)))
        .ok_or_else(invalid)?;
    i32::try_from(ms).map(Some).map_err(|_| invalid())
}

pub fn plan(p: Plan) -> pb::Plan {
    let limit = |name: &str| p.limits.get(name).copied().unwrap_or(0);
    pb::Plan {
        etag: crate::ops::plan_etag(&p),
        limits: Some(pb::PlanLimits {
            max_users: limit("max_users"),
            max_api_calls_per_day: limit("max_api_calls_per_day"),
            max_storage_mb: limit("max_storage_mb"),
            meters: p
                .meter_limits
                .into_iter()
                .map(|(meter, l)| {
                    let limit = pb::MeterLimit {
                        limit: l.limit,
                        period: period(l.period).into(),
                    };
                    (meter, limit)
                })
                .collect(),
        }),
        on_limit: match p.on_limit {
            OnLimit::Notify => pb::OnLimit::Notify,
            OnLimit::Suspend => pb::OnLimit::Suspend,
        }
        .into(),
        name: p.name,
        version: p.version,
        description: p.description,
        steps: p
            .steps
            .into_iter()
            .map(|s| pb::PlanStep {
                name: s.name,
                critical: s.critical,
                max_attempts: s.max_attempts,
                retry_base: s.retry_base_ms.map(duration_ms),
                retry_cap: s.retry_cap_ms.map(duration_ms),
                timeout: s.timeout_ms.map(duration_ms),
                webhook: s.webhook.map(|w| pb::WebhookStep {
                    endpoint: w.endpoint,
                    compensate: w.compensate,
                }),
            })
            .collect(),
        migration_set: p.migration_set,
        initial_data: Some(pb::InitialData {
            extra_roles: p.initial_data.extra_roles,
            config: p.initial_data.config.into_iter().collect(),
        }),
        built_in: p.built_in,
        create_time: Some(timestamp(p.create_time)),
        update_time: Some(timestamp(p.update_time)),
    }
}

/// A plan from a request, and its etag; durations must be whole
/// milliseconds. Everything else is checked by [`PlanInput::validate`].
pub fn plan_input(p: Option<pb::Plan>) -> Result<(PlanInput, String), Error> {
    let p = p.ok_or_else(|| Error::invalid("plan", "is required"))?;
    let mut violations = Vec::new();
    let mut steps = Vec::new();
    for (i, s) in p.steps.into_iter().enumerate() {
        let mut ms = |name: &str, d| {
            millis(&format!("plan.steps[{i}].{name}"), d).unwrap_or_else(|v| {
                violations.push(v);
                None
            })
        };
        steps.push(PlanStep {
            retry_base_ms: ms("retry_base", s.retry_base),
            retry_cap_ms: ms("retry_cap", s.retry_cap),
            timeout_ms: ms("timeout", s.timeout),
            name: s.name,
            critical: s.critical,
            max_attempts: s.max_attempts,
            webhook: s.webhook.map(|w| crate::domain::WebhookStep {
                endpoint: w.endpoint,
                compensate: w.compensate,
            }),
        });
    }
    let limits = p.limits.unwrap_or_default();
    let mut meter_limits = BTreeMap::new();
    for (meter, l) in limits.meters {
        let period = match pb::Period::try_from(l.period) {
            Ok(pb::Period::Unspecified | pb::Period::Day) => Period::Day,
            Ok(pb::Period::Month) => Period::Month,
            Err(_) => {
                violations.push(FieldViolation::new(
                    format!("plan.limits.meters[{meter:?}].period"),
                    "must be DAY or MONTH",
                ));
                continue;
            }
        };
        meter_limits.insert(
            meter,
            MeterLimit {
                limit: l.limit,
                period,
            },
        );
    }
    let on_limit = match pb::OnLimit::try_from(p.on_limit) {
        Ok(pb::OnLimit::Unspecified | pb::OnLimit::Notify) => OnLimit::Notify,
        Ok(pb::OnLimit::Suspend) => OnLimit::Suspend,
        Err(_) => {
            violations.push(FieldViolation::new(
                "plan.on_limit",
                "must be NOTIFY or SUSPEND",
            ));
            OnLimit::Notify
        }
    };
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    let initial = p.initial_data.unwrap_or_default();
    let input = PlanInput {
        name: p.name,
        description: p.description,
        steps,
        migration_set: p.migration_set,
        initial_data: InitialData {
            extra_roles: initial.extra_roles,
            config: initial.config.into_iter().collect(),
        },
        limits: [
            ("max_users", limits.max_users),
            ("max_api_calls_per_day", limits.max_api_calls_per_day),
            ("max_storage_mb", limits.max_storage_mb),
        ]
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        meter_limits,
        on_limit,
    };
    Ok((input, p.etag))
}

pub fn period(p: Period) -> pb::Period {
    match p {
        Period::Day => pb::Period::Day,
        Period::Month => pb::Period::Month,
    }
}

pub fn tenant_state(s: TenantState) -> pb::TenantState {
    match s {
        TenantState::Provisioning => pb::TenantState::Provisioning,
        TenantState::Active => pb::TenantState::Active,
        TenantState::Suspended => pb::TenantState::Suspended,
        TenantState::Failed => pb::TenantState::Failed,
        TenantState::Cancelled => pb::TenantState::Cancelled,
        TenantState::Deprovisioning => pb::TenantState::Deprovisioning,
        TenantState::Deprovisioned => pb::TenantState::Deprovisioned,
        TenantState::NeedsAttention => pb::TenantState::NeedsAttention,
    }
}

/// A state filter: UNSPECIFIED means none; an unknown number is an error.
pub fn state_filter(field: &str, value: i32) -> Result<Option<TenantState>, FieldViolation> {
    let state = pb::TenantState::try_from(value)
        .map_err(|_| FieldViolation::new(field, format!("{value} is not a TenantState")))?;
    Ok(match state {
        pb::TenantState::Unspecified => None,
        pb::TenantState::Provisioning => Some(TenantState::Provisioning),
        pb::TenantState::Active => Some(TenantState::Active),
        pb::TenantState::Suspended => Some(TenantState::Suspended),
        pb::TenantState::Failed => Some(TenantState::Failed),
        pb::TenantState::Cancelled => Some(TenantState::Cancelled),
        pb::TenantState::Deprovisioning => Some(TenantState::Deprovisioning),
        pb::TenantState::Deprovisioned => Some(TenantState::Deprovisioned),
        pb::TenantState::NeedsAttention => Some(TenantState::NeedsAttention),
    })
}

fn step_status(s: StepStatus) -> pb::StepStatus {
    match s {
        StepStatus::Pending => pb::StepStatus::Pending,
        StepStatus::Running => pb::StepStatus::Running,
        StepStatus::Succeeded => pb::StepStatus::Succeeded,
        StepStatus::Failed => pb::StepStatus::Failed,
        StepStatus::Skipped => pb::StepStatus::Skipped,
        StepStatus::Compensating => pb::StepStatus::Compensating,
        StepStatus::Compensated => pb::StepStatus::Compensated,
        StepStatus::Cancelled => pb::StepStatus::Cancelled,
    }
}

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A request's timestamp; `None` when unset, an error when out of range.
pub fn time(t: Option<Timestamp>) -> Result<Option<DateTime<Utc>>, String> {
    t.map(|t| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| "is not a valid timestamp".to_owned())
    })
    .transpose()
}

/// The caller-settable fields of a tenant; output-only fields are ignored.
pub fn tenant_input(t: Option<pb::Tenant>) -> Result<TenantInput, Error> {
    let t = t.ok_or_else(|| Error::invalid("tenant", "is required"))?;
    Ok(TenantInput {
        slug: t.slug,
        display_name: t.display_name,
        admin_email: t.admin_email,
        plan: t.plan,
        labels: t.labels.into_iter().collect(),
        placement: t.placement,
        contract_owner: t.contract_owner,
    })
}

/// An UpdateTenant request as a patch (AIP-134): the mask names the fields;
/// no mask means every mutable field that is set; `*` means all of them.
pub fn patch(
    t: Option<pb::Tenant>,
    mask: Option<prost_types::FieldMask>,
) -> Result<TenantPatch, Error> {
    let t = t.ok_or_else(|| Error::invalid("tenant", "is required"))?;
    let paths: Vec<String> = match mask {
        Some(mask) if mask.paths.iter().any(|p| p == "*") => {
            MUTABLE_FIELDS.iter().map(|f| (*f).to_owned()).collect()
        }
        Some(mask) => mask.paths,
        None => {
            let mut set = Vec::new();
            if !t.display_name.is_empty() {
                set.push("display_name".to_owned());
            }
            if !t.admin_email.is_empty() {
                set.push("admin_email".to_owned());
            }
            if !t.labels.is_empty() {
                set.push("labels".to_owned());
            }
            set
        }
    };
    let mut violations = Vec::new();
    let mut patch = TenantPatch {
        expected_etag: (!t.etag.is_empty()).then_some(t.etag),
        ..TenantPatch::default()
    };
    let labels: BTreeMap<String, String> = t.labels.into_iter().collect();
    for path in paths {
        match path.as_str() {
            "display_name" => patch.display_name = Some(t.display_name.clone()),
            "admin_email" => patch.admin_email = Some(t.admin_email.clone()),
            "labels" => patch.labels = Some(labels.clone()),
            "legal_hold" | "legal_hold_reason" => {
                patch.legal_hold = Some((t.legal_hold, t.legal_hold_reason.clone()))
            }
            "id" | "slug" | "plan" | "state" | "steps" | "outputs" | "create_time"
            | "update_time" | "delete_time" | "purge_time" | "etag" | "cancel_requested"
            | "state_reason" | "leftover_resources" | "plan_version" | "contract_address"
            | "drift" | "database_server" | "placement" | "contract_owner" => {
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!(
                        "{path} cannot be updated; mutable fields are {}",
                        MUTABLE_FIELDS.join(", ")
                    ),
                ))
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!("unknown field {shown:?}"),
                ))
            }
        }
    }
    if violations.is_empty() {
        Ok(patch)
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

/// One message of StreamProvisioningStatus.
pub fn watch_item(item: WatchItem) -> pb::StreamProvisioningStatusResponse {
    use pb::stream_provisioning_status_response::Update;
    let update = match item {
        WatchItem::Snapshot {
            tenant: t,
            last_event_id,
        } => Update::Snapshot(pb::Snapshot {
            tenant: Some(tenant(*t)),
            last_event_id,
        }),
        WatchItem::Event(e) => Update::Event(event(&e)),
    };
    pb::StreamProvisioningStatusResponse {
        update: Some(update),
    }
}

pub fn event(e: &Event) -> pb::Event {
    pb::Event {
        id: e.id,
        tenant_id: e.tenant_id.to_string(),
        kind: event_kind(e.kind) as i32,
        step: e.step.clone().unwrap_or_default(),
        state: tenant_state(e.state) as i32,
        message: e.message.clone(),
        create_time: Some(timestamp(e.create_time)),
        actor: e.actor.clone(),
        attempt: e.attempt.unwrap_or_default(),
    }
}

fn event_kind(k: EventKind) -> pb::EventKind {
    match k {
        EventKind::TenantCreated => pb::EventKind::TenantCreated,
        EventKind::TenantUpdated => pb::EventKind::TenantUpdated,
        EventKind::StateChanged => pb::EventKind::StateChanged,
        EventKind::StepStarted => pb::EventKind::StepStarted,
        EventKind::StepSucceeded => pb::EventKind::StepSucceeded,
        EventKind::StepRetrying => pb::EventKind::StepRetrying,
        EventKind::StepFailed => pb::EventKind::StepFailed,
        EventKind::StepWarning => pb::EventKind::StepWarning,
        EventKind::CompensationStarted => pb::EventKind::CompensationStarted,
        EventKind::CompensationSucceeded => pb::EventKind::CompensationSucceeded,
        EventKind::CompensationFailed => pb::EventKind::CompensationFailed,
        EventKind::CancelRequested => pb::EventKind::CancelRequested,
        EventKind::TenantDeleted => pb::EventKind::TenantDeleted,
        EventKind::UsageThresholdReached => pb::EventKind::UsageThresholdReached,
        EventKind::CredentialsFetched => pb::EventKind::CredentialsFetched,
        EventKind::DriftDetected => pb::EventKind::DriftDetected,
    }
}

/// A grace period in whole seconds; unset means the default.
pub fn grace_period(d: Option<prost_types::Duration>) -> Result<Option<i64>, Error> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(Error::invalid("grace_period", "must not be negative"))
        }
        Some(d) => Ok(Some(d.seconds)),
    }
}

pub fn deprovision_mode(value: i32) -> Result<DeprovisionMode, Error> {
    match pb::DeprovisionMode::try_from(value) {
        Ok(pb::DeprovisionMode::Unspecified | pb::DeprovisionMode::Archive) => {
            Ok(DeprovisionMode::Archive)
        }
        Ok(pb::DeprovisionMode::Purge) => Ok(DeprovisionMode::Purge),
        Err(_) => Err(Error::invalid(
            "mode",
            format!("{value} is not a DeprovisionMode"),
        )),
    }
}
