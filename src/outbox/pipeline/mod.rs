//! What happens to a tenant when an attempt ends: success, failure, retry,
//! the saga of compensations, cancellation. Every function here runs inside
//! one transaction that first locks the tenant and its outbox row by the
//! claim's fencing token, so a stale worker (its lease expired, the row was
//! claimed again, even by this same process) changes nothing.
//!
//! This file holds the lock and what a transition shares; [`forward`] is
//! the way on after a success, [`saga`] the way back after a failure, and
//! `rows` the row writes both use.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

mod forward;
mod rows;
mod saga;

use self::rows::{bounded, set_state};
use super::store::Claim;
use crate::db::models::{StepRow, TenantRow};
use crate::db::outbox::Operation;
use crate::db::schema::{outbox, tenant_steps, tenants};
use crate::db::{self};
use crate::domain::{EventKind, StepStatus, TenantState};
use crate::error::{Error, Result};
use crate::steps::{Registry, StepCtx, StepError, TenantNames};

/// Errors inside a completion transaction: a database error, or the step's
/// own database work failing (which rolls the transaction back and is then
/// recorded as a failed attempt).
#[derive(Debug)]
pub enum TxError {
    Db(Error),
    Step(StepError),
}

impl TxError {
    /// Outside a step's own transaction a step error is unexpected.
    pub fn into_error(self) -> Error {
        match self {
            TxError::Db(e) => e,
            TxError::Step(e) => Error::Internal(e.to_string()),
        }
    }
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e.into())
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Db(e)
    }
}

/// How a completion transaction ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed.
    Applied,
    /// The claim was stale: the row was claimed again; nothing changed.
    Stale,
}

/// The tenant, locked, with its steps in order.
#[derive(Clone)]
pub struct Locked {
    pub tenant: TenantRow,
    pub steps: Vec<StepRow>,
}

impl Locked {
    fn state(&self) -> Result<TenantState> {
        db::models::parse_state(&self.tenant.state)
    }

    /// A copy that sees `name` in `status`, for decisions taken after this
    /// transaction changed it.
    fn with_status(&self, name: &str, status: StepStatus) -> Locked {
        let mut copy = self.clone();
        for step in copy.steps.iter_mut().filter(|s| s.name == name) {
            step.status = status.as_str().to_owned();
        }
        copy
    }

    /// The phase of the pipeline `claim` is in: its step's (a compensation
    /// undoes a step of the phase it belongs to).
    fn phase(&self, claim: &Claim) -> Result<&str> {
        Ok(self.step(&claim.step)?.phase.as_str())
    }

    fn step(&self, name: &str) -> Result<&StepRow> {
        self.steps
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::Internal(format!("tenant {} has no step {name}", self.tenant.id)))
    }
}

