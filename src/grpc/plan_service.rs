//! `tenancy.v1.PlanService`: versioned plans.

use tonic::{Request, Response, Status};

use super::{authorize, convert};
use crate::auth::Scope;
use crate::ops::Ops;
use crate::proto as pb;
use crate::proto::plan_service_server::PlanService;

/// The gRPC face of the plan use cases.
#[derive(Clone)]
pub struct PlanApi {
    ops: Ops,
}

impl PlanApi {
    pub fn new(ops: Ops) -> Self {
        Self { ops }
    }
}

#[tonic::async_trait]
impl PlanService for PlanApi {
    async fn create_plan(
        &self,
        request: Request<pb::CreatePlanRequest>,
    ) -> Result<Response<pb::CreatePlanResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let (input, _) = convert::plan_input(request.into_inner().plan)?;
        let plan = self.ops.create_plan(input).await?;
        Ok(Response::new(pb::CreatePlanResponse {
            plan: Some(convert::plan(plan)),
        }))
    }

    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::GetPlanResponse>, Status> {
        authorize(&request, Scope::Read)?;
        let r = request.into_inner();
        let plan = self.ops.get_plan(&r.name, r.version).await?;
        Ok(Response::new(pb::GetPlanResponse {
            plan: Some(convert::plan(plan)),
        }))
    }

    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        authorize(&request, Scope::Read)?;
        let r = request.into_inner();
        let page = self.ops.list_plans(r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListPlansResponse {
            plans: page.plans.into_iter().map(convert::plan).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_plan(
        &self,
        request: Request<pb::UpdatePlanRequest>,
    ) -> Result<Response<pb::UpdatePlanResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let (input, etag) = convert::plan_input(request.into_inner().plan)?;
        let plan = self.ops.update_plan(input, &etag).await?;
        Ok(Response::new(pb::UpdatePlanResponse {
            plan: Some(convert::plan(plan)),
        }))
    }

    async fn delete_plan(
        &self,
        request: Request<pb::DeletePlanRequest>,
    ) -> Result<Response<pb::DeletePlanResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let r = request.into_inner();
        self.ops.delete_plan(&r.name, &r.etag).await?;
        Ok(Response::new(pb::DeletePlanResponse {}))
    }
}
