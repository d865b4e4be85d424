//! Queries on `tenants` and `tenant_steps`.

use std::collections::{BTreeMap, HashMap};

use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Integer, Jsonb, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::models::{NewTenantRow, StepRow, TenantRow, json_map};
use super::prepared::prepared_statement;
use super::schema::{tenant_steps, tenants};
use crate::domain::{PlanStep, StepStatus, Tenant, TenantPatch, TenantState};
use crate::error::Result;

/// Unique index that keeps live slugs unique.
pub const LIVE_SLUG_CONSTRAINT: &str = "tenants_live_slug_key";
/// What the insert trigger raises when the tenant's plan was deleted.
pub const PLAN_LIVE_CONSTRAINT: &str = "tenants_plan_live";
/// Unique constraint on AIP-155 request ids.
pub const REQUEST_ID_CONSTRAINT: &str = "tenants_request_id_key";

/// The server a tenant with a selector (`{bind}`, a JSON object) is placed
/// on: not draining, reachable at its last check, under `max_tenants`, its
/// labels (with `region`, and `server` for its name) matching every pair;
/// of those the fewest tenants per unit of weight, ties by name. No row
/// when none fits.
macro_rules! place_sql {
    () => {
        "
    SELECT s.name FROM database_servers s
    CROSS JOIN LATERAL (SELECT coalesce(sum(c.tenants), 0) AS n
                        FROM server_tenants c WHERE c.server = s.name) c
    WHERE s.deregister_time IS NULL AND NOT s.draining AND s.reachable
      AND (s.max_tenants = 0 OR c.n < s.max_tenants)
      AND jsonb_strip_nulls(jsonb_build_object('region', nullif(s.region, ''))) || s.labels
          || jsonb_build_object('server', s.name) @> {bind}::jsonb
    ORDER BY c.n::float8 / s.weight, s.name
    LIMIT 1
"
    };
}

/// What CreateTenant writes, in one statement (one round trip, its own
/// transaction): the tenant on the database server it is placed on, its
/// planned steps (PENDING), its TENANT_CREATED event and the outbox row of
/// its first step.
///
/// The server is the one `place_sql!` picks for `selector`. Written only
/// while `row.plan_version` is still the plan's current version and the
/// plan is live, some server fits, and no other tenant already holds
/// `row.request_id` (that one is a replay). `None` in each case; the caller
/// tells them apart. A taken slug is a unique violation, as before.
pub async fn create(
    conn: &mut AsyncPgConnection,
    row: &NewTenantRow<'_>,
    steps: &[PlanStep],
    selector: &serde_json::Value,
    message: &str,
    actor: &str,
) -> QueryResult<Option<TenantRow>> {
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let critical: Vec<bool> = steps.iter().map(|s| s.critical).collect();
    let attempts: Vec<i32> = steps.iter().map(|s| s.max_attempts).collect();
    let base: Vec<Option<i32>> = steps.iter().map(|s| s.retry_base_ms).collect();
    let cap: Vec<Option<i32>> = steps.iter().map(|s| s.retry_cap_ms).collect();
    let timeout: Vec<Option<i32>> = steps.iter().map(|s| s.timeout_ms).collect();
    let endpoint: Vec<Option<&str>> = steps
        .iter()
        .map(|s| s.webhook.as_ref().map(|w| w.endpoint.as_str()))
        .collect();
    let compensate: Vec<bool> = steps
        .iter()
        .map(|s| s.webhook.as_ref().is_some_and(|w| w.compensate))
        .collect();
    CreateStatement {
        id: row.id,
        slug: row.slug,
        display_name: row.display_name,
        admin_email: row.admin_email,
        plan: row.plan,
        plan_version: row.plan_version,
        labels: &row.labels,
        request_id: row.request_id,
        request_digest: row.request_digest,
        placement: row.placement,
        contract_owner: row.contract_owner,
        selector,
        names: &names,
        critical: &critical,
        attempts: &attempts,
        base: &base,
        cap: &cap,
        timeout: &timeout,
        endpoint: &endpoint,
        compensate: &compensate,
        message,
        actor,
    }
    .get_result(conn)
    .await
    .optional()
}

