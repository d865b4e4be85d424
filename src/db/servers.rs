//! Queries on `database_servers`: the PostgreSQL servers of tenants' data.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{Bool, Bytea, Integer, Jsonb, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::Result;

/// A server as stored, with its tenants counted.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct ServerRow {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub region: String,
    #[diesel(sql_type = Integer)]
    pub weight: i32,
    #[diesel(sql_type = Integer)]
    pub max_tenants: i32,
    #[diesel(sql_type = Bool)]
    pub draining: bool,
    #[diesel(sql_type = Jsonb)]
    pub labels: serde_json::Value,
    #[diesel(sql_type = Bool)]
    pub reachable: bool,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub revision: i64,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub create_time: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub tenant_count: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub schema_bytes: i64,
}

/// The columns of [`ServerRow`] from `database_servers s`: the tenant
/// count, and the schema bytes as the usage sampler last measured them.
const SELECT: &str = "
    SELECT s.name, s.url, s.region, s.weight, s.max_tenants, s.draining, s.labels, s.reachable,
           s.revision, s.create_time,
           (SELECT count(*) FROM tenants t
            WHERE t.database_server = s.name AND t.delete_time IS NULL) AS tenant_count,
           coalesce((SELECT sum(r.latest_value)::int8 FROM tenants t
                     CROSS JOIN LATERAL (SELECT latest_value FROM usage_rollups u
                                         WHERE u.tenant_id = t.id AND u.meter = 'storage_bytes'
                                         ORDER BY u.bucket DESC LIMIT 1) r
                     WHERE t.database_server = s.name AND t.delete_time IS NULL
                       AND t.state IN ('ACTIVE', 'SUSPENDED')), 0) AS schema_bytes
    FROM database_servers s
    WHERE s.deregister_time IS NULL";

/// What RegisterDatabaseServer stores.
pub struct NewServer<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub password: Option<Vec<u8>>,
    pub region: &'a str,
    pub weight: i32,
    pub max_tenants: i32,
    pub draining: bool,
    pub labels: &'a BTreeMap<String, String>,
}

/// Inserts a server, or takes back a deregistered one's name (its row
/// stays, since deleted tenants' records name where they lived); `None` if
/// a registered server has the name.
pub async fn insert(conn: &mut AsyncPgConnection, s: &NewServer<'_>) -> Result<Option<ServerRow>> {
    let inserted = diesel::sql_query(
        "INSERT INTO database_servers (name, url, password, region, weight, max_tenants, draining, labels)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (name) DO UPDATE
         SET url = excluded.url, password = excluded.password, region = excluded.region,
             weight = excluded.weight, max_tenants = excluded.max_tenants,
             draining = excluded.draining, labels = excluded.labels, reachable = true,
             last_error = '', check_time = NULL, unreachable_since = NULL,
             revision = database_servers.revision + 1, create_time = now(), update_time = now(),
             deregister_time = NULL
         WHERE database_servers.deregister_time IS NOT NULL",
    )
    .bind::<Text, _>(s.name)
    .bind::<Text, _>(s.url)
    .bind::<Nullable<Bytea>, _>(s.password.as_deref())
    .bind::<Text, _>(s.region)
    .bind::<Integer, _>(s.weight)
    .bind::<Integer, _>(s.max_tenants)
    .bind::<Bool, _>(s.draining)
    .bind::<Jsonb, _>(serde_json::to_value(s.labels).expect("labels serialize"))
    .execute(conn)
    .await?;
    if inserted == 0 {
        return Ok(None);
    }
    find(conn, s.name).await
}

pub async fn find(conn: &mut AsyncPgConnection, name: &str) -> Result<Option<ServerRow>> {
    Ok(diesel::sql_query(format!("{SELECT} AND s.name = $1"))
        .bind::<Text, _>(name)
        .get_result(conn)
        .await
        .optional()?)
}

/// Locks a server's row; `None` if there is none.
pub async fn lock(conn: &mut AsyncPgConnection, name: &str) -> Result<Option<ServerRow>> {
    let found: Option<ServerRow> =
        diesel::sql_query(format!("{SELECT} AND s.name = $1 FOR UPDATE OF s"))
            .bind::<Text, _>(name)
            .get_result(conn)
            .await
            .optional()?;
    Ok(found)
}

pub async fn list(conn: &mut AsyncPgConnection) -> Result<Vec<ServerRow>> {
    Ok(diesel::sql_query(format!("{SELECT} ORDER BY s.name"))
        .load(conn)
        .await?)
}

