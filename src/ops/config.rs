//! Per-tenant configuration: typed settings seeded from the plan, validated
//! against its limits, every change an event.
//!
//! The settings the server knows are `SETTINGS`: a key (`category.name`), a
//! type and a rule. Only the values a tenant sets are stored; every other
//! setting shows the default of the tenant's plan version, read together
//! with them. That is the seeding: nothing is copied at creation, and the
//! plan's defaults pass the same rules as a caller's values (a bad one is
//! skipped with a warning rather than failing the read).
//!
//! Values travel as JSON scalars (string, number, boolean): the stored form
//! (`tenant_config.value`), and what the transport maps its `oneof` to. A
//! string is accepted for every type and parsed, since clients such as
//! `tenantctl` do not know the types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Ops;
use crate::db;
use crate::db::config::ConfigSnapshot;
use crate::domain::{Caller, EventKind, FieldViolation, NewEvent, TenantState};
use crate::error::{Error, Result};

/// Entries of `settings`, and paths of `update_mask`, one update may carry:
/// several times the settings there are, so a sound request never meets
/// it, while it bounds the work and the violations of a hostile one.
const MAX_UPDATE_ENTRIES: usize = 64;
/// An etag this server issues is 18 characters; anything much longer is
/// not one, and is refused before any SQL.
const MAX_ETAG_LEN: usize = 64;
/// Longer URLs are refused by common proxies and browsers.
const MAX_URL_LEN: usize = 2048;
/// RFC 5321 limits a forward path to 256 octets including the brackets.
const MAX_EMAIL_LEN: usize = 254;
/// The longest IANA zone name is about 30 characters.
const MAX_TIMEZONE_LEN: usize = 64;
/// Slack's own limit on channel names.
const MAX_SLACK_CHANNEL_LEN: usize = 80;
/// How much of an unknown key a violation echoes.
const MAX_SHOWN_KEY_CHARS: usize = 64;

/// A setting's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Bool,
}

impl Kind {
    /// The `oneof` member that carries this type.
    fn field(self) -> &'static str {
        match self {
            Kind::Text => "string_value",
            Kind::Int => "int_value",
            Kind::Bool => "bool_value",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match self {
            Kind::Text => value.is_string(),
            Kind::Int => value.is_i64(),
            Kind::Bool => value.is_boolean(),
        }
    }
}

/// What a value must satisfy besides its type.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Any,
    /// `^[a-z]{2}(-[A-Z]{2})?$`.
    Locale,
    /// An IANA zone name: `UTC`, `Europe/Paris`, `America/Argentina/Salta`.
    Timezone,
    Email,
    /// An `https://` URL with a host and no credentials.
    HttpsUrl,
    /// `#` optional, then `a-z`, `0-9`, `-`, `_`.
    SlackChannel,
    /// An integer in `min..=max`.
    Range {
        min: i64,
        max: i64,
    },
    /// An integer of at least `min`, and at most the plan's limit named
    /// `limit` when the plan has it.
    UpToLimit {
        min: i64,
        limit: &'static str,
    },
}

/// A setting the server knows.
#[derive(Debug)]
struct Setting {
    /// `category.name`; the category is one of ConfigCategory's.
    key: &'static str,
    kind: Kind,
    rule: Rule,
    /// What it does, with its type and rule; shown to callers.
    description: &'static str,
}

impl Setting {
    fn category(&self) -> &'static str {
        self.key
            .split_once('.')
            .map_or(self.key, |(category, _)| category)
    }
}

