//! The per-tenant settings the server knows: each a key (`category.name`),
//! a type and a rule, and the plan limit it may be held to. Values are JSON
//! scalars (string, integer, boolean); a string is accepted for every type
//! and parsed, since clients such as `tenantctl` do not know the types.

use serde_json::Value;

/// Longer URLs are refused by common proxies and browsers.
const MAX_URL_LEN: usize = 2048;
/// RFC 5321 limits a forward path to 256 octets including the brackets.
const MAX_EMAIL_LEN: usize = 254;
/// The longest IANA zone name is about 30 characters.
const MAX_TIMEZONE_LEN: usize = 64;
/// Slack's own limit on channel names.
const MAX_SLACK_CHANNEL_LEN: usize = 80;

/// A setting's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Bool,
}

impl Kind {
    /// The `oneof` member that carries this type.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Text => "string_value",
            Kind::Int => "int_value",
            Kind::Bool => "bool_value",
        }
    }

    pub fn matches(self, value: &Value) -> bool {
        match self {
            Kind::Text => value.is_string(),
            Kind::Int => value.is_i64(),
            Kind::Bool => value.is_boolean(),
        }
    }
}

/// What a value must satisfy besides its type.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
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
pub struct Setting {
    /// `category.name`; the category is one of ConfigCategory's.
    pub key: &'static str,
    pub kind: Kind,
    pub rule: Rule,
    /// What it does, with its type and rule; shown to callers.
    pub description: &'static str,
}

impl Setting {
    pub fn category(&self) -> &'static str {
        self.key
            .split_once('.')
            .map_or(self.key, |(category, _)| category)
    }
}

/// Every setting, in the order GetTenantConfig lists them. The migration's
/// CHECK on `tenant_config.key` lists the categories.
pub const SETTINGS: [Setting; 11] = [
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

pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// `value` as the setting's type, checked against its rule (not against
/// the plan's limits). A string is parsed for every type. The error is a
/// violation's description; it does not echo the value.
pub fn parse(setting: &Setting, value: &Value) -> Result<Value, String> {
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
pub fn check_rule(rule: Rule, value: &Value) -> Result<(), String> {
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
    s.len() <= MAX_EMAIL_LEN && super::email::check_address(s).is_ok()
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
pub fn limit_of(setting: &Setting, limits: &Value) -> Result<Option<(&'static str, i64)>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_emails_follow_the_address_rules() {
        for good in [
            "billing@example.com",
            "first.last+invoices@sub.example.co.uk",
            "o'brien@example.ie",
            "billing@bücher.example",
        ] {
            assert!(is_email(good), "{good}");
            assert_eq!(check_rule(Rule::Email, &Value::from(good)), Ok(()));
        }
        for bad in [
            "",
            "FjO@69'cK-7#r4bTR8ub",
            "billing@localhost",
            "billing@[192.0.2.1]",
            "billing@example.com.",
            "\"a b\"@example.com",
            "ü@example.com",
            "a@b@example.com",
        ] {
            assert!(!is_email(bad), "{bad}");
            assert!(check_rule(Rule::Email, &Value::from(bad)).is_err(), "{bad}");
        }
    }
}
