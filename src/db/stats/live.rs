//! The figures that ignore the window: they read the live tenants (and,
//! for the oldest running pipeline, the start of each running tenant's
//! pipeline), so the rollup has nothing to offer them.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::RunningPipeline;
use crate::domain::TenantState;
use crate::error::Result;

/// Live tenants in each of `states`, in that order, zeros included. One
/// count per state, each an index-only range scan of `tenants_state_id_idx`:
/// about half the time of one GROUP BY over the whole table at 100k tenants.
pub async fn tenants_by_state(
    conn: &mut AsyncPgConnection,
    states: &[TenantState],
) -> Result<Vec<(TenantState, i64)>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }
    let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT (SELECT count(*) FROM tenants t
                 WHERE t.state = s.state AND t.delete_time IS NULL) AS count
         FROM unnest($1::text[]) WITH ORDINALITY s(state, n)
         ORDER BY s.n",
    )
    .bind::<Array<Text>, _>(&names)
    .load(conn)
    .await?;
    Ok(states
        .iter()
        .copied()
        .zip(rows.into_iter().map(|r| r.count))
        .collect())
}

#[derive(QueryableByName)]
struct RunningRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    slug: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    step: String,
    #[diesel(sql_type = Bool)]
    compensating: bool,
    #[diesel(sql_type = Timestamptz)]
    start_time: DateTime<Utc>,
}

/// The live PROVISIONING or DEPROVISIONING tenant whose pipeline started
/// first (ties by id). Running tenants are found through
/// `tenants_state_id_idx`, each one's start through `events_tenant_id_idx`,
/// read backwards from its last event.
pub async fn oldest_running(conn: &mut AsyncPgConnection) -> Result<Option<RunningPipeline>> {
    let rows: Vec<RunningRow> = diesel::sql_query(
        "SELECT t.id AS tenant_id, t.slug, t.state, coalesce(o.step, '') AS step,
                coalesce(o.operation = 'COMPENSATE', false) AS compensating, s.start_time
         FROM tenants t
         LEFT JOIN outbox o ON o.tenant_id = t.id
         CROSS JOIN LATERAL (
             SELECT coalesce(
                 (SELECT e.create_time FROM events e
                  WHERE e.tenant_id = t.id
                    AND (e.kind = 'TENANT_CREATED'
                         OR (e.kind = 'STATE_CHANGED' AND e.state IN ('PROVISIONING', 'DEPROVISIONING')))
                  ORDER BY e.id DESC LIMIT 1),
                 t.create_time) AS start_time
         ) s
         WHERE t.delete_time IS NULL AND t.state IN ('PROVISIONING', 'DEPROVISIONING')
         ORDER BY s.start_time, t.id
         LIMIT 1",
    )
    .load(conn)
    .await?;
    rows.into_iter()
        .next()
        .map(|r| {
            Ok(RunningPipeline {
                state: crate::db::models::parse_state(&r.state)?,
                tenant_id: r.tenant_id,
                slug: r.slug,
                step: r.step,
                compensating: r.compensating,
                start_time: r.start_time,
            })
        })
        .transpose()
}

/// The outbox: rows due now, rows waiting (a backoff, a lease), and when
/// the oldest due row became due.
#[derive(Debug, Clone, Default, PartialEq, diesel::QueryableByName)]
pub struct Backlog {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub due: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub waiting: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    pub oldest_due: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn backlog(conn: &mut AsyncPgConnection) -> Result<Backlog> {
    Ok(diesel::sql_query(
        "SELECT count(*) FILTER (WHERE available_at <= now() AND lease_owner IS NULL) AS due,
                count(*) FILTER (WHERE available_at > now() OR lease_owner IS NOT NULL) AS waiting,
                min(available_at) FILTER (WHERE available_at <= now() AND lease_owner IS NULL) AS oldest_due
         FROM outbox",
    )
    .get_result(conn)
    .await?)
}
