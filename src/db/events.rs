//! Queries on the append-only `events` log.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use uuid::Uuid;

use super::models::EventRow;
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

/// Events after `cursor`, plus any of the `missing` ids that have appeared,
/// in id order. Two index range reads in one statement: the ids after the
/// cursor from the cursor on, the missing ones (all below it) by key; one
/// `id > cursor OR id = ANY(missing)` filter would walk the id index from
/// the log's start.
pub async fn after(
    conn: &mut AsyncPgConnection,
    cursor: i64,
    missing: &[i64],
    limit: i64,
) -> QueryResult<Vec<EventRow>> {
    let newer = events::table
        .filter(events::id.gt(cursor))
        .order(events::id)
        .limit(limit)
        .select(EventRow::as_select());
    if missing.is_empty() {
        return newer.load(conn).await;
    }
    let mut rows: Vec<EventRow> = newer
        .union_all(
            events::table
                .filter(events::id.eq_any(missing))
                .select(EventRow::as_select()),
        )
        .load(conn)
        .await?;
    rows.sort_unstable_by_key(|row| row.id);
    Ok(rows)
}

/// One tenant's events after `after`, in id order.
pub async fn of_tenant_after(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    after: i64,
    limit: i64,
) -> QueryResult<Vec<EventRow>> {
    events::table
        .filter(events::tenant_id.eq(tenant_id))
        .filter(events::id.gt(after))
        .order(events::id)
        .limit(limit)
        .select(EventRow::as_select())
        .load(conn)
        .await
}

/// The highest event id, 0 if none.
pub async fn last_id(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    let max: Option<i64> = events::table
        .select(diesel::dsl::max(events::id))
        .first(conn)
        .await?;
    Ok(max.unwrap_or(0))
}

/// The highest event id of one tenant, 0 if none.
pub async fn last_of_tenant(conn: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<i64> {
    let max: Option<i64> = events::table
        .filter(events::tenant_id.eq(tenant_id))
        .select(diesel::dsl::max(events::id))
        .first(conn)
        .await?;
    Ok(max.unwrap_or(0))
}
