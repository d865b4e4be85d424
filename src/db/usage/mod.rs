//! Queries on meters, usage events and their quarter-hour rollups
//! (`usage_rollups`, and `usage_subjects` for UNIQUE_COUNT); the sampled
//! meters' reads of the tenant database are in [`samples`], the quota
//! figures and thresholds in [`quotas`].

mod quotas;
mod samples;

pub use quotas::*;
pub use samples::*;

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{Array, BigInt, Bool, Double, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::domain::usage::{Aggregation, Bucket, Meter, UsageEvent, UsageQuery};
use crate::error::{Error, Result};

#[derive(Debug, diesel::QueryableByName)]
struct MeterRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = Text)]
    aggregation: String,
    #[diesel(sql_type = Text)]
    unit: String,
    #[diesel(sql_type = Bool)]
    builtin: bool,
    #[diesel(sql_type = Timestamptz)]
    create_time: DateTime<Utc>,
}

/// A stored aggregation; anything else is a bug (the column is checked).
fn aggregation(meter: &str, stored: &str) -> Result<Aggregation> {
    stored
        .parse()
        .map_err(|_| Error::Internal(format!("meter {meter} has aggregation {stored:?}")))
}

impl TryFrom<MeterRow> for Meter {
    type Error = Error;

    fn try_from(r: MeterRow) -> Result<Meter> {
        Ok(Meter {
            aggregation: aggregation(&r.name, &r.aggregation)?,
            name: r.name,
            description: r.description,
            unit: r.unit,
            builtin: r.builtin,
            create_time: r.create_time,
        })
    }
}

const METER_COLUMNS: &str = "name, description, aggregation, unit, builtin, create_time";

/// Inserts a meter; `None` if the name is taken.
pub async fn insert_meter(
    conn: &mut AsyncPgConnection,
    name: &str,
    description: &str,
    aggregation: Aggregation,
    unit: &str,
) -> Result<Option<Meter>> {
    let aggregation: &'static str = aggregation.into();
    diesel::sql_query(format!(
        "INSERT INTO meters (name, description, aggregation, unit) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO NOTHING RETURNING {METER_COLUMNS}"
    ))
    .bind::<Text, _>(name)
    .bind::<Text, _>(description)
    .bind::<Text, _>(aggregation)
    .bind::<Text, _>(unit)
    .get_result::<MeterRow>(conn)
    .await
    .optional()?
    .map(Meter::try_from)
    .transpose()
}

/// Every meter, by name.
pub async fn list_meters(conn: &mut AsyncPgConnection) -> Result<Vec<Meter>> {
    diesel::sql_query(format!("SELECT {METER_COLUMNS} FROM meters ORDER BY name"))
        .load::<MeterRow>(conn)
        .await?
        .into_iter()
        .map(Meter::try_from)
        .collect()
}

/// The meters among `names` that exist.
pub async fn find_meters(conn: &mut AsyncPgConnection, names: &[String]) -> Result<Vec<Meter>> {
    diesel::sql_query(format!(
        "SELECT {METER_COLUMNS} FROM meters WHERE name = ANY($1)"
    ))
    .bind::<Array<Text>, _>(names)
    .load::<MeterRow>(conn)
    .await?
    .into_iter()
    .map(Meter::try_from)
    .collect()
}

/// Locks a meter for deletion (so no event is recorded on it meanwhile).
pub async fn lock_meter(conn: &mut AsyncPgConnection, name: &str) -> Result<Option<Meter>> {
    diesel::sql_query(format!(
        "SELECT {METER_COLUMNS} FROM meters WHERE name = $1 FOR UPDATE"
    ))
    .bind::<Text, _>(name)
    .get_result::<MeterRow>(conn)
    .await
    .optional()?
    .map(Meter::try_from)
    .transpose()
}

/// The meters among `names` that exist, share-locked until the transaction
/// ends: a plan that limits them commits before DeleteMeter (which locks
/// the row first) looks for plans, or after the meter is gone.
pub async fn share_lock_meters(
    conn: &mut AsyncPgConnection,
    names: &[String],
) -> Result<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let rows = diesel::sql_query("SELECT name FROM meters WHERE name = ANY($1) FOR SHARE")
        .bind::<Array<Text>, _>(names)
        .load::<Row>(conn)
        .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// Live plans whose current version limits the meter, by name.
