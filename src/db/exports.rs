//! Queries on `tenant_exports`: the verified export of each archived
//! tenant's schema.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{Array, BigInt, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::Result;

/// A recorded export.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct ExportRow {
    #[diesel(sql_type = Text)]
    pub schema_name: String,
    #[diesel(sql_type = Text)]
    pub path: String,
    #[diesel(sql_type = Text)]
    pub sha256: String,
    #[diesel(sql_type = BigInt)]
    pub bytes: i64,
    #[diesel(sql_type = Array<Text>)]
    pub tables: Vec<String>,
    #[diesel(sql_type = Timestamptz)]
    pub verify_time: DateTime<Utc>,
}

/// The tenant's export, if it has one.
pub async fn find(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<Option<ExportRow>> {
    Ok(diesel::sql_query(
        "SELECT schema_name, path, sha256, bytes, tables, verify_time FROM tenant_exports
         WHERE tenant_id = $1",
    )
    .bind::<SqlUuid, _>(tenant)
    .get_result(conn)
    .await
    .optional()?)
}

/// Records a verified export (replacing an earlier one).
pub async fn record(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    schema: &str,
    export: &crate::archive::Export,
) -> Result<()> {
    let tables: Vec<&str> = export.tables.iter().map(String::as_str).collect();
    diesel::sql_query(
        "INSERT INTO tenant_exports (tenant_id, schema_name, path, sha256, bytes, tables)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id) DO UPDATE
             SET schema_name = EXCLUDED.schema_name, path = EXCLUDED.path, sha256 = EXCLUDED.sha256,
                 bytes = EXCLUDED.bytes, tables = EXCLUDED.tables, verify_time = now()",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(schema)
    .bind::<Text, _>(export.path.to_string_lossy().as_ref())
    .bind::<Text, _>(&export.sha256)
    .bind::<BigInt, _>(export.bytes)
    .bind::<Array<Text>, _>(&tables)
    .execute(conn)
    .await?;
    Ok(())
}

/// The tables of `schema` in the database `conn` is on; `None` if the
/// schema does not exist.
pub async fn schema_tables(
    conn: &mut AsyncPgConnection,
    schema: &str,
) -> Result<Option<Vec<String>>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<Array<Text>>)]
        tables: Option<Vec<String>>,
    }
    let row: Row = diesel::sql_query(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)
                THEN coalesce((SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_tables
                               WHERE schemaname = $1), '{}') END AS tables",
    )
    .bind::<Text, _>(schema)
    .get_result(conn)
    .await?;
    Ok(row.tables)
}
