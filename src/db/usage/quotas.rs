//! Quota figures: each meter's value in the current period against the
//! plan's limit, and the thresholds reached.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Bool, Double, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::aggregation;
use crate::domain::usage::{Figure, LIMIT_BINDINGS};
use crate::error::Result;

/// Each meter's figure for the current period (a UTC day) of these
/// tenants, with its plan's limit: every meter, or only those in `meters`,
/// and with `limited` only those the plan limits. An index range over a day's
/// quarter hours per tenant and meter, never the raw events.
pub async fn figures(
    conn: &mut AsyncPgConnection,
    tenants: &[Uuid],
    meters: Option<&[String]>,
    limited: bool,
) -> Result<Vec<Figure>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        tenant_id: Uuid,
        #[diesel(sql_type = Text)]
        meter: String,
        #[diesel(sql_type = Text)]
        aggregation: String,
        #[diesel(sql_type = Text)]
        unit: String,
        #[diesel(sql_type = Timestamptz)]
        period_start: DateTime<Utc>,
        #[diesel(sql_type = Double)]
        value: f64,
        #[diesel(sql_type = diesel::sql_types::Nullable<Double>)]
        lim: Option<f64>,
    }
    let (bound, (names, scales)): (Vec<&str>, (Vec<&str>, Vec<f64>)) = LIMIT_BINDINGS
        .iter()
        .map(|(m, n, s)| (*m, (*n, *s)))
        .unzip();
    let rows = diesel::sql_query(
        "WITH b AS (
             SELECT * FROM unnest($2::text[], $3::text[], $4::float8[]) AS b(meter, limit_name, scale)
         ), p AS (
             SELECT date_trunc('day', now(), 'UTC') AS period_start
         ), f AS (
             SELECT tn.id AS tenant_id, m.name AS meter, m.aggregation, m.unit, p.period_start,
                    CASE WHEN (pv.limits ->> b.limit_name)::float8 > 0
                         THEN (pv.limits ->> b.limit_name)::float8 * b.scale END AS lim
             FROM tenants tn
             JOIN plan_versions pv ON pv.name = tn.plan AND pv.version = tn.plan_version
             CROSS JOIN meters m CROSS JOIN p
             LEFT JOIN b ON b.meter = m.name
             WHERE tn.id = ANY($1) AND tn.delete_time IS NULL
               AND ($5::text[] IS NULL OR m.name = ANY($5))
         )
         SELECT f.tenant_id, f.meter, f.aggregation, f.unit, f.period_start,
                coalesce(CASE f.aggregation
                    WHEN 'LATEST' THEN (SELECT r.latest_value FROM usage_rollups r
                                        WHERE r.tenant_id = f.tenant_id AND r.meter = f.meter
                                        ORDER BY r.bucket DESC LIMIT 1)
                    WHEN 'UNIQUE_COUNT' THEN (SELECT count(DISTINCT s.subject)::float8 FROM usage_subjects s
                                              WHERE s.tenant_id = f.tenant_id AND s.meter = f.meter
                                                AND s.bucket >= f.period_start)
                    ELSE (SELECT CASE f.aggregation WHEN 'SUM' THEN sum(r.total)
                                                    WHEN 'COUNT' THEN sum(r.events)::float8
                                                    ELSE max(r.max) END
                          FROM usage_rollups r
                          WHERE r.tenant_id = f.tenant_id AND r.meter = f.meter
                            AND r.bucket >= f.period_start)
                END, 0) AS value,
                f.lim
         FROM f
         WHERE NOT $6 OR f.lim IS NOT NULL
         ORDER BY 1, 2",
    )
    .bind::<Array<SqlUuid>, _>(tenants)
    .bind::<Array<Text>, _>(&bound)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<Double>, _>(&scales)
    .bind::<diesel::sql_types::Nullable<Array<Text>>, _>(meters)
    .bind::<Bool, _>(limited)
    .load::<Row>(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Figure {
                aggregation: aggregation(&r.meter, &r.aggregation)?,
                tenant_id: r.tenant_id,
                meter: r.meter,
                unit: r.unit,
                period_start: r.period_start,
                value: r.value,
                limit: r.lim,
            })
        })
        .collect()
}

/// Records that `figure` reached `threshold` percent in its period, with
/// its event; `false` if that was recorded before. The caller holds the
/// tenant's row lock, as every writer of its events does.
pub async fn record_threshold(
    conn: &mut AsyncPgConnection,
    figure: &Figure,
    threshold: i16,
    actor: &str,
) -> Result<bool> {
    let limit = figure.limit.unwrap_or_default();
    let message = format!(
        "{} reached {threshold}% of the plan's limit: {} of {} {} today (UTC)",
        figure.meter, figure.value, limit, figure.unit
    );
    let written = diesel::sql_query(
        "WITH crossed AS (
             INSERT INTO usage_thresholds (tenant_id, meter, period_start, threshold, value, lim)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING
             RETURNING tenant_id
         )
         INSERT INTO events (tenant_id, kind, state, message, actor)
         SELECT c.tenant_id, 'USAGE_THRESHOLD_REACHED', t.state, $7, $8
         FROM crossed c JOIN tenants t ON t.id = c.tenant_id",
    )
    .bind::<SqlUuid, _>(figure.tenant_id)
    .bind::<Text, _>(&figure.meter)
    .bind::<Timestamptz, _>(figure.period_start)
    .bind::<diesel::sql_types::SmallInt, _>(threshold)
    .bind::<Double, _>(figure.value)
    .bind::<Double, _>(limit)
    .bind::<Text, _>(&message)
    .bind::<Text, _>(actor)
    .execute(conn)
    .await?;
    Ok(written > 0)
}

/// Locks these tenants' rows (in id order), as writers of their events do.
pub async fn lock_tenants(conn: &mut AsyncPgConnection, tenants: &[Uuid]) -> Result<()> {
    diesel::sql_query("SELECT id FROM tenants WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind::<Array<SqlUuid>, _>(tenants)
        .execute(conn)
        .await?;
    Ok(())
}