pub async fn plans_limiting(conn: &mut AsyncPgConnection, meter: &str) -> Result<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let rows = diesel::sql_query(
        "SELECT name FROM plans WHERE delete_time IS NULL AND meter_limits ? $1 ORDER BY name",
    )
    .bind::<Text, _>(meter)
    .load::<Row>(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// Deletes a meter; its events and rollups go with it (ON DELETE CASCADE).
pub async fn delete_meter(conn: &mut AsyncPgConnection, name: &str) -> Result<()> {
    diesel::sql_query("DELETE FROM meters WHERE name = $1")
        .bind::<Text, _>(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// The tenants among `ids` that exist, share-locked until the transaction
/// ends so that a concurrent DeleteTenant waits for the events.
pub async fn existing_tenants(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> Result<Vec<Uuid>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    Ok(diesel::sql_query(
        "SELECT id FROM tenants WHERE id = ANY($1) AND delete_time IS NULL ORDER BY id FOR KEY SHARE",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .load::<Row>(conn)
    .await?
    .into_iter()
    .map(|r| r.id)
    .collect())
}

#[derive(Debug, diesel::QueryableByName)]
struct EventRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    meter: String,
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Double)]
    value: f64,
    #[diesel(sql_type = Timestamptz)]
    time: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    subject: String,
}

impl From<EventRow> for UsageEvent {
    fn from(r: EventRow) -> Self {
        UsageEvent {
            id: r.id,
            tenant_id: r.tenant_id,
            meter: r.meter,
            value: r.value,
            time: r.time,
            dated: true,
            subject: r.subject,
        }
    }
}

/// Stores the events whose (tenant, meter, id) is new and adds them to the
/// rollups, in one statement; returns the keys stored. An id being stored
/// by a concurrent transaction waits for it, then counts as seen. The
/// rollup rows are written in key order, so concurrent calls lock them in
/// the same order.
pub async fn insert_events(
    conn: &mut AsyncPgConnection,
    events: &[&UsageEvent],
) -> Result<Vec<(Uuid, String, String)>> {
    #[derive(diesel::QueryableByName)]
    struct Key {
        #[diesel(sql_type = SqlUuid)]
        tenant_id: Uuid,
        #[diesel(sql_type = Text)]
        meter: String,
        #[diesel(sql_type = Text)]
        id: String,
    }
    let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let meters: Vec<&str> = events.iter().map(|e| e.meter.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let values: Vec<f64> = events.iter().map(|e| e.value).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.time).collect();
    let subjects: Vec<&str> = events.iter().map(|e| e.subject.as_str()).collect();
    let keys = diesel::sql_query(
        "WITH stored AS (
             INSERT INTO usage_events (tenant_id, meter, id, value, time, subject)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::float8[],
                                  $5::timestamptz[], $6::text[])
             ORDER BY 1, 2, 3
             ON CONFLICT (tenant_id, meter, id) DO NOTHING
             RETURNING tenant_id, meter, id, value, time, subject
         ), rolled AS (
             INSERT INTO usage_rollups AS r
                 (tenant_id, meter, bucket, events, total, max, latest_time, latest_id, latest_value)
             SELECT tenant_id, meter, usage_bucket(time), count(*), sum(value), max(value),
                    max(time),
                    (array_agg(id ORDER BY time DESC, id DESC))[1],
                    (array_agg(value ORDER BY time DESC, id DESC))[1]
             FROM stored
             GROUP BY 1, 2, 3
             ORDER BY 1, 2, 3
             ON CONFLICT (tenant_id, meter, bucket) DO UPDATE SET
                 events = r.events + excluded.events,
                 total = r.total + excluded.total,
                 max = greatest(r.max, excluded.max),
                 latest_time = CASE WHEN (excluded.latest_time, excluded.latest_id) > (r.latest_time, r.latest_id)
                                    THEN excluded.latest_time ELSE r.latest_time END,
                 latest_id = CASE WHEN (excluded.latest_time, excluded.latest_id) > (r.latest_time, r.latest_id)
                                  THEN excluded.latest_id ELSE r.latest_id END,
                 latest_value = CASE WHEN (excluded.latest_time, excluded.latest_id) > (r.latest_time, r.latest_id)
                                     THEN excluded.latest_value ELSE r.latest_value END
         ), subjects AS (
             INSERT INTO usage_subjects AS s (tenant_id, meter, bucket, subject, events)
             SELECT s.tenant_id, s.meter, usage_bucket(s.time), s.subject, count(*)
             FROM stored s JOIN meters m ON m.name = s.meter AND m.aggregation = 'UNIQUE_COUNT'
             GROUP BY 1, 2, 3, 4
             ORDER BY 1, 2, 3, 4
             ON CONFLICT (tenant_id, meter, bucket, subject) DO UPDATE SET events = s.events + excluded.events
         )
         SELECT tenant_id, meter, id FROM stored",
    )
    .bind::<Array<SqlUuid>, _>(&tenants)
    .bind::<Array<Text>, _>(&meters)
    .bind::<Array<Text>, _>(&ids)
    .bind::<Array<Double>, _>(&values)
    .bind::<Array<Timestamptz>, _>(&times)
    .bind::<Array<Text>, _>(&subjects)
    .load::<Key>(conn)
    .await?;
    Ok(keys
        .into_iter()
        .map(|k| (k.tenant_id, k.meter, k.id))
        .collect())
}

