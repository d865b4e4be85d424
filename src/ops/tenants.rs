//! Tenant CRUD: create (idempotent per request id), get, list, update, delete.

use chrono::Utc;
use diesel_async::AsyncConnection;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Ops;
use crate::db::models::{NewTenantRow, json_map};
use crate::db::tenants::{LIVE_SLUG_CONSTRAINT, ListFilter, REQUEST_ID_CONSTRAINT};
use crate::db::{self, is_unique_violation};
use crate::domain::{
    Caller, EventKind, NewEvent, NewTenant, PageToken, Plan, Step, StepStatus, Tenant, TenantInput,
    TenantPatch, TenantState, etag_of, validate_list_filter, validate_page_size, validate_patch,
    validate_request_id,
};
use crate::error::{Error, Result};

/// Reads of the plan CreateTenant makes at most when other writers keep
/// changing it under the insert (each read is one round trip).
const PLAN_READS: usize = 3;

/// One page of ListTenants.
#[derive(Debug)]
pub struct ListPage {
    pub tenants: Vec<Tenant>,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl Ops {
    /// Validates, then writes the tenant, its steps, its first event and the
    /// outbox row of its first step in one transaction.
    pub async fn create_tenant(
        &self,
        caller: &Caller,
        input: TenantInput,
        request_id: &str,
        validate_only: bool,
    ) -> Result<Tenant> {
        let request_id =
            validate_request_id(request_id).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let new = NewTenant::validate(input).map_err(Error::InvalidArgument)?;
        let digest = new.digest();
        let mut conn = db::conn(&self.pool).await?;
        let no_plan = || {
            Error::invalid(
                "tenant.plan",
                format!("there is no plan named {:?}", new.plan),
            )
        };
        // A request id seen before is a replay, whatever became of its plan.
        let replayed =
            async |conn: &mut diesel_async::AsyncPgConnection| -> Result<Option<Tenant>> {
                match &request_id {
                    Some(request_id) => {
                        match db::tenants::find_by_request_id(conn, request_id).await? {
                            Some(existing) => replay(conn, existing, &digest).await.map(Some),
                            None => Ok(None),
                        }
                    }
                    None => Ok(None),
                }
            };
        let Some(mut plan) = self.current_plan(&mut conn, &new.plan, false).await? else {
            return replayed(&mut conn).await?.ok_or_else(no_plan);
        };
        let selector = serde_json::to_value(new.placement.pairs())
            .map_err(|e| Error::Internal(format!("a selector as JSON: {e}")))?;
        let placement = new.placement.to_string();
        if validate_only {
            if let Some(tenant) = replayed(&mut conn).await? {
                return Ok(tenant);
            }
            if db::tenants::slug_taken(&mut conn, &new.slug).await? {
                return Err(slug_taken(&new.slug));
            }
            let server = self.placement_for(&mut conn, &new.placement).await?;
            return Ok(preview(&new, &plan, server));
        }

        let id = Uuid::now_v7();
        for _ in 0..PLAN_READS {
            let row = NewTenantRow {
                id,
                slug: &new.slug,
                display_name: &new.display_name,
                admin_email: &new.admin_email,
                plan: &plan.name,
                plan_version: plan.version,
                labels: json_map(&new.labels),
                state: TenantState::Provisioning.as_str(),
                request_id: request_id.as_deref(),
                request_digest: request_id.as_ref().map(|_| digest.as_str()),
                placement: &placement,
                contract_owner: &new.contract_owner,
            };
            let message = format!(
                "tenant {} created with plan {} v{}",
                new.slug, plan.name, plan.version
            );
            let written = db::tenants::create(
                &mut conn,
                &row,
                &plan.steps,
                &selector,
                &message,
                &caller.subject,
            )
            .await;
            match written {
                Ok(Some(tenant)) => {
                    self.wakeup.work_committed();
                    tracing::debug!(tenant_id = %id, slug = %new.slug, plan = %plan.name, "tenant created");
                    return tenant.into_domain(db::tenants::planned_steps(id, &plan.steps));
                }
                // Nothing written: the request id is taken (a replay), no
                // server fits, or the cached plan version is no longer
                // current.
                Ok(None) => {
                    if let Some(tenant) = replayed(&mut conn).await? {
                        return Ok(tenant);
                    }
                    self.placement_for(&mut conn, &new.placement).await?;
                    plan = self
                        .current_plan(&mut conn, &new.plan, true)
                        .await?
                        .ok_or_else(no_plan)?;
                }
                Err(e)
                    if is_unique_violation(&e, REQUEST_ID_CONSTRAINT)
                        || is_unique_violation(&e, LIVE_SLUG_CONSTRAINT) =>
                {
                    // A concurrent call with the same request id may have
                    // won the race on the slug; that is a replay, not a
                    // conflict.
                    return replayed(&mut conn)
                        .await?
                        .ok_or_else(|| slug_taken(&new.slug));
                }
                // Deleted since it was read (see the plan_delete_guard migration).
                Err(e) if db::is_check_violation(&e, db::tenants::PLAN_LIVE_CONSTRAINT) => {
                    self.forget_plan(&new.plan);
                    return Err(no_plan());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(format!(
            "plan {} kept changing while the tenant was created; try again",
            new.plan
        )))
    }

    /// One live tenant with its steps.
    pub async fn get_tenant(&self, id: Uuid) -> Result<Tenant> {
        let mut conn = db::conn(&self.pool).await?;
        db::tenants::load(&mut conn, id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(id))
    }

    /// A page of live tenants in creation order.
    pub async fn list_tenants(
        &self,
        filter: ListFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListPage> {
        let limit = validate_page_size(page_size).map_err(|v| Error::InvalidArgument(vec![v]))?;
        validate_list_filter(filter.plan.as_deref(), &filter.labels)
            .map_err(Error::InvalidArgument)?;
        if let Some(server) = &filter.database_server {
            let mut out = Vec::new();
            crate::domain::check_plan_name("database_server", server, &mut out);
            if !out.is_empty() {
                return Err(Error::invalid(
                    "database_server",
                    "must match ^[a-z][a-z0-9-]{1,39}$",
                ));
            }
        }
        let digest = filter_digest(&filter);
        let token =
            PageToken::decode(page_token, &digest).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let mut conn = db::conn(&self.pool).await?;
        let mut rows =
            db::tenants::list(&mut conn, &filter, token.map(|t| t.after), limit + 1).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => PageToken {
                after: last.id,
                filter_digest: digest,
            }
            .encode(),
            _ => String::new(),
        };
        let tenants = db::tenants::with_steps(&mut conn, rows).await?;
        Ok(ListPage {
            tenants,
            next_page_token,
        })
    }

    /// Changes mutable fields, optionally only if the etag still matches.
    pub async fn update_tenant(
        &self,
        caller: &Caller,
        id: Uuid,
        patch: TenantPatch,
    ) -> Result<Tenant> {
        validate_patch(&patch).map_err(Error::InvalidArgument)?;
        let fields = patch.fields();
        if fields.is_empty() {
            return Err(Error::invalid("update_mask", "names no field to change"));
        }
        let mut conn = db::conn(&self.pool).await?;
        let tenant = conn
            .transaction(async |conn| {
                let row = db::tenants::lock(conn, id)
                    .await?
                    .ok_or_else(|| Error::tenant_not_found(id))?;
                check_etag(patch.expected_etag.as_deref(), row.revision)?;
                let state = db::models::parse_state(&row.state)?;
                let hold_only = fields == ["legal_hold"];
                if state == TenantState::Deprovisioned && !hold_only {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is DEPROVISIONED and can no longer be updated, except for its legal hold"
                    )));
                }
                db::tenants::apply_patch(conn, id, &patch).await?;
                let message = match &patch.legal_hold {
                    Some((true, reason)) => {
                        format!("updated {}; legal hold set: {reason}", fields.join(", "))
                    }
                    Some((false, _)) if row.legal_hold => {
                        // The purge job may announce a new hold again.
                        db::tenants::forget_output(conn, id, PURGE_HELD).await?;
                        format!("updated {}; legal hold lifted", fields.join(", "))
                    }
                    _ => format!("updated {}", fields.join(", ")),
                };
                db::events::append(
                    conn,
                    &NewEvent::about(id, EventKind::TenantUpdated, state, message, caller.subject.clone()),
                )
                .await?;
                db::tenants::load(conn, id)
                    .await?
                    .ok_or_else(|| Error::tenant_not_found(id))
            })
            .await?;
        self.wakeup.work_committed();
        Ok(tenant)
    }

