//! Drift: the check of a tenant's resources in the tenant database against
//! what its steps produced, and `tenant_drift`, what was last found.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Bool, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::domain::Drift;
use crate::error::Result;

/// Tables every tenant schema holds once its migrations ran.
pub const TENANT_TABLES: &[&str] = &[
    "audit_logs",
    "invitations",
    "plan_limits",
    "roles",
    "schema_migrations",
    "users",
];

/// A difference found: resource, expected, found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, diesel::QueryableByName)]
pub struct Found {
    #[diesel(sql_type = Text)]
    pub resource: String,
    #[diesel(sql_type = Text)]
    pub expected: String,
    #[diesel(sql_type = Text)]
    pub found: String,
}

/// Compares a tenant's schema and role in the tenant database (`conn`)
/// with what its steps produced: both exist; the schema's owner is the role
/// (ACTIVE, `active`) or the control plane's own (SUSPENDED); PUBLIC holds
/// no privilege on it; the role holds USAGE and CREATE on it (ACTIVE); the
/// migrations' tables exist; the migrations are at `schema_version`.
pub async fn check(
    conn: &mut AsyncPgConnection,
    schema: &str,
    role: &str,
    active: bool,
    schema_version: Option<i32>,
) -> Result<Vec<Found>> {
    let mut found: Vec<Found> = diesel::sql_query(
        "WITH s AS (
             SELECT n.nspname, n.nspowner, pg_get_userbyid(n.nspowner)::text AS owner, n.nspacl
             FROM pg_namespace n WHERE n.nspname = $1
         ), r AS (
             SELECT rolname FROM pg_roles WHERE rolname = $2
         ), want AS (
             SELECT CASE WHEN $3 THEN $2 ELSE current_user::text END AS owner
         )
         SELECT 'schema ' || $1 AS resource, 'exists' AS expected, 'missing' AS found
         WHERE NOT EXISTS (SELECT 1 FROM s)
         UNION ALL
         SELECT 'role ' || $2, 'exists', 'missing' WHERE NOT EXISTS (SELECT 1 FROM r)
         UNION ALL
         SELECT 'owner of schema ' || $1, want.owner, s.owner FROM s, want WHERE s.owner <> want.owner
         UNION ALL
         SELECT 'privileges of PUBLIC on schema ' || $1, 'none',
                string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type)
         FROM s, aclexplode(coalesce(s.nspacl, acldefault('n', s.nspowner))) a
         WHERE a.grantee = 0
         HAVING count(*) > 0
         UNION ALL
         SELECT 'privileges of ' || $2 || ' on schema ' || $1, 'CREATE, USAGE',
                coalesce(nullif(concat_ws(', ',
                    CASE WHEN has_schema_privilege(r.rolname, s.nspname, 'CREATE') THEN 'CREATE' END,
                    CASE WHEN has_schema_privilege(r.rolname, s.nspname, 'USAGE') THEN 'USAGE' END), ''), 'none')
         FROM s, r
         -- The role's name from its row: a constant would be checked even
         -- when the role is gone.
         WHERE $3 AND NOT (has_schema_privilege(r.rolname, s.nspname, 'CREATE')
                           AND has_schema_privilege(r.rolname, s.nspname, 'USAGE'))
         UNION ALL
         SELECT 'table ' || $1 || '.' || t, 'exists', 'missing'
         FROM s, unnest($4::text[]) t
         WHERE NOT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = t)",
    )
    .bind::<Text, _>(schema)
    .bind::<Text, _>(role)
    .bind::<Bool, _>(active)
    .bind::<Array<Text>, _>(TENANT_TABLES)
    .load(conn)
    .await?;
    if let Some(expected) = schema_version
        && !found.iter().any(|f| {
            f.resource == format!("schema {schema}")
                || f.resource == format!("table {schema}.schema_migrations")
        })
    {
        #[derive(diesel::QueryableByName)]
        struct Version {
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
            version: Option<i32>,
        }
        // `schema` is a validated identifier.
        let at: Version = diesel::sql_query(format!(
            "SELECT max(version) AS version FROM \"{schema}\".schema_migrations"
        ))
        .get_result(conn)
        .await?;
        if at.version != Some(expected) {
            found.push(Found {
                resource: format!("tenant migrations of schema {schema}"),
                expected: format!("version {expected}"),
                found: at
                    .version
                    .map_or("none applied".to_owned(), |v| format!("version {v}")),
            });
        }
    }
    found.sort();
    Ok(found)
}

