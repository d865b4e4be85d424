//! Queries on `contract_deployments` and `soroban_transactions`: the
//! `deploy_contract` step's memory across attempts, crashes and replicas.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// The output key under which a tenant's contract address is recorded.
pub const CONTRACT_ADDRESS: &str = "contract_address";

/// The name of the step that deploys tenants' contracts, whose waiting
/// outbox rows [`wake_waiting`] makes due.
pub const DEPLOY_STEP: &str = "deploy_contract";

/// What is known of a deployment before its transaction is sent.
pub struct Reservation<'a> {
    pub tenant_id: Uuid,
    pub network_passphrase: &'a str,
    pub deployer: &'a str,
    pub contract_address: &'a str,
    pub wasm_hash: &'a str,
}

/// Records the address a tenant's contract will have, on the deployment and
/// in the tenant's outputs, before anything is sent. Idempotent.
pub async fn reserve(conn: &mut AsyncPgConnection, r: &Reservation<'_>) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO contract_deployments
             (tenant_id, network_passphrase, deployer, contract_address, wasm_hash, status)
         VALUES ($1, $2, $3, $4, $5, 'reserved')
         ON CONFLICT (tenant_id) DO UPDATE SET
             network_passphrase = excluded.network_passphrase,
             deployer = excluded.deployer,
             contract_address = excluded.contract_address,
             wasm_hash = excluded.wasm_hash,
             update_time = now()
         WHERE (contract_deployments.network_passphrase, contract_deployments.deployer,
                contract_deployments.contract_address, contract_deployments.wasm_hash)
               IS DISTINCT FROM
               (excluded.network_passphrase, excluded.deployer, excluded.contract_address,
                excluded.wasm_hash)",
    )
    .bind::<SqlUuid, _>(r.tenant_id)
    .bind::<Text, _>(r.network_passphrase)
    .bind::<Text, _>(r.deployer)
    .bind::<Text, _>(r.contract_address)
    .bind::<Text, _>(r.wasm_hash)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "UPDATE tenants SET outputs = outputs || $2, revision = revision + 1, update_time = now()
         WHERE id = $1 AND outputs -> $3 IS DISTINCT FROM $2 -> $3",
    )
    .bind::<SqlUuid, _>(r.tenant_id)
    .bind::<Jsonb, _>(serde_json::json!({ CONTRACT_ADDRESS: r.contract_address }))
    .bind::<Text, _>(CONTRACT_ADDRESS)
    .execute(conn)
    .await?;
    Ok(())
}

/// A tenant's deployment, if one was reserved.
#[derive(Debug, Clone, QueryableByName)]
pub struct Deployment {
    #[diesel(sql_type = Text)]
    pub network_passphrase: String,
    #[diesel(sql_type = Text)]
    pub deployer: String,
    #[diesel(sql_type = Text)]
    pub contract_address: String,
    #[diesel(sql_type = Text)]
    pub status: String,
}

pub async fn deployment(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> QueryResult<Option<Deployment>> {
    use diesel::OptionalExtension;
    diesel::sql_query(
        "SELECT network_passphrase, deployer, contract_address, status
         FROM contract_deployments WHERE tenant_id = $1",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .get_result(conn)
    .await
    .optional()
}

/// Moves a deployment to `deployed` or `orphaned`.
pub async fn set_deployment_status(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    status: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE contract_deployments SET status = $2, update_time = now()
         WHERE tenant_id = $1 AND status <> $2",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(status)
    .execute(conn)
    .await?;
    Ok(())
}

/// A signed transaction, recorded before it is sent.
#[derive(Debug, Clone, QueryableByName)]
pub struct PendingTransaction {
    #[diesel(sql_type = Text)]
    pub hash: String,
    /// `None` for the deployer's own transactions (funding channels).
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub tenant_id: Option<Uuid>,
    #[diesel(sql_type = Text)]
    pub purpose: String,
    /// The account whose sequence number it uses (`G...`).
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = BigInt)]
    pub sequence: i64,
    #[diesel(sql_type = BigInt)]
    pub max_time: i64,
    #[diesel(sql_type = Text)]
    pub envelope_xdr: String,
    /// When it was last handed to the RPC server.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub send_time: Option<DateTime<Utc>>,
}

/// What became of recording a transaction as in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded: it may be sent.
    Yes,
    /// Its source account has a transaction in flight already.
    SourceBusy,
    /// Its tenant has a transaction in flight already.
    TenantBusy,
    /// The deployer's code is being uploaded by another transaction.
    UploadBusy,
    /// A transaction recorded since applied with this sequence number or a
    /// later one: the number was read before that one landed.
    SequenceUsed,
}

const ONE_PER_SOURCE: &str = "soroban_transactions_one_per_source";
const ONE_PER_TENANT: &str = "soroban_transactions_one_per_tenant";
const ONE_UPLOAD: &str = "soroban_transactions_one_upload";

