//! Queries on `webhook_deliveries`. Deliveries are written by a trigger on
//! `events` (see the webhooks migration), in the transaction of the event
//! they carry; here they are read, claimed and settled.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Double, Integer, Jsonb, Nullable, Text, Timestamptz,
    Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::domain::webhook::{Delivery, DeliveryFilter, DeliveryStatus};
use crate::error::{Error, Result};

#[derive(Debug, diesel::QueryableByName)]
struct DeliveryRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    webhook_id: String,
    #[diesel(sql_type = Text)]
    endpoint: String,
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    r#type: String,
    #[diesel(sql_type = BigInt)]
    event_id: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    last_http_status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    create_time: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    available_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deliver_time: Option<DateTime<Utc>>,
    #[diesel(sql_type = Bool)]
    endpoint_disabled: bool,
}

impl DeliveryRow {
    fn into_domain(self) -> Result<Delivery> {
        let status: DeliveryStatus = self.status.parse().map_err(|_| {
            Error::Internal(format!("delivery {} has status {:?}", self.id, self.status))
        })?;
        Ok(Delivery {
            seq: self.id,
            id: self.webhook_id,
            endpoint: self.endpoint,
            tenant_id: self.tenant_id,
            r#type: self.r#type,
            event_id: self.event_id,
            status,
            attempts: self.attempt,
            last_http_status: self.last_http_status,
            last_error: self.last_error.unwrap_or_default(),
            create_time: self.create_time,
            next_attempt_time: (status == DeliveryStatus::Pending).then_some(self.available_at),
            deliver_time: self.deliver_time,
        })
    }
}

const DELIVERY_SELECT: &str =
    "SELECT d.id, d.webhook_id, e.name AS endpoint, d.tenant_id, d.type, d.event_id, d.status,
        d.attempt, d.last_http_status, d.last_error, d.create_time, d.available_at, d.deliver_time,
        e.disabled AS endpoint_disabled
 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id";

/// Up to `limit` deliveries matching `filter`, newest first, older than
/// the delivery `before` (its sequence number).
pub async fn list_deliveries(
    conn: &mut AsyncPgConnection,
    filter: &DeliveryFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>> {
    let rows: Vec<DeliveryRow> = diesel::sql_query(format!(
        "{DELIVERY_SELECT}
         WHERE ($1::text IS NULL OR e.name = $1)
           AND ($2::uuid IS NULL OR d.tenant_id = $2)
           AND ($3::text IS NULL OR d.status = $3)
           AND ($4::bigint IS NULL OR d.id < $4)
         ORDER BY d.id DESC LIMIT $5"
    ))
    .bind::<Nullable<Text>, _>(filter.endpoint.as_deref())
    .bind::<Nullable<SqlUuid>, _>(filter.tenant_id)
    .bind::<Nullable<Text>, _>(filter.status.map(|s| s.as_str()))
    .bind::<Nullable<BigInt>, _>(before)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    rows.into_iter().map(DeliveryRow::into_domain).collect()
}

/// The delivery whose `webhook-id` is `id`, locked when `lock`.
pub async fn find_delivery(
    conn: &mut AsyncPgConnection,
    id: &str,
    lock: bool,
) -> Result<Option<(Delivery, bool)>> {
    let suffix = if lock { " FOR UPDATE OF d" } else { "" };
    let found: Option<DeliveryRow> =
        diesel::sql_query(format!("{DELIVERY_SELECT} WHERE d.webhook_id = $1{suffix}"))
            .bind::<Text, _>(id)
            .get_result(conn)
            .await
            .optional()?;
    found
        .map(|row| {
            let disabled = row.endpoint_disabled;
            Ok((row.into_domain()?, disabled))
        })
        .transpose()
}

/// Makes a delivery due now with a fresh schedule (same `webhook-id`).
pub async fn requeue_delivery(conn: &mut AsyncPgConnection, id: &str) -> Result<()> {
    diesel::sql_query(
        "UPDATE webhook_deliveries
         SET status = 'PENDING', attempt = 0, available_at = now(), lease_owner = NULL,
             lease_token = NULL, locked_until = NULL
         WHERE webhook_id = $1",
    )
    .bind::<Text, _>(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A claimed delivery: what one attempt needs, with no connection held.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct ClaimedDelivery {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub lease_token: i64,
    #[diesel(sql_type = Text)]
    pub webhook_id: String,
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
    #[diesel(sql_type = SqlUuid)]
    pub endpoint_id: Uuid,
    #[diesel(sql_type = Text)]
    pub endpoint: String,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Bytea)]
    pub secret_sealed: Vec<u8>,
    /// The previous secret while its rotation overlap lasts.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub previous_secret_sealed: Option<Vec<u8>>,
}

/// Claims up to `limit` due deliveries of enabled endpoints in one
/// statement, as the outbox claims steps: `SKIP LOCKED`, a lease under a
/// fresh fencing token, the attempt counted now.
pub async fn claim_deliveries(
    conn: &mut AsyncPgConnection,
    owner: &str,
    lease: std::time::Duration,
    limit: i64,
) -> Result<Vec<ClaimedDelivery>> {
    let rows = diesel::sql_query(
        "WITH due AS MATERIALIZED (
             SELECT d.id FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id AND NOT e.disabled
             WHERE d.status = 'PENDING' AND d.available_at <= now()
             ORDER BY d.available_at
             LIMIT $1
             FOR UPDATE OF d SKIP LOCKED
         )
         UPDATE webhook_deliveries d
         SET lease_owner = $2, lease_token = nextval('outbox_lease_token_seq'),
             locked_until = now() + make_interval(secs => $3),
             available_at = now() + make_interval(secs => $3),
             attempt = d.attempt + 1
         FROM due, webhook_endpoints e
         WHERE d.id = due.id AND e.id = d.endpoint_id
         RETURNING d.id, d.lease_token, d.webhook_id, d.attempt, d.payload, e.id AS endpoint_id,
                   e.name AS endpoint, e.url, e.secret_sealed,
                   CASE WHEN e.previous_secret_expire_time > now() THEN e.previous_secret_sealed END
                       AS previous_secret_sealed",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Text, _>(owner)
    .bind::<Double, _>(lease.as_secs_f64())
    .load(conn)
    .await?;
    Ok(rows)
}

/// How one attempt ended, to be recorded under its claim.
#[derive(Debug, Clone)]
pub struct Settled {
    pub id: i64,
    pub lease_token: i64,
    /// DELIVERED, FAILED, or PENDING again (`retry_in` later).
    pub status: DeliveryStatus,
    pub retry_in: std::time::Duration,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    /// 410 Gone: disable the endpoint with this reason.
    pub gone: Option<String>,
    /// The endpoint's name, for logs and metrics.
    pub endpoint: String,
}

impl Settled {
    /// The outcome as a metric label.
    pub fn outcome(&self) -> &'static str {
        match (self.status, &self.gone) {
            (DeliveryStatus::Delivered, _) => "delivered",
            (DeliveryStatus::Failed, Some(_)) => "gone",
            (DeliveryStatus::Failed, None) => "failed",
            (DeliveryStatus::Pending, _) => "retry",
        }
    }
}