/// Every setting, in the order GetTenantConfig lists them. The migration's
/// CHECK on `tenant_config.key` lists the categories.
const SETTINGS: [Setting; 11] = [
    Setting {
        key: "general.locale",
        kind: Kind::Text,
        rule: Rule::Locale,
        description: "Language of the tenant's user interface. String: a language code, optionally with a region, like `en` or `pt-BR`.",
    },
    Setting {
        key: "general.timezone",
        kind: Kind::Text,
        rule: Rule::Timezone,
        description: "Time zone of the dates shown to the tenant's users. String: an IANA time zone name like `UTC` or `Europe/Paris`.",
    },
    Setting {
        key: "auth.session_ttl_minutes",
        kind: Kind::Int,
        rule: Rule::Range { min: 5, max: 1440 },
        description: "How long a sign-in lasts. Int: minutes, 5 to 1440.",
    },
    Setting {
        key: "auth.mfa_required",
        kind: Kind::Bool,
        rule: Rule::Any,
        description: "Whether users must sign in with a second factor. Bool.",
    },
    Setting {
        key: "auth.max_users",
        kind: Kind::Int,
        rule: Rule::UpToLimit {
            min: 1,
            limit: "max_users",
        },
        description: "How many users the tenant may have. Int: at least 1, at most the plan's `max_users` limit.",
    },
    Setting {
        key: "billing.invoice_email",
        kind: Kind::Text,
        rule: Rule::Email,
        description: "Where invoices are sent. String: an email address.",
    },
    Setting {
        key: "billing.max_api_calls_per_day",
        kind: Kind::Int,
        rule: Rule::UpToLimit {
            min: 0,
            limit: "max_api_calls_per_day",
        },
        description: "The tenant's daily quota of API calls. Int: at least 0, at most the plan's `max_api_calls_per_day` limit.",
    },
    Setting {
        key: "features.audit_log",
        kind: Kind::Bool,
        rule: Rule::Any,
        description: "Whether the tenant's actions are kept in its audit log. Bool.",
    },
    Setting {
        key: "features.beta_dashboard",
        kind: Kind::Bool,
        rule: Rule::Any,
        description: "Whether the tenant's users see the beta dashboard. Bool.",
    },
    Setting {
        key: "integrations.webhook_url",
        kind: Kind::Text,
        rule: Rule::HttpsUrl,
        description: "Where the tenant's webhooks are posted. String: an https:// URL of at most 2048 characters, without user or password.",
    },
    Setting {
        key: "integrations.slack_channel",
        kind: Kind::Text,
        rule: Rule::SlackChannel,
        description: "Slack channel of the tenant's notifications. String: a channel name like `#alerts`.",
    },
];

fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// A tenant's configuration as GetTenantConfig shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    pub tenant_id: Uuid,
    /// Every known setting, in `SETTINGS` order.
    pub settings: Vec<ConfigEntry>,
    pub etag: String,
    pub update_time: DateTime<Utc>,
}

/// One setting of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    pub key: &'static str,
    /// The key's prefix: `general`, `auth`, `billing`, `features` or
    /// `integrations`.
    pub category: &'static str,
    pub description: &'static str,
    /// A JSON string, integer or boolean, as the setting's type says; `None`
    /// when neither the tenant nor its plan set it.
    pub value: Option<Value>,
    /// The value is the plan's default (or absent), not the tenant's own.
    pub is_default: bool,
}

impl Ops {
    /// A live tenant's configuration, in every state.
    pub async fn get_tenant_config(&self, id: Uuid) -> Result<TenantConfig> {
        let mut conn = db::conn(&self.pool).await?;
        let snapshot = db::config::snapshot(&mut conn, id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(id))?;
        Ok(Resolved::of(id, &snapshot).config(id, &snapshot))
    }

    /// Sets settings or resets them to the plan's default (`None` values),
    /// as UpdateTenantConfig describes: checked, then applied with one
    /// event, all in one transaction; nothing is written if nothing changes.
    /// `settings` are the request's entries (key, value), `mask` its
    /// `update_mask` paths, `etag` empty for none.
    pub async fn update_tenant_config(
        &self,
        caller: &Caller,
        id: Uuid,
        settings: Vec<(String, Option<Value>)>,
        mask: Option<Vec<String>>,
        etag: &str,
    ) -> Result<TenantConfig> {
        let changes = plan_changes(settings, mask, etag).map_err(Error::InvalidArgument)?;
        let mut conn = db::conn(&self.pool).await?;
        let (config, changed) = conn
            .transaction(async |conn| apply(conn, caller, id, &changes, etag).await)
            .await?;
        if changed {
            self.wakeup.events_committed();
        }
        Ok(config)
    }
}

