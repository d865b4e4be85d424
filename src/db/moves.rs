//! Queries on `tenant_moves`: a tenant's move in flight and the history.

use diesel::OptionalExtension as _;
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::Result;

/// A tenant's move in flight.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct Move {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub target: String,
    #[diesel(sql_type = Nullable<diesel::sql_types::Timestamptz>)]
    pub switch_time: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn start(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    source: &str,
    target: &str,
    actor: &str,
) -> Result<()> {
    diesel::sql_query(
        "INSERT INTO tenant_moves (tenant_id, source, target, actor) VALUES ($1, $2, $3, $4)",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(source)
    .bind::<Text, _>(target)
    .bind::<Text, _>(actor)
    .execute(conn)
    .await?;
    Ok(())
}

/// The tenant's move in flight, if any.
pub async fn in_flight(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<Option<Move>> {
    Ok(diesel::sql_query(
        "SELECT id, source, target, switch_time FROM tenant_moves
         WHERE tenant_id = $1 AND finish_time IS NULL",
    )
    .bind::<SqlUuid, _>(tenant)
    .get_result(conn)
    .await
    .optional()?)
}

/// The target of the tenant's latest move.
pub async fn target_of(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<Option<String>> {
    #[derive(diesel::QueryableByName)]
    struct Target {
        #[diesel(sql_type = Text)]
        target: String,
    }
    let found: Option<Target> = diesel::sql_query(
        "SELECT target FROM tenant_moves WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind::<SqlUuid, _>(tenant)
    .get_result(conn)
    .await
    .optional()?;
    Ok(found.map(|t| t.target))
}

/// The copy is made: the source schema's size.
pub async fn copied(conn: &mut AsyncPgConnection, id: i64, bytes: i64) -> Result<()> {
    diesel::sql_query("UPDATE tenant_moves SET bytes = $2, copy_time = now() WHERE id = $1")
        .bind::<BigInt, _>(id)
        .bind::<BigInt, _>(bytes)
        .execute(conn)
        .await?;
    Ok(())
}

/// What the verification found equal on both sides.
pub async fn verified(
    conn: &mut AsyncPgConnection,
    id: i64,
    tables: &serde_json::Value,
) -> Result<()> {
    diesel::sql_query("UPDATE tenant_moves SET tables = $2 WHERE id = $1")
        .bind::<BigInt, _>(id)
        .bind::<Jsonb, _>(tables)
        .execute(conn)
        .await?;
    Ok(())
}

/// Points the tenant at the move's target; `false` if it is on neither
/// side (nothing changed).
pub async fn switch(conn: &mut AsyncPgConnection, tenant: Uuid, m: &Move) -> Result<bool> {
    let n = diesel::sql_query(
        "UPDATE tenants SET database_server = $3, revision = revision + 1, update_time = now()
         WHERE id = $1 AND database_server = $2",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(&m.source)
    .bind::<Text, _>(&m.target)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "UPDATE tenant_moves SET switch_time = coalesce(switch_time, now()) WHERE id = $1",
    )
    .bind::<BigInt, _>(m.id)
    .execute(conn)
    .await?;
    if n == 1 {
        return Ok(true);
    }
    #[derive(diesel::QueryableByName)]
    struct Server {
        #[diesel(sql_type = Text)]
        database_server: String,
    }
    let now: Server = diesel::sql_query("SELECT database_server FROM tenants WHERE id = $1")
        .bind::<SqlUuid, _>(tenant)
        .get_result(conn)
        .await?;
    Ok(now.database_server == m.target)
}

/// Ends the tenant's move in flight with `outcome` (`MOVED` or
/// `ROLLED_BACK`); nothing if none is in flight.
pub async fn finish(conn: &mut AsyncPgConnection, tenant: Uuid, outcome: &str) -> Result<()> {
    diesel::sql_query(
        "UPDATE tenant_moves SET outcome = $2, finish_time = now()
         WHERE tenant_id = $1 AND finish_time IS NULL",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(outcome)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves in flight from or to `server`.
pub async fn touching(conn: &mut AsyncPgConnection, server: &str) -> Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let c: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM tenant_moves
         WHERE finish_time IS NULL AND (source = $1 OR target = $1)",
    )
    .bind::<Text, _>(server)
    .get_result(conn)
    .await?;
    Ok(c.n)
}