/// Records `tx` as in flight, unless its source, its tenant or (for an
/// upload) the deployer's upload has one in flight already (the partial
/// unique indexes say so), or its sequence number was used since it was
/// read: a transaction of the same source recorded as applied (succeeded,
/// or failed in a ledger) with that number or a later one.
///
/// The same transaction may be recorded again after it was rejected: built
/// from the same sequence number within the same second it has the same
/// bytes, and sending it again is what a transient rejection calls for.
pub async fn insert_pending(
    conn: &mut AsyncPgConnection,
    deployer: &str,
    tx: &PendingTransaction,
) -> QueryResult<Recorded> {
    let inserted = diesel::sql_query(
        "INSERT INTO soroban_transactions
             (hash, tenant_id, deployer, purpose, source, sequence, max_time, envelope_xdr,
              status)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'pending'
         WHERE NOT EXISTS (
             SELECT 1 FROM soroban_transactions
             WHERE source = $5 AND sequence >= $6
               AND (status = 'succeeded' OR (status = 'failed' AND ledger IS NOT NULL)))
         ON CONFLICT (hash) DO UPDATE
             SET status = 'pending', ledger = NULL, error = NULL, settle_time = NULL,
                 send_time = NULL
             WHERE soroban_transactions.status = 'failed'
               AND soroban_transactions.ledger IS NULL",
    )
    .bind::<Text, _>(&tx.hash)
    .bind::<Nullable<SqlUuid>, _>(tx.tenant_id)
    .bind::<Text, _>(deployer)
    .bind::<Text, _>(&tx.purpose)
    .bind::<Text, _>(&tx.source)
    .bind::<BigInt, _>(tx.sequence)
    .bind::<BigInt, _>(tx.max_time)
    .bind::<Text, _>(&tx.envelope_xdr)
    .execute(conn)
    .await;
    match inserted {
        Ok(1) => Ok(Recorded::Yes),
        Ok(_) => Ok(Recorded::SequenceUsed),
        Err(e) if super::is_unique_violation(&e, ONE_PER_SOURCE) => Ok(Recorded::SourceBusy),
        Err(e) if super::is_unique_violation(&e, ONE_PER_TENANT) => Ok(Recorded::TenantBusy),
        Err(e) if super::is_unique_violation(&e, ONE_UPLOAD) => Ok(Recorded::UploadBusy),
        Err(e) => Err(e),
    }
}

const PENDING_COLUMNS: &str =
    "hash, tenant_id, purpose, source, sequence, max_time, envelope_xdr, send_time";

/// The tenant's transaction in flight, if any.
pub async fn pending_for_tenant(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> QueryResult<Option<PendingTransaction>> {
    use diesel::OptionalExtension;
    diesel::sql_query(format!(
        "SELECT {PENDING_COLUMNS} FROM soroban_transactions
         WHERE tenant_id = $1 AND status = 'pending'"
    ))
    .bind::<SqlUuid, _>(tenant_id)
    .get_result(conn)
    .await
    .optional()
}

/// Every transaction of the deployer in flight (on any source), oldest
/// first.
pub async fn pending_of(
    conn: &mut AsyncPgConnection,
    deployer: &str,
) -> QueryResult<Vec<PendingTransaction>> {
    diesel::sql_query(format!(
        "SELECT {PENDING_COLUMNS} FROM soroban_transactions
         WHERE deployer = $1 AND status = 'pending' ORDER BY create_time"
    ))
    .bind::<Text, _>(deployer)
    .load(conn)
    .await
}

/// Notes that the transaction was handed to the RPC server just now.
pub async fn mark_sent(conn: &mut AsyncPgConnection, hash: &str) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE soroban_transactions SET send_time = now() WHERE hash = $1 AND status = 'pending'",
    )
    .bind::<Text, _>(hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes due now as many deployments waiting for a channel as the
/// deployer has channels free (of `channels`), oldest wait first: a
/// deployment that found every channel busy sleeps long, and a settled
/// transaction hands its channel on instead of leaving it to the next poll.
pub async fn wake_waiting(
    conn: &mut AsyncPgConnection,
    deployer: &str,
    channels: i64,
) -> QueryResult<usize> {
    diesel::sql_query(
        "WITH free AS (
             SELECT greatest($2 - count(*), 0) AS n FROM soroban_transactions
             WHERE deployer = $1 AND status = 'pending' AND purpose <> 'fund_channels'
         )
         UPDATE outbox SET available_at = now()
         WHERE id IN (
             SELECT o.id FROM outbox o
             WHERE o.step = $3 AND o.waiting_since IS NOT NULL AND o.lease_owner IS NULL
               AND o.available_at > now()
               AND NOT EXISTS (SELECT 1 FROM soroban_transactions t
                               WHERE t.tenant_id = o.tenant_id AND t.status = 'pending')
             ORDER BY o.waiting_since
             LIMIT (SELECT n FROM free)
             FOR UPDATE OF o SKIP LOCKED)",
    )
    .bind::<Text, _>(deployer)
    .bind::<BigInt, _>(channels)
    .bind::<Text, _>(DEPLOY_STEP)
    .execute(conn)
    .await
}

/// Settles a transaction: `succeeded`, `failed` (with why) or `expired`.
pub async fn settle(
    conn: &mut AsyncPgConnection,
    hash: &str,
    status: &str,
    ledger: Option<u32>,
    error: Option<&str>,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE soroban_transactions
         SET status = $2, ledger = $3, error = $4, settle_time = now()
         WHERE hash = $1 AND status = 'pending'",
    )
    .bind::<Text, _>(hash)
    .bind::<Text, _>(status)
    .bind::<Nullable<Integer>, _>(ledger.and_then(|l| i32::try_from(l).ok()))
    .bind::<Nullable<Text>, _>(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The hash of the transaction that created the tenant's contract.
pub async fn creation(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> QueryResult<Option<String>> {
    use diesel::OptionalExtension;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        hash: String,
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT hash FROM soroban_transactions
         WHERE tenant_id = $1 AND purpose = 'create_contract' AND status = 'succeeded'
         ORDER BY settle_time DESC LIMIT 1",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|r| r.hash))
}

/// How many transactions of each status a tenant's deployment sent, for
/// tests and audits: (purpose, status) pairs in sending order.
pub async fn history(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> QueryResult<Vec<(String, String)>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        purpose: String,
        #[diesel(sql_type = Text)]
        status: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT purpose, status FROM soroban_transactions
         WHERE tenant_id = $1 ORDER BY create_time, sequence",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.purpose, r.status)).collect())
}