/// The write of an update, inside its transaction: the configuration after
/// it, and whether anything changed.
async fn apply(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
    changes: &[Change],
    etag: &str,
) -> Result<(TenantConfig, bool)> {
    let row = db::tenants::lock(conn, id)
        .await?
        .ok_or_else(|| Error::tenant_not_found(id))?;
    let before = db::config::snapshot(conn, id)
        .await?
        .ok_or_else(|| Error::tenant_not_found(id))?;
    if !etag.is_empty() && etag != etag_of(&before) {
        return Err(Error::Aborted(
            "etag mismatch: the configuration changed since it was read; read it again and retry"
                .into(),
        ));
    }
    let state = db::models::parse_state(&row.state)?;
    if state == TenantState::Deprovisioned {
        return Err(Error::FailedPrecondition(format!(
            "tenant {id} is DEPROVISIONED and its configuration can no longer change"
        )));
    }
    for change in changes {
        check_limit(change, &before)?;
    }
    let resolved = Resolved::of(id, &before);
    let mut described = Vec::new();
    for Change { setting, value } in changes {
        let old = resolved.explicit.get(setting.key);
        if old == value.as_ref() {
            continue;
        }
        match value {
            Some(value) => db::config::set(conn, id, setting.key, value, &caller.subject).await?,
            None => db::config::clear(conn, id, setting.key).await?,
        }
        described.push(format!(
            "{} {} -> {}",
            setting.key,
            resolved.describe(setting, old),
            resolved.describe(setting, value.as_ref()),
        ));
    }
    if described.is_empty() {
        return Ok((resolved.config(id, &before), false));
    }
    db::config::bump_revision(conn, id).await?;
    let event = NewEvent {
        tenant_id: id,
        kind: EventKind::TenantUpdated,
        step: None,
        attempt: None,
        state,
        message: format!("config: {}", described.join(", ")),
        actor: caller.subject.clone(),
    };
    db::events::append(conn, &event).await?;
    let after = db::config::snapshot(conn, id)
        .await?
        .ok_or_else(|| Error::tenant_not_found(id))?;
    Ok((Resolved::of(id, &after).config(id, &after), true))
}

/// One setting an update changes: to `value` (already checked against the
/// setting's rule), or back to the plan's default (`None`).
#[derive(Debug)]
struct Change {
    setting: &'static Setting,
    value: Option<Value>,
}

/// Checks an update's request, before any SQL, and reports every bad field
/// at once. Changes come in `SETTINGS` order.
fn plan_changes(
    settings: Vec<(String, Option<Value>)>,
    mask: Option<Vec<String>>,
    etag: &str,
) -> Result<Vec<Change>, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if etag.len() > MAX_ETAG_LEN {
        violations.push(FieldViolation::new(
            "etag",
            "is not an etag this server issued",
        ));
    }
    if settings.len() > MAX_UPDATE_ENTRIES {
        violations.push(FieldViolation::new(
            "settings",
            format!("must have at most {MAX_UPDATE_ENTRIES} entries"),
        ));
    }
    if mask.as_ref().is_some_and(|m| m.len() > MAX_UPDATE_ENTRIES) {
        violations.push(FieldViolation::new(
            "update_mask.paths",
            format!("must have at most {MAX_UPDATE_ENTRIES} paths"),
        ));
    }
    if !violations.is_empty() {
        return Err(violations);
    }

    // The request's known entries, in order: (index, setting, checked value).
    let mut given: Vec<(usize, &'static Setting, Option<Value>)> = Vec::new();
    for (i, (key, value)) in settings.iter().enumerate() {
        let Some(setting) = setting(key) else {
            violations.push(unknown_key(format!("settings[{i}].key"), key));
            continue;
        };
        if let Some((first, _, _)) = given.iter().find(|(_, s, _)| s.key == setting.key) {
            violations.push(FieldViolation::new(
                format!("settings[{i}].key"),
                format!("repeats settings[{first}].key; give each setting once"),
            ));
            continue;
        }
        let checked = match value {
            None => None,
            Some(value) => match parse(setting, value) {
                Ok(value) => Some(value),
                Err(description) => {
                    violations.push(FieldViolation::new(
                        format!("settings[{i}].{}", value_field(value)),
                        description,
                    ));
                    None
                }
            },
        };
        given.push((i, setting, checked));
    }

    let named: Vec<&'static Setting> = match &mask {
        Some(paths) => {
            let mut named = Vec::new();
            for (j, path) in paths.iter().enumerate() {
                if path == "*" {
                    named.extend(SETTINGS.iter());
                } else if let Some(setting) = setting(path) {
                    named.push(setting);
                } else {
                    violations.push(unknown_key(format!("update_mask.paths[{j}]"), path));
                }
            }
            for (i, setting, _) in &given {
                if !named.iter().any(|s| s.key == setting.key) {
                    violations.push(FieldViolation::new(
                        format!("settings[{i}].key"),
                        "is not named in update_mask; add it, or leave update_mask unset",
                    ));
                }
            }
            named
        }
        None => {
            for (i, (_, value)) in settings.iter().enumerate() {
                if value.is_none() {
                    violations.push(FieldViolation::new(
                        format!("settings[{i}]"),
                        "has no value; to reset the setting to the plan's default, name its key in update_mask",
                    ));
                }
            }
            given.iter().map(|(_, setting, _)| *setting).collect()
        }
    };
    if violations.is_empty() && named.is_empty() {
        violations.push(FieldViolation::new(
            if mask.is_some() {
                "update_mask"
            } else {
                "settings"
            },
            "names no setting to change",
        ));
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(SETTINGS
        .iter()
        .filter(|s| named.iter().any(|n| n.key == s.key))
        .map(|setting| Change {
            setting,
            value: given
                .iter()
                .find(|(_, s, _)| s.key == setting.key)
                .and_then(|(_, _, value)| value.clone()),
        })
        .collect())
}

