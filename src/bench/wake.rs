//! `wake_p50_ms` and `wake_p99_ms`: from the commit of CreateTenant to the
//! start of its first step, on an idle server, one tenant at a time. No
//! plain-SQL baseline runs next to it: a NOTIFY wake-up should take a few
//! milliseconds, and figures near the fallback poll interval (seconds) mean
//! notifications were missed.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};

use super::{BenchServer, NO_CONTRACT_PLAN, Scratch, add_no_contract_plan, request};
use crate::server::BoxError;
use crate::steps::Registry;

/// Commit of CreateTenant to the start of its first step, idle server.
pub(super) async fn wake_latency(
    scratch: &Scratch,
    samples: usize,
) -> Result<(f64, f64), BoxError> {
    let server = BenchServer::start(scratch, |cfg| cfg.concurrency = 4, Registry::new()).await?;
    // Without contracts: their deployments queue behind one another and
    // keep dispatcher slots busy, so the server would not be idle.
    add_no_contract_plan(&server).await?;
    let mut client = server.client().await?;
    for i in 0..samples {
        let mut request = request(format!("w-{i}"));
        if let Some(tenant) = request.tenant.as_mut() {
            tenant.plan = NO_CONTRACT_PLAN.to_owned();
        }
        client.create_tenant(request).await?;
        // Idle between samples: the pipeline finishes, the dispatcher sleeps.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let mut conn = AsyncPgConnection::establish(&server.url).await?;
    let p = first_step(&mut conn).await?;
    server.stop().await;
    Ok((p.p50, p.p99))
}

#[derive(diesel::QueryableByName)]
struct Percentiles {
    #[diesel(sql_type = diesel::sql_types::Double)]
    p50: f64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    p99: f64,
}

/// The p50 and p99 milliseconds from CreateTenant to the start of a
/// tenant's `create_schema` (the first step of the plans without
/// contracts).
async fn first_step(conn: &mut AsyncPgConnection) -> Result<Percentiles, BoxError> {
    // TENANT_CREATED is stamped when the create transaction starts (just
    // before its commit), STEP_STARTED when the claim starts.
    Ok(diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
             FROM (SELECT (extract(epoch FROM s.create_time - c.create_time) * 1000)::float8 AS ms
                   FROM events c JOIN events s ON s.tenant_id = c.tenant_id
                   WHERE c.kind = 'TENANT_CREATED' AND s.kind = 'STEP_STARTED'
                     AND s.step = 'create_schema') x",
        ),
        conn,
    )
    .await?)
}

/// The median of [`first_step`].
pub(super) async fn first_step_p50(conn: &mut AsyncPgConnection) -> Result<f64, BoxError> {
    Ok(first_step(conn).await?.p50)
}
