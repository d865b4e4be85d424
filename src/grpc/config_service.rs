//! `tenancy.v1.TenantConfigService`: per-tenant configuration. Convert the
//! request, call the use case, convert the result.
//!
//! A setting's `oneof value` travels to and from `ops` as a JSON scalar
//! (string, integer, boolean), the form `ops` checks and stores.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{authorize_in_tenant, convert, reach};
use crate::auth::Scope;
use crate::domain::validate_tenant_id;
use crate::error::Error;
use crate::ops::Ops;
use crate::proto as pb;
use crate::proto::config_setting::Value as PbValue;
use crate::proto::tenant_config_service_server::TenantConfigService;

/// The gRPC face of the configuration use cases of [`Ops`].
#[derive(Clone)]
pub struct ConfigApi {
    ops: Ops,
}

impl ConfigApi {
    pub fn new(ops: Ops) -> Self {
        Self { ops }
    }
}

#[tonic::async_trait]
impl TenantConfigService for ConfigApi {
    async fn get_tenant_config(
        &self,
        request: Request<pb::GetTenantConfigRequest>,
    ) -> Result<Response<pb::GetTenantConfigResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Read)?;
        let id = tenant_id(&request.get_ref().tenant_id)?;
        reach(&caller, id)?;
        let c = self.ops.get_tenant_config(id).await?;
        let settings = c
            .settings
            .into_iter()
            .map(|s| setting(s.key, s.category, s.value, s.description, s.is_default));
        Ok(Response::new(pb::GetTenantConfigResponse {
            config: Some(config(c.tenant_id, settings, c.etag, c.update_time)),
        }))
    }

    async fn update_tenant_config(
        &self,
        request: Request<pb::UpdateTenantConfigRequest>,
    ) -> Result<Response<pb::UpdateTenantConfigResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Write)?;
        let req = request.into_inner();
        let id = tenant_id(&req.tenant_id)?;
        reach(&caller, id)?;
        let settings = req
            .settings
            .into_iter()
            .map(|s| (s.key, s.value.map(value)))
            .collect();
        let mask = req.update_mask.map(|m| m.paths);
        let c = self
            .ops
            .update_tenant_config(&caller, id, settings, mask, &req.etag)
            .await?;
        let settings = c
            .settings
            .into_iter()
            .map(|s| setting(s.key, s.category, s.value, s.description, s.is_default));
        Ok(Response::new(pb::UpdateTenantConfigResponse {
            config: Some(config(c.tenant_id, settings, c.etag, c.update_time)),
        }))
    }
}

fn tenant_id(id: &str) -> Result<Uuid, Status> {
    validate_tenant_id("tenant_id", id).map_err(|v| Error::InvalidArgument(vec![v]).into())
}

/// A caller's value as `ops` takes it.
fn value(v: PbValue) -> Value {
    match v {
        PbValue::StringValue(s) => Value::String(s),
        PbValue::IntValue(n) => Value::from(n),
        PbValue::BoolValue(b) => Value::Bool(b),
    }
}

fn config(
    tenant_id: Uuid,
    settings: impl Iterator<Item = pb::ConfigSetting>,
    etag: String,
    update_time: DateTime<Utc>,
) -> pb::TenantConfig {
    pb::TenantConfig {
        tenant_id: tenant_id.to_string(),
        settings: settings.collect(),
        etag,
        update_time: Some(convert::timestamp(update_time)),
    }
}

fn setting(
    key: &str,
    category: &str,
    value: Option<Value>,
    description: &str,
    is_default: bool,
) -> pb::ConfigSetting {
    let category = match category {
        "general" => pb::ConfigCategory::General,
        "auth" => pb::ConfigCategory::Auth,
        "billing" => pb::ConfigCategory::Billing,
        "features" => pb::ConfigCategory::Features,
        "integrations" => pb::ConfigCategory::Integrations,
        _ => pb::ConfigCategory::Unspecified,
    };
    pb::ConfigSetting {
        key: key.to_owned(),
        category: category as i32,
        value: value.and_then(|v| match v {
            Value::String(s) => Some(PbValue::StringValue(s)),
            Value::Bool(b) => Some(PbValue::BoolValue(b)),
            Value::Number(n) => n.as_i64().map(PbValue::IntValue),
            _ => None,
        }),
        description: description.to_owned(),
        is_default,
    }
}