    /// Removes a DEPROVISIONED, FAILED or CANCELLED tenant; its events stay.
    pub async fn delete_tenant(
        &self,
        caller: &Caller,
        id: Uuid,
        etag: Option<&str>,
    ) -> Result<Tenant> {
        let mut conn = db::conn(&self.pool).await?;
        let tenant = conn
            .transaction(async |conn| {
                let row = db::tenants::lock(conn, id).await?.ok_or_else(|| Error::tenant_not_found(id))?;
                check_etag(etag, row.revision)?;
                let state = db::models::parse_state(&row.state)?;
                if row.legal_hold {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is under legal hold ({}); lift the hold first",
                        row.legal_hold_reason
                    )));
                }
                if !state.is_deletable() {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is {state}; only DEPROVISIONED, FAILED or CANCELLED tenants can be deleted"
                    )));
                }
                let deleted = db::tenants::mark_deleted(conn, id).await?;
                let message = format!("tenant {} deleted", row.slug);
                let event =
                    NewEvent::about(id, EventKind::TenantDeleted, state, message, &caller.subject);
                db::events::append(conn, &event).await?;
                let mut tenants = db::tenants::with_steps(conn, vec![deleted]).await?;
                tenants.pop().ok_or_else(|| Error::Internal("deleted tenant not loaded".into()))
            })
            .await?;
        self.wakeup.work_committed();
        Ok(tenant)
    }
}