prepared_statement! {
    struct CreateStatement<'a> {
        id: Uuid,
        slug: &'a str,
        display_name: &'a str,
        admin_email: &'a str,
        plan: &'a str,
        plan_version: i32,
        labels: &'a serde_json::Value,
        request_id: Option<&'a str>,
        request_digest: Option<&'a str>,
        placement: &'a str,
        contract_owner: &'a str,
        selector: &'a serde_json::Value,
        names: &'a [&'a str],
        critical: &'a [bool],
        attempts: &'a [i32],
        base: &'a [Option<i32>],
        cap: &'a [Option<i32>],
        timeout: &'a [Option<i32>],
        endpoint: &'a [Option<&'a str>],
        compensate: &'a [bool],
        message: &'a str,
        actor: &'a str,
    }
    sql = CREATE_SQL;
    binds = [
        plan: Text,
        plan_version: Integer,
        selector: Jsonb,
        id: SqlUuid,
        slug: Text,
        display_name: Text,
        admin_email: Text,
        labels: Jsonb,
        request_id: Nullable<Text>,
        request_digest: Nullable<Text>,
        placement: Text,
        contract_owner: Text,
        names: Array<Text>,
        critical: Array<Bool>,
        attempts: Array<Integer>,
        base: Array<Nullable<Integer>>,
        cap: Array<Nullable<Integer>>,
        timeout: Array<Nullable<Integer>>,
        endpoint: Array<Nullable<Text>>,
        compensate: Array<Bool>,
        message: Text,
        actor: Text,
    ];
}

/// [`create`]'s statement; its parameters are [`CreateStatement`]'s binds,
/// in the order they appear in the text.
pub(crate) const CREATE_SQL: &str = concat!(
    "
WITH current_plan AS (
    SELECT name, version FROM plans
    WHERE name = {bind} AND version = {bind} AND delete_time IS NULL
), placed AS (",
    place_sql!(),
    "), tenant AS (
    INSERT INTO tenants (id, slug, display_name, admin_email, plan, plan_version, labels,
                         state, request_id, request_digest, placement, contract_owner,
                         database_server)
    SELECT {bind}::uuid, {bind}::text, {bind}::text, {bind}::text, p.name, p.version, {bind}::jsonb,
           'PROVISIONING', {bind}::text, {bind}::text, {bind}::text, {bind}::text, s.name
    FROM current_plan p, placed s
    ON CONFLICT (request_id) DO NOTHING
    RETURNING *
), steps AS (
    INSERT INTO tenant_steps (tenant_id, position, name, critical, max_attempts, status,
                              phase, retry_base_ms, retry_cap_ms, timeout_ms,
                              webhook_endpoint, webhook_compensate)
    SELECT t.id, s.n - 1, s.name, s.critical, s.max_attempts, 'PENDING', 'PROVISION',
           s.base, s.cap, s.timeout, s.endpoint, s.compensate
    FROM tenant t,
         unnest({bind}::text[], {bind}::bool[], {bind}::int[], {bind}::int[], {bind}::int[], {bind}::int[],
                {bind}::text[], {bind}::bool[])
             WITH ORDINALITY AS s(name, critical, max_attempts, base, cap, timeout,
                                  endpoint, compensate, n)
    RETURNING tenant_id, position, name
), logged AS (
    INSERT INTO events (tenant_id, kind, state, message, actor)
    SELECT t.id, 'TENANT_CREATED', 'PROVISIONING', {bind}, {bind} FROM tenant t
), queued AS (
    INSERT INTO outbox (tenant_id, operation, step)
    SELECT s.tenant_id, 'PROVISION', s.name FROM steps s WHERE s.position = 0
)
SELECT * FROM tenant"
);

/// Appends a lifecycle pipeline's steps (PENDING, in `phase`) after the
/// tenant's last step.
pub async fn append_steps(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    steps: &[PlanStep],
    phase: &str,
) -> QueryResult<()> {
    let last: Option<i32> = tenant_steps::table
        .filter(tenant_steps::tenant_id.eq(tenant))
        .select(diesel::dsl::max(tenant_steps::position))
        .first(conn)
        .await?;
    let rows: Vec<_> = steps
        .iter()
        .zip(last.unwrap_or(-1) + 1..)
        .map(|(step, position)| {
            (
                tenant_steps::tenant_id.eq(tenant),
                tenant_steps::position.eq(position),
                tenant_steps::name.eq(step.name.clone()),
                tenant_steps::critical.eq(step.critical),
                tenant_steps::max_attempts.eq(step.max_attempts),
                tenant_steps::status.eq(StepStatus::Pending.as_str()),
                tenant_steps::phase.eq(phase),
                tenant_steps::timeout_ms.eq(step.timeout_ms),
            )
        })
        .collect();
    diesel::insert_into(tenant_steps::table)
        .values(&rows)
        .execute(conn)
        .await?;
    Ok(())
}

