//! Webhook rules: endpoint names, event types, the secret's format and the
//! one rule that sorts an HTTP answer into delivered, retry, permanent
//! failure or gone.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::FieldViolation;

/// Event types an endpoint may subscribe to; `*` stands for all.
pub const EVENT_TYPES: &[&str] = &[
    "tenant.created",
    "tenant.active",
    "tenant.failed",
    "tenant.cancelled",
    "tenant.needs_attention",
    "tenant.suspended",
    "tenant.resumed",
    "tenant.deprovisioned",
    "tenant.updated",
    "step.failed",
    "tenant.usage.threshold",
];
/// Subscribes to every event type.
pub const ALL_EVENTS: &str = "*";
/// Most characters of an endpoint's description.
pub const MAX_DESCRIPTION: usize = 1000;
/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret.
pub const SECRET_BYTES: usize = 32;
/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// An HTTP service of the operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
    pub description: String,
    /// Sorted, each once; empty: no subscription.
    pub event_types: Vec<String>,
    pub disabled: bool,
    pub disabled_reason: String,
    /// Bumped by every change; the etag is derived from it.
    pub revision: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl Endpoint {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.revision)
    }
}

/// Where a delivery is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::Display,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One event sent (or to be sent) to one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Position in the table, for paging.
    pub seq: i64,
    /// The `webhook-id`.
    pub id: String,
    pub endpoint: String,
    pub tenant_id: Uuid,
    pub r#type: String,
    pub event_id: i64,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_http_status: Option<i32>,
    pub last_error: String,
    pub create_time: DateTime<Utc>,
    pub next_attempt_time: Option<DateTime<Utc>>,
    pub deliver_time: Option<DateTime<Utc>>,
}

/// What ListDeliveries selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub endpoint: Option<String>,
    pub tenant_id: Option<Uuid>,
    pub status: Option<DeliveryStatus>,
}

/// `^[a-z][a-z0-9-]{1,39}$`.
pub fn check_endpoint_name(field: &str, name: &str, out: &mut Vec<FieldViolation>) {
    let bytes = name.as_bytes();
    let valid = (2..=40).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !valid {
        out.push(FieldViolation::new(
            field,
            "must be 2 to 40 characters of a-z, 0-9 and '-', starting with a letter",
        ));
    }
}

/// Known types, each at most once; returns them sorted.
pub fn check_event_types(
    field: &str,
    types: &[String],
    out: &mut Vec<FieldViolation>,
) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in types.iter().enumerate() {
        if t != ALL_EVENTS && !EVENT_TYPES.contains(&t.as_str()) {
            out.push(FieldViolation::new(
                format!("{field}[{i}]"),
                format!(
                    "unknown event type {t:?}; known: {}, or {ALL_EVENTS}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        } else if !seen.insert(t.clone()) {
            out.push(FieldViolation::new(
                format!("{field}[{i}]"),
                format!("{t} is listed twice"),
            ));
        }
    }
    seen.into_iter().collect()
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> SecretString {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::fill(&mut bytes);
    let text = format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes));
    bytes.fill(0);
    text.into()
}

/// The headers of one attempt: `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` (one `v1,` signature per secret, space-separated).
pub fn signed_headers(
    secrets: &[&SecretString],
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(&'static str, String)>, String> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let signer = standardwebhooks::Webhook::new(secret.expose_secret())
            .map_err(|_| "a stored webhook secret is malformed".to_owned())?;
        signatures.push(
            signer
                .sign(webhook_id, timestamp, body)
                .map_err(|_| "the payload is not UTF-8".to_owned())?,
        );
    }
    Ok(vec![
        (standardwebhooks::HEADER_WEBHOOK_ID, webhook_id.to_owned()),
        (
            standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
            timestamp.to_string(),
        ),
        (
            standardwebhooks::HEADER_WEBHOOK_SIGNATURE,
            signatures.join(" "),
        ),
    ])
}

/// What an attempt's answer means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// Try again: after `Retry-After` if the receiver said so (capped by
    /// the caller), else by the backoff schedule.
    RetryLater(Option<Duration>),
    /// A 4xx that says the request itself is wrong: no more attempts.
    Permanent,
    /// 410 Gone: the receiver is gone for good; stop sending there.
    Gone,
}

