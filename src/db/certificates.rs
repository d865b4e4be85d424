//! Queries on `tls_certificates` (each tenant's certificate and the order
//! in progress) and `acme_accounts`. Sealed columns are opened by the
//! caller.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{Bytea, Interval, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::Result;

/// A tenant's row.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct CertificateRow {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub dns_name: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub order_url: Option<String>,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub order_key: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub chain_pem: Option<String>,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub private_key: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub serial: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub not_before: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub not_after: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub issue_time: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub key_fetch_time: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub key_fetched_by: Option<String>,
}

const COLUMNS: &str = "tenant_id, dns_name, order_url, order_key, chain_pem, private_key, serial, \
                       not_before, not_after, issue_time, key_fetch_time, key_fetched_by";

/// The tenant's row, if any.
pub async fn find(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<Option<CertificateRow>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM tls_certificates WHERE tenant_id = $1"
    ))
    .bind::<SqlUuid, _>(tenant)
    .get_result(conn)
    .await
    .optional()?)
}

/// The tenant's row, locked until the transaction ends.
pub async fn lock(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<Option<CertificateRow>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM tls_certificates WHERE tenant_id = $1 FOR UPDATE"
    ))
    .bind::<SqlUuid, _>(tenant)
    .get_result(conn)
    .await
    .optional()?)
}

/// Records a new order for the tenant's name (its key comes later).
pub async fn start_order(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    dns_name: &str,
    order_url: &str,
) -> Result<()> {
    diesel::sql_query(
        "INSERT INTO tls_certificates (tenant_id, dns_name, order_url, order_time)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (tenant_id) DO UPDATE
         SET dns_name = excluded.dns_name, order_url = excluded.order_url,
             order_time = excluded.order_time, order_key = NULL",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(dns_name)
    .bind::<Text, _>(order_url)
    .execute(conn)
    .await?;
    Ok(())
}

/// Keeps the (sealed) key of the order `order_url` before it is finalized;
/// false if the tenant's order is another one by now.
pub async fn set_order_key(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    order_url: &str,
    sealed: &[u8],
) -> Result<bool> {
    let updated = diesel::sql_query(
        "UPDATE tls_certificates SET order_key = $3
         WHERE tenant_id = $1 AND order_url = $2 AND order_key IS NULL",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(order_url)
    .bind::<Bytea, _>(sealed)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// Forgets the order `order_url` (invalid, expired, gone).
pub async fn drop_order(conn: &mut AsyncPgConnection, tenant: Uuid, order_url: &str) -> Result<()> {
    diesel::sql_query(
        "UPDATE tls_certificates SET order_url = NULL, order_time = NULL, order_key = NULL
         WHERE tenant_id = $1 AND order_url = $2",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(order_url)
    .execute(conn)
    .await?;
    Ok(())
}

/// What an issued certificate says about itself.
#[derive(Debug, Clone)]
pub struct Issued {
    pub chain_pem: String,
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// The order `order_url` was issued: its certificate (and the order's key)
/// replace the one in force. False if the tenant's order is another one.
pub async fn issue(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    order_url: &str,
    issued: &Issued,
) -> Result<bool> {
    let updated = diesel::sql_query(
        "UPDATE tls_certificates
         SET chain_pem = $3, serial = $4, not_before = $5, not_after = $6, issue_time = now(),
             private_key = order_key, key_fetch_time = NULL, key_fetched_by = NULL,
             order_url = NULL, order_time = NULL, order_key = NULL
         WHERE tenant_id = $1 AND order_url = $2 AND order_key IS NOT NULL",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(order_url)
    .bind::<Text, _>(&issued.chain_pem)
    .bind::<Text, _>(&issued.serial)
    .bind::<Timestamptz, _>(issued.not_before)
    .bind::<Timestamptz, _>(issued.not_after)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// The key was handed out: the server forgets it.
pub async fn mark_key_fetched(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    subject: &str,
) -> Result<()> {
    diesel::sql_query(
        "UPDATE tls_certificates
         SET private_key = NULL, key_fetch_time = now(), key_fetched_by = $2
         WHERE tenant_id = $1",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(subject)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the tenant's row (its certificate revoked).
pub async fn delete(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<()> {
    diesel::sql_query("DELETE FROM tls_certificates WHERE tenant_id = $1")
        .bind::<SqlUuid, _>(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// ACTIVE tenants whose certificate ends within `within` and that have no
/// pipeline running, soonest first.
pub async fn due_for_renewal(
    conn: &mut AsyncPgConnection,
    within: std::time::Duration,
    limit: i64,
) -> Result<Vec<Uuid>> {
    #[derive(diesel::QueryableByName)]
    struct Due {
        #[diesel(sql_type = SqlUuid)]
        tenant_id: Uuid,
    }
    let within = diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(within.as_micros()).unwrap_or(i64::MAX),
    );
    let rows: Vec<Due> = diesel::sql_query(
        "SELECT c.tenant_id FROM tls_certificates c
         JOIN tenants t ON t.id = c.tenant_id
         WHERE c.chain_pem IS NOT NULL AND c.not_after < now() + $1
           AND t.state = 'ACTIVE'
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.tenant_id = c.tenant_id)
         ORDER BY c.not_after
         LIMIT $2",
    )
    .bind::<Interval, _>(within)
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.tenant_id).collect())
}

/// The sealed credentials of the account at `directory_url`, if created.
pub async fn account(conn: &mut AsyncPgConnection, directory_url: &str) -> Result<Option<Vec<u8>>> {
    #[derive(diesel::QueryableByName)]
    struct Account {
        #[diesel(sql_type = Bytea)]
        credentials: Vec<u8>,
    }
    let row: Option<Account> =
        diesel::sql_query("SELECT credentials FROM acme_accounts WHERE directory_url = $1")
            .bind::<Text, _>(directory_url)
            .get_result(conn)
            .await
            .optional()?;
    Ok(row.map(|a| a.credentials))
}

/// Keeps a new account's sealed credentials unless another replica kept
/// its own first; returns the ones kept.
pub async fn keep_account(
    conn: &mut AsyncPgConnection,
    directory_url: &str,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    diesel::sql_query(
        "INSERT INTO acme_accounts (directory_url, credentials) VALUES ($1, $2)
         ON CONFLICT (directory_url) DO NOTHING",
    )
    .bind::<Text, _>(directory_url)
    .bind::<Bytea, _>(sealed)
    .execute(conn)
    .await?;
    Ok(account(conn, directory_url)
        .await?
        .unwrap_or_else(|| sealed.to_vec()))
}