fn unknown_key(field: String, key: &str) -> FieldViolation {
    if key.is_empty() {
        return FieldViolation::new(field, "is required");
    }
    let shown: String = key.chars().take(MAX_SHOWN_KEY_CHARS).collect();
    FieldViolation::new(
        field,
        format!("{shown:?} is not a setting; GetTenantConfig lists them"),
    )
}

/// The `oneof` member that carried `value`.
fn value_field(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string_value",
        Value::Bool(_) => "bool_value",
        _ => "int_value",
    }
}

/// `value` as the setting's type, checked against its rule (not against
/// the plan's limits). A string is parsed for every type. The error is a
/// violation's description; it does not echo the value.
fn parse(setting: &Setting, value: &Value) -> Result<Value, String> {
    let key = setting.key;
    let typed = match (setting.kind, value) {
        (Kind::Text, Value::String(_)) | (Kind::Bool, Value::Bool(_)) => value.clone(),
        (Kind::Int, Value::Number(n)) if n.is_i64() => value.clone(),
        (Kind::Int, Value::String(text)) => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("must be an integer in decimal ({key} is an int setting)"))?,
        (Kind::Bool, Value::String(text)) => match text.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("must be true or false ({key} is a bool setting)")),
        },
        (Kind::Text, _) => return Err(format!("{key} is a string setting: send string_value")),
        (kind, _) => {
            return Err(format!(
                "{key} takes {} (or its text in string_value)",
                kind.field()
            ));
        }
    };
    check_rule(setting.rule, &typed)?;
    Ok(typed)
}

/// Whether a value of the right type satisfies `rule`; the error says
/// what would.
fn check_rule(rule: Rule, value: &Value) -> Result<(), String> {
    let text = value.as_str().unwrap_or_default();
    let number = value.as_i64().unwrap_or_default();
    let (ok, expected) = match rule {
        Rule::Any => return Ok(()),
        Rule::Locale => (
            is_locale(text),
            "must be a language code, optionally with a region: ^[a-z]{2}(-[A-Z]{2})?$ (e.g. en, pt-BR)".to_owned(),
        ),
        Rule::Timezone => (
            is_timezone(text),
            format!("must be an IANA time zone name of at most {MAX_TIMEZONE_LEN} characters, like UTC or Europe/Paris"),
        ),
        Rule::Email => (
            is_email(text),
            format!("must be an email address of at most {MAX_EMAIL_LEN} bytes, like billing@example.com"),
        ),
        Rule::HttpsUrl => (
            is_https_url(text),
            format!("must be an https:// URL with a host, of at most {MAX_URL_LEN} characters, without user or password"),
        ),
        Rule::SlackChannel => (
            is_slack_channel(text),
            format!("must be a Slack channel name: an optional #, then 1 to {MAX_SLACK_CHANNEL_LEN} of a-z, 0-9, - and _"),
        ),
        Rule::Range { min, max } => (
            (min..=max).contains(&number),
            format!("must be from {min} to {max}"),
        ),
        Rule::UpToLimit { min, .. } => (number >= min, format!("must be at least {min}")),
    };
    if ok { Ok(()) } else { Err(expected) }
}

fn is_locale(s: &str) -> bool {
    let b = s.as_bytes();
    let language = |b: &[u8]| b.iter().all(u8::is_ascii_lowercase);
    match b.len() {
        2 => language(b),
        5 => language(&b[..2]) && b[2] == b'-' && b[3..].iter().all(u8::is_ascii_uppercase),
        _ => false,
    }
}

