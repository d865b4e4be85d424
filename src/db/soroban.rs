//! Queries on `contract_deployments` and `soroban_transactions`: the
//! `deploy_contract` step's memory across attempts, crashes and replicas.

use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Uuid as SqlUuid};
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// The index that allows one pending transaction per deployer.
const ONE_PENDING: &str = "soroban_transactions_one_pending";

/// The output key under which a tenant's contract address is recorded.
pub const CONTRACT_ADDRESS: &str = "contract_address";

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
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub purpose: String,
    #[diesel(sql_type = BigInt)]
    pub sequence: i64,
    #[diesel(sql_type = BigInt)]
    pub max_time: i64,
    #[diesel(sql_type = Text)]
    pub envelope_xdr: String,
}

/// Records `tx` as the deployer's transaction in flight. False if another
/// is in flight already (the partial unique index says so).
///
/// The same transaction may be recorded again after it was rejected: built
/// from the same sequence number within the same second it has the same
/// bytes, and sending it again is what a transient rejection calls for.
pub async fn insert_pending(
    conn: &mut AsyncPgConnection,
    deployer: &str,
    tx: &PendingTransaction,
) -> QueryResult<bool> {
    let inserted = diesel::sql_query(
        "INSERT INTO soroban_transactions
             (hash, tenant_id, deployer, purpose, sequence, max_time, envelope_xdr, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')
         ON CONFLICT (hash) DO UPDATE
             SET status = 'pending', ledger = NULL, error = NULL, settle_time = NULL
             WHERE soroban_transactions.status = 'failed'",
    )
    .bind::<Text, _>(&tx.hash)
    .bind::<SqlUuid, _>(tx.tenant_id)
    .bind::<Text, _>(deployer)
    .bind::<Text, _>(&tx.purpose)
    .bind::<BigInt, _>(tx.sequence)
    .bind::<BigInt, _>(tx.max_time)
    .bind::<Text, _>(&tx.envelope_xdr)
    .execute(conn)
    .await;
    match inserted {
        Ok(n) => Ok(n == 1),
        Err(e) if super::is_unique_violation(&e, ONE_PENDING) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The deployer's transaction in flight, whichever tenant it is for.
pub async fn pending(
    conn: &mut AsyncPgConnection,
    deployer: &str,
) -> QueryResult<Option<PendingTransaction>> {
    use diesel::OptionalExtension;
    diesel::sql_query(
        "SELECT hash, tenant_id, purpose, sequence, max_time, envelope_xdr
         FROM soroban_transactions WHERE deployer = $1 AND status = 'pending'",
    )
    .bind::<Text, _>(deployer)
    .get_result(conn)
    .await
    .optional()
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
