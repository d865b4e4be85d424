//! `tenancy.v1.PlacementService`: the database servers of tenants' data.

use tonic::{Request, Response, Status};

use super::{authorize, convert};
use crate::auth::Scope;
use crate::ops::{DatabaseServer, Ops, ServerInput};
use crate::proto as pb;
use crate::proto::placement_service_server::PlacementService;

/// The gRPC face of the placement use cases.
#[derive(Clone)]
pub struct PlacementApi {
    ops: Ops,
}

impl PlacementApi {
    pub fn new(ops: Ops) -> Self {
        Self { ops }
    }
}

fn server_pb(s: DatabaseServer) -> pb::DatabaseServer {
    pb::DatabaseServer {
        etag: s.etag(),
        name: s.name,
        url: s.url,
        region: s.region,
        weight: s.weight,
        max_tenants: s.max_tenants,
        draining: s.draining,
        labels: s.labels.into_iter().collect(),
        tenant_count: s.tenant_count,
        schema_bytes: s.schema_bytes,
        reachable: s.reachable,
        create_time: Some(convert::timestamp(s.create_time)),
    }
}

fn input(s: Option<pb::DatabaseServer>) -> (ServerInput, String) {
    let s = s.unwrap_or_default();
    (
        ServerInput {
            name: s.name,
            url: s.url,
            region: s.region,
            weight: s.weight,
            max_tenants: s.max_tenants,
            draining: s.draining,
            labels: s.labels.into_iter().collect(),
        },
        s.etag,
    )
}

#[tonic::async_trait]
impl PlacementService for PlacementApi {
    async fn register_database_server(
        &self,
        request: Request<pb::RegisterDatabaseServerRequest>,
    ) -> Result<Response<pb::RegisterDatabaseServerResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let (input, _) = input(request.into_inner().server);
        let server = self.ops.register_database_server(input).await?;
        Ok(Response::new(pb::RegisterDatabaseServerResponse {
            server: Some(server_pb(server)),
        }))
    }

    async fn get_database_server(
        &self,
        request: Request<pb::GetDatabaseServerRequest>,
    ) -> Result<Response<pb::GetDatabaseServerResponse>, Status> {
        authorize(&request, Scope::Read)?;
        let server = self
            .ops
            .get_database_server(&request.into_inner().name)
            .await?;
        Ok(Response::new(pb::GetDatabaseServerResponse {
            server: Some(server_pb(server)),
        }))
    }

    async fn list_database_servers(
        &self,
        request: Request<pb::ListDatabaseServersRequest>,
    ) -> Result<Response<pb::ListDatabaseServersResponse>, Status> {
        authorize(&request, Scope::Read)?;
        let servers = self.ops.list_database_servers().await?;
        Ok(Response::new(pb::ListDatabaseServersResponse {
            servers: servers.into_iter().map(server_pb).collect(),
        }))
    }

    async fn update_database_server(
        &self,
        request: Request<pb::UpdateDatabaseServerRequest>,
    ) -> Result<Response<pb::UpdateDatabaseServerResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let r = request.into_inner();
        let fields = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let (input, etag) = input(r.server);
        let server = self
            .ops
            .update_database_server(input, &fields, &etag)
            .await?;
        Ok(Response::new(pb::UpdateDatabaseServerResponse {
            server: Some(server_pb(server)),
        }))
    }

    async fn deregister_database_server(
        &self,
        request: Request<pb::DeregisterDatabaseServerRequest>,
    ) -> Result<Response<pb::DeregisterDatabaseServerResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        self.ops
            .deregister_database_server(&request.into_inner().name)
            .await?;
        Ok(Response::new(pb::DeregisterDatabaseServerResponse {}))
    }

    async fn move_tenant(
        &self,
        request: Request<pb::MoveTenantRequest>,
    ) -> Result<Response<pb::MoveTenantResponse>, Status> {
        let caller = authorize(&request, Scope::Admin)?;
        let req = request.into_inner();
        let id = crate::domain::validate_tenant_id("tenant_id", &req.tenant_id)
            .map_err(|v| crate::error::Error::InvalidArgument(vec![v]))?;
        let tenant = self
            .ops
            .move_tenant(&caller, id, &req.target_server)
            .await?;
        Ok(Response::new(pb::MoveTenantResponse {
            tenant: Some(convert::tenant(tenant)),
        }))
    }
}