fn is_timezone(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    s.len() <= MAX_TIMEZONE_LEN
        && parts.len() <= 3
        && parts.iter().enumerate().all(|(i, part)| {
            part.bytes().next().is_some_and(|first| {
                first.is_ascii_alphabetic() || (i > 0 && first.is_ascii_digit())
            }) && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
        })
}

fn is_email(s: &str) -> bool {
    s.len() <= MAX_EMAIL_LEN && s.is_ascii() && s.parse::<lettre::Address>().is_ok()
}

fn is_https_url(s: &str) -> bool {
    if s.len() > MAX_URL_LEN {
        return false;
    }
    let Ok(uri) = s.parse::<http::Uri>() else {
        return false;
    };
    uri.scheme_str() == Some("https")
        && uri
            .authority()
            .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
}

fn is_slack_channel(s: &str) -> bool {
    let name = s.strip_prefix('#').unwrap_or(s);
    (1..=MAX_SLACK_CHANNEL_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// The plan's limit on `setting`, if it has one: `Err` if the plan's value
/// is not an integer.
fn limit_of(setting: &Setting, limits: &Value) -> Result<Option<(&'static str, i64)>, String> {
    let Rule::UpToLimit { limit, .. } = setting.rule else {
        return Ok(None);
    };
    match limits.get(limit) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .map(|max| Some((limit, max)))
            .ok_or_else(|| format!("the plan's {limit} limit is not an integer")),
    }
}

/// FAILED_PRECONDITION if a new value is past its plan limit.
fn check_limit(change: &Change, snapshot: &ConfigSnapshot) -> Result<()> {
    let Some(value) = change.value.as_ref().and_then(Value::as_i64) else {
        return Ok(());
    };
    let key = change.setting.key;
    match limit_of(change.setting, &snapshot.limits) {
        Err(detail) => Err(Error::Internal(format!(
            "plan {} v{}: {detail}",
            snapshot.plan, snapshot.plan_version
        ))),
        Ok(Some((limit, max))) if value > max => Err(Error::PlanLimit {
            limit: limit.to_owned(),
            message: format!("{key} {value} exceeds the plan's {limit} limit ({max})"),
            description: format!(
                "plan {} v{} allows {key} up to {max}",
                snapshot.plan, snapshot.plan_version
            ),
        }),
        Ok(_) => Ok(()),
    }
}

/// The opaque version of a configuration: its revision, and the plan
/// version its defaults come from.
fn etag_of(snapshot: &ConfigSnapshot) -> String {
    let mut hasher = Sha256::new();
    hasher.update(snapshot.plan.as_bytes());
    hasher.update([0]);
    hasher.update(snapshot.plan_version.to_be_bytes());
    hasher.update(snapshot.config_revision.to_be_bytes());
    format!("\"{}\"", hex::encode(&hasher.finalize()[..8]))
}

/// A snapshot's values that can be shown: the tenant's own and the plan's
/// defaults, each of a known setting and of its type.
struct Resolved {
    explicit: BTreeMap<&'static str, Value>,
    defaults: BTreeMap<&'static str, Value>,
}

impl Resolved {
    /// Skips, with a warning, what cannot be shown: a plan default that
    /// breaks its setting's rule or limit, a stored value of a setting this
    /// server no longer knows (or of another type).
    fn of(tenant_id: Uuid, snapshot: &ConfigSnapshot) -> Self {
        let (plan, version) = (&snapshot.plan, snapshot.plan_version);
        let mut defaults = BTreeMap::new();
        for (key, value) in snapshot.defaults.as_object().into_iter().flatten() {
            let checked = setting(key)
                .ok_or_else(|| "no such setting".to_owned())
                .and_then(|setting| {
                    let value = parse(setting, value)?;
                    if let (Some(n), Some((limit, max))) =
                        (value.as_i64(), limit_of(setting, &snapshot.limits)?)
                        && n > max
                    {
                        return Err(format!("{n} exceeds the plan's {limit} limit ({max})"));
                    }
                    Ok((setting.key, value))
                });
            match checked {
                Ok((key, value)) => {
                    defaults.insert(key, value);
                }
                Err(reason) => {
                    let key: String = key.chars().take(MAX_SHOWN_KEY_CHARS).collect();
                    tracing::warn!(
                        %tenant_id, %plan, version, %key, %reason,
                        "plan default of a setting skipped"
                    );
                }
            }
        }
        let mut explicit = BTreeMap::new();
        for (key, value) in snapshot.explicit.as_object().into_iter().flatten() {
            match setting(key) {
                Some(setting) if setting.kind.matches(value) => {
                    explicit.insert(setting.key, value.clone());
                }
                _ => {
                    tracing::warn!(
                        %tenant_id, %key,
                        "stored setting of an unknown key or type skipped"
                    )
                }
            }
        }
        Resolved { explicit, defaults }
    }

    fn config(&self, tenant_id: Uuid, snapshot: &ConfigSnapshot) -> TenantConfig {
        let settings = SETTINGS
            .iter()
            .map(|setting| {
                let own = self.explicit.get(setting.key);
                ConfigEntry {
                    key: setting.key,
                    category: setting.category(),
                    description: setting.description,
                    value: own.or_else(|| self.defaults.get(setting.key)).cloned(),
                    is_default: own.is_none(),
                }
            })
            .collect();
        TenantConfig {
            tenant_id,
            settings,
            etag: etag_of(snapshot),
            update_time: snapshot.update_time,
        }
    }

    /// A setting's value for an event: the tenant's own `value`, else the
    /// plan's default, marked so, else `unset`.
    fn describe(&self, setting: &Setting, value: Option<&Value>) -> String {
        match (value, self.defaults.get(setting.key)) {
            (Some(value), _) => shown(setting, value),
            (None, Some(default)) => format!("{} (default)", shown(setting, default)),
            (None, None) => "unset".to_owned(),
        }
    }
}

/// A value as an event shows it. A URL shows only its scheme and host: the
/// path of a webhook URL is often its secret.
fn shown(setting: &Setting, value: &Value) -> String {
    if let Rule::HttpsUrl = setting.rule {
        let origin = value
            .as_str()
            .and_then(|s| s.parse::<http::Uri>().ok())
            .and_then(|uri| Some(format!("https://{}", uri.authority()?.host())));
        return match origin {
            Some(origin) => format!("\"{origin}/…\""),
            None => "(hidden)".to_owned(),
        };
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The changes of an update as (key, value), or its violated fields.
    fn update(
        settings: &[(&str, Option<Value>)],
        mask: Option<&[&str]>,
    ) -> Result<Vec<(&'static str, Option<Value>)>, Vec<String>> {
        let settings = settings.iter().map(|(k, v)| ((*k).to_owned(), v.clone()));
        let mask = mask.map(|m| m.iter().map(|p| (*p).to_owned()).collect());
        match plan_changes(settings.collect(), mask, "") {
            Ok(changes) => Ok(changes
                .into_iter()
                .map(|c| (c.setting.key, c.value))
                .collect()),
            Err(violations) => Err(violations.into_iter().map(|v| v.field).collect()),
        }
    }

    fn check(key: &str, value: &Value) -> Result<Value, String> {
        parse(setting(key).unwrap(), value)
    }

    #[test]
    fn keys_are_unique_and_categorised() {
        let categories = ["general", "auth", "billing", "features", "integrations"];
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(categories.contains(&s.category()), "{}", s.key);
            assert!(SETTINGS[..i].iter().all(|other| other.key != s.key));
        }
    }

    #[test]
    fn strings_parse_as_the_setting_type() {
        assert_eq!(
            check("auth.session_ttl_minutes", &json!("60")),
            Ok(json!(60))
        );
        assert_eq!(check("auth.mfa_required", &json!("true")), Ok(json!(true)));
        for (key, value) in [
            ("auth.mfa_required", json!("yes")),
            ("auth.session_ttl_minutes", json!("6o")),
            ("auth.session_ttl_minutes", json!(true)),
            ("general.locale", json!(5)),
        ] {
            assert!(check(key, &value).is_err(), "{key} {value}");
        }
    }

    #[test]
    fn rules() {
        let long_url = format!("https://a.test/{}", "x".repeat(2048));
        for (key, good, bad) in [
            (
                "general.locale",
                json!(["en", "pt-BR"]),
                json!(["EN", "en_US", "e"]),
            ),
            (
                "general.timezone",
                json!(["UTC", "America/Argentina/Salta", "Etc/GMT+5"]),
                json!(["Europe/", "../etc/passwd", "A/B/C/D"]),
            ),
            (
                "auth.session_ttl_minutes",
                json!([5, 1440]),
                json!([4, 1441]),
            ),
            ("auth.max_users", json!([1, i64::MAX]), json!([0, -1])),
            ("billing.max_api_calls_per_day", json!([0]), json!([-1])),
            (
                "billing.invoice_email",
                json!(["billing@acme.test"]),
                json!(["nope", "a@"]),
            ),
            (
                "integrations.webhook_url",
                json!(["https://hooks.acme.test/x?y=1", "https://10.0.0.1:8443/"]),
                json!([
                    "http://hooks.acme.test/x",
                    "https://user:pw@hooks.acme.test/",
                    "https:///nohost",
                    long_url
                ]),
            ),
            (
                "integrations.slack_channel",
                json!(["#alerts", "ops_team-1"]),
                json!(["#", "Alerts", "a b"]),
            ),
        ] {
            for (values, ok) in [(good, true), (bad, false)] {
                for value in values.as_array().unwrap() {
                    assert_eq!(check(key, value).is_ok(), ok, "{key} {value}");
                }
            }
        }
    }

    #[test]
    fn the_mask_decides_what_changes() {
        let fr = Some(json!("fr"));
        assert_eq!(
            update(&[("general.locale", fr.clone())], None),
            Ok(vec![("general.locale", fr)])
        );
        // Named without a value: back to the default. In SETTINGS order.
        assert_eq!(
            update(
                &[("auth.max_users", Some(json!("7")))],
                Some(&["auth.max_users", "general.locale"])
            ),
            Ok(vec![
                ("general.locale", None),
                ("auth.max_users", Some(json!(7)))
            ])
        );
        assert_eq!(
            update(&[], Some(&["*"])).map(|c| c.len()),
            Ok(SETTINGS.len())
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = [
            ("general.nope", Some(json!("x"))),
            ("auth.session_ttl_minutes", Some(json!(true))),
            ("auth.session_ttl_minutes", Some(json!(10))),
            ("general.locale", Some(json!("english"))),
        ];
        let fields = [
            "settings[0].key",
            "settings[1].bool_value",
            "settings[2].key",
            "settings[3].string_value",
        ];
        assert_eq!(update(&bad, None), Err(fields.map(String::from).to_vec()));
        let fr = [("general.locale", Some(json!("fr")))];
        let fields = ["update_mask.paths[1]", "settings[0].key"];
        assert_eq!(
            update(&fr, Some(&["auth.max_users", "x"])),
            Err(fields.map(String::from).to_vec())
        );
        let field = |f: &str| Err(vec![f.to_owned()]);
        assert_eq!(
            update(&[("general.locale", None)], None),
            field("settings[0]")
        );
        assert_eq!(update(&[], None), field("settings"));
        assert_eq!(update(&[], Some(&[])), field("update_mask"));
    }

    #[test]
    fn limits_bind_only_where_the_plan_sets_them() {
        let snapshot = |limits: Value| ConfigSnapshot {
            plan: "team".into(),
            plan_version: 1,
            config_revision: 0,
            update_time: Utc::now(),
            defaults: json!({"auth.max_users": "500", "general.locale": "en",
                             "general.bogus": "1", "auth.mfa_required": "maybe"}),
            limits,
            explicit: json!({}),
        };
        let change = |n: i64| Change {
            setting: setting("auth.max_users").unwrap(),
            value: Some(json!(n)),
        };
        let team = snapshot(json!({"max_users": 100}));
        assert!(check_limit(&change(100), &team).is_ok());
        let Err(Error::PlanLimit { limit, message, .. }) = check_limit(&change(101), &team) else {
            panic!("101 is past the limit");
        };
        assert_eq!(limit, "max_users");
        assert_eq!(
            message,
            "auth.max_users 101 exceeds the plan's max_users limit (100)"
        );
        assert!(check_limit(&change(1_000_000), &snapshot(json!({}))).is_ok());
        // Bad defaults are skipped, the good ones kept.
        let defaults = Resolved::of(Uuid::nil(), &team).defaults;
        assert_eq!(
            defaults.into_iter().collect::<Vec<_>>(),
            [("general.locale", json!("en"))]
        );
    }

    #[test]
    fn events_do_not_show_webhook_paths() {
        let webhook = setting("integrations.webhook_url").unwrap();
        let url = json!("https://hooks.slack.test/services/T0/B0/secret");
        assert_eq!(shown(webhook, &url), "\"https://hooks.slack.test/…\"");
        assert_eq!(
            shown(setting("general.locale").unwrap(), &json!("en")),
            "\"en\""
        );
    }
}