/// Writes the mutable fields and bumps the revision.
pub async fn update(
    conn: &mut AsyncPgConnection,
    name: &str,
    weight: i32,
    max_tenants: i32,
    draining: bool,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    diesel::sql_query(
        "UPDATE database_servers
         SET weight = $2, max_tenants = $3, draining = $4, labels = $5,
             revision = revision + 1, update_time = now()
         WHERE name = $1",
    )
    .bind::<Text, _>(name)
    .bind::<Integer, _>(weight)
    .bind::<Integer, _>(max_tenants)
    .bind::<Bool, _>(draining)
    .bind::<Jsonb, _>(serde_json::to_value(labels).expect("labels serialize"))
    .execute(conn)
    .await?;
    Ok(())
}

/// Deregisters a server. Its row stays, hidden, for the records of
/// deleted tenants that lived there.
pub async fn delete(conn: &mut AsyncPgConnection, name: &str) -> Result<()> {
    diesel::sql_query(
        "UPDATE database_servers SET deregister_time = now(), password = NULL, update_time = now()
         WHERE name = $1",
    )
    .bind::<Text, _>(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// A server's URL (without password) and its sealed password; `None` if
/// no server has the name.
pub async fn credentials(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<Option<(String, Option<Vec<u8>>)>> {
    #[derive(diesel::QueryableByName)]
    struct Credentials {
        #[diesel(sql_type = Text)]
        url: String,
        #[diesel(sql_type = Nullable<Bytea>)]
        password: Option<Vec<u8>>,
    }
    let found: Option<Credentials> = diesel::sql_query(
        "SELECT url, password FROM database_servers
             WHERE name = $1 AND deregister_time IS NULL",
    )
    .bind::<Text, _>(name)
    .get_result(conn)
    .await
    .optional()?;
    Ok(found.map(|c| (c.url, c.password)))
}

/// A server as placement weighs it.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct Candidate {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub region: String,
    #[diesel(sql_type = Jsonb)]
    pub labels: serde_json::Value,
    #[diesel(sql_type = Integer)]
    pub weight: i32,
    #[diesel(sql_type = Integer)]
    pub max_tenants: i32,
    #[diesel(sql_type = Bool)]
    pub draining: bool,
    #[diesel(sql_type = Bool)]
    pub reachable: bool,
    #[diesel(sql_type = Text)]
    pub last_error: String,
    /// Live tenants, from the per-server counters.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub tenants: i64,
}

/// Every server with its live tenants (from the counters placement reads).
pub async fn candidates(conn: &mut AsyncPgConnection) -> Result<Vec<Candidate>> {
    Ok(diesel::sql_query(
        "SELECT s.name, s.region, s.labels, s.weight, s.max_tenants, s.draining, s.reachable,
                s.last_error,
                (SELECT coalesce(sum(c.tenants), 0)::int8 FROM server_tenants c
                 WHERE c.server = s.name) AS tenants
         FROM database_servers s WHERE s.deregister_time IS NULL ORDER BY s.name",
    )
    .load(conn)
    .await?)
}

/// Records a check of a server: reachable or not (with why), and since
/// when it has not answered. Whether that changed.
pub async fn record_check(
    conn: &mut AsyncPgConnection,
    name: &str,
    reachable: bool,
    error: &str,
) -> Result<bool> {
    #[derive(diesel::QueryableByName)]
    struct Was {
        #[diesel(sql_type = Bool)]
        was: bool,
    }
    let was: Option<Was> = diesel::sql_query(
        "UPDATE database_servers s
         SET reachable = $2, last_error = $3, check_time = now(),
             unreachable_since = CASE WHEN $2 THEN NULL
                                      ELSE coalesce(s.unreachable_since, now()) END
         FROM (SELECT name, reachable AS was FROM database_servers WHERE name = $1 FOR UPDATE) old
         WHERE s.name = old.name
         RETURNING old.was",
    )
    .bind::<Text, _>(name)
    .bind::<Bool, _>(reachable)
    .bind::<Text, _>(error)
    .get_result(conn)
    .await
    .optional()?;
    Ok(was.is_some_and(|w| w.was != reachable))
}

/// Deleted tenants whose archived schema on `server` is not purged yet.
pub async fn unpurged_deleted(conn: &mut AsyncPgConnection, server: &str) -> Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let c: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM tenants
         WHERE database_server = $1 AND delete_time IS NOT NULL
           AND outputs ? 'archived_schema' AND NOT outputs ? 'purged_at'",
    )
    .bind::<Text, _>(server)
    .get_result(conn)
    .await?;
    Ok(c.n)
}
