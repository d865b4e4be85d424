//! Queries on `api_keys`: tenants' API keys, by their hashes.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Interval, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::Result;

/// A key's row, without its hash.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct ApiKeyRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub prefix: String,
    #[diesel(sql_type = Array<Text>)]
    pub scopes: Vec<String>,
    #[diesel(sql_type = Timestamptz)]
    pub create_time: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub created_by: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub expire_time: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_used_time: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub revoke_time: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub replaced_by: Option<Uuid>,
}

const COLUMNS: &str = "id, tenant_id, name, prefix, scopes, create_time, created_by, expire_time, \
                       last_used_time, revoke_time, replaced_by";

/// What verification needs of a key: its hash, and its tenant's state.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct Verifiable {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub tenant_state: String,
    #[diesel(sql_type = Bytea)]
    pub secret_hash: Vec<u8>,
    #[diesel(sql_type = Array<Text>)]
    pub scopes: Vec<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub expire_time: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub revoke_time: Option<DateTime<Utc>>,
}

/// A key to insert.
pub struct NewApiKey<'a> {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: &'a str,
    pub prefix: &'a str,
    pub scopes: &'a [String],
    pub secret_hash: &'a [u8],
    pub created_by: &'a str,
    pub ttl: Option<std::time::Duration>,
    /// The sealed key, for the welcome email.
    pub delivery: Option<&'a [u8]>,
}

fn interval(d: std::time::Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    )
}

pub async fn insert(conn: &mut AsyncPgConnection, key: &NewApiKey<'_>) -> Result<ApiKeyRow> {
    Ok(diesel::sql_query(format!(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, scopes, secret_hash, created_by,
                               expire_time, delivery)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8, $9)
         RETURNING {COLUMNS}"
    ))
    .bind::<SqlUuid, _>(key.id)
    .bind::<SqlUuid, _>(key.tenant_id)
    .bind::<Text, _>(key.name)
    .bind::<Text, _>(key.prefix)
    .bind::<Array<Text>, _>(key.scopes)
    .bind::<Bytea, _>(key.secret_hash)
    .bind::<Text, _>(key.created_by)
    .bind::<Nullable<Interval>, _>(key.ttl.map(interval))
    .bind::<Nullable<Bytea>, _>(key.delivery)
    .get_result(conn)
    .await?)
}

/// The tenant's keys, oldest first; revoked ones (past their revoke time)
/// only when asked.
pub async fn list(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    include_revoked: bool,
) -> Result<Vec<ApiKeyRow>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM api_keys
         WHERE tenant_id = $1 AND ($2 OR revoke_time IS NULL OR revoke_time > now())
         ORDER BY create_time, id"
    ))
    .bind::<SqlUuid, _>(tenant)
    .bind::<Bool, _>(include_revoked)
    .load(conn)
    .await?)
}

/// One key, locked until the transaction ends.
pub async fn lock(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<ApiKeyRow>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE"
    ))
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()?)
}

/// Sets when the key stops working (now, or the end of a rotation's
/// grace), and the key that replaces it.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    after: std::time::Duration,
    replaced_by: Option<Uuid>,
) -> Result<ApiKeyRow> {
    Ok(diesel::sql_query(format!(
        "UPDATE api_keys SET revoke_time = now() + $2, replaced_by = coalesce($3, replaced_by),
                             delivery = NULL
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Interval, _>(interval(after))
    .bind::<Nullable<SqlUuid>, _>(replaced_by)
    .get_result(conn)
    .await?)
}

/// Keys created for the tenant within `window`, and when the oldest of
/// them was: the rate limit's count.
pub async fn created_within(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    window: std::time::Duration,
) -> Result<(i64, Option<DateTime<Utc>>)> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        oldest: Option<DateTime<Utc>>,
    }
    let c: Count = diesel::sql_query(
        "SELECT count(*) AS n, min(create_time) AS oldest FROM api_keys
         WHERE tenant_id = $1 AND create_time > now() - $2",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Interval, _>(interval(window))
    .get_result(conn)
    .await?;
    Ok((c.n, c.oldest))
}

/// What verifying the key `id` needs, if it exists.
pub async fn verifiable(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<Verifiable>> {
    Ok(diesel::sql_query(
        "SELECT k.tenant_id, t.state AS tenant_state, k.secret_hash, k.scopes,
                k.expire_time, k.revoke_time
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.id = $1 AND t.delete_time IS NULL",
    )
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()?)
}

/// Records when keys were last used (the later of what is stored and
/// what is given).
pub async fn touch(conn: &mut AsyncPgConnection, used: &[(Uuid, DateTime<Utc>)]) -> Result<()> {
    let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = used.iter().copied().unzip();
    diesel::sql_query(
        "UPDATE api_keys k SET last_used_time = greatest(k.last_used_time, u.at)
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
         WHERE k.id = u.id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Timestamptz>, _>(times)
    .execute(conn)
    .await?;
    Ok(())
}

/// The sealed key awaiting delivery by the welcome email, if any.
pub async fn delivery(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
) -> Result<Option<(Uuid, Vec<u8>)>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Bytea)]
        delivery: Vec<u8>,
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT id, delivery FROM api_keys
         WHERE tenant_id = $1 AND delivery IS NOT NULL
         ORDER BY create_time DESC LIMIT 1",
    )
    .bind::<SqlUuid, _>(tenant)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|r| (r.id, r.delivery)))
}

/// Forgets the sealed copy of a delivered key.
pub async fn delivered(conn: &mut AsyncPgConnection, id: Uuid) -> Result<()> {
    diesel::sql_query("UPDATE api_keys SET delivery = NULL WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The tenant's first key, if `issue_api_key` made one (by its name).
pub async fn first_of(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    name: &str,
) -> Result<Option<ApiKeyRow>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND name = $2
         ORDER BY create_time LIMIT 1"
    ))
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(name)
    .get_result(conn)
    .await
    .optional()?)
}
