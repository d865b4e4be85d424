//! How results are printed: human text (tables, key: value) or JSON in the
//! proto3 JSON mapping (the same as `buf curl` and grpcurl print).

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use tenantd::proto::{StepStatus, Tenant, TenantState};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and `key: value` lines.
    Table,
    /// One JSON object per result (per message for `watch`).
    Json,
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(tenantd::proto::FILE_DESCRIPTOR_SET)
            .expect("the built-in descriptors decode")
    })
}

/// `message` (of proto type `tenancy.v1.<name>`) as one line of JSON.
pub fn json(message: &impl prost::Message, name: &str) -> String {
    let descriptor = pool()
        .get_message_by_name(&format!("tenancy.v1.{name}"))
        .unwrap_or_else(|| panic!("no message tenancy.v1.{name}"));
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message decodes with its own descriptor");
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    dynamic
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .expect("JSON serialization into memory");
    String::from_utf8(out).expect("JSON is UTF-8")
}

pub fn state(value: i32) -> &'static str {
    TenantState::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("TENANT_STATE_"))
        .unwrap_or("UNKNOWN")
}

pub fn step_status(value: i32) -> &'static str {
    StepStatus::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("STEP_STATUS_"))
        .unwrap_or("UNKNOWN")
}

/// A tenant as `key: value` lines, with its steps.
pub fn tenant_text(t: &Tenant) -> String {
    let mut lines = vec![
        format!("id:           {}", t.id),
        format!("slug:         {}", t.slug),
        format!("display name: {}", t.display_name),
        format!("admin email:  {}", t.admin_email),
        format!("plan:         {}", t.plan),
        format!("state:        {}", state(t.state)),
        format!(
            "server:       {}{}",
            t.database_server,
            if t.placement.is_empty() {
                String::new()
            } else {
                format!(" (placement {})", t.placement)
            }
        ),
    ];
    if !t.contract_address.is_empty() {
        let owner = if t.contract_owner.is_empty() {
            "the deployer"
        } else {
            &t.contract_owner
        };
        lines.push(format!(
            "contract:     {} (owner {owner})",
            t.contract_address
        ));
    }
    if !t.state_reason.is_empty() {
        lines.push(format!("reason:       {}", t.state_reason));
    }
    if t.legal_hold {
        lines.push(format!("legal hold:   {}", t.legal_hold_reason));
    }
    for d in &t.drift {
        lines.push(format!(
            "drift:        {}: expected {}, found {}",
            d.resource, d.expected, d.found
        ));
    }
    lines.push(format!("etag:         {}", t.etag));
    for (k, v) in &t.labels {
        lines.push(format!("label:        {k}={v}"));
    }
    for (k, v) in &t.outputs {
        lines.push(format!("output:       {k}={v}"));
    }
    for step in &t.steps {
        lines.push(format!(
            "step:         {:<22} {:<12} attempts {}/{}",
            step.name,
            step_status(step.status),
            step.attempts,
            step.max_attempts
        ));
    }
    lines.join("\n")
}

/// A timestamp as `YYYY-MM-DD HH:MM:SS` (UTC, to the second); empty if
/// unset.
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|ts| chrono::DateTime::from_timestamp(ts.seconds, 0))
        .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Tenants as a table, one line each.
pub fn tenant_table(tenants: &[Tenant]) -> String {
    let mut lines = vec![format!(
        "{:<36}  {:<24}  {:<16}  {:<12}  CREATED",
        "ID", "SLUG", "STATE", "PLAN"
    )];
    for t in tenants {
        let created = time(t.create_time.as_ref());
        lines.push(format!(
            "{:<36}  {:<24}  {:<16}  {:<12}  {created}",
            t.id,
            t.slug,
            state(t.state),
            t.plan
        ));
    }
    lines.join("\n")
}

/// A message of type `tenancy.v1.<name>` from proto3 JSON.
pub fn from_json<M: prost::Message + Default>(text: &str, name: &str) -> Result<M, String> {
    let descriptor = pool()
        .get_message_by_name(&format!("tenancy.v1.{name}"))
        .ok_or_else(|| format!("no message tenancy.v1.{name}"))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize(descriptor, &mut deserializer)
        .map_err(|e| format!("not a {name} in proto3 JSON: {e}"))?;
    deserializer
        .end()
        .map_err(|e| format!("trailing text after the {name}: {e}"))?;
    dynamic
        .transcode_to::<M>()
        .map_err(|e| format!("not a {name}: {e}"))
}

fn millis(d: &Option<prost_types::Duration>) -> String {
    d.as_ref().map_or_else(
        || "-".to_owned(),
        |d| format!("{}ms", d.seconds * 1000 + i64::from(d.nanos / 1_000_000)),
    )
}

/// A plan as `key: value` lines, with its steps.
pub fn plan_text(p: &tenantd::proto::Plan) -> String {
    let mut lines = vec![
        format!("name:         {}", p.name),
        format!("version:      {}", p.version),
        format!("description:  {}", p.description),
        format!("built in:     {}", p.built_in),
        format!("etag:         {}", p.etag),
        format!("migrations:   {}", p.migration_set),
    ];
    if let Some(limits) = &p.limits {
        for (name, value) in [
            ("max_users", limits.max_users),
            ("max_api_calls_per_day", limits.max_api_calls_per_day),
            ("max_storage_mb", limits.max_storage_mb),
        ] {
            if value > 0 {
                lines.push(format!("limit:        {name}={value}"));
            }
        }
        let mut meters: Vec<_> = limits.meters.iter().collect();
        meters.sort_by_key(|(name, _)| name.as_str());
        for (name, l) in meters {
            let period = match l.period() {
                tenantd::proto::Period::Month => "month",
                _ => "day",
            };
            lines.push(format!("limit:        {name}={} per {period}", l.limit));
        }
    }
    let on_limit = match p.on_limit() {
        tenantd::proto::OnLimit::Suspend => "suspend",
        _ => "notify",
    };
    lines.push(format!("on limit:     {on_limit}"));
    if let Some(initial) = &p.initial_data {
        for role in &initial.extra_roles {
            lines.push(format!("extra role:   {role}"));
        }
        for (key, value) in &initial.config {
            lines.push(format!("config:       {key}={value}"));
        }
    }
    for s in &p.steps {
        lines.push(format!(
            "step:         {:<22} {:<12} attempts {:<2} retry {}..{} timeout {}",
            s.name,
            if s.critical {
                "critical"
            } else {
                "not critical"
            },
            s.max_attempts,
            millis(&s.retry_base),
            millis(&s.retry_cap),
            millis(&s.timeout)
        ));
    }
    lines.join("\n")
}
