//! The transport: the only module that knows tonic. Services convert requests
//! to domain input, call `ops`, and convert results back; an interceptor in
//! front of TenantService authenticates and rate-limits.

mod api_key_service;
mod config_service;
mod convert;
mod metered;
mod placement_service;
mod plan_service;
mod stats;
mod status;
mod tenant_service;
mod usage_service;
mod webhook_service;

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Status};
use tonic_health::server::HealthReporter;
use tonic_types::{ErrorDetails, StatusExt};

pub use metered::MeteredLayer;
pub use tenant_service::TenantApi;

use crate::auth::Verifier;
use crate::domain::Caller;
use crate::ops::Ops;
use crate::proto;
use crate::proto::api_key_service_server::ApiKeyServiceServer;
use crate::proto::placement_service_server::PlacementServiceServer;
use crate::proto::plan_service_server::PlanServiceServer;
use crate::proto::tenant_config_service_server::TenantConfigServiceServer;
use crate::proto::tenant_service_server::TenantServiceServer;
use crate::proto::usage_service_server::UsageServiceServer;
use crate::proto::webhook_service_server::WebhookServiceServer;

/// Largest request the server decodes (tonic's default, made explicit). A
/// valid tenant is a few KiB; larger fields are decoded so that validation
/// can name them in INVALID_ARGUMENT instead of failing the whole message.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Every service the server exposes: TenantService, health and reflection
/// (v1 for grpcurl, v1alpha for older clients such as Python's grpcio).
pub async fn routes(
    ops: Ops,
    verifier: Option<Verifier>,
    rate_limit: Option<(u32, u32)>,
) -> Result<(Routes, HealthReporter), tonic_reflection::server::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_serving(&health, true).await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // One interceptor (and one rate limiter) in front of every service but
    // health and reflection.
    let auth = authenticate(verifier.clone(), rate_limit.and_then(limiter));
    let tenants = InterceptedService::new(
        TenantServiceServer::new(TenantApi::new(ops.clone()))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        auth.clone(),
    );
    let plans = InterceptedService::new(
        PlanServiceServer::new(plan_service::PlanApi::new(ops.clone()))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        auth.clone(),
    );
    let config = InterceptedService::new(
        TenantConfigServiceServer::new(config_service::ConfigApi::new(ops.clone()))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        auth.clone(),
    );
    let webhooks = InterceptedService::new(
        WebhookServiceServer::new(webhook_service::WebhookApi::new(ops.clone()))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        auth.clone(),
    );
    let usage = InterceptedService::new(
        UsageServiceServer::new(usage_service::UsageApi::new(ops.clone()))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        auth.clone(),
    );
    let placement = InterceptedService::new(
        PlacementServiceServer::new(placement_service::PlacementApi::new(ops.clone())),
        auth.clone(),
    );
    // Gateways verify a key on each of their requests: no per-caller rate
    // limit here (making keys has its own, per tenant).
    let api_keys = InterceptedService::new(
        ApiKeyServiceServer::new(api_key_service::ApiKeyApi::new(ops.clone())),
        authenticate(verifier.clone(), None),
    );
    let routes = Routes::new(tenants)
        .add_service(placement)
        .add_service(api_keys)
        .add_service(config)
        .add_service(usage)
        .add_service(webhooks)
        .add_service(plans)
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    Ok((routes, health))
}

/// The caller the interceptor attached, if it holds `scope`. Tenant-scoped
/// callers are refused here: only the RPCs about one tenant admit them,
/// through [`authorize_in_tenant`].
pub(crate) fn authorize<T>(
    request: &Request<T>,
    scope: crate::auth::Scope,
) -> Result<Caller, Status> {
    let caller = authorize_in_tenant(request, scope)?;
    if caller.tenant.is_some() {
        return Err(Status::permission_denied(
            "a token limited to one tenant may not call this RPC",
        ));
    }
    Ok(caller)
}

/// [`authorize`] for the RPCs a tenant-scoped caller may make; the handler
/// answers for any other tenant exactly as for one that does not exist
/// (see [`reach`]).
pub(crate) fn authorize_in_tenant<T>(
    request: &Request<T>,
    scope: crate::auth::Scope,
) -> Result<Caller, Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("not authenticated"))?;
    if caller.may(scope) {
        Ok(caller)
    } else {
        Err(Status::permission_denied(format!(
            "requires the {} scope",
            scope.as_str()
        )))
    }
}

/// NOT_FOUND, as for a tenant that does not exist, unless `caller` may see
/// `tenant`: whether another tenant exists does not leak.
pub(crate) fn reach(caller: &Caller, tenant: uuid::Uuid) -> Result<(), Status> {
    if caller.reaches(tenant) {
        Ok(())
    } else {
        Err(crate::error::Error::tenant_not_found(tenant).into())
    }
}

/// What the health service answers for: the server as a whole (`""`) and
/// each service that needs the database.
const HEALTH_NAMES: [&str; 7] = [
    "",
    "tenancy.v1.TenantService",
    "tenancy.v1.PlanService",
    "tenancy.v1.TenantConfigService",
    "tenancy.v1.WebhookService",
    "tenancy.v1.UsageService",
    "tenancy.v1.PlacementService",
];

/// Reports whether the services can serve (the database answers).
pub async fn set_serving(health: &HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for name in HEALTH_NAMES {
        health.set_service_status(name, status).await;
    }
}

/// Flips every service to NOT_SERVING, first step of a graceful shutdown.
pub async fn set_not_serving(health: &HealthReporter) {
    set_serving(health, false).await;
}

/// The interceptor in front of TenantService (health and reflection stay
/// open): checks the bearer token and attaches the [`Caller`] for the
/// handlers, which check scopes. Without a verifier every caller is
/// `anonymous` with every scope.
fn authenticate(
    verifier: Option<Verifier>,
    limiter: Option<Arc<Limiter>>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let caller = match &verifier {
            None => Caller::anonymous(),
            Some(verifier) => {
                let token = request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .ok_or_else(|| {
                        Status::unauthenticated(
                            "missing bearer token (authorization: Bearer <jwt>)",
                        )
                    })?;
                verifier
                    .verify(token.trim())
                    .map_err(|e| Status::unauthenticated(e.to_string()))?
            }
        };
        if let Some(limiter) = &limiter {
            // Per principal: the token's subject, else the client's address.
            let key = match (&verifier, request.remote_addr()) {
                (None, Some(addr)) => addr.ip().to_string(),
                _ => caller.subject.clone(),
            };
            if let Err(not_until) = limiter.check_key(&key) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(Status::with_error_details(
                    Code::ResourceExhausted,
                    "rate limit exceeded; retry after the delay in RetryInfo",
                    ErrorDetails::with_retry_info(Some(wait)),
                ));
            }
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

type Limiter = governor::DefaultKeyedRateLimiter<String>;

/// A keyed limiter of `per_sec` requests per second with `burst`.
fn limiter((per_sec, burst): (u32, u32)) -> Option<Arc<Limiter>> {
    let quota = Quota::per_second(NonZeroU32::new(per_sec)?).allow_burst(NonZeroU32::new(burst)?);
    Some(Arc::new(governor::RateLimiter::keyed(quota)))
}
