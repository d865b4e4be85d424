//! Tenants, their steps and events, and the tenant state machine.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use strum::{EnumString, IntoStaticStr};
use uuid::Uuid;

/// Where a tenant is in its lifecycle. Stored as its SCREAMING_SNAKE name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumString,
    IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum TenantState {
    Provisioning,
    Active,
    Suspended,
    Failed,
    Cancelled,
    Deprovisioning,
    Deprovisioned,
    NeedsAttention,
}

impl TenantState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the state machine allows `self -> to`.
    pub fn can_become(self, to: TenantState) -> bool {
        use TenantState::*;
        matches!(
            (self, to),
            (Provisioning, Active | Failed | Cancelled | NeedsAttention)
                | (Active, Suspended | Deprovisioning)
                | (Suspended, Active | Deprovisioning)
                | (Failed, Provisioning | Deprovisioning)
                | (Deprovisioning, Deprovisioned | NeedsAttention)
                | (
                    NeedsAttention,
                    Provisioning | Deprovisioning | Failed | Cancelled | Deprovisioned
                )
        )
    }

    /// States from which DeleteTenant may remove a tenant: nothing of it is
    /// running and nothing of it is in service.
    pub fn is_deletable(self) -> bool {
        matches!(
            self,
            TenantState::Deprovisioned | TenantState::Failed | TenantState::Cancelled
        )
    }

    /// States in which no pipeline runs and none will start by itself; a
    /// status stream ends here unless it follows.
    pub fn is_terminal(self) -> bool {
        use TenantState::*;
        matches!(
            self,
            Active | Suspended | Failed | Cancelled | Deprovisioned | NeedsAttention
        )
    }
}

/// The status of one step of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumString, IntoStaticStr, strum::Display)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Compensating,
    Compensated,
    Cancelled,
}

impl StepStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumString, IntoStaticStr, strum::Display)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    TenantCreated,
    TenantUpdated,
    StateChanged,
    StepStarted,
    StepSucceeded,
    StepRetrying,
    StepFailed,
    StepWarning,
    CompensationStarted,
    CompensationSucceeded,
    CompensationFailed,
    CancelRequested,
    TenantDeleted,
    UsageThresholdReached,
    CredentialsFetched,
    DriftDetected,
}

impl EventKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A difference between what a tenant's steps produced and what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// What differs, e.g. `table tenant_acme.users`.
    pub resource: String,
    pub expected: String,
    pub found: String,
    /// When the reconciler first saw it.
    pub since: DateTime<Utc>,
}

/// A tenant with its steps, as the control plane knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub admin_email: String,
    pub plan: String,
    pub plan_version: i32,
    pub labels: BTreeMap<String, String>,
    pub state: TenantState,
    pub state_reason: String,
    pub cancel_requested: bool,
    pub outputs: BTreeMap<String, String>,
    pub leftover_resources: Vec<String>,
    /// Bumped by every change; the etag is derived from it.
    pub revision: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    /// While set, nothing purges or deletes the tenant's data.
    pub legal_hold: bool,
    pub legal_hold_reason: String,
    /// What the reconciler found different from what the steps produced.
    pub drift: Vec<Drift>,
    /// The database server that holds its data.
    pub database_server: String,
    /// The label selector it was created with.
    pub placement: String,
    /// The owner its Soroban contract records (`G...` or `C...`); empty:
    /// the deployer.
    pub contract_owner: String,
    /// In the order they run.
    pub steps: Vec<Step>,
}

impl Tenant {
    /// The opaque etag clients send back for optimistic concurrency.
    pub fn etag(&self) -> String {
        etag_of(self.revision)
    }
}

/// The etag of a revision: quoted, as in HTTP, so it is visibly opaque.
pub fn etag_of(revision: i64) -> String {
    format!("\"{revision}\"")
}

/// One step of a tenant's pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub position: i32,
    pub name: String,
    pub status: StepStatus,
    pub critical: bool,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub output: BTreeMap<String, String>,
    pub start_time: Option<DateTime<Utc>>,
    pub finish_time: Option<DateTime<Utc>>,
    /// The plan's per-step settings; `None`: the server's.
    pub retry_base_ms: Option<i32>,
    pub retry_cap_ms: Option<i32>,
    pub timeout_ms: Option<i32>,
    /// A webhook step's endpoint and whether the saga calls it to undo.
    pub webhook: Option<super::WebhookStep>,
}

/// One entry of a tenant's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Global, increasing; within one tenant, ids commit in order.
    pub id: i64,
    pub tenant_id: Uuid,
    pub kind: EventKind,
    pub step: Option<String>,
    pub attempt: Option<i32>,
    /// The tenant's state after the event.
    pub state: TenantState,
    pub message: String,
    pub actor: String,
    pub create_time: DateTime<Utc>,
}

/// An event about to be appended to a tenant's log.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub tenant_id: Uuid,
    pub kind: EventKind,
    pub step: Option<String>,
    pub attempt: Option<i32>,
    /// The tenant's state after the event.
    pub state: TenantState,
    pub message: String,
    pub actor: String,
}

impl NewEvent {
    /// An event about the tenant as a whole (no step, no attempt).
    pub fn about(
        tenant_id: Uuid,
        kind: EventKind,
        state: TenantState,
        message: impl Into<String>,
        actor: impl Into<String>,
    ) -> Self {
        NewEvent {
            tenant_id,
            kind,
            step: None,
            attempt: None,
            state,
            message: message.into(),
            actor: actor.into(),
        }
    }
}

/// A validated change to a tenant's mutable fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantPatch {
    pub display_name: Option<String>,
    pub admin_email: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    /// A legal hold set or cleared, with its reason.
    pub legal_hold: Option<(bool, String)>,
    /// The etag the caller last saw, if it wants the update to be conditional.
    pub expected_etag: Option<String>,
}

impl TenantPatch {
    /// Field names changed by this patch, for the event message.
    pub fn fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.display_name.is_some() {
            fields.push("display_name");
        }
        if self.admin_email.is_some() {
            fields.push("admin_email");
        }
        if self.labels.is_some() {
            fields.push("labels");
        }
        if self.legal_hold.is_some() {
            fields.push("legal_hold");
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn states_round_trip_through_their_stored_names() {
        for s in [
            TenantState::Provisioning,
            TenantState::NeedsAttention,
            TenantState::Deprovisioned,
        ] {
            assert_eq!(TenantState::from_str(s.as_str()).unwrap(), s);
        }
        assert_eq!(TenantState::NeedsAttention.as_str(), "NEEDS_ATTENTION");
        assert!(TenantState::from_str("active").is_err());
    }

    #[test]
    fn state_machine_forbids_skipping_deprovisioning() {
        assert!(TenantState::Active.can_become(TenantState::Deprovisioning));
        assert!(!TenantState::Active.can_become(TenantState::Deprovisioned));
        assert!(!TenantState::Cancelled.can_become(TenantState::Active));
        assert!(TenantState::Failed.can_become(TenantState::Provisioning));
    }
}
