//! What the usage sampler reads: the tenants to sample (control plane), and
//! each schema's size and users (tenant database).

use diesel::OptionalExtension as _;
use diesel::sql_types::{Array, BigInt, Bool, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::Result;

/// ACTIVE and SUSPENDED tenants (id, slug), in id order after `after`, at
/// most `limit`; with `unsampled`, only those never sampled (no
/// `storage_bytes` figure yet).
pub async fn tenants_to_sample(
    conn: &mut AsyncPgConnection,
    unsampled: bool,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(Uuid, String, String)>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Text)]
        slug: String,
        #[diesel(sql_type = Text)]
        database_server: String,
    }
    Ok(diesel::sql_query(
        "SELECT t.id, t.slug, t.database_server FROM tenants t
         WHERE t.state IN ('ACTIVE', 'SUSPENDED') AND t.delete_time IS NULL
           AND ($1::uuid IS NULL OR t.id > $1)
           AND (NOT $2 OR NOT EXISTS (SELECT 1 FROM usage_rollups r
                                      WHERE r.tenant_id = t.id AND r.meter = 'storage_bytes'))
         ORDER BY t.id LIMIT $3",
    )
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(after)
    .bind::<Bool, _>(unsampled)
    .bind::<BigInt, _>(limit)
    .load::<Row>(conn)
    .await?
    .into_iter()
    .map(|r| (r.id, r.slug, r.database_server))
    .collect())
}

/// Bytes of each schema's tables (with their indexes and TOAST), in the
/// tenant database; schemas that do not exist are left out.
pub async fn schema_bytes(
    conn: &mut AsyncPgConnection,
    schemas: &[String],
) -> Result<Vec<(String, i64)>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        schema: String,
        #[diesel(sql_type = BigInt)]
        bytes: i64,
    }
    Ok(diesel::sql_query(
        "SELECT n.nspname::text AS schema,
                coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relkind IN ('r', 'm', 'p')), 0)::bigint AS bytes
         FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
         WHERE n.nspname = ANY($1)
         GROUP BY 1",
    )
    .bind::<Array<Text>, _>(schemas)
    .load::<Row>(conn)
    .await?
    .into_iter()
    .map(|r| (r.schema, r.bytes))
    .collect())
}

/// Rows of a tenant schema's `users` table, in the tenant database;
/// `None` if the schema has no such table.
pub async fn user_count(conn: &mut AsyncPgConnection, schema: &str) -> Result<Option<i64>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let exists: Option<Row> = diesel::sql_query(
        "SELECT 1::bigint AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
         WHERE s.nspname = $1 AND c.relname = 'users' AND c.relkind IN ('r', 'p')",
    )
    .bind::<Text, _>(schema)
    .get_result(conn)
    .await
    .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    // The schema name is derived from a checked slug; quoted all the same.
    let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
    let row: Row = diesel::sql_query(format!("SELECT count(*) AS n FROM {quoted}.users"))
        .get_result(conn)
        .await?;
    Ok(Some(row.n))
}