/// The step rows [`create`] writes for `steps`, as they are right after.
pub fn planned_steps(tenant_id: Uuid, steps: &[PlanStep]) -> Vec<StepRow> {
    steps
        .iter()
        .zip(0..)
        .map(|(step, position)| StepRow {
            tenant_id,
            position,
            name: step.name.clone(),
            critical: step.critical,
            max_attempts: step.max_attempts,
            status: StepStatus::Pending.as_str().to_owned(),
            attempts: 0,
            last_error: None,
            output: serde_json::json!({}),
            start_time: None,
            finish_time: None,
            phase: "PROVISION".to_owned(),
            retry_base_ms: step.retry_base_ms,
            retry_cap_ms: step.retry_cap_ms,
            timeout_ms: step.timeout_ms,
            webhook_endpoint: step.webhook.as_ref().map(|w| w.endpoint.clone()),
            webhook_compensate: step.webhook.as_ref().is_some_and(|w| w.compensate),
        })
        .collect()
}

/// A live (not deleted) tenant row.
pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<TenantRow>> {
    tenants::table
        .find(id)
        .filter(tenants::delete_time.is_null())
        .select(TenantRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A live tenant row, locked until the end of the transaction. Every writer
/// that appends an event takes this lock first, so one tenant's events commit
/// in id order.
pub async fn lock(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<TenantRow>> {
    tenants::table
        .find(id)
        .filter(tenants::delete_time.is_null())
        .select(TenantRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// A tenant row, deleted or not.
pub async fn find_including_deleted(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<TenantRow>> {
    tenants::table
        .find(id)
        .select(TenantRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A tenant row, deleted or not, locked: for the jobs that finish what a
/// deleted tenant left behind (the purge of its archive).
pub async fn lock_including_deleted(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<TenantRow>> {
    tenants::table
        .find(id)
        .select(TenantRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// A live tenant row under a share lock: waits for writers that hold the
/// row lock, so what is read next is consistent with their events.
pub async fn lock_shared(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<TenantRow>> {
    tenants::table
        .find(id)
        .filter(tenants::delete_time.is_null())
        .select(TenantRow::as_select())
        .for_share()
        .first(conn)
        .await
        .optional()
}

/// The live tenant with this slug.
pub async fn find_by_slug(
    conn: &mut AsyncPgConnection,
    slug: &str,
) -> QueryResult<Option<TenantRow>> {
    tenants::table
        .filter(tenants::slug.eq(slug))
        .filter(tenants::delete_time.is_null())
        .order(tenants::id.desc())
        .select(TenantRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The tenant created under an AIP-155 request id, deleted or not.
pub async fn find_by_request_id(
    conn: &mut AsyncPgConnection,
    request_id: &str,
) -> QueryResult<Option<TenantRow>> {
    tenants::table
        .filter(tenants::request_id.eq(request_id))
        .select(TenantRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A tenant with its steps.
pub async fn load(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<Tenant>> {
    match find(conn, id).await? {
        Some(row) => with_steps(conn, vec![row]).await.map(|mut v| v.pop()),
        None => Ok(None),
    }
}

/// Attaches their steps to tenant rows, in one query.
pub async fn with_steps(conn: &mut AsyncPgConnection, rows: Vec<TenantRow>) -> Result<Vec<Tenant>> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let steps: Vec<StepRow> = tenant_steps::table
        .filter(tenant_steps::tenant_id.eq_any(&ids))
        .order((tenant_steps::tenant_id, tenant_steps::position))
        .select(StepRow::as_select())
        .load(conn)
        .await?;
    let mut by_tenant: HashMap<Uuid, Vec<StepRow>> = HashMap::new();
    for step in steps {
        by_tenant.entry(step.tenant_id).or_default().push(step);
    }
    let mut drift = super::drift::of_tenants(conn, &ids).await?;
    rows.into_iter()
        .map(|row| {
            let steps = by_tenant.remove(&row.id).unwrap_or_default();
            let drift = drift.remove(&row.id).unwrap_or_default();
            row.into_domain_with(steps, drift)
        })
        .collect()
}

/// Filters of ListTenants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListFilter {
    /// Only this tenant (a tenant-scoped caller's list).
    pub tenant: Option<Uuid>,
    pub state: Option<TenantState>,
    pub plan: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Only tenants on this database server.
    pub database_server: Option<String>,
}

/// Up to `limit` live tenants after `after` in id (creation) order.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &ListFilter,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<TenantRow>> {
    let mut query = tenants::table
        .filter(tenants::delete_time.is_null())
        .select(TenantRow::as_select())
        .into_boxed();
    if let Some(tenant) = filter.tenant {
        query = query.filter(tenants::id.eq(tenant));
    }
    if let Some(state) = filter.state {
        query = query.filter(tenants::state.eq(state.as_str()));
    }
    if let Some(plan) = &filter.plan {
        query = query.filter(tenants::plan.eq(plan.clone()));
    }
    if !filter.labels.is_empty() {
        query = query.filter(tenants::labels.contains(json_map(&filter.labels)));
    }
    if let Some(server) = &filter.database_server {
        query = query.filter(tenants::database_server.eq(server.clone()));
    }
    if let Some(after) = after {
        query = query.filter(tenants::id.gt(after));
    }
    query.order(tenants::id.asc()).limit(limit).load(conn).await
}

/// Changes to a tenant's mutable fields; `None` leaves a field alone.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = tenants)]
struct PatchRow<'a> {
    display_name: Option<&'a str>,
    admin_email: Option<&'a str>,
    labels: Option<serde_json::Value>,
    legal_hold: Option<bool>,
    legal_hold_reason: Option<&'a str>,
}

/// Applies a patch and bumps the revision.
pub async fn apply_patch(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    patch: &TenantPatch,
) -> QueryResult<()> {
    let row = PatchRow {
        display_name: patch.display_name.as_deref(),
        admin_email: patch.admin_email.as_deref(),
        labels: patch.labels.as_ref().map(json_map),
        legal_hold: patch.legal_hold.as_ref().map(|(hold, _)| *hold),
        legal_hold_reason: patch.legal_hold.as_ref().map(|(_, reason)| reason.as_str()),
    };
    diesel::update(tenants::table.find(id))
        .set((row, bump()))
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks a tenant deleted: it leaves Get/List and frees its slug; its events
/// stay for audit.
pub async fn mark_deleted(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<TenantRow> {
    diesel::update(tenants::table.find(id))
        .set((tenants::delete_time.eq(diesel::dsl::now), bump()))
        .returning(TenantRow::as_returning())
        .get_result(conn)
        .await
}

/// Whether a live tenant uses `slug`.
pub async fn slug_taken(conn: &mut AsyncPgConnection, slug: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        tenants::table
            .filter(tenants::slug.eq(slug))
            .filter(tenants::delete_time.is_null())
            .filter(tenants::state.ne(TenantState::Deprovisioned.as_str())),
    ))
    .get_result(conn)
    .await
}

/// Every change bumps the revision (and so the etag) and the update time.
#[allow(clippy::type_complexity)]
fn bump() -> (
    diesel::dsl::Eq<
        tenants::revision,
        diesel::dsl::Add<tenants::revision, diesel::dsl::AsExprOf<i64, diesel::sql_types::BigInt>>,
    >,
    diesel::dsl::Eq<tenants::update_time, diesel::dsl::now>,
) {
    (
        tenants::revision.eq(tenants::revision + 1_i64),
        tenants::update_time.eq(diesel::dsl::now),
    )
}

/// Removes one key from a tenant's outputs.
pub async fn forget_output(conn: &mut AsyncPgConnection, id: Uuid, key: &str) -> QueryResult<()> {
    diesel::sql_query("UPDATE tenants SET outputs = outputs - $2 WHERE id = $1 AND outputs ? $2")
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<diesel::sql_types::Text, _>(key)
        .execute(conn)
        .await?;
    Ok(())
}
