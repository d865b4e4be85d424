//! Queries on `oidc_clients`: each tenant's registration at the identity
//! provider. Sealed columns are opened by the caller.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{Bytea, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::Result;

/// A tenant's row.
#[derive(Debug, diesel::QueryableByName)]
pub struct OidcClientRow {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub issuer: String,
    #[diesel(sql_type = Text)]
    pub auth_method: String,
    /// Registrations sent whose answer was never recorded.
    #[diesel(sql_type = Integer)]
    pub unanswered: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub client_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub registration_client_uri: Option<String>,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub registration_access_token: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub client_secret: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub secret_fetch_time: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub secret_fetched_by: Option<String>,
}

const COLUMNS: &str = "tenant_id, issuer, auth_method, unanswered, client_id, registration_client_uri, \
                       registration_access_token, client_secret, secret_fetch_time, secret_fetched_by";

/// The tenant's row, if any.
pub async fn find(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<Option<OidcClientRow>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM oidc_clients WHERE tenant_id = $1"
    ))
    .bind::<SqlUuid, _>(tenant)
    .get_result(conn)
    .await
    .optional()?)
}

/// The tenant's row, locked until the transaction ends.
pub async fn lock(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<Option<OidcClientRow>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM oidc_clients WHERE tenant_id = $1 FOR UPDATE"
    ))
    .bind::<SqlUuid, _>(tenant)
    .get_result(conn)
    .await
    .optional()?)
}

/// Records that a registration is about to be sent: the row (new, or one
/// whose earlier registration is gone) without an answer, its count of
/// unanswered registrations one up. Returns how many earlier registrations
/// got no recorded answer.
pub async fn record_intent(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    issuer: &str,
    auth_method: &str,
) -> Result<i32> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        unanswered: i32,
    }
    let row: Row = diesel::sql_query(
        "INSERT INTO oidc_clients (tenant_id, issuer, auth_method, unanswered)
         VALUES ($1, $2, $3, 1)
         ON CONFLICT (tenant_id) DO UPDATE
             SET issuer = EXCLUDED.issuer, auth_method = EXCLUDED.auth_method,
                 intent_time = now(), unanswered = oidc_clients.unanswered + 1,
                 client_id = NULL, registration_client_uri = NULL,
                 registration_access_token = NULL, client_secret = NULL, register_time = NULL,
                 secret_fetch_time = NULL, secret_fetched_by = NULL
         RETURNING unanswered",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(issuer)
    .bind::<Text, _>(auth_method)
    .get_result(conn)
    .await?;
    Ok(row.unanswered - 1)
}

/// Takes back the intent of a registration the provider refused.
pub async fn refused(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<()> {
    diesel::sql_query(
        "UPDATE oidc_clients SET unanswered = greatest(unanswered - 1, 0)
         WHERE tenant_id = $1 AND client_id IS NULL",
    )
    .bind::<SqlUuid, _>(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the provider's answer (the token and secret sealed).
pub async fn record_answer(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    client_id: &str,
    registration_client_uri: &str,
    registration_access_token: &[u8],
    client_secret: Option<&[u8]>,
) -> Result<()> {
    diesel::sql_query(
        "UPDATE oidc_clients
         SET client_id = $2, registration_client_uri = $3, registration_access_token = $4,
             client_secret = $5, register_time = now(), unanswered = 0
         WHERE tenant_id = $1",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(client_id)
    .bind::<Text, _>(registration_client_uri)
    .bind::<Bytea, _>(registration_access_token)
    .bind::<Nullable<Bytea>, _>(client_secret)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the tenant's registration (deleted at the provider).
pub async fn delete(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<()> {
    diesel::sql_query("DELETE FROM oidc_clients WHERE tenant_id = $1")
        .bind::<SqlUuid, _>(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// Drops the stored secret once an admin has it, recording who.
pub async fn mark_secret_fetched(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    by: &str,
) -> Result<()> {
    diesel::sql_query(
        "UPDATE oidc_clients SET client_secret = NULL, secret_fetch_time = now(), secret_fetched_by = $2
         WHERE tenant_id = $1",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(by)
    .execute(conn)
    .await?;
    Ok(())
}
