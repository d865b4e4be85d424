//! Queries on the append-only `events` log.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::events;
use crate::domain::NewEvent;

#[derive(Insertable)]
#[diesel(table_name = events)]
struct NewEventRow<'a> {
    tenant_id: uuid::Uuid,
    kind: &'static str,
    step: Option<&'a str>,
    attempt: Option<i32>,
    state: &'static str,
    message: &'a str,
    actor: &'a str,
}

/// Appends an event and returns its id. The caller holds the tenant's row
/// lock (`tenants::lock`) or has just inserted the tenant.
pub async fn append(conn: &mut AsyncPgConnection, event: &NewEvent) -> QueryResult<i64> {
    diesel::insert_into(events::table)
        .values(NewEventRow {
            tenant_id: event.tenant_id,
            kind: event.kind.as_str(),
            step: event.step.as_deref(),
            attempt: event.attempt,
            state: event.state.as_str(),
            message: &event.message,
            actor: &event.actor,
        })
        .returning(events::id)
        .get_result(conn)
        .await
}
