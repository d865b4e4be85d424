//! `tenantctl config`: show and change a tenant's configuration
//! (TenantConfigService).
//!
//! Values are sent as text (`string_value`): the server parses them as the
//! setting's type, so this client needs no list of settings.

use clap::Subcommand;
use tenantd::proto::config_setting::Value;
use tenantd::proto::tenant_config_service_client::TenantConfigServiceClient;
use tenantd::proto::{
    ConfigSetting, GetTenantConfigRequest, TenantConfig, UpdateTenantConfigRequest,
};

use crate::Connection;
use crate::errors::{self, Failure};
use crate::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show every setting of a tenant: its value, and whether that is the
    /// plan's default.
    Get {
        /// The tenant's id.
        tenant_id: String,
    },
    /// Set settings and reset others to the plan's default, all at once or
    /// not at all.
    Set {
        /// The tenant's id.
        tenant_id: String,
        /// `key=value`, e.g. `auth.session_ttl_minutes=60`; the server
        /// parses the value as the setting's type.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// Reset this setting to the plan's default; repeat for more.
        #[arg(long = "reset", value_name = "KEY")]
        reset: Vec<String>,
        /// Only if the configuration still has this etag (from `config get`).
        #[arg(long, default_value = "")]
        etag: String,
    },
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

pub async fn run(connection: Connection, format: Format, cmd: Cmd) -> Result<(), Failure> {
    let mut client = TenantConfigServiceClient::new(connection);
    match cmd {
        Cmd::Get { tenant_id } => {
            let got = client
                .get_tenant_config(GetTenantConfigRequest { tenant_id })
                .await
                .map_err(failure)?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&got, "GetTenantConfigResponse")),
                Format::Table => println!("{}", table(&got.config.unwrap_or_default())),
            }
        }
        Cmd::Set {
            tenant_id,
            settings,
            reset,
            etag,
        } => {
            if settings.is_empty() && reset.is_empty() {
                return Err(Failure::Rpc(
                    "nothing to change: give key=value pairs or --reset KEY".to_owned(),
                ));
            }
            if let Some((key, _)) = settings.iter().find(|(key, _)| reset.contains(key)) {
                return Err(Failure::Rpc(format!("{key} is both set and reset")));
            }
            let mut paths: Vec<String> = settings.iter().map(|(key, _)| key.clone()).collect();
            paths.extend(reset);
            let request = UpdateTenantConfigRequest {
                tenant_id,
                settings: settings
                    .into_iter()
                    .map(|(key, value)| ConfigSetting {
                        key,
                        value: Some(Value::StringValue(value)),
                        ..Default::default()
                    })
                    .collect(),
                update_mask: Some(prost_types::FieldMask { paths }),
                etag,
            };
            let updated = client
                .update_tenant_config(request)
                .await
                .map_err(failure)?
                .into_inner();
            match format {
                Format::Json => {
                    println!("{}", output::json(&updated, "UpdateTenantConfigResponse"))
                }
                Format::Table => println!("{}", table(&updated.config.unwrap_or_default())),
            }
        }
    }
    Ok(())
}

/// A conflict is read again with `config get`.
fn failure(status: tonic::Status) -> Failure {
    Failure::Rpc(errors::describe(&status, "tenantctl config get"))
}

/// One line per setting; `-` for no value.
fn table(config: &TenantConfig) -> String {
    let mut lines = vec![format!(
        "{:<32}  {:<12}  {:<24}  DEFAULT",
        "KEY", "CATEGORY", "VALUE"
    )];
    for s in &config.settings {
        let value = match &s.value {
            Some(Value::StringValue(text)) => text.clone(),
            Some(Value::IntValue(n)) => n.to_string(),
            Some(Value::BoolValue(b)) => b.to_string(),
            None => "-".to_owned(),
        };
        let category = tenantd::proto::ConfigCategory::try_from(s.category)
            .map(|c| c.as_str_name().trim_start_matches("CONFIG_CATEGORY_"))
            .unwrap_or("UNKNOWN")
            .to_ascii_lowercase();
        lines.push(format!(
            "{:<32}  {:<12}  {:<24}  {}",
            s.key,
            category,
            value,
            if s.is_default { "yes" } else { "no" }
        ));
    }
    lines.push(format!("etag: {}", config.etag));
    lines.join("\n")
}
