//! Pure domain types: tenants, steps, events, plans, their state machine and
//! the validation of user input. Nothing here knows about gRPC or SQL.

pub mod api_key;
pub mod email;
mod lifecycle;
mod page;
pub mod placement;
mod plan;
pub mod settings;
mod tenant;
pub mod usage;
mod validate;
pub mod webhook;

pub use lifecycle::{
    MOVE_STEPS, RENEW_STEP, deprovision_steps, is_lifecycle_step, move_steps, renew_steps,
};
pub use page::PageToken;
pub use placement::Placement;
pub use plan::{
    DEFAULT_PLAN, InitialData, MeterLimit, OnLimit, Period, Plan, PlanInput, PlanStep, WebhookStep,
};
pub use tenant::{
    Drift, Event, EventKind, NewEvent, Step, StepStatus, Tenant, TenantPatch, TenantState, etag_of,
};
pub use validate::{
    DEFAULT_PAGE_SIZE, FieldViolation, MAX_PAGE_SIZE, NewTenant, TenantInput, check_labels,
    check_plan_name, validate_list_filter, validate_page_size, validate_patch, validate_request_id,
    validate_tenant_id,
};

/// Who asked for a change; recorded on every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The authenticated subject, or `anonymous` when auth is off.
    pub subject: String,
    /// Granted scopes; `None` when authentication is off (everything allowed).
    pub scopes: Option<std::collections::BTreeSet<crate::auth::Scope>>,
    /// The one tenant a tenant-scoped caller (a token with a `tenant_id`
    /// claim) may reach; `None` for operators.
    pub tenant: Option<uuid::Uuid>,
}

impl Caller {
    /// The caller when authentication is disabled.
    pub fn anonymous() -> Self {
        Self {
            subject: "anonymous".into(),
            scopes: None,
            tenant: None,
        }
    }

    /// An internal actor (the dispatcher, a scheduled job, the demo).
    pub fn system(subject: &str) -> Self {
        Self {
            subject: subject.into(),
            scopes: None,
            tenant: None,
        }
    }

    /// Whether the caller may see `tenant`: operators see every tenant, a
    /// tenant-scoped caller only its own.
    pub fn reaches(&self, tenant: uuid::Uuid) -> bool {
        self.tenant.is_none_or(|own| own == tenant)
    }

    /// Whether the caller holds `scope` (or a wider one).
    pub fn may(&self, scope: crate::auth::Scope) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|granted| granted.iter().any(|g| g.includes(scope)))
    }
}

/// The actor of events the control plane causes by itself.
pub const SYSTEM_ACTOR: &str = "system";