/// Locks the tenant and its outbox row in one statement, which finds them
/// only while `claim` is the row's current claim (its fencing token);
/// `None` if the claim is stale.
pub async fn lock(conn: &mut AsyncPgConnection, claim: &Claim) -> Result<Option<Locked>> {
    let tenant: Option<TenantRow> = tenants::table
        .inner_join(outbox::table.on(outbox::tenant_id.eq(tenants::id)))
        .filter(outbox::id.eq(claim.id))
        .filter(outbox::lease_token.eq(claim.lease_token))
        .select(TenantRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some(tenant) = tenant else {
        return Ok(None);
    };
    let steps = tenant_steps::table
        .filter(tenant_steps::tenant_id.eq(claim.tenant_id))
        .order(tenant_steps::position)
        .select(StepRow::as_select())
        .load(conn)
        .await?;
    Ok(Some(Locked { tenant, steps }))
}

/// The context a step runs with, from what the claim read.
pub fn step_ctx(claim: &Claim, role_prefix: &str, tenant_db: &db::DbPool) -> Result<StepCtx> {
    let names = TenantNames::derive(&claim.slug, role_prefix).map_err(Error::Internal)?;
    Ok(StepCtx {
        tenant_id: claim.tenant_id,
        outputs: db::models::string_map(claim.outputs.clone())?,
        slug: claim.slug.clone(),
        display_name: claim.display_name.clone(),
        admin_email: claim.admin_email.clone(),
        attempt: claim.attempt,
        names,
        tenant_db: tenant_db.clone(),
        database_server: claim.database_server.clone(),
        contract_owner: claim.contract_owner.clone(),
        purge: claim.deprovision_mode.as_deref() == Some("PURGE"),
        extra_roles: match claim.plan_initial_data.get("extra_roles") {
            Some(roles) => serde_json::from_value(roles.clone()).map_err(|e| {
                Error::Internal(format!(
                    "plan {} has malformed extra roles: {e}",
                    claim.plan
                ))
            })?,
            None => Vec::new(),
        },
        limits: serde_json::from_value(claim.plan_limits.clone()).map_err(|e| {
            Error::Internal(format!("plan {} has malformed limits: {e}", claim.plan))
        })?,
    })
}

/// What a pipeline transition needs besides the connection.
pub struct Transition<'a> {
    pub claim: &'a Claim,
    pub role_prefix: &'a str,
    pub tenant_db: &'a db::DbPool,
    pub registry: &'a Registry,
    pub backoff: super::Backoff,
    pub lease: Duration,
    /// Whether the worker may go straight on with the tenant's next step,
    /// keeping its lease (not while shutting down).
    pub may_continue: bool,
    /// The next step, leased to this worker, when it may continue.
    pub continued: std::sync::Mutex<Option<Claim>>,
    /// What the transition did, for the metrics once it commits.
    pub notes: std::sync::Mutex<Notes>,
}

/// What a transition did besides recording the attempt.
#[derive(Debug, Default)]
pub struct Notes {
    /// The attempt failed and runs again after a backoff.
    pub retried: bool,
    /// The pipeline ended, leaving the tenant in this state.
    pub settled: Option<TenantState>,
    /// It was a move (or its rollback), which says nothing of the time
    /// a tenant takes to become ACTIVE.
    pub moved: bool,
}

impl Transition<'_> {
    /// Ends the pipeline in `state`.
    pub(super) async fn settle(
        &self,
        conn: &mut AsyncPgConnection,
        state: TenantState,
        message: &str,
    ) -> Result<()> {
        set_state(conn, self.claim, state, message).await?;
        self.note(|n| n.settled = Some(state));
        Ok(())
    }

    pub(super) fn note(&self, f: impl FnOnce(&mut Notes)) {
        if let Ok(mut notes) = self.notes.lock() {
            f(&mut notes);
        }
    }
}

/// `tenant_steps.phase` of provisioning steps (and their compensations).
pub const PROVISION_PHASE: &str = "PROVISION";
/// `tenant_steps.phase` of deprovisioning steps.
pub const DEPROVISION_PHASE: &str = "DEPROVISION";
/// `tenant_steps.phase` of the steps that move a tenant's data to another
/// server (and of their compensations).
pub const MOVE_PHASE: &str = "MOVE";
/// `tenant_steps.phase` of the certificate renewal's step.
pub const RENEW_PHASE: &str = "RENEW";

fn phase_of(operation: Operation) -> &'static str {
    match operation {
        Operation::Deprovision => DEPROVISION_PHASE,
        Operation::Move => MOVE_PHASE,
        Operation::Renew => RENEW_PHASE,
        Operation::Provision | Operation::Compensate => PROVISION_PHASE,
    }
}

/// `deploy_contract succeeded: contract_address=C...`: what a step produced
/// goes into its event, so a watcher sees it as it happens.
pub(crate) fn succeeded_message(step: &str, output: &BTreeMap<String, String>) -> String {
    if output.is_empty() {
        return format!("{step} succeeded");
    }
    bounded(&format!("{step} succeeded: {}", listed(output)))
}

/// `key=value, key=value`, for event messages.
fn listed(output: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = output.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(", ")
}
