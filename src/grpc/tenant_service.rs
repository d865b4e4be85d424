//! `tenancy.v1.TenantService`: convert the request, call the use case,
//! convert the result.

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{authorize, authorize_in_tenant, convert, reach};
use crate::auth::Scope;
use crate::db::tenants::ListFilter;
use crate::domain::validate_tenant_id;
use crate::error::Error;
use crate::ops::Ops;
use crate::proto as pb;
use crate::proto::tenant_service_server::TenantService;

/// The gRPC face of [`Ops`].
#[derive(Clone)]
pub struct TenantApi {
    ops: Ops,
}

impl TenantApi {
    pub fn new(ops: Ops) -> Self {
        Self { ops }
    }
}

fn tenant_id(id: &str) -> Result<uuid::Uuid, Status> {
    validate_tenant_id("tenant_id", id).map_err(|v| Error::InvalidArgument(vec![v]).into())
}

type StatusStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamProvisioningStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let caller = authorize(&request, Scope::Write)?;
        let req = request.into_inner();
        let input = convert::tenant_input(req.tenant)?;
        if !caller.may(Scope::Admin)
            && crate::domain::Placement::parse("tenant.placement", &input.placement)
                .is_ok_and(|p| p.server().is_some())
        {
            return Err(Status::permission_denied(
                "naming a database server in tenant.placement needs scope tenants.admin",
            ));
        }
        let tenant = self
            .ops
            .create_tenant(&caller, input, &req.request_id, req.validate_only)
            .await?;
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Read)?;
        let id = tenant_id(&request.get_ref().tenant_id)?;
        reach(&caller, id)?;
        let tenant = self.ops.get_tenant(id).await?;
        Ok(Response::new(pb::GetTenantResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Read)?;
        let req = request.into_inner();
        let filter = ListFilter {
            tenant: caller.tenant,
            state: convert::state_filter("state", req.state)
                .map_err(|v| Error::InvalidArgument(vec![v]))?,
            plan: (!req.plan.is_empty()).then_some(req.plan),
            labels: req.labels.into_iter().collect(),
            database_server: (!req.database_server.is_empty()).then_some(req.database_server),
        };
        let page = self
            .ops
            .list_tenants(filter, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: page.tenants.into_iter().map(convert::tenant).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::UpdateTenantResponse>, Status> {
        let caller = authorize(&request, Scope::Write)?;
        let req = request.into_inner();
        let id = tenant_id(&req.tenant_id)?;
        if let Some(t) = &req.tenant
            && !t.id.is_empty()
            && t.id != req.tenant_id
        {
            return Err(Error::invalid("tenant.id", "must be empty or equal tenant_id").into());
        }
        let patch = convert::patch(req.tenant, req.update_mask)?;
        if patch.legal_hold.is_some() && !caller.may(Scope::Admin) {
            return Err(Status::permission_denied(
                "a legal hold needs scope tenants.admin",
            ));
        }
        let tenant = self.ops.update_tenant(&caller, id, patch).await?;
        Ok(Response::new(pb::UpdateTenantResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let caller = authorize(&request, Scope::Admin)?;
        let req = request.into_inner();
        let id = tenant_id(&req.tenant_id)?;
        let etag = (!req.etag.is_empty()).then_some(req.etag.as_str());
        let tenant = self.ops.delete_tenant(&caller, id, etag).await?;
        Ok(Response::new(pb::DeleteTenantResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn deprovision(
        &self,
        request: Request<pb::DeprovisionRequest>,
    ) -> Result<Response<pb::DeprovisionResponse>, Status> {
        let caller = authorize(&request, Scope::Admin)?;
        let req = request.into_inner();
        let id = tenant_id(&req.tenant_id)?;
        let grace = convert::grace_period(req.grace_period)?;
        let mode = convert::deprovision_mode(req.mode)?;
        let tenant = self
            .ops
            .deprovision(&caller, id, grace, mode, &req.reason)
            .await?;
        Ok(Response::new(pb::DeprovisionResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn cancel_provisioning(
        &self,
        request: Request<pb::CancelProvisioningRequest>,
    ) -> Result<Response<pb::CancelProvisioningResponse>, Status> {
        let caller = authorize(&request, Scope::Write)?;
        let req = request.into_inner();
        let id = tenant_id(&req.tenant_id)?;
        let tenant = self
            .ops
            .cancel_provisioning(&caller, id, &req.reason)
            .await?;
        Ok(Response::new(pb::CancelProvisioningResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn retry_provisioning(
        &self,
        request: Request<pb::RetryProvisioningRequest>,
    ) -> Result<Response<pb::RetryProvisioningResponse>, Status> {
        let caller = authorize(&request, Scope::Write)?;
        let id = tenant_id(&request.get_ref().tenant_id)?;
        let tenant = self.ops.retry_provisioning(&caller, id).await?;
        Ok(Response::new(pb::RetryProvisioningResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn suspend_tenant(
        &self,
        request: Request<pb::SuspendTenantRequest>,
    ) -> Result<Response<pb::SuspendTenantResponse>, Status> {
        let caller = authorize(&request, Scope::Write)?;
        let req = request.into_inner();
        let id = tenant_id(&req.tenant_id)?;
        let tenant = self.ops.suspend_tenant(&caller, id, &req.reason).await?;
        Ok(Response::new(pb::SuspendTenantResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn resume_tenant(
        &self,
        request: Request<pb::ResumeTenantRequest>,
    ) -> Result<Response<pb::ResumeTenantResponse>, Status> {
        let caller = authorize(&request, Scope::Write)?;
        let id = tenant_id(&request.get_ref().tenant_id)?;
        let tenant = self.ops.resume_tenant(&caller, id).await?;
        Ok(Response::new(pb::ResumeTenantResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    type StreamProvisioningStatusStream = StatusStream;

    async fn stream_provisioning_status(
        &self,
        request: Request<pb::StreamProvisioningStatusRequest>,
    ) -> Result<Response<Self::StreamProvisioningStatusStream>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Read)?;
        let req = request.into_inner();
        if req.tenant_id.is_empty() {
            return Err(Error::invalid("tenant_id", "is required").into());
        }
        let items = self
            .ops
            .watch_tenant(
                &caller,
                &req.tenant_id,
                req.resume_after_event_id,
                req.follow,
            )
            .await?;
        let stream = ReceiverStream::new(items)
            .map(|item| item.map(convert::watch_item).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_provisioning_stats(
        &self,
        request: Request<pb::GetProvisioningStatsRequest>,
    ) -> Result<Response<pb::GetProvisioningStatsResponse>, Status> {
        authorize(&request, Scope::Read)?;
        let window = super::stats::window(request.into_inner().window);
        let stats = self.ops.provisioning_stats(window).await?;
        Ok(Response::new(super::stats::response(stats)))
    }

    async fn resolve_tenant(
        &self,
        request: Request<pb::ResolveTenantRequest>,
    ) -> Result<Response<pb::ResolveTenantResponse>, Status> {
        let caller = authorize(&request, Scope::Admin)?;
        let r = request.into_inner();
        let id = tenant_id(&r.tenant_id)?;
        let action = match pb::ResolveAction::try_from(r.action) {
            Ok(pb::ResolveAction::RetryCompensation) => {
                crate::ops::ResolveAction::RetryCompensation
            }
            Ok(pb::ResolveAction::MarkResolved) => crate::ops::ResolveAction::MarkResolved,
            _ => {
                return Err(crate::error::Error::invalid(
                    "action",
                    "must be RETRY_COMPENSATION or MARK_RESOLVED",
                )
                .into());
            }
        };
        let tenant = self
            .ops
            .resolve_tenant(&caller, id, action, &r.note)
            .await?;
        Ok(Response::new(pb::ResolveTenantResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn restore_tenant(
        &self,
        request: Request<pb::RestoreTenantRequest>,
    ) -> Result<Response<pb::RestoreTenantResponse>, Status> {
        let caller = authorize(&request, Scope::Admin)?;
        let r = request.into_inner();
        let id = tenant_id(&r.tenant_id)?;
        let target = match pb::TenantState::try_from(r.target_state) {
            Ok(pb::TenantState::Active) => crate::domain::TenantState::Active,
            Ok(pb::TenantState::Suspended) => crate::domain::TenantState::Suspended,
            _ => {
                return Err(crate::error::Error::invalid(
                    "target_state",
                    "must be ACTIVE or SUSPENDED",
                )
                .into());
            }
        };
        let tenant = self.ops.restore_tenant(&caller, id, target).await?;
        Ok(Response::new(pb::RestoreTenantResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }

    async fn reconcile_tenant(
        &self,
        request: Request<pb::ReconcileTenantRequest>,
    ) -> Result<Response<pb::ReconcileTenantResponse>, Status> {
        let caller = authorize(&request, Scope::Admin)?;
        let id = tenant_id(&request.get_ref().tenant_id)?;
        let done = self.ops.reconcile_tenant(&caller, id).await?;
        Ok(Response::new(pb::ReconcileTenantResponse {
            tenant: Some(convert::tenant(done.tenant)),
            repaired: done.repaired,
            left: done.left,
        }))
    }

    async fn get_tenant_credentials(
        &self,
        request: Request<pb::GetTenantCredentialsRequest>,
    ) -> Result<Response<pb::GetTenantCredentialsResponse>, Status> {
        let caller = authorize(&request, Scope::Admin)?;
        let id = tenant_id(&request.get_ref().tenant_id)?;
        let c = self.ops.tenant_credentials(&caller, id).await?;
        Ok(Response::new(pb::GetTenantCredentialsResponse {
            oidc_issuer: c.issuer,
            oidc_client_id: c.client_id,
            oidc_token_endpoint_auth_method: c.auth_method,
            oidc_client_secret: c
                .client_secret
                .map(|s| secrecy::ExposeSecret::expose_secret(&s).to_owned())
                .unwrap_or_default(),
            secret_fetch_time: c.secret_fetch_time.map(convert::timestamp),
            secret_fetched_by: c.secret_fetched_by.unwrap_or_default(),
        }))
    }

    async fn get_tenant_certificate(
        &self,
        request: Request<pb::GetTenantCertificateRequest>,
    ) -> Result<Response<pb::GetTenantCertificateResponse>, Status> {
        let with_key = request.get_ref().include_private_key;
        let caller = if with_key {
            authorize(&request, Scope::Admin)?
        } else {
            authorize_in_tenant(&request, Scope::Read)?
        };
        let id = tenant_id(&request.get_ref().tenant_id)?;
        reach(&caller, id)?;
        let c = self.ops.tenant_certificate(&caller, id, with_key).await?;
        Ok(Response::new(pb::GetTenantCertificateResponse {
            dns_name: c.dns_name,
            certificate_chain_pem: c.chain_pem,
            serial: c.serial,
            not_before: c.not_before.map(convert::timestamp),
            not_after: c.not_after.map(convert::timestamp),
            issue_time: c.issue_time.map(convert::timestamp),
            private_key_pem: c
                .private_key
                .map(|k| secrecy::ExposeSecret::expose_secret(&k).to_owned())
                .unwrap_or_default(),
            key_fetch_time: c.key_fetch_time.map(convert::timestamp),
            key_fetched_by: c.key_fetched_by.unwrap_or_default(),
        }))
    }
}
