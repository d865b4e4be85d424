//! Queries on `webhook_endpoints` and `webhook_deliveries`. Deliveries are
//! written by a trigger on `events` (see the webhooks migration), in the
//! transaction of the event they carry; here they are read, claimed and
//! settled.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Double, Integer, Jsonb, Nullable, Text, Timestamptz,
    Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::domain::webhook::{Delivery, DeliveryFilter, DeliveryStatus, Endpoint};
use crate::error::{Error, Result};

/// An endpoint as stored, with its sealed secrets.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct EndpointRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub description: String,
    #[diesel(sql_type = Array<Text>)]
    pub event_types: Vec<String>,
    #[diesel(sql_type = Bool)]
    pub disabled: bool,
    #[diesel(sql_type = Text)]
    pub disabled_reason: String,
    #[diesel(sql_type = BigInt)]
    pub revision: i64,
    #[diesel(sql_type = Timestamptz)]
    pub create_time: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub update_time: DateTime<Utc>,
}

impl From<EndpointRow> for Endpoint {
    fn from(r: EndpointRow) -> Self {
        Endpoint {
            name: r.name,
            url: r.url,
            description: r.description,
            event_types: r.event_types,
            disabled: r.disabled,
            disabled_reason: r.disabled_reason,
            revision: r.revision,
            create_time: r.create_time,
            update_time: r.update_time,
        }
    }
}

const ENDPOINT_COLUMNS: &str = "id, name, url, description, event_types, disabled, disabled_reason, revision, create_time, update_time";

/// Inserts an endpoint; `None` if the name is taken.
pub async fn insert_endpoint(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    endpoint: &Endpoint,
    secret_sealed: &[u8],
) -> Result<Option<EndpointRow>> {
    let row = diesel::sql_query(format!(
        "INSERT INTO webhook_endpoints (id, name, url, description, event_types, disabled, secret_sealed)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (name) DO NOTHING
         RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(&endpoint.name)
    .bind::<Text, _>(&endpoint.url)
    .bind::<Text, _>(&endpoint.description)
    .bind::<Array<Text>, _>(&endpoint.event_types)
    .bind::<Bool, _>(endpoint.disabled)
    .bind::<Bytea, _>(secret_sealed)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row)
}

/// The endpoint called `name`, locked for update when `lock`.
pub async fn find_endpoint(
    conn: &mut AsyncPgConnection,
    name: &str,
    lock: bool,
) -> Result<Option<EndpointRow>> {
    let suffix = if lock { " FOR UPDATE" } else { "" };
    let row = diesel::sql_query(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE name = $1{suffix}"
    ))
    .bind::<Text, _>(name)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row)
}

/// Up to `limit` endpoints after `after`, by name.
pub async fn list_endpoints(
    conn: &mut AsyncPgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<EndpointRow>> {
    let rows = diesel::sql_query(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE $1::text IS NULL OR name > $1 ORDER BY name LIMIT $2"
    ))
    .bind::<Nullable<Text>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows)
}

