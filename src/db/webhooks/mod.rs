//! Queries on `webhook_endpoints`, and what a webhook step reads before
//! its call; the deliveries' queries are in [`deliveries`].

mod deliveries;

pub use deliveries::*;

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Double, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::domain::webhook::Endpoint;
use crate::error::Result;

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