/// The stored events (cancelled or not) with these keys.
pub async fn find_events(
    conn: &mut AsyncPgConnection,
    keys: &[(Uuid, &str, &str)],
) -> Result<Vec<UsageEvent>> {
    let tenants: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let meters: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.2).collect();
    Ok(diesel::sql_query(
        "SELECT e.tenant_id, e.meter, e.id, e.value, e.time, e.subject
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(tenant_id, meter, id)
         JOIN usage_events e USING (tenant_id, meter, id)",
    )
    .bind::<Array<SqlUuid>, _>(&tenants)
    .bind::<Array<Text>, _>(&meters)
    .bind::<Array<Text>, _>(&ids)
    .load::<EventRow>(conn)
    .await?
    .into_iter()
    .map(UsageEvent::from)
    .collect())
}

/// Cancels the events with these ids and recounts the quarter hours they
/// were in from the events that still count; returns the ids cancelled.
pub async fn cancel_events(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    meter: &str,
    ids: &[String],
) -> Result<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let cancelled: Vec<String> = diesel::sql_query(
        "UPDATE usage_events SET cancel_time = now()
         WHERE tenant_id = $1 AND meter = $2 AND id = ANY($3) AND cancel_time IS NULL
         RETURNING id",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(meter)
    .bind::<Array<Text>, _>(ids)
    .load::<Id>(conn)
    .await?
    .into_iter()
    .map(|r| r.id)
    .collect();
    if cancelled.is_empty() {
        return Ok(cancelled);
    }
    // The rollup rows are locked first (in key order), so a concurrent
    // RecordUsage adding to them waits, and the recount sees its events.
    diesel::sql_query(
        "WITH buckets AS (
             SELECT DISTINCT usage_bucket(time) AS bucket FROM usage_events
             WHERE tenant_id = $1 AND meter = $2 AND id = ANY($3)
         ), locked AS (
             SELECT r.bucket FROM usage_rollups r JOIN buckets b USING (bucket)
             WHERE r.tenant_id = $1 AND r.meter = $2
             ORDER BY r.bucket FOR UPDATE
         ), cleared AS (
             DELETE FROM usage_rollups r USING locked l
             WHERE r.tenant_id = $1 AND r.meter = $2 AND r.bucket = l.bucket
         ), cleared_subjects AS (
             DELETE FROM usage_subjects s USING locked l
             WHERE s.tenant_id = $1 AND s.meter = $2 AND s.bucket = l.bucket
         ), remaining AS (
             SELECT e.* FROM usage_events e JOIN locked l
               ON e.time >= l.bucket AND e.time < l.bucket + interval '15 minutes'
             WHERE e.tenant_id = $1 AND e.meter = $2 AND e.cancel_time IS NULL
         ), rolled AS (
             INSERT INTO usage_rollups
                 (tenant_id, meter, bucket, events, total, max, latest_time, latest_id, latest_value)
             SELECT tenant_id, meter, usage_bucket(time), count(*), sum(value), max(value), max(time),
                    (array_agg(id ORDER BY time DESC, id DESC))[1],
                    (array_agg(value ORDER BY time DESC, id DESC))[1]
             FROM remaining GROUP BY 1, 2, 3
         )
         INSERT INTO usage_subjects (tenant_id, meter, bucket, subject, events)
         SELECT r.tenant_id, r.meter, usage_bucket(r.time), r.subject, count(*)
         FROM remaining r JOIN meters m ON m.name = r.meter AND m.aggregation = 'UNIQUE_COUNT'
         GROUP BY 1, 2, 3, 4",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(meter)
    .bind::<Array<Text>, _>(&cancelled)
    .execute(conn)
    .await?;
    Ok(cancelled)
}