/// Replaces a tenant's recorded drift with `found` (keeping `since` of what
/// stays); whether it changed.
pub async fn record(conn: &mut AsyncPgConnection, tenant: Uuid, found: &[Found]) -> Result<bool> {
    let resources: Vec<&str> = found.iter().map(|f| f.resource.as_str()).collect();
    let expected: Vec<&str> = found.iter().map(|f| f.expected.as_str()).collect();
    let seen: Vec<&str> = found.iter().map(|f| f.found.as_str()).collect();
    let gone = diesel::sql_query(
        "DELETE FROM tenant_drift d
         WHERE d.tenant_id = $1
           AND NOT EXISTS (SELECT 1 FROM unnest($2::text[], $3::text[], $4::text[]) f(resource, expected, found)
                           WHERE f.resource = d.resource AND f.expected = d.expected AND f.found = d.found)",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Array<Text>, _>(&resources)
    .bind::<Array<Text>, _>(&expected)
    .bind::<Array<Text>, _>(&seen)
    .execute(conn)
    .await?;
    let new = diesel::sql_query(
        "INSERT INTO tenant_drift (tenant_id, resource, expected, found)
         SELECT $1, f.resource, f.expected, f.found
         FROM unnest($2::text[], $3::text[], $4::text[]) f(resource, expected, found)
         ON CONFLICT (tenant_id, resource) DO NOTHING",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Array<Text>, _>(&resources)
    .bind::<Array<Text>, _>(&expected)
    .bind::<Array<Text>, _>(&seen)
    .execute(conn)
    .await?;
    Ok(gone > 0 || new > 0)
}

/// The recorded drift of these tenants.
pub async fn of_tenants(
    conn: &mut AsyncPgConnection,
    tenants: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Drift>>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        tenant_id: Uuid,
        #[diesel(sql_type = Text)]
        resource: String,
        #[diesel(sql_type = Text)]
        expected: String,
        #[diesel(sql_type = Text)]
        found: String,
        #[diesel(sql_type = Timestamptz)]
        since: DateTime<Utc>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT tenant_id, resource, expected, found, since FROM tenant_drift
         WHERE tenant_id = ANY($1) ORDER BY tenant_id, resource",
    )
    .bind::<Array<SqlUuid>, _>(tenants)
    .load(conn)
    .await?;
    let mut by_tenant: HashMap<Uuid, Vec<Drift>> = HashMap::new();
    for r in rows {
        by_tenant.entry(r.tenant_id).or_default().push(Drift {
            resource: r.resource,
            expected: r.expected,
            found: r.found,
            since: r.since,
        });
    }
    Ok(by_tenant)
}

/// Live ACTIVE and SUSPENDED tenants, for the reconciler.
pub async fn tenants_to_check(conn: &mut AsyncPgConnection) -> Result<Vec<Uuid>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id FROM tenants WHERE state IN ('ACTIVE', 'SUSPENDED') AND delete_time IS NULL ORDER BY id",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// How many tenants have drift now.
pub async fn drifted_count(conn: &mut AsyncPgConnection) -> Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let row: Row = diesel::sql_query(
        "SELECT count(DISTINCT d.tenant_id) AS n FROM tenant_drift d JOIN tenants t ON t.id = d.tenant_id
         WHERE t.state IN ('ACTIVE', 'SUSPENDED') AND t.delete_time IS NULL",
    )
    .get_result(conn)
    .await?;
    Ok(row.n)
}
