//! Per-tenant configuration: typed settings seeded from the plan, validated
//! against its limits, every change an event.
//!
//! The settings the server knows are `domain::settings::SETTINGS`: a key
//! (`category.name`), a type and a rule. Only the values a tenant sets are stored; every other
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
use crate::domain::settings::{Rule, SETTINGS, Setting, limit_of, parse, setting};
use crate::domain::{Caller, EventKind, FieldViolation, NewEvent, TenantState};
use crate::error::{Error, Result};

/// Entries of `settings`, and paths of `update_mask`, one update may carry:
/// several times the settings there are, so a sound request never meets
/// it, while it bounds the work and the violations of a hostile one.
const MAX_UPDATE_ENTRIES: usize = 64;
/// An etag this server issues is 18 characters; anything much longer is
/// not one, and is refused before any SQL.
const MAX_ETAG_LEN: usize = 64;
/// How much of an unknown key a violation echoes.
const MAX_SHOWN_KEY_CHARS: usize = 64;

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
