//! Queries on the `outbox` of due work.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::outbox;

/// What an outbox row asks the dispatcher to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// Run a provisioning step.
    Provision,
    /// Undo a step, walking the pipeline backwards.
    Compensate,
    /// Run a deprovisioning step.
    Deprovision,
    /// Run a step of moving the tenant's data to another server.
    Move,
    /// Renew the tenant's certificate.
    Renew,
}

impl Operation {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Makes `step` due now for `tenant_id`. At most one row per tenant exists
/// (unique index), so this fails if another operation is in flight.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    operation: Operation,
    step: &str,
) -> QueryResult<()> {
    let operation: &'static str = operation.into();
    diesel::insert_into(outbox::table)
        .values((
            outbox::tenant_id.eq(tenant_id),
            outbox::operation.eq(operation),
            outbox::step.eq(step),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The outbox at a glance: rows in flight, rows due and waiting for a
/// worker (a leased row's `available_at` is its lease expiry, so it is not
/// due), and how long the oldest of those has waited.
#[derive(Debug, QueryableByName)]
pub struct Backlog {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub rows: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub due: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub oldest_due_secs: f64,
}

pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<Backlog> {
    diesel::sql_query(
        "SELECT count(*) AS rows,
                count(*) FILTER (WHERE available_at <= now()) AS due,
                coalesce(extract(epoch FROM now() - min(available_at)
                    FILTER (WHERE available_at <= now())), 0)::float8 AS oldest_due_secs
         FROM outbox",
    )
    .get_result(conn)
    .await
}
