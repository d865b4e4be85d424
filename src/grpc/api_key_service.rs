//! `tenancy.v1.ApiKeyService`: tenants' API keys and their verification.

use std::time::Duration;

use secrecy::ExposeSecret as _;
use tonic::{Request, Response, Status};

use super::{authorize, authorize_in_tenant, convert};
use crate::auth::Scope;
use crate::db::api_keys::ApiKeyRow;
use crate::error::Error;
use crate::ops::Ops;
use crate::proto as pb;
use crate::proto::api_key_service_server::ApiKeyService;

/// The gRPC face of the API key use cases.
#[derive(Clone)]
pub struct ApiKeyApi {
    ops: Ops,
}

impl ApiKeyApi {
    pub fn new(ops: Ops) -> Self {
        Self { ops }
    }
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeyApi {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Write)?;
        let r = request.into_inner();
        let ttl = duration("ttl", r.ttl)?;
        let (row, key) = self
            .ops
            .create_api_key(&caller, &r.tenant_id, &r.name, &r.scopes, ttl)
            .await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(api_key(row)),
            key: key.expose_secret().to_owned(),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Read)?;
        let r = request.into_inner();
        let rows = self
            .ops
            .list_api_keys(&caller, &r.tenant_id, r.include_revoked)
            .await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: rows.into_iter().map(api_key).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Write)?;
        let row = self
            .ops
            .revoke_api_key(&caller, &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {
            api_key: Some(api_key(row)),
        }))
    }

    async fn rotate_api_key(
        &self,
        request: Request<pb::RotateApiKeyRequest>,
    ) -> Result<Response<pb::RotateApiKeyResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Write)?;
        let r = request.into_inner();
        let grace = duration("grace_period", r.grace_period)?.unwrap_or_default();
        let (new, key, old) = self.ops.rotate_api_key(&caller, &r.id, grace).await?;
        Ok(Response::new(pb::RotateApiKeyResponse {
            api_key: Some(api_key(new)),
            key: key.expose_secret().to_owned(),
            previous: Some(api_key(old)),
        }))
    }

    async fn verify_api_key(
        &self,
        request: Request<pb::VerifyApiKeyRequest>,
    ) -> Result<Response<pb::VerifyApiKeyResponse>, Status> {
        authorize(&request, Scope::Verify)?;
        let r = request.into_inner();
        let v = self.ops.verify_api_key(&r.key, r.count_usage).await?;
        Ok(Response::new(pb::VerifyApiKeyResponse {
            tenant_id: v.tenant_id.to_string(),
            tenant_state: convert::tenant_state(v.tenant_state) as i32,
            key_id: v.key_id.simple().to_string(),
            scopes: v.scopes,
            expire_time: v.expire_time.map(convert::timestamp),
        }))
    }
}

/// A request's duration; unset is `None`, negative or out of range is
/// INVALID_ARGUMENT on `field`.
fn duration(field: &str, d: Option<prost_types::Duration>) -> Result<Option<Duration>, Error> {
    let Some(d) = d else { return Ok(None) };
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => Ok(Some(Duration::new(secs, nanos))),
        _ => Err(Error::invalid(field, "must not be negative")),
    }
}

fn api_key(row: ApiKeyRow) -> pb::ApiKey {
    pb::ApiKey {
        id: row.id.simple().to_string(),
        tenant_id: row.tenant_id.to_string(),
        name: row.name,
        prefix: row.prefix,
        scopes: row.scopes,
        create_time: Some(convert::timestamp(row.create_time)),
        expire_time: row.expire_time.map(convert::timestamp),
        last_used_time: row.last_used_time.map(convert::timestamp),
        revoke_time: row.revoke_time.map(convert::timestamp),
        replaced_by: row
            .replaced_by
            .map(|id| id.simple().to_string())
            .unwrap_or_default(),
        created_by: row.created_by,
    }
}
