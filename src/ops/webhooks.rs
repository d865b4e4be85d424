//! Webhook endpoints and their deliveries: create, read, change, rotate the
//! secret, delete; list and retry deliveries. Deliveries themselves are
//! written by the database, with the events they carry, and sent by
//! `crate::webhooks`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel_async::AsyncConnection;
use secrecy::SecretString;
use uuid::Uuid;

use super::Ops;
use crate::db;
use crate::domain::webhook::{
    self, Delivery, DeliveryFilter, DeliveryStatus, Endpoint, MAX_DESCRIPTION,
};
use crate::domain::{FieldViolation, validate_page_size};
use crate::error::{Error, Result};
use crate::secrets::SecretKey;

/// What the webhook use cases need besides the database.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Seals endpoint secrets; `None` refuses to create endpoints.
    pub secret_key: Option<Arc<SecretKey>>,
    /// http and non-public addresses are acceptable targets.
    pub allow_private: bool,
}

/// What CreateEndpoint and UpdateEndpoint may set.
#[derive(Debug, Clone, Default)]
pub struct EndpointInput {
    pub name: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub disabled: bool,
}

/// The fields UpdateEndpoint may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointField {
    Url,
    Description,
    EventTypes,
    Disabled,
}

/// One page of ListEndpoints or ListDeliveries.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Empty on the last page.
    pub next_page_token: String,
}

fn endpoint_not_found(name: &str) -> Error {
    Error::NotFound {
        resource: "endpoint",
        id: name.to_owned(),
    }
}

fn check_name(field: &str, name: &str) -> Result<()> {
    let mut out = Vec::new();
    webhook::check_endpoint_name(field, name, &mut out);
    if out.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(out))
    }
}

fn check_etag(endpoint: &Endpoint, etag: &str) -> Result<()> {
    if etag.is_empty() || etag == endpoint.etag() {
        Ok(())
    } else {
        Err(Error::Aborted(format!(
            "endpoint {} changed: its etag is {}, not {etag}",
            endpoint.name,
            endpoint.etag()
        )))
    }
}

impl Ops {
    fn webhook_key(&self) -> Result<&SecretKey> {
        self.webhooks.secret_key.as_deref().ok_or_else(|| {
            Error::FailedPrecondition(
                "this server has no TENANTD_SECRET_KEY to protect webhook secrets with; set it and restart"
                    .into(),
            )
        })
    }

