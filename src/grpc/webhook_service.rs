//! `tenancy.v1.WebhookService`: endpoints and deliveries.

use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use super::{authorize, convert};
use crate::auth::Scope;
use crate::domain::webhook::{Delivery, DeliveryFilter, DeliveryStatus, Endpoint};
use crate::error::Error;
use crate::ops::{EndpointField, EndpointInput, Ops};
use crate::proto as pb;
use crate::proto::webhook_service_server::WebhookService;

/// The gRPC face of the webhook use cases.
#[derive(Clone)]
pub struct WebhookApi {
    ops: Ops,
}

impl WebhookApi {
    pub fn new(ops: Ops) -> Self {
        Self { ops }
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn create_endpoint(
        &self,
        request: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::CreateEndpointResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let (input, _) = endpoint_input(request.into_inner().endpoint)?;
        let (endpoint, secret) = self.ops.create_endpoint(input).await?;
        Ok(Response::new(pb::CreateEndpointResponse {
            endpoint: Some(endpoint_pb(endpoint)),
            secret: secret.expose_secret().to_owned(),
        }))
    }

    async fn get_endpoint(
        &self,
        request: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::GetEndpointResponse>, Status> {
        authorize(&request, Scope::Read)?;
        let endpoint = self.ops.get_endpoint(&request.into_inner().name).await?;
        Ok(Response::new(pb::GetEndpointResponse {
            endpoint: Some(endpoint_pb(endpoint)),
        }))
    }

    async fn list_endpoints(
        &self,
        request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        authorize(&request, Scope::Read)?;
        let r = request.into_inner();
        let page = self.ops.list_endpoints(r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: page.items.into_iter().map(endpoint_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_endpoint(
        &self,
        request: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::UpdateEndpointResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let r = request.into_inner();
        let fields = mask_fields(r.update_mask)?;
        let (input, etag) = endpoint_input(r.endpoint)?;
        let endpoint = self.ops.update_endpoint(input, &fields, &etag).await?;
        Ok(Response::new(pb::UpdateEndpointResponse {
            endpoint: Some(endpoint_pb(endpoint)),
        }))
    }

    async fn delete_endpoint(
        &self,
        request: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let r = request.into_inner();
        self.ops.delete_endpoint(&r.name, &r.etag).await?;
        Ok(Response::new(pb::DeleteEndpointResponse {}))
    }

    async fn rotate_endpoint_secret(
        &self,
        request: Request<pb::RotateEndpointSecretRequest>,
    ) -> Result<Response<pb::RotateEndpointSecretResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let secret = self
            .ops
            .rotate_endpoint_secret(&request.into_inner().name)
            .await?;
        Ok(Response::new(pb::RotateEndpointSecretResponse {
            secret: secret.expose_secret().to_owned(),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        authorize(&request, Scope::Read)?;
        let r = request.into_inner();
        let tenant_id = match r.tenant_id.as_str() {
            "" => None,
            id => Some(
                uuid::Uuid::parse_str(id)
                    .map_err(|_| Error::invalid("tenant_id", "must be a tenant id (a UUID)"))?,
            ),
        };
        let status = match pb::DeliveryStatus::try_from(r.status) {
            Ok(pb::DeliveryStatus::Unspecified) => None,
            Ok(pb::DeliveryStatus::Pending) => Some(DeliveryStatus::Pending),
            Ok(pb::DeliveryStatus::Delivered) => Some(DeliveryStatus::Delivered),
            Ok(pb::DeliveryStatus::Failed) => Some(DeliveryStatus::Failed),
            Err(_) => return Err(Error::invalid("status", "is not a DeliveryStatus").into()),
        };
        let filter = DeliveryFilter {
            endpoint: (!r.endpoint.is_empty()).then_some(r.endpoint),
            tenant_id,
            status,
        };
        let page = self
            .ops
            .list_deliveries(filter, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: page.items.into_iter().map(delivery_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn retry_delivery(
        &self,
        request: Request<pb::RetryDeliveryRequest>,
    ) -> Result<Response<pb::RetryDeliveryResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let delivery = self.ops.retry_delivery(&request.into_inner().id).await?;
        Ok(Response::new(pb::RetryDeliveryResponse {
            delivery: Some(delivery_pb(delivery)),
        }))
    }
}

/// The input fields of an Endpoint message, and its etag.
fn endpoint_input(endpoint: Option<pb::Endpoint>) -> Result<(EndpointInput, String), Error> {
    let e = endpoint.ok_or_else(|| Error::invalid("endpoint", "is required"))?;
    Ok((
        EndpointInput {
            name: e.name,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            disabled: e.disabled,
        },
        e.etag,
    ))
}

fn mask_fields(mask: Option<prost_types::FieldMask>) -> Result<Vec<EndpointField>, Error> {
    let mask = mask.ok_or_else(|| {
        Error::invalid(
            "update_mask",
            "is required: name the fields to change (url, description, event_types, disabled)",
        )
    })?;
    let mut fields = Vec::new();
    for path in &mask.paths {
        let field = match path.as_str() {
            "url" => EndpointField::Url,
            "description" => EndpointField::Description,
            "event_types" => EndpointField::EventTypes,
            "disabled" => EndpointField::Disabled,
            other => {
                return Err(Error::invalid(
                    "update_mask",
                    format!(
                        "{other:?} cannot be changed; the fields are url, description, event_types, disabled"
                    ),
                ));
            }
        };
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    Ok(fields)
}

fn endpoint_pb(e: Endpoint) -> pb::Endpoint {
    let etag = e.etag();
    pb::Endpoint {
        name: e.name,
        url: e.url,
        description: e.description,
        event_types: e.event_types,
        disabled: e.disabled,
        disabled_reason: e.disabled_reason,
        create_time: Some(convert::timestamp(e.create_time)),
        update_time: Some(convert::timestamp(e.update_time)),
        etag,
    }
}

fn delivery_pb(d: Delivery) -> pb::Delivery {
    pb::Delivery {
        id: d.id,
        endpoint: d.endpoint,
        tenant_id: d.tenant_id.to_string(),
        r#type: d.r#type,
        event_id: d.event_id,
        status: match d.status {
            DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
            DeliveryStatus::Delivered => pb::DeliveryStatus::Delivered,
            DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
        } as i32,
        attempts: d.attempts,
        last_http_status: d.last_http_status.unwrap_or(0),
        last_error: d.last_error,
        create_time: Some(convert::timestamp(d.create_time)),
        next_attempt_time: d.next_attempt_time.map(convert::timestamp),
        deliver_time: d.deliver_time.map(convert::timestamp),
    }
}
