//! Queries on `tenant_config`: the settings a tenant set itself, and what
//! is needed to show them next to its plan's defaults and limits.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{OptionalExtension, QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// A live tenant's configuration at one point in time: its explicit values,
/// its plan version's defaults and limits, and its configuration revision,
/// all from one statement (one snapshot).
#[derive(Debug, Clone, QueryableByName)]
pub struct ConfigSnapshot {
    #[diesel(sql_type = Text)]
    pub plan: String,
    #[diesel(sql_type = Integer)]
    pub plan_version: i32,
    #[diesel(sql_type = BigInt)]
    pub config_revision: i64,
    /// When a setting last changed, else when the tenant was created.
    #[diesel(sql_type = Timestamptz)]
    pub update_time: DateTime<Utc>,
    /// The plan version's `initial_data.config`: key to the value's text.
    #[diesel(sql_type = Jsonb)]
    pub defaults: serde_json::Value,
    /// The plan version's `limits`: limit name to a number.
    #[diesel(sql_type = Jsonb)]
    pub limits: serde_json::Value,
    /// The tenant's own values: key to a JSON string, number or boolean.
    #[diesel(sql_type = Jsonb)]
    pub explicit: serde_json::Value,
}

/// The configuration of a live (not deleted) tenant. Inside a writer's
/// transaction, take the tenant's row lock first.
pub async fn snapshot(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> QueryResult<Option<ConfigSnapshot>> {
    diesel::sql_query(
        "SELECT t.plan, t.plan_version, t.config_revision,
                coalesce(t.config_update_time, t.create_time) AS update_time,
                coalesce(pv.initial_data -> 'config', '{}') AS defaults,
                coalesce(pv.limits, '{}') AS limits,
                (SELECT coalesce(jsonb_object_agg(c.key, c.value), '{}')
                   FROM tenant_config c WHERE c.tenant_id = t.id) AS explicit
           FROM tenants t
           LEFT JOIN plan_versions pv ON pv.name = t.plan AND pv.version = t.plan_version
          WHERE t.id = $1 AND t.delete_time IS NULL",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .get_result(conn)
    .await
    .optional()
}

/// Sets one of a tenant's values, recording who did.
pub async fn set(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    key: &str,
    value: &serde_json::Value,
    actor: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO tenant_config (tenant_id, key, value, actor) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, key)
         DO UPDATE SET value = EXCLUDED.value, actor = EXCLUDED.actor, update_time = now()",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(key)
    .bind::<Jsonb, _>(value)
    .bind::<Text, _>(actor)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes one of a tenant's values: the plan's default applies again.
pub async fn clear(conn: &mut AsyncPgConnection, tenant_id: Uuid, key: &str) -> QueryResult<()> {
    diesel::sql_query("DELETE FROM tenant_config WHERE tenant_id = $1 AND key = $2")
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Text, _>(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that the configuration changed: a new revision (and etag) and
/// update time.
pub async fn bump_revision(conn: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE tenants SET config_revision = config_revision + 1, config_update_time = now()
          WHERE id = $1",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .execute(conn)
    .await?;
    Ok(())
}
