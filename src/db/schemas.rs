//! Queries on a tenant's schema in the database server that holds it, as
//! a move compares its two copies: which database a connection reaches,
//! the schema's size, and per table its rows and their checksum.

use std::collections::BTreeMap;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::error::Result;

/// Which database a connection reaches, as far as telling two apart goes:
/// the cluster (its start time and port) and the database.
pub async fn identity(conn: &mut AsyncPgConnection) -> Result<String> {
    #[derive(diesel::QueryableByName)]
    struct Identity {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let found: Identity = diesel::sql_query(
        "SELECT pg_postmaster_start_time()::text || '/' || current_setting('port')
                || '/' || current_database() AS id",
    )
    .get_result(conn)
    .await?;
    Ok(found.id)
}

/// The schema's size, or `None` if it does not exist.
pub async fn schema_bytes(conn: &mut AsyncPgConnection, schema: &str) -> Result<Option<i64>> {
    #[derive(diesel::QueryableByName)]
    struct Size {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        bytes: Option<i64>,
    }
    let size: Size = diesel::sql_query(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)
                THEN coalesce((SELECT sum(pg_total_relation_size(c.oid))::int8 FROM pg_class c
                               JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE n.nspname = $1 AND c.relkind IN ('r', 'm', 'p')), 0)
                END AS bytes",
    )
    .bind::<diesel::sql_types::Text, _>(schema)
    .get_result(conn)
    .await?;
    Ok(size.bytes)
}

/// Per table of `schema`: its rows and the sum of a 64-bit hash of each
/// row, read in one snapshot. The hash is `hash_record_extended`, built
/// from each column type's extended hash function (the one hash
/// partitioning relies on, so it is the same on every server of a major
/// version and across upgrades); a table with a column type that has none
/// sums a 60-bit piece of the md5 of each row's text instead, under the
/// settings that fix how values print. The checksum names its method
/// (`h:` or `m:`), so the two are never compared with each other.
/// Order-independent and streaming: a table of any size needs no more
/// memory than its scan.
pub async fn table_sums(
    conn: &mut AsyncPgConnection,
    schema: &str,
) -> Result<BTreeMap<String, (i64, String)>> {
    #[derive(diesel::QueryableByName)]
    struct Table {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Sum {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        rows: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        checksum: String,
    }
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(async |conn| {
            conn.batch_execute(
                "SET LOCAL timezone = 'UTC'; SET LOCAL datestyle = 'ISO, YMD';
                 SET LOCAL intervalstyle = 'postgres'; SET LOCAL extra_float_digits = 3;
                 SET LOCAL bytea_output = 'hex'",
            )
            .await?;
            let tables: Vec<Table> = diesel::sql_query(
                "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
            )
            .bind::<diesel::sql_types::Text, _>(schema)
            .load(conn)
            .await?;
            let mut sums = BTreeMap::new();
            for Table { name } in tables {
                let table = format!("\"{schema}\".\"{}\"", name.replace('"', "\"\""));
                // Under a savepoint: a type without a hash fails the
                // statement, not the snapshot.
                let hashed: std::result::Result<Sum, _> = conn
                    .transaction(async |c| {
                        diesel::sql_query(format!(
                            "SELECT count(*)::int8 AS rows,
                                    'h:' || coalesce(sum(hash_record_extended(t, 0)), 0)::text AS checksum
                             FROM {table} t"
                        ))
                        .get_result(c)
                        .await
                    })
                    .await;
                let sum = match hashed {
                    Ok(sum) => sum,
                    Err(_) => {
                        diesel::sql_query(format!(
                            "SELECT count(*)::int8 AS rows,
                                    'm:' || coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::int8::numeric), 0)::text
                                        AS checksum
                             FROM {table} t"
                        ))
                        .get_result(conn)
                        .await?
                    }
                };
                sums.insert(name, (sum.rows, sum.checksum));
            }
            Ok::<_, diesel::result::Error>(sums)
        })
        .await
        .map_err(Into::into)
}
