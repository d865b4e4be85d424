//! `contract_deploys_per_sec` and `deploy_p50_ms`: tenants of the default
//! plan, contract included, provisioned against the local Soroban network.
//! There is no plain-SQL baseline here: one transaction in flight per
//! deployer makes the ledger close time the limit, one deployment per
//! deployer per close at best.

use diesel_async::{AsyncConnection, AsyncPgConnection};

use super::Scratch;
use super::provision::{provision_load, provisioning_server};
use crate::server::BoxError;

/// Tenants per second to ACTIVE on the default plan, and the median time of
/// one `deploy_contract` attempt.
pub(super) async fn deploy_throughput(
    scratch: &Scratch,
    slots: usize,
    tenants: usize,
) -> Result<(f64, f64), BoxError> {
    let (server, _smtp) = provisioning_server(scratch, slots).await?;
    let tps = provision_load(&server, slots, tenants, crate::domain::DEFAULT_PLAN).await?;
    let mut conn = AsyncPgConnection::establish(&server.url).await?;
    let p50 = milliseconds(
        &mut conn,
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finish_time - start_time) * 1000) AS ms
         FROM tenant_steps WHERE name = 'deploy_contract' AND status = 'SUCCEEDED'",
    )
    .await?;
    server.stop().await;
    Ok((tps, p50))
}

/// A query's one float column `ms` (0 for none).
async fn milliseconds(conn: &mut AsyncPgConnection, sql: &str) -> Result<f64, BoxError> {
    #[derive(diesel::QueryableByName)]
    struct Ms {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
        ms: Option<f64>,
    }
    let row: Ms = diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql), conn).await?;
    Ok(row.ms.unwrap_or(0.0))
}