/// The one rule for HTTP answers (`None`: no answer at all, a connection
/// error or a timeout). 408 Request Timeout, 409 Conflict, 425 Too Early
/// and 429 Too Many Requests are passing conditions, so they retry like 5xx.
pub fn verdict(status: Option<u16>, retry_after: Option<Duration>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Delivered,
        Some(410) => Verdict::Gone,
        Some(408 | 409 | 425 | 429) => Verdict::RetryLater(retry_after),
        Some(400..=499) => Verdict::Permanent,
        Some(503) => Verdict::RetryLater(retry_after),
        _ => Verdict::RetryLater(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_event_types_follow_the_rules() {
        let mut out = Vec::new();
        for ok in [
            "ab",
            "billing",
            "crm-sync-2",
            &format!("a{}", "b".repeat(39)),
        ] {
            check_endpoint_name("name", ok, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        for bad in ["a", "Billing", "2fa", "a_b", "", &"a".repeat(41)] {
            let mut out = Vec::new();
            check_endpoint_name("name", bad, &mut out);
            assert_eq!(out.len(), 1, "{bad:?}");
        }
        let mut out = Vec::new();
        let types = check_event_types(
            "endpoint.event_types",
            &["tenant.active".into(), "*".into(), "tenant.created".into()],
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(types, ["*", "tenant.active", "tenant.created"]);
        let mut out = Vec::new();
        check_event_types(
            "endpoint.event_types",
            &[
                "tenant.active".into(),
                "tenant.exploded".into(),
                "tenant.active".into(),
            ],
            &mut out,
        );
        let fields: Vec<_> = out.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["endpoint.event_types[1]", "endpoint.event_types[2]"]
        );
    }

    #[test]
    fn signatures_verify_with_the_reference_implementation() {
        let secret = new_secret();
        assert!(secret.expose_secret().starts_with(SECRET_PREFIX));
        let old = new_secret();
        let body = br#"{"type":"tenant.active"}"#;
        let now = chrono::Utc::now().timestamp();
        let headers = signed_headers(&[&secret, &old], "msg_1", now, body).unwrap();
        let mut map = http::HeaderMap::new();
        for (name, value) in &headers {
            map.insert(*name, value.parse().unwrap());
        }
        assert_eq!(
            map["webhook-signature"]
                .to_str()
                .unwrap()
                .split(' ')
                .count(),
            2
        );
        for s in [&secret, &old] {
            standardwebhooks::Webhook::new(s.expose_secret())
                .unwrap()
                .verify(body, &map)
                .unwrap();
        }
        let other = new_secret();
        assert!(
            standardwebhooks::Webhook::new(other.expose_secret())
                .unwrap()
                .verify(body, &map)
                .is_err()
        );
        assert!(
            standardwebhooks::Webhook::new(secret.expose_secret())
                .unwrap()
                .verify(b"{}", &map)
                .is_err(),
            "the body is signed"
        );
    }

    #[test]
    fn answers_sort_into_four_kinds() {
        let later = Some(Duration::from_secs(30));
        assert_eq!(verdict(Some(200), None), Verdict::Delivered);
        assert_eq!(verdict(Some(204), None), Verdict::Delivered);
        assert_eq!(verdict(Some(410), None), Verdict::Gone);
        assert_eq!(verdict(Some(400), None), Verdict::Permanent);
        assert_eq!(verdict(Some(404), None), Verdict::Permanent);
        assert_eq!(verdict(Some(429), later), Verdict::RetryLater(later));
        assert_eq!(verdict(Some(503), later), Verdict::RetryLater(later));
        assert_eq!(verdict(Some(408), None), Verdict::RetryLater(None));
        assert_eq!(verdict(Some(500), later), Verdict::RetryLater(None));
        assert_eq!(verdict(Some(302), None), Verdict::RetryLater(None));
        assert_eq!(verdict(None, None), Verdict::RetryLater(None));
    }
}