    /// Checks an endpoint's fields; `prefix` is the request's field path.
    fn validate_endpoint(&self, input: &mut EndpointInput, prefix: &str) -> Result<()> {
        let mut out = Vec::new();
        webhook::check_endpoint_name(&format!("{prefix}.name"), &input.name, &mut out);
        if let Err(e) = crate::outbound::check_url(&input.url, self.webhooks.allow_private) {
            out.push(FieldViolation::new(format!("{prefix}.url"), e.0));
        }
        if input.description.chars().count() > MAX_DESCRIPTION {
            out.push(FieldViolation::new(
                format!("{prefix}.description"),
                format!("must be at most {MAX_DESCRIPTION} characters"),
            ));
        }
        input.event_types = webhook::check_event_types(
            &format!("{prefix}.event_types"),
            &input.event_types,
            &mut out,
        );
        if out.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(out))
        }
    }

    /// Creates an endpoint; returns it with its new secret.
    pub async fn create_endpoint(
        &self,
        mut input: EndpointInput,
    ) -> Result<(Endpoint, SecretString)> {
        self.validate_endpoint(&mut input, "endpoint")?;
        let key = self.webhook_key()?;
        let id = Uuid::new_v4();
        let secret = webhook::new_secret();
        let sealed = key.seal_str(&secret, id.as_bytes());
        let endpoint = Endpoint {
            name: input.name,
            url: input.url,
            description: input.description,
            event_types: input.event_types,
            disabled: input.disabled,
            disabled_reason: String::new(),
            revision: 1,
            create_time: chrono::Utc::now(),
            update_time: chrono::Utc::now(),
        };
        let mut conn = db::conn(&self.pool).await?;
        let row = db::webhooks::insert_endpoint(&mut conn, id, &endpoint, &sealed)
            .await?
            .ok_or_else(|| {
                Error::AlreadyExists(format!("endpoint {} already exists", endpoint.name))
            })?;
        Ok((row.into(), secret))
    }

    pub async fn get_endpoint(&self, name: &str) -> Result<Endpoint> {
        check_name("name", name)?;
        let mut conn = db::conn(&self.pool).await?;
        db::webhooks::find_endpoint(&mut conn, name, false)
            .await?
            .map(Endpoint::from)
            .ok_or_else(|| endpoint_not_found(name))
    }

    pub async fn list_endpoints(&self, page_size: i32, page_token: &str) -> Result<Page<Endpoint>> {
        let limit = validate_page_size(page_size).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let after =
            super::decode_name_token(page_token, |name| check_name("page_token", name).is_ok())?;
        let mut conn = db::conn(&self.pool).await?;
        let mut items: Vec<Endpoint> =
            db::webhooks::list_endpoints(&mut conn, after.as_deref(), limit + 1)
                .await?
                .into_iter()
                .map(Endpoint::from)
                .collect();
        let next_page_token = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items
                .last()
                .map(|e| URL_SAFE_NO_PAD.encode(&e.name))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Changes the `fields` of the endpoint `input.name` to `input`'s.
    pub async fn update_endpoint(
        &self,
        input: EndpointInput,
        fields: &[EndpointField],
        etag: &str,
    ) -> Result<Endpoint> {
        check_name("endpoint.name", &input.name)?;
        if fields.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                "must name at least one of url, description, event_types, disabled",
            ));
        }
        let mut conn = db::conn(&self.pool).await?;
        let endpoint = conn
            .transaction(async |conn| {
                let current: Endpoint = db::webhooks::find_endpoint(conn, &input.name, true)
                    .await?
                    .ok_or_else(|| endpoint_not_found(&input.name))?
                    .into();
                check_etag(&current, etag)?;
                let mut next = EndpointInput {
                    name: current.name.clone(),
                    url: current.url.clone(),
                    description: current.description.clone(),
                    event_types: current.event_types.clone(),
                    disabled: current.disabled,
                };
                for field in fields {
                    match field {
                        EndpointField::Url => next.url = input.url.clone(),
                        EndpointField::Description => next.description = input.description.clone(),
                        EndpointField::EventTypes => next.event_types = input.event_types.clone(),
                        EndpointField::Disabled => next.disabled = input.disabled,
                    }
                }
                self.validate_endpoint(&mut next, "endpoint")?;
                let disabled_reason = match (current.disabled, next.disabled) {
                    (_, false) => String::new(),
                    (false, true) => "disabled by an operator".to_owned(),
                    (true, true) => current.disabled_reason.clone(),
                };
                let updated = Endpoint {
                    url: next.url,
                    description: next.description,
                    event_types: next.event_types,
                    disabled: next.disabled,
                    disabled_reason,
                    ..current
                };
                Ok::<_, Error>(db::webhooks::update_endpoint(conn, &updated).await?.into())
            })
            .await?;
        // An endpoint enabled again has deliveries due.
        self.wakeup.work_committed();
        Ok(endpoint)
    }

    /// Deletes an endpoint no plan calls, with its deliveries.
    pub async fn delete_endpoint(&self, name: &str, etag: &str) -> Result<()> {
        check_name("name", name)?;
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            let current: Endpoint = db::webhooks::find_endpoint(conn, name, true)
                .await?
                .ok_or_else(|| endpoint_not_found(name))?
                .into();
            check_etag(&current, etag)?;
            let plans = db::webhooks::plans_using(conn, name).await?;
            if !plans.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "endpoint {name} is called by a step of plan(s) {}; change those plans first",
                    plans.join(", ")
                )));
            }
            let tenants = db::webhooks::tenants_calling(conn, name).await?;
            if tenants > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "endpoint {name} is called by the pipelines of {tenants} tenant(s) still provisioning; wait for them to finish"
                )));
            }
            db::webhooks::delete_endpoint(conn, name).await
        })
        .await
    }

    /// A new secret; the old one signs beside it for the overlap.
    pub async fn rotate_endpoint_secret(&self, name: &str) -> Result<SecretString> {
        check_name("name", name)?;
        let key = self.webhook_key()?;
        let secret = webhook::new_secret();
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            let row = db::webhooks::find_endpoint(conn, name, true)
                .await?
                .ok_or_else(|| endpoint_not_found(name))?;
            let sealed = key.seal_str(&secret, row.id.as_bytes());
            db::webhooks::rotate_secret(conn, row.id, &sealed, webhook::ROTATION_OVERLAP).await
        })
        .await?;
        Ok(secret)
    }

    pub async fn list_deliveries(
        &self,
        filter: DeliveryFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Delivery>> {
        if let Some(endpoint) = &filter.endpoint {
            check_name("endpoint", endpoint)?;
        }
        let limit = validate_page_size(page_size).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let digest = filter_digest(&filter);
        let before = decode_seq_token(page_token, &digest)?;
        let mut conn = db::conn(&self.pool).await?;
        let mut items =
            db::webhooks::list_deliveries(&mut conn, &filter, before, limit + 1).await?;
        let next_page_token = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items
                .last()
                .map(|d| URL_SAFE_NO_PAD.encode(format!("{}.{digest}", d.seq)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Makes a FAILED delivery due again with a fresh schedule.
    pub async fn retry_delivery(&self, id: &str) -> Result<Delivery> {
        let not_found = || Error::NotFound {
            resource: "delivery",
            id: id.to_owned(),
        };
        if id.is_empty() || id.len() > 64 {
            return Err(Error::invalid("id", "must be a delivery id (msg_...)"));
        }
        let mut conn = db::conn(&self.pool).await?;
        let delivery = conn
            .transaction(async |conn| {
                let (delivery, endpoint_disabled) = db::webhooks::find_delivery(conn, id, true)
                    .await?
                    .ok_or_else(not_found)?;
                if delivery.status != DeliveryStatus::Failed {
                    return Err(Error::FailedPrecondition(format!(
                        "delivery {id} is {}; only a FAILED delivery can be retried",
                        delivery.status
                    )));
                }
                if endpoint_disabled {
                    return Err(Error::FailedPrecondition(format!(
                        "endpoint {} is disabled; enable it first (UpdateEndpoint)",
                        delivery.endpoint
                    )));
                }
                db::webhooks::requeue_delivery(conn, id).await?;
                db::webhooks::find_delivery(conn, id, false)
                    .await?
                    .map(|(d, _)| d)
                    .ok_or_else(not_found)
            })
            .await?;
        self.wakeup.work_committed();
        Ok(delivery)
    }
}

/// The filters a delivery page token was issued for.
fn filter_digest(filter: &DeliveryFilter) -> String {
    use sha2::Digest as _;
    let text = format!(
        "{}|{}|{}",
        filter.endpoint.as_deref().unwrap_or(""),
        filter.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        filter.status.map_or("", |s| s.as_str())
    );
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..6])
}

fn decode_seq_token(token: &str, digest: &str) -> Result<Option<i64>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "is not a token this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (seq, issued_for) = text.split_once('.').ok_or_else(invalid)?;
    if issued_for != digest {
        return Err(Error::invalid(
            "page_token",
            "was issued for different filters; repeat the filters of the first request",
        ));
    }
    seq.parse().map(Some).map_err(|_| invalid())
}