/// The windows of `q` with the meter's figure for each, empty ones
/// included. Runs in the caller's transaction: it sets the session's time
/// zone for that transaction, so that `date_trunc` and interval arithmetic
/// follow the zone's calendar (DST included).
pub async fn query(
    conn: &mut AsyncPgConnection,
    q: &UsageQuery,
    aggregation: Aggregation,
) -> Result<Vec<Bucket>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Timestamptz)]
        start: DateTime<Utc>,
        #[diesel(sql_type = Double)]
        value: f64,
        #[diesel(sql_type = BigInt)]
        events: i64,
    }
    diesel::sql_query("SELECT set_config('TimeZone', $1, true)")
        .bind::<Text, _>(&q.time_zone)
        .execute(conn)
        .await?;
    // Rollups for every aggregation but UNIQUE_COUNT, whose figure is the
    // distinct subjects of the whole window.
    let per_window = match aggregation {
        Aggregation::Sum => "sum(r.total)",
        Aggregation::Count => "sum(r.events)::float8",
        Aggregation::Max => "max(r.max)",
        Aggregation::Latest => {
            "(array_agg(r.latest_value ORDER BY r.latest_time DESC, r.latest_id DESC))[1]"
        }
        Aggregation::UniqueCount => "0::float8",
    };
    let unique = aggregation == Aggregation::UniqueCount;
    let rows = diesel::sql_query(format!(
        "WITH w AS (
             SELECT g AS start, g + $5::interval AS stop
             FROM generate_series(date_trunc($4, $2::timestamptz), $3::timestamptz - interval '1 microsecond',
                                  $5::interval) g
         ), r AS (
             SELECT date_trunc($4, r.bucket) AS start, {per_window} AS value, sum(r.events)::bigint AS events
             FROM usage_rollups r
             WHERE r.tenant_id = $1 AND r.meter = $6
               AND r.bucket >= (SELECT min(start) FROM w) AND r.bucket < (SELECT max(stop) FROM w)
             GROUP BY 1
         ), u AS (
             SELECT date_trunc($4, s.bucket) AS start, count(DISTINCT s.subject)::float8 AS value
             FROM usage_subjects s
             WHERE $7 AND s.tenant_id = $1 AND s.meter = $6
               AND s.bucket >= (SELECT min(start) FROM w) AND s.bucket < (SELECT max(stop) FROM w)
             GROUP BY 1
         )
         SELECT w.start, coalesce(u.value, r.value, 0) AS value, coalesce(r.events, 0) AS events
         FROM w LEFT JOIN r USING (start) LEFT JOIN u USING (start)
         ORDER BY w.start
         LIMIT {}",
        crate::domain::usage::MAX_WINDOWS + 1
    ))
    .bind::<SqlUuid, _>(q.tenant_id)
    .bind::<Timestamptz, _>(q.start)
    .bind::<Timestamptz, _>(q.end)
    .bind::<Text, _>(q.window.unit())
    .bind::<Text, _>(format!("1 {}", q.window.unit()))
    .bind::<Text, _>(&q.meter)
    .bind::<Bool, _>(unique)
    .load::<Row>(conn)
    .await?;
    if rows.len() > crate::domain::usage::MAX_WINDOWS {
        return Err(Error::invalid(
            "start_time",
            format!(
                "the query spans more than {} windows; narrow it or use a longer window",
                crate::domain::usage::MAX_WINDOWS
            ),
        ));
    }
    Ok(rows
        .into_iter()
        .map(|r| Bucket {
            start: r.start,
            value: r.value,
            events: r.events,
        })
        .collect())
}
