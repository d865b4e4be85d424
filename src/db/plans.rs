//! Queries on `plans` (each plan's current version) and `plan_versions`
//! (every version, written by a trigger whenever a plan's version changes).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::{plan_versions, plans, tenants};
use crate::domain::{InitialData, MeterLimit, OnLimit, Plan, PlanInput, PlanStep};
use crate::error::{Error, Result};

/// A plan's current version as stored.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = plans, check_for_backend(diesel::pg::Pg))]
struct PlanRow {
    name: String,
    version: i32,
    description: String,
    steps: serde_json::Value,
    migration_set: String,
    initial_data: serde_json::Value,
    limits: serde_json::Value,
    built_in: bool,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    meter_limits: serde_json::Value,
    on_limit: String,
}

impl PlanRow {
    fn into_domain(self) -> Result<Plan> {
        let (name, version) = (&self.name, self.version);
        let malformed = |what: &str, e: serde_json::Error| {
            Error::Internal(format!("plan {name} v{version} has malformed {what}: {e}"))
        };
        let steps: Vec<PlanStep> =
            serde_json::from_value(self.steps).map_err(|e| malformed("steps", e))?;
        let initial_data: InitialData =
            serde_json::from_value(self.initial_data).map_err(|e| malformed("initial data", e))?;
        let limits: BTreeMap<String, i64> =
            serde_json::from_value(self.limits).map_err(|e| malformed("limits", e))?;
        let meter_limits: BTreeMap<String, MeterLimit> =
            serde_json::from_value(self.meter_limits).map_err(|e| malformed("meter limits", e))?;
        let on_limit: OnLimit = self.on_limit.parse().map_err(|_| {
            Error::Internal(format!(
                "plan {name} v{version} has an unknown on_limit {:?}",
                self.on_limit
            ))
        })?;
        Ok(Plan {
            name: self.name,
            version: self.version,
            description: self.description,
            steps,
            migration_set: self.migration_set,
            initial_data,
            limits,
            meter_limits,
            on_limit,
            built_in: self.built_in,
            create_time: self.create_time,
            update_time: self.update_time,
        })
    }
}