/// Records many attempts in one statement, each only while its claim is
/// current (id and token); returns the ids recorded. Endpoints that
/// answered 410 are disabled in the same transaction's second statement.
pub async fn settle_deliveries(
    conn: &mut AsyncPgConnection,
    settled: &[Settled],
) -> Result<Vec<i64>> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let ids: Vec<i64> = settled.iter().map(|s| s.id).collect();
    let tokens: Vec<i64> = settled.iter().map(|s| s.lease_token).collect();
    let statuses: Vec<&str> = settled.iter().map(|s| s.status.as_str()).collect();
    let delays: Vec<f64> = settled.iter().map(|s| s.retry_in.as_secs_f64()).collect();
    let http: Vec<Option<i32>> = settled.iter().map(|s| s.http_status).collect();
    let errors: Vec<Option<&str>> = settled.iter().map(|s| s.error.as_deref()).collect();
    let recorded: Vec<Id> = diesel::sql_query(
        "UPDATE webhook_deliveries d
         SET status = i.status, last_http_status = i.http, last_error = i.error,
             available_at = CASE WHEN i.status = 'PENDING' THEN now() + make_interval(secs => i.delay)
                                 ELSE d.available_at END,
             deliver_time = CASE WHEN i.status = 'DELIVERED' THEN now() END,
             lease_owner = NULL, lease_token = NULL, locked_until = NULL
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::float8[], $5::int[], $6::text[])
             AS i(id, token, status, delay, http, error)
         WHERE d.id = i.id AND d.lease_token = i.token
         RETURNING d.id",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<BigInt>, _>(&tokens)
    .bind::<Array<Text>, _>(&statuses)
    .bind::<Array<Double>, _>(&delays)
    .bind::<Array<Nullable<Integer>>, _>(&http)
    .bind::<Array<Nullable<Text>>, _>(&errors)
    .load(conn)
    .await?;
    let recorded: Vec<i64> = recorded.into_iter().map(|r| r.id).collect();
    for s in settled.iter().filter(|s| recorded.contains(&s.id)) {
        if let Some(reason) = &s.gone {
            diesel::sql_query(
                "UPDATE webhook_endpoints e
                 SET disabled = true, disabled_reason = $2, revision = revision + 1, update_time = now()
                 FROM webhook_deliveries d
                 WHERE d.id = $1 AND e.id = d.endpoint_id AND NOT e.disabled",
            )
            .bind::<BigInt, _>(s.id)
            .bind::<Text, _>(reason)
            .execute(conn)
            .await?;
        }
    }
    Ok(recorded)
}

/// Deliveries waiting for an attempt (the partial due index counts them).
pub async fn pending_count(conn: &mut AsyncPgConnection) -> Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let c: Count =
        diesel::sql_query("SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'PENDING'")
            .get_result(conn)
            .await?;
    Ok(c.n)
}

/// When the earliest pending delivery of an enabled endpoint is due.
pub async fn next_due(conn: &mut AsyncPgConnection) -> Result<Option<DateTime<Utc>>> {
    #[derive(diesel::QueryableByName)]
    struct At {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        at: Option<DateTime<Utc>>,
    }
    let at: At = diesel::sql_query(
        "SELECT min(d.available_at) AS at FROM webhook_deliveries d
         JOIN webhook_endpoints e ON e.id = d.endpoint_id AND NOT e.disabled
         WHERE d.status = 'PENDING'",
    )
    .get_result(conn)
    .await?;
    Ok(at.at)
}