/// The output that records the purge job announced a legal hold kept it
/// from purging.
pub(super) const PURGE_HELD: &str = "purge_held";

/// The answer to a repeated request id: the same tenant if the parameters
/// match, an error if they do not.
async fn replay(
    conn: &mut diesel_async::AsyncPgConnection,
    existing: db::models::TenantRow,
    digest: &str,
) -> Result<Tenant> {
    if existing.request_digest.as_deref() != Some(digest) {
        return Err(Error::invalid(
            "request_id",
            "was already used for a CreateTenant call with different parameters; use a new request_id",
        ));
    }
    let mut tenants = db::tenants::with_steps(conn, vec![existing]).await?;
    tenants
        .pop()
        .ok_or_else(|| Error::Internal("replayed tenant not loaded".into()))
}

fn check_etag(expected: Option<&str>, revision: i64) -> Result<()> {
    match expected {
        Some(etag) if etag != etag_of(revision) => Err(Error::Aborted(
            "etag mismatch: the tenant changed since it was read; get it again and retry".into(),
        )),
        _ => Ok(()),
    }
}

fn slug_taken(slug: &str) -> Error {
    Error::AlreadyExists(format!("slug {slug:?} is already used by a live tenant"))
}

/// The tenant CreateTenant would create, for validate_only.
fn preview(new: &NewTenant, plan: &Plan, database_server: String) -> Tenant {
    let now = Utc::now();
    Tenant {
        id: Uuid::nil(),
        slug: new.slug.clone(),
        display_name: new.display_name.clone(),
        admin_email: new.admin_email.clone(),
        plan: plan.name.clone(),
        plan_version: plan.version,
        labels: new.labels.clone(),
        state: TenantState::Provisioning,
        state_reason: String::new(),
        cancel_requested: false,
        outputs: Default::default(),
        leftover_resources: Vec::new(),
        revision: 0,
        create_time: now,
        update_time: now,
        delete_time: None,
        purge_time: None,
        legal_hold: false,
        legal_hold_reason: String::new(),
        drift: Vec::new(),
        database_server,
        placement: new.placement.to_string(),
        contract_owner: new.contract_owner.clone(),
        steps: plan
            .steps
            .iter()
            .zip(0..)
            .map(|(s, position)| Step {
                position,
                name: s.name.clone(),
                status: StepStatus::Pending,
                critical: s.critical,
                attempts: 0,
                max_attempts: s.max_attempts,
                last_error: None,
                output: Default::default(),
                start_time: None,
                finish_time: None,
                retry_base_ms: s.retry_base_ms,
                retry_cap_ms: s.retry_cap_ms,
                timeout_ms: s.timeout_ms,
                webhook: s.webhook.clone(),
            })
            .collect(),
    }
}

fn filter_digest(filter: &ListFilter) -> String {
    let mut hasher = Sha256::new();
    hasher.update(
        filter
            .state
            .map(TenantState::as_str)
            .unwrap_or("")
            .as_bytes(),
    );
    hasher.update([0]);
    hasher.update(filter.plan.as_deref().unwrap_or("").as_bytes());
    for (key, value) in &filter.labels {
        hasher.update([0]);
        hasher.update(key.as_bytes());
        hasher.update([1]);
        hasher.update(value.as_bytes());
    }
    // Last, so that the tokens of operators' lists keep their digests.
    if let Some(tenant) = filter.tenant {
        hasher.update([2]);
        hasher.update(tenant.as_bytes());
    }
    if let Some(server) = &filter.database_server {
        hasher.update([3]);
        hasher.update(server.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}