/// The live plan called `name`.
pub async fn find(conn: &mut AsyncPgConnection, name: &str) -> Result<Option<Plan>> {
    let row: Option<PlanRow> = plans::table
        .find(name)
        .filter(plans::delete_time.is_null())
        .select(PlanRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(PlanRow::into_domain).transpose()
}

/// The live plan called `name`, share-locked until the end of the
/// transaction, so that it cannot be deleted or changed meanwhile.
pub async fn find_for_share(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<Option<Plan>> {
    let row: Option<PlanRow> = plans::table
        .find(name)
        .filter(plans::delete_time.is_null())
        .select(PlanRow::as_select())
        .for_share()
        .first(conn)
        .await
        .optional()?;
    row.map(PlanRow::into_domain)
        .transpose()
        .map_err(|e| diesel::result::Error::DeserializationError(e.to_string().into()))
}

/// The live plan called `name`, locked for a change.
pub async fn lock(conn: &mut AsyncPgConnection, name: &str) -> Result<Option<Plan>> {
    let row: Option<PlanRow> = plans::table
        .find(name)
        .filter(plans::delete_time.is_null())
        .select(PlanRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    row.map(PlanRow::into_domain).transpose()
}

/// One version of a live plan.
pub async fn find_version(
    conn: &mut AsyncPgConnection,
    name: &str,
    version: i32,
) -> Result<Option<Plan>> {
    // A version's columns in PlanRow's order; created and built_in come
    // from the plan itself.
    let row: Option<PlanRow> = plan_versions::table
        .inner_join(plans::table)
        .filter(plan_versions::name.eq(name))
        .filter(plan_versions::version.eq(version))
        .filter(plans::delete_time.is_null())
        .select((
            plan_versions::name,
            plan_versions::version,
            plan_versions::description,
            plan_versions::steps,
            plan_versions::migration_set,
            plan_versions::initial_data,
            plan_versions::limits,
            plans::built_in,
            plans::create_time,
            plan_versions::create_time,
            plan_versions::meter_limits,
            plan_versions::on_limit,
        ))
        .first(conn)
        .await
        .optional()?;
    row.map(PlanRow::into_domain).transpose()
}

/// Live plans in name order, after `after`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Plan>> {
    let mut query = plans::table
        .filter(plans::delete_time.is_null())
        .order(plans::name)
        .limit(limit)
        .select(PlanRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(plans::name.gt(after.to_owned()));
    }
    let rows: Vec<PlanRow> = query.load(conn).await?;
    rows.into_iter().map(PlanRow::into_domain).collect()
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("plan parts serialize")
}

/// Creates version 1 of a new plan; a deleted plan of the same name comes
/// back with its next version. `None` if a live plan has the name.
pub async fn insert(conn: &mut AsyncPgConnection, plan: &PlanInput) -> Result<Option<Plan>> {
    let row: Option<PlanRow> = diesel::sql_query(
        "INSERT INTO plans (name, description, steps, migration_set, initial_data, limits,
                            meter_limits, on_limit)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (name) DO UPDATE
             SET version = plans.version + 1, description = EXCLUDED.description,
                 steps = EXCLUDED.steps, migration_set = EXCLUDED.migration_set,
                 initial_data = EXCLUDED.initial_data, limits = EXCLUDED.limits,
                 meter_limits = EXCLUDED.meter_limits, on_limit = EXCLUDED.on_limit,
                 built_in = false, delete_time = NULL, create_time = now(), update_time = now()
             WHERE plans.delete_time IS NOT NULL
         RETURNING name, version, description, steps, migration_set, initial_data, limits,
                   built_in, create_time, update_time, meter_limits, on_limit",
    )
    .bind::<diesel::sql_types::Text, _>(&plan.name)
    .bind::<diesel::sql_types::Text, _>(&plan.description)
    .bind::<diesel::sql_types::Jsonb, _>(json(&plan.steps))
    .bind::<diesel::sql_types::Text, _>(&plan.migration_set)
    .bind::<diesel::sql_types::Jsonb, _>(json(&plan.initial_data))
    .bind::<diesel::sql_types::Jsonb, _>(json(&plan.limits))
    .bind::<diesel::sql_types::Jsonb, _>(json(&plan.meter_limits))
    .bind::<diesel::sql_types::Text, _>(<&str>::from(plan.on_limit))
    .get_result::<PlanRow>(conn)
    .await
    .optional()?;
    row.map(PlanRow::into_domain).transpose()
}

/// Writes the next version of a live plan (locked by the caller).
pub async fn update(conn: &mut AsyncPgConnection, plan: &PlanInput) -> Result<Plan> {
    let row: PlanRow = diesel::update(plans::table.find(&plan.name))
        .set((
            plans::version.eq(plans::version + 1),
            plans::description.eq(&plan.description),
            plans::steps.eq(json(&plan.steps)),
            plans::migration_set.eq(&plan.migration_set),
            plans::initial_data.eq(json(&plan.initial_data)),
            plans::limits.eq(json(&plan.limits)),
            plans::meter_limits.eq(json(&plan.meter_limits)),
            plans::on_limit.eq(<&str>::from(plan.on_limit)),
            plans::update_time.eq(diesel::dsl::now),
        ))
        .returning(PlanRow::as_returning())
        .get_result(conn)
        .await?;
    row.into_domain()
}

/// Live tenants created with any version of the plan.
pub async fn tenants_using(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<i64> {
    tenants::table
        .filter(tenants::plan.eq(name))
        .filter(tenants::delete_time.is_null())
        .count()
        .get_result(conn)
        .await
}

/// Hides a plan (its versions stay, for the tenants that used it).
pub async fn mark_deleted(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<()> {
    diesel::update(plans::table.find(name))
        .set(plans::delete_time.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(())
}
