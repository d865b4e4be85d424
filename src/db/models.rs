//! Row types and their conversion to domain types.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{events, tenant_steps, tenants};
use crate::domain::{Step, StepStatus, Tenant, TenantState};
use crate::error::{Error, Result};

/// A row of `tenants`.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = tenants, check_for_backend(diesel::pg::Pg))]
pub struct TenantRow {
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub admin_email: String,
    pub plan: String,
    pub plan_version: i32,
    pub labels: serde_json::Value,
    pub state: String,
    pub state_reason: String,
    pub cancel_requested: bool,
    pub outputs: serde_json::Value,
    pub leftover_resources: Vec<String>,
    pub request_id: Option<String>,
    pub request_digest: Option<String>,
    pub revision: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub deprovision_mode: Option<String>,
    pub grace_period_secs: Option<i64>,
    /// While set, nothing purges or deletes the tenant's data.
    pub legal_hold: bool,
    pub legal_hold_reason: String,
    /// The server that holds its data.
    pub database_server: String,
    /// The label selector it was created with.
    pub placement: String,
    /// The owner its Soroban contract records; empty: the deployer.
    pub contract_owner: String,
}

impl TenantRow {
    /// The domain tenant, with `steps` (already in order) attached.
    pub fn into_domain(self, steps: Vec<StepRow>) -> Result<Tenant> {
        self.into_domain_with(steps, Vec::new())
    }

    /// The domain tenant with its steps and its drift.
    pub fn into_domain_with(
        self,
        steps: Vec<StepRow>,
        drift: Vec<crate::domain::Drift>,
    ) -> Result<Tenant> {
        Ok(Tenant {
            drift,
            id: self.id,
            state: parse_state(&self.state)?,
            labels: string_map(self.labels)?,
            outputs: string_map(self.outputs)?,
            steps: steps
                .into_iter()
                .map(StepRow::into_domain)
                .collect::<Result<_>>()?,
            slug: self.slug,
            display_name: self.display_name,
            admin_email: self.admin_email,
            plan: self.plan,
            plan_version: self.plan_version,
            state_reason: self.state_reason,
            cancel_requested: self.cancel_requested,
            leftover_resources: self.leftover_resources,
            revision: self.revision,
            create_time: self.create_time,
            update_time: self.update_time,
            delete_time: self.delete_time,
            purge_time: self.purge_time,
            legal_hold: self.legal_hold,
            legal_hold_reason: self.legal_hold_reason,
            database_server: self.database_server,
            placement: self.placement,
            contract_owner: self.contract_owner,
        })
    }
}

/// A new row of `tenants`.
#[derive(Debug, Insertable)]
#[diesel(table_name = tenants)]
pub struct NewTenantRow<'a> {
    pub id: Uuid,
    pub slug: &'a str,
    pub display_name: &'a str,
    pub admin_email: &'a str,
    pub plan: &'a str,
    pub plan_version: i32,
    pub labels: serde_json::Value,
    pub state: &'static str,
    pub request_id: Option<&'a str>,
    pub request_digest: Option<&'a str>,
    pub placement: &'a str,
    pub contract_owner: &'a str,
}

/// A row of `tenant_steps`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tenant_steps, check_for_backend(diesel::pg::Pg))]
pub struct StepRow {
    pub tenant_id: Uuid,
    pub position: i32,
    pub name: String,
    pub critical: bool,
    pub max_attempts: i32,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub output: serde_json::Value,
    pub start_time: Option<DateTime<Utc>>,
    pub finish_time: Option<DateTime<Utc>>,
    /// PROVISION or DEPROVISION: which pipeline the step belongs to.
    pub phase: String,
    /// The plan's per-step settings; `None`: the server's.
    pub retry_base_ms: Option<i32>,
    pub retry_cap_ms: Option<i32>,
    pub timeout_ms: Option<i32>,
    /// A webhook step's endpoint; `None` for built-in steps.
    pub webhook_endpoint: Option<String>,
    /// Whether the saga calls the webhook endpoint to undo the step.
    pub webhook_compensate: bool,
}

impl StepRow {
    /// The webhook a step calls, if it is a webhook step.
    pub fn webhook(&self) -> Option<crate::domain::WebhookStep> {
        self.webhook_endpoint
            .as_ref()
            .map(|endpoint| crate::domain::WebhookStep {
                endpoint: endpoint.clone(),
                compensate: self.webhook_compensate,
            })
    }

    pub fn into_domain(self) -> Result<Step> {
        let webhook = self.webhook();
        Ok(Step {
            status: StepStatus::from_str(&self.status)
                .map_err(|_| Error::Internal(format!("unknown step status {:?}", self.status)))?,
            output: string_map(self.output)?,
            position: self.position,
            name: self.name,
            critical: self.critical,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            last_error: self.last_error,
            start_time: self.start_time,
            finish_time: self.finish_time,
            retry_base_ms: self.retry_base_ms,
            retry_cap_ms: self.retry_cap_ms,
            timeout_ms: self.timeout_ms,
            webhook,
        })
    }
}

/// A row of `events`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: i64,
    pub tenant_id: Uuid,
    pub kind: String,
    pub step: Option<String>,
    pub attempt: Option<i32>,
    pub state: String,
    pub message: String,
    pub actor: String,
    pub create_time: DateTime<Utc>,
}

impl EventRow {
    pub fn into_domain(self) -> Result<crate::domain::Event> {
        Ok(crate::domain::Event {
            kind: self
                .kind
                .parse()
                .map_err(|_| Error::Internal(format!("unknown event kind {:?}", self.kind)))?,
            state: parse_state(&self.state)?,
            id: self.id,
            tenant_id: self.tenant_id,
            step: self.step,
            attempt: self.attempt,
            message: self.message,
            actor: self.actor,
            create_time: self.create_time,
        })
    }
}

pub fn parse_state(s: &str) -> Result<TenantState> {
    TenantState::from_str(s).map_err(|_| Error::Internal(format!("unknown tenant state {s:?}")))
}

/// A JSON object of strings, as labels and outputs are stored.
pub fn string_map(value: serde_json::Value) -> Result<BTreeMap<String, String>> {
    serde_json::from_value(value).map_err(|e| Error::Internal(format!("malformed string map: {e}")))
}

/// The stored form of a string map.
pub fn json_map(map: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect(),
    )
}
