//! Quota figures: each meter's value in the current period against the
//! plan's limit, and the thresholds reached.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Bool, Double, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::aggregation;
use crate::domain::usage::{Figure, LIMIT_BINDINGS};
use crate::error::{Error, Result};

/// Each meter's figure for the current period (a UTC day, or the month a
/// plan's meter limit says) of these tenants, with the limit of their
/// plan's current version: every meter, or only those in `meters`, and
/// with `limited` only those the plan limits. An index range over the
/// period's quarter hours per tenant and meter, never the raw events.
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
        #[diesel(sql_type = Text)]
        period: String,
        #[diesel(sql_type = Timestamptz)]
        period_start: DateTime<Utc>,
        #[diesel(sql_type = Double)]
        value: f64,
        #[diesel(sql_type = diesel::sql_types::Nullable<Double>)]
        lim: Option<f64>,
        #[diesel(sql_type = Text)]
        on_limit: String,
    }
    let (bound, (names, scales)): (Vec<&str>, (Vec<&str>, Vec<f64>)) = LIMIT_BINDINGS
        .iter()
        .map(|(m, n, s)| (*m, (*n, *s)))
        .unzip();
    let rows = diesel::sql_query(
        "WITH b AS (
             SELECT * FROM unnest($2::text[], $3::text[], $4::float8[]) AS b(meter, limit_name, scale)
         ), l AS (
             SELECT tn.id AS tenant_id, m.name AS meter, m.aggregation, m.unit, p.on_limit,
                    coalesce(p.meter_limits -> m.name ->> 'period', 'DAY') AS period,
                    CASE WHEN b.meter IS NULL THEN (p.meter_limits -> m.name ->> 'limit')::float8
                         WHEN (p.limits ->> b.limit_name)::float8 > 0
                         THEN (p.limits ->> b.limit_name)::float8 * b.scale END AS lim
             FROM tenants tn
             JOIN plans p ON p.name = tn.plan
             CROSS JOIN meters m
             LEFT JOIN b ON b.meter = m.name
             WHERE tn.id = ANY($1) AND tn.delete_time IS NULL
               AND ($5::text[] IS NULL OR m.name = ANY($5))
         ), f AS (
             SELECT l.*, date_trunc(lower(l.period), now(), 'UTC') AS period_start FROM l
             WHERE NOT $6 OR l.lim IS NOT NULL
         )
         SELECT f.tenant_id, f.meter, f.aggregation, f.unit, f.period, f.period_start,
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
                f.lim, f.on_limit
         FROM f
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
            let stored = |what: &str, value: &str| {
                Error::Internal(format!(
                    "plan of tenant {} has {what} {value:?}",
                    r.tenant_id
                ))
            };
            Ok(Figure {
                aggregation: aggregation(&r.meter, &r.aggregation)?,
                period: r.period.parse().map_err(|_| stored("period", &r.period))?,
                on_limit: r
                    .on_limit
                    .parse()
                    .map_err(|_| stored("on_limit", &r.on_limit))?,
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
    let period = match figure.period {
        crate::domain::Period::Day => "today",
        crate::domain::Period::Month => "this month",
    };
    let message = format!(
        "{} reached {threshold}% of the plan's limit: {} of {} {} {period} (UTC)",
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

/// Records that the quota suspended the tenant because of `figure`.
pub async fn begin_quota_suspension(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    figure: &Figure,
) -> Result<()> {
    diesel::sql_query(
        "INSERT INTO quota_suspensions (tenant_id, meter, period_start) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO UPDATE
             SET meter = EXCLUDED.meter, period_start = EXCLUDED.period_start, suspend_time = now()",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(&figure.meter)
    .bind::<Timestamptz, _>(figure.period_start)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a quota suspension: the tenant was switched by someone else, or
/// resumed.
pub async fn end_quota_suspension(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<()> {
    diesel::sql_query("DELETE FROM quota_suspensions WHERE tenant_id = $1")
        .bind::<SqlUuid, _>(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// Tenants the quota holds suspended (of the plan `plan`, when given);
/// forgets those that left SUSPENDED another way (deprovisioning).
pub async fn quota_suspended(
    conn: &mut AsyncPgConnection,
    plan: Option<&str>,
) -> Result<Vec<Uuid>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        tenant_id: Uuid,
    }
    diesel::sql_query(
        "DELETE FROM quota_suspensions q USING tenants t
         WHERE t.id = q.tenant_id AND (t.state <> 'SUSPENDED' OR t.delete_time IS NOT NULL)",
    )
    .execute(conn)
    .await?;
    let rows = diesel::sql_query(
        "SELECT q.tenant_id FROM quota_suspensions q JOIN tenants t ON t.id = q.tenant_id
         WHERE $1::text IS NULL OR t.plan = $1
         ORDER BY q.tenant_id",
    )
    .bind::<diesel::sql_types::Nullable<Text>, _>(plan)
    .load::<Row>(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.tenant_id).collect())
}

/// Whether the quota holds the tenant suspended.
pub async fn held_by_quota(conn: &mut AsyncPgConnection, tenant: Uuid) -> Result<bool> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bool)]
        held: bool,
    }
    let row = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM quota_suspensions WHERE tenant_id = $1) AS held",
    )
    .bind::<SqlUuid, _>(tenant)
    .get_result::<Row>(conn)
    .await?;
    Ok(row.held)
}

/// The meters live plans limit through their meter limits.
pub async fn meters_limited_by_plans(conn: &mut AsyncPgConnection) -> Result<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        meter: String,
    }
    let rows = diesel::sql_query(
        "SELECT DISTINCT jsonb_object_keys(meter_limits) AS meter FROM plans WHERE delete_time IS NULL",
    )
    .load::<Row>(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.meter).collect())
}