/// Writes the changeable fields of `endpoint` (its name says which).
pub async fn update_endpoint(
    conn: &mut AsyncPgConnection,
    endpoint: &Endpoint,
) -> Result<EndpointRow> {
    let row = diesel::sql_query(format!(
        "UPDATE webhook_endpoints
         SET url = $2, description = $3, event_types = $4, disabled = $5, disabled_reason = $6,
             revision = revision + 1, update_time = now()
         WHERE name = $1
         RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind::<Text, _>(&endpoint.name)
    .bind::<Text, _>(&endpoint.url)
    .bind::<Text, _>(&endpoint.description)
    .bind::<Array<Text>, _>(&endpoint.event_types)
    .bind::<Bool, _>(endpoint.disabled)
    .bind::<Text, _>(&endpoint.disabled_reason)
    .get_result(conn)
    .await?;
    Ok(row)
}

pub async fn delete_endpoint(conn: &mut AsyncPgConnection, name: &str) -> Result<()> {
    diesel::sql_query("DELETE FROM webhook_endpoints WHERE name = $1")
        .bind::<Text, _>(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Which of `names` exist, their rows locked `FOR KEY SHARE` until the
/// transaction ends (DeleteEndpoint's `FOR UPDATE` waits for it).
pub async fn share_lock_endpoints(
    conn: &mut AsyncPgConnection,
    names: &[String],
) -> Result<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let rows: Vec<Name> = diesel::sql_query(
        "SELECT name FROM webhook_endpoints WHERE name = ANY($1) ORDER BY name FOR KEY SHARE",
    )
    .bind::<Array<Text>, _>(names)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// Tenants whose provisioning may still call the endpoint: a step of theirs
/// that calls it has not finished, could still be undone through it, or
/// its undo failed and waits for an operator (NEEDS_ATTENTION).
pub async fn tenants_calling(conn: &mut AsyncPgConnection, name: &str) -> Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: Count = diesel::sql_query(
        "SELECT count(DISTINCT s.tenant_id) AS n
         FROM tenant_steps s JOIN tenants t ON t.id = s.tenant_id
         WHERE s.webhook_endpoint = $1
           AND t.state IN ('PROVISIONING', 'NEEDS_ATTENTION')
           AND (s.status IN ('PENDING', 'RUNNING', 'COMPENSATING')
                OR (s.webhook_compensate AND s.status IN ('SUCCEEDED', 'FAILED')))",
    )
    .bind::<Text, _>(name)
    .get_result(conn)
    .await?;
    Ok(row.n)
}

/// Plans whose current version calls the endpoint from a step.
pub async fn plans_using(conn: &mut AsyncPgConnection, name: &str) -> Result<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let rows: Vec<Name> = diesel::sql_query(
        "SELECT name FROM plans
         WHERE delete_time IS NULL
           AND steps @> jsonb_build_array(jsonb_build_object('webhook', jsonb_build_object('endpoint', $1::text)))
         ORDER BY name",
    )
    .bind::<Text, _>(name)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// Replaces the secret; the current one becomes the previous one, signing
/// beside the new one until `overlap` has passed.
pub async fn rotate_secret(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    secret_sealed: &[u8],
    overlap: std::time::Duration,
) -> Result<()> {
    diesel::sql_query(
        "UPDATE webhook_endpoints
         SET previous_secret_sealed = secret_sealed,
             previous_secret_expire_time = now() + make_interval(secs => $3),
             secret_sealed = $2, revision = revision + 1, update_time = now()
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Bytea, _>(secret_sealed)
    .bind::<Double, _>(overlap.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(())
}

/// How many endpoints exist (a server without a secret key refuses to
/// start once there is one).
pub async fn endpoint_count(conn: &mut AsyncPgConnection) -> Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let c: Count = diesel::sql_query("SELECT count(*) AS n FROM webhook_endpoints")
        .get_result(conn)
        .await?;
    Ok(c.n)
}

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

/// What a webhook step's attempt needs, read in one short query before the
/// call (no connection is held during it): the endpoint (columns `None` if
/// no endpoint has that name), the tenant as deliveries show it, and the
/// step's own recorded output (what its compensation is sent).
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct StepTarget {
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub endpoint_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    pub url: Option<String>,
    #[diesel(sql_type = Nullable<Bool>)]
    pub disabled: Option<bool>,
    #[diesel(sql_type = Nullable<Text>)]
    pub disabled_reason: Option<String>,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub secret_sealed: Option<Vec<u8>>,
    /// The previous secret while its rotation overlap lasts.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub previous_secret_sealed: Option<Vec<u8>>,
    /// `{id, slug, state, plan, labels, outputs}`.
    #[diesel(sql_type = Jsonb)]
    pub tenant: serde_json::Value,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub step_output: Option<serde_json::Value>,
}

pub async fn step_target(
    conn: &mut AsyncPgConnection,
    endpoint: &str,
    tenant_id: Uuid,
    step: &str,
) -> Result<Option<StepTarget>> {
    let row = diesel::sql_query(
        "SELECT e.id AS endpoint_id, e.url, e.disabled, e.disabled_reason, e.secret_sealed,
                CASE WHEN e.previous_secret_expire_time > now() THEN e.previous_secret_sealed END
                    AS previous_secret_sealed,
                jsonb_build_object('id', t.id, 'slug', t.slug, 'state', t.state, 'plan', t.plan,
                                   'labels', t.labels, 'outputs', t.outputs) AS tenant,
                s.output AS step_output
         FROM tenants t
         LEFT JOIN webhook_endpoints e ON e.name = $1
         LEFT JOIN tenant_steps s ON s.tenant_id = t.id AND s.name = $3
         WHERE t.id = $2",
    )
    .bind::<Text, _>(endpoint)
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(step)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row)
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
