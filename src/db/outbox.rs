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
