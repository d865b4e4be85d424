//! What happens to a tenant when an attempt ends: success, failure, retry,
//! the saga of compensations, cancellation. Every function here runs inside
//! one transaction that first locks the tenant and its outbox row by the
//! claim's fencing token, so a stale worker (its lease expired, the row was
//! claimed again, even by this same process) changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

mod rows;

use self::rows::{
    bounded, delete_row, event, merge_outputs, requeue, retry_later, set_reason, set_state,
    set_step,
};
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
}

impl Transition<'_> {
    /// A provisioning step succeeded: record it, merge its outputs, and move
    /// on to the next step, to the saga if cancelled, or to ACTIVE.
    pub async fn step_succeeded(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        output: &BTreeMap<String, String>,
    ) -> Result<()> {
        let claim = self.claim;
        let state = locked.state()?;
        set_step(
            conn,
            claim.tenant_id,
            &claim.step,
            StepStatus::Succeeded,
            None,
            Some(output),
        )
        .await?;
        event(
            conn,
            claim,
            EventKind::StepSucceeded,
            state,
            succeeded_message(&claim.step, output),
        )
        .await?;
        if !output.is_empty() {
            merge_outputs(conn, claim.tenant_id, None, output).await?;
        }
        let position = locked.step(&claim.step)?.position;
        if locked.tenant.cancel_requested {
            // This step's effect now stands too: undo it first.
            let locked = locked.with_status(&claim.step, StepStatus::Succeeded);
            return self
                .start_saga(conn, &locked, position, StepStatus::Cancelled)
                .await;
        }
        let mut outputs = locked.tenant.outputs.clone();
        if let Some(map) = outputs.as_object_mut() {
            map.extend(output.iter().map(|(k, v)| (k.clone(), v.clone().into())));
        }
        self.advance(conn, locked, position, outputs).await
    }

    /// An attempt failed: retry after a backoff, or give up on the step
    /// (warning for a non-critical step, saga for a critical one).
    pub async fn step_failed(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        error: &StepError,
    ) -> Result<()> {
        let claim = self.claim;
        let state = locked.state()?;
        let step = locked.step(&claim.step)?;
        let message = bounded(error.message());
        if locked.tenant.cancel_requested {
            set_step(
                conn,
                claim.tenant_id,
                &claim.step,
                StepStatus::Cancelled,
                Some(&message),
                None,
            )
            .await?;
            return self
                .start_saga(conn, locked, step.position - 1, StepStatus::Cancelled)
                .await;
        }
        if claim.attempt < step.max_attempts && !error.permanent {
            diesel::update(tenant_steps::table.find((claim.tenant_id, step.position)))
                .set(tenant_steps::last_error.eq(&message))
                .execute(conn)
                .await?;
            return self
                .retry(conn, locked, error, &message, EventKind::StepRetrying)
                .await;
        }
        set_step(
            conn,
            claim.tenant_id,
            &claim.step,
            StepStatus::Failed,
            Some(&message),
            None,
        )
        .await?;
        let text = gave_up(&claim.step, claim.attempt, error, &message);
        if step.critical && claim.operation()? == Operation::Deprovision {
            // Nothing undoes a teardown: stop and say what is left.
            event(conn, claim, EventKind::StepFailed, state, text.clone()).await?;
            self.needs_attention(conn, locked, step.position, &text)
                .await
        } else if step.critical {
            event(conn, claim, EventKind::StepFailed, state, text.clone()).await?;
            set_reason(conn, claim.tenant_id, &text).await?;
            self.start_saga(conn, locked, step.position - 1, StepStatus::Failed)
                .await
        } else {
            event(
                conn,
                claim,
                EventKind::StepWarning,
                state,
                format!("{text}; not critical, continuing"),
            )
            .await?;
            self.advance(conn, locked, step.position, locked.tenant.outputs.clone())
                .await
        }
    }

    /// Cancellation seen before the step started: the step is CANCELLED and
    /// the saga undoes what came before it.
    pub async fn cancelled_before_step(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
    ) -> Result<()> {
        let claim = self.claim;
        let position = locked.step(&claim.step)?.position;
        set_step(
            conn,
            claim.tenant_id,
            &claim.step,
            StepStatus::Cancelled,
            None,
            None,
        )
        .await?;
        self.start_saga(conn, locked, position - 1, StepStatus::Cancelled)
            .await
    }

    /// A compensation succeeded: compensate the previous step, or finish.
    pub async fn compensation_succeeded(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        output: &BTreeMap<String, String>,
    ) -> Result<()> {
        let claim = self.claim;
        let state = locked.state()?;
        let position = locked.step(&claim.step)?.position;
        set_step(
            conn,
            claim.tenant_id,
            &claim.step,
            StepStatus::Compensated,
            None,
            None,
        )
        .await?;
        let message = if output.is_empty() {
            format!("{} undone", claim.step)
        } else {
            // What could not be undone stays on record, on the step, the
            // tenant and this event.
            merge_outputs(conn, claim.tenant_id, Some(&claim.step), output).await?;
            bounded(&format!(
                "{} compensated, recorded: {}",
                claim.step,
                listed(output)
            ))
        };
        event(
            conn,
            claim,
            EventKind::CompensationSucceeded,
            state,
            message,
        )
        .await?;
        self.next_compensation(conn, locked, position - 1).await
    }

    /// A compensation failed: retry it, or stop with NEEDS_ATTENTION and the
    /// list of what is left behind.
    pub async fn compensation_failed(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        error: &StepError,
    ) -> Result<()> {
        let claim = self.claim;
        let state = locked.state()?;
        let step = locked.step(&claim.step)?;
        let message = bounded(error.message());
        if claim.attempt < step.max_attempts && !error.permanent {
            return self
                .retry(conn, locked, error, &message, EventKind::CompensationFailed)
                .await;
        }
        set_step(
            conn,
            claim.tenant_id,
            &claim.step,
            StepStatus::Failed,
            Some(&message),
            None,
        )
        .await?;
        let text = format!(
            "undoing {}",
            gave_up(&claim.step, claim.attempt, error, &message)
        );
        event(
            conn,
            claim,
            EventKind::CompensationFailed,
            state,
            text.clone(),
        )
        .await?;
        self.needs_attention(conn, locked, step.position, &text)
            .await
    }

    /// Makes the row due again after a backoff (or the wait the other side
    /// asked for, if longer) and says so in an event of `kind`.
    async fn retry(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        error: &StepError,
        message: &str,
        kind: EventKind,
    ) -> Result<()> {
        let claim = self.claim;
        let step = locked.step(&claim.step)?;
        let backoff = self.backoff.for_step(step).delay(claim.attempt);
        let delay = error
            .retry_after
            .map_or(backoff, |asked| asked.max(backoff));
        retry_later(conn, claim, delay, message).await?;
        self.note(|n| n.retried = true);
        let what = if kind == EventKind::CompensationFailed {
            "undoing "
        } else {
            ""
        };
        let text = format!(
            "{what}{} attempt {}/{} failed: {message}; retrying in {} ms",
            claim.step,
            claim.attempt,
            step.max_attempts,
            delay.as_millis()
        );
        event(conn, claim, kind, locked.state()?, text).await
    }

    /// Gives up (the caller has marked the step FAILED): the tenant becomes NEEDS_ATTENTION, listing what the steps
    /// up to `position` of the claim's pipeline may have left behind.
    async fn needs_attention(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        position: i32,
        reason: &str,
    ) -> Result<()> {
        let claim = self.claim;
        let ctx = step_ctx(claim, self.role_prefix, self.tenant_db)?;
        let phase = phase_of(claim.operation()?);
        let mut leftovers = Vec::new();
        for s in locked
            .steps
            .iter()
            .filter(|s| s.phase == phase && s.position <= position)
            .rev()
        {
            let pending = s.position == position || s.status == StepStatus::Succeeded.as_str();
            if let Some(step) = self.registry.resolve(&s.name, s.webhook().as_ref())
                && pending
                && step.compensable()
            {
                leftovers.extend(step.resources(&ctx));
            }
        }
        if phase == DEPROVISION_PHASE {
            // A teardown that stopped leaves whatever it had not removed.
            leftovers = locked
                .steps
                .iter()
                .filter(|s| {
                    s.phase == PROVISION_PHASE && s.status == StepStatus::Succeeded.as_str()
                })
                .filter_map(|s| self.registry.resolve(&s.name, s.webhook().as_ref()))
                .flat_map(|step| step.resources(&ctx))
                .collect();
        }
        delete_row(conn, claim).await?;
        diesel::update(tenants::table.find(claim.tenant_id))
            .set((
                tenants::state.eq(TenantState::NeedsAttention.as_str()),
                tenants::state_reason.eq(reason),
                tenants::leftover_resources.eq(&leftovers),
                tenants::revision.eq(tenants::revision + 1),
                tenants::update_time.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        self.note(|n| n.settled = Some(TenantState::NeedsAttention));
        let message = format!("NEEDS_ATTENTION: left behind {}", leftovers.join(", "));
        event(
            conn,
            claim,
            EventKind::StateChanged,
            TenantState::NeedsAttention,
            message,
        )
        .await?;
        Ok(())
    }

    /// The next step that is not done yet, or ACTIVE. The next step stays
    /// leased to this worker, which runs it at once, when it may continue;
    /// otherwise it is due now for any dispatcher.
    async fn advance(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        after: i32,
        outputs: serde_json::Value,
    ) -> Result<()> {
        let claim = self.claim;
        let operation = claim.operation()?;
        let phase = phase_of(operation);
        let next = locked.steps.iter().find(|s| {
            s.phase == phase && s.position > after && s.status != StepStatus::Succeeded.as_str()
        });
        match next {
            Some(next) if self.may_continue => {
                let continued = self
                    .continue_with(conn, locked, &next.name, outputs)
                    .await?;
                if let Ok(mut slot) = self.continued.lock() {
                    *slot = Some(continued);
                }
                Ok(())
            }
            Some(next) => requeue(conn, claim, operation, &next.name).await,
            None if operation == Operation::Deprovision => {
                delete_row(conn, claim).await?;
                diesel::sql_query(
                    "UPDATE tenants SET purge_time = now() + make_interval(secs => coalesce(grace_period_secs, 0))
                     WHERE id = $1",
                )
                .bind::<diesel::sql_types::Uuid, _>(claim.tenant_id)
                .execute(conn)
                .await?;
                self.settle(conn, TenantState::Deprovisioned, "deprovisioning complete")
                    .await
            }
            None => {
                delete_row(conn, claim).await?;
                self.settle(conn, TenantState::Active, "provisioning complete")
                    .await
            }
        }
    }

    /// Moves the row to `step`, still leased to this worker under a new
    /// claim (a fresh fencing token, as a claim would draw), and records the
    /// step's start (the attempt counted now, as a claim would).
    async fn continue_with(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        step: &str,
        outputs: serde_json::Value,
    ) -> Result<Claim> {
        let claim = self.claim;
        let Token { lease_token } = diesel::sql_query(
            "UPDATE outbox SET step = $2, attempt = 1, last_error = NULL,
                 lease_token = nextval('outbox_lease_token_seq'),
                 locked_until = now() + make_interval(secs => $3), available_at = now() + make_interval(secs => $3)
             WHERE id = $1
             RETURNING lease_token",
        )
        .bind::<BigInt, _>(claim.id)
        .bind::<Text, _>(step)
        .bind::<Double, _>(self.lease.as_secs_f64())
        .get_result(conn)
        .await?;
        diesel::update(
            tenant_steps::table
                .filter(tenant_steps::tenant_id.eq(claim.tenant_id))
                .filter(tenant_steps::name.eq(step)),
        )
        .set((
            tenant_steps::status.eq(StepStatus::Running.as_str()),
            tenant_steps::attempts.eq(1),
            tenant_steps::start_time.eq(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
            >("coalesce(start_time, now())")),
        ))
        .execute(conn)
        .await?;
        let next = Claim {
            id: claim.id,
            lease_token,
            tenant_id: claim.tenant_id,
            operation: claim.operation.clone(),
            step: step.to_owned(),
            attempt: 1,
            max_attempts: locked.step(step)?.max_attempts,
            cancel_requested: false,
            slug: locked.tenant.slug.clone(),
            display_name: locked.tenant.display_name.clone(),
            admin_email: locked.tenant.admin_email.clone(),
            outputs,
            deprovision_mode: locked.tenant.deprovision_mode.clone(),
            plan: claim.plan.clone(),
            create_time: claim.create_time,
            retry_base_ms: locked.step(step)?.retry_base_ms,
            retry_cap_ms: locked.step(step)?.retry_cap_ms,
            timeout_ms: locked.step(step)?.timeout_ms,
            webhook_endpoint: locked.step(step)?.webhook_endpoint.clone(),
            webhook_compensate: locked.step(step)?.webhook_compensate,
            plan_initial_data: claim.plan_initial_data.clone(),
            plan_limits: claim.plan_limits.clone(),
        };
        let state = locked.state()?;
        event(
            conn,
            &next,
            EventKind::StepStarted,
            state,
            format!("running {step}, attempt 1"),
        )
        .await?;
        Ok(next)
    }

    /// Starts undoing steps `..= from` in reverse. `outcome` is the final
    /// state's reason: FAILED or CANCELLED.
    async fn start_saga(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        from: i32,
        outcome: StepStatus,
    ) -> Result<()> {
        if outcome == StepStatus::Cancelled {
            // Steps that never ran will not run.
            diesel::update(
                tenant_steps::table
                    .filter(tenant_steps::tenant_id.eq(self.claim.tenant_id))
                    .filter(tenant_steps::status.eq(StepStatus::Pending.as_str())),
            )
            .set(tenant_steps::status.eq(StepStatus::Cancelled.as_str()))
            .execute(conn)
            .await?;
        }
        self.next_compensation(conn, locked, from).await
    }

    /// Queues the compensation of the last succeeded, compensable step at or
    /// before `from`; with none left, the tenant is FAILED or CANCELLED.
    async fn next_compensation(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        from: i32,
    ) -> Result<()> {
        let claim = self.claim;
        let target = locked.steps.iter().rev().find(|s| {
            s.phase == PROVISION_PHASE
                && s.position <= from
                && s.status == StepStatus::Succeeded.as_str()
                && self
                    .registry
                    .resolve(&s.name, s.webhook().as_ref())
                    .is_some_and(|step| step.compensable())
        });
        if let Some(step) = target {
            return requeue(conn, claim, Operation::Compensate, &step.name).await;
        }
        delete_row(conn, claim).await?;
        if locked.tenant.cancel_requested {
            self.settle(
                conn,
                TenantState::Cancelled,
                "cancelled; compensations done",
            )
            .await
        } else {
            self.settle(conn, TenantState::Failed, "failed; compensations done")
                .await
        }
    }

    /// Ends the pipeline in `state`.
    async fn settle(
        &self,
        conn: &mut AsyncPgConnection,
        state: TenantState,
        message: &str,
    ) -> Result<()> {
        set_state(conn, self.claim, state, message).await?;
        self.note(|n| n.settled = Some(state));
        Ok(())
    }

    fn note(&self, f: impl FnOnce(&mut Notes)) {
        if let Ok(mut notes) = self.notes.lock() {
            f(&mut notes);
        }
    }
}

/// The fencing token a continuation draws.
#[derive(diesel::QueryableByName)]
struct Token {
    #[diesel(sql_type = BigInt)]
    lease_token: i64,
}

/// `tenant_steps.phase` of provisioning steps (and their compensations).
pub const PROVISION_PHASE: &str = "PROVISION";
/// `tenant_steps.phase` of deprovisioning steps.
pub const DEPROVISION_PHASE: &str = "DEPROVISION";

fn phase_of(operation: Operation) -> &'static str {
    match operation {
        Operation::Deprovision => DEPROVISION_PHASE,
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

/// The message of a step that ran out of attempts, or met a failure no
/// attempt can get past.
fn gave_up(step: &str, attempt: i32, error: &StepError, message: &str) -> String {
    if error.permanent {
        format!("{step} failed for good at attempt {attempt}: {message}")
    } else {
        format!("{step} failed after {attempt} attempts: {message}")
    }
}
