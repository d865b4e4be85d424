//! The way forward: a step succeeded, its outputs merge into the tenant's,
//! and the pipeline moves to its next step (kept leased to the worker when
//! it may go on), or ends ACTIVE (or DEPROVISIONED).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::rows::{delete_row, event, merge_outputs, requeue, set_step};
use super::*;
use crate::outbox::store;

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

    /// The next step that is not done yet, or ACTIVE. The next step stays
    /// leased to this worker, which runs it at once, when it may continue;
    /// otherwise it is due now for any dispatcher.
    pub(super) async fn advance(
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
            None if operation == Operation::Move => {
                delete_row(conn, claim).await?;
                let server = crate::db::moves::target_of(conn, claim.tenant_id)
                    .await?
                    .unwrap_or_else(|| locked.tenant.database_server.clone());
                self.note(|n| n.moved = true);
                self.settle(
                    conn,
                    TenantState::Active,
                    &format!("moved to database server {server}"),
                )
                .await
            }
            None if operation == Operation::Renew => {
                delete_row(conn, claim).await?;
                self.settle(conn, TenantState::Active, "certificate renewal finished")
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
    pub(super) async fn continue_with(
        &self,
        conn: &mut AsyncPgConnection,
        locked: &Locked,
        step: &str,
        outputs: serde_json::Value,
    ) -> Result<Claim> {
        let claim = self.claim;
        let (lease, keep) = store::lease_params(self.lease);
        let Token { lease_token } = diesel::sql_query(format!(
            "UPDATE outbox SET step = $2, attempt = 1, last_error = NULL, waiting_since = NULL, {}
             WHERE id = $1
             RETURNING lease_token",
            store::continue_lease_sql("$3", "$4")
        ))
        .bind::<BigInt, _>(claim.id)
        .bind::<Text, _>(step)
        .bind::<Double, _>(lease)
        .bind::<Double, _>(keep)
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
            database_server: locked.tenant.database_server.clone(),
            contract_owner: locked.tenant.contract_owner.clone(),
            waiting_since: None,
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
}

/// The fencing token a continuation draws.
#[derive(diesel::QueryableByName)]
struct Token {
    #[diesel(sql_type = BigInt)]
    lease_token: i64,
}
