//! Webhook steps: a plan step that calls the operator's own service (a
//! billing customer, a CRM record) instead of a step built into the server.
//!
//! Each attempt reads the endpoint and the tenant in one short query, then
//! POSTs a signed `tenant.step.run` message through [`Outbound`] with no
//! connection held. Every attempt of one step carries the same
//! `webhook-id`, so the receiver can tell a retry from a new request. The
//! answer sorts by the one rule of [`verdict`]: 2xx succeeds (a JSON
//! object's scalar members become outputs), a 4xx that says the request is
//! wrong fails the step for good, anything else is retried by the step's
//! policy (honouring `Retry-After`). The saga undoes a step that asks for
//! it with `tenant.step.compensate`, carrying the step's outputs.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::{Output, Step, StepCtx, StepError};
use crate::db::{self, DbPool};
use crate::domain::WebhookStep;
use crate::domain::webhook::{Verdict, verdict};
use crate::outbound::Outbound;
use crate::secrets::SecretKey;
use crate::webhooks::{RETRY_AFTER_CAP, Sealed, sign};

/// Most outputs one answer may set.
const MAX_OUTPUTS: usize = 32;
/// Longest output name and value; outputs are shown in events and lists.
const MAX_OUTPUT_NAME: usize = 64;
const MAX_OUTPUT_VALUE: usize = 1024;
/// How much of a refusing answer's body goes into the step's error.
const MAX_ERROR_BODY: usize = 200;

/// What every webhook step shares: the control-plane database (endpoints,
/// the tenant), the key that opens the endpoints' secrets, and the one
/// client for operator-supplied URLs.
pub struct WebhookCalls {
    pool: DbPool,
    key: Option<Arc<SecretKey>>,
    outbound: Outbound,
}

impl WebhookCalls {
    /// `key` is `None` when the server has no secrets key: there can then be
    /// no endpoints, and a webhook step fails saying why.
    pub fn new(pool: DbPool, key: Option<Arc<SecretKey>>, outbound: Outbound) -> Self {
        WebhookCalls {
            pool,
            key,
            outbound,
        }
    }

    /// The step named `name` of a plan, calling `spec`'s endpoint.
    pub fn step(self: &Arc<Self>, name: &str, spec: &WebhookStep) -> Arc<dyn Step> {
        Arc::new(WebhookCall {
            calls: self.clone(),
            name: name.to_owned(),
            spec: spec.clone(),
        })
    }
}

struct WebhookCall {
    calls: Arc<WebhookCalls>,
    name: String,
    spec: WebhookStep,
}

/// What a message asks the receiver to do.
#[derive(Clone, Copy)]
enum Kind {
    Run,
    Compensate,
}

impl Kind {
    fn event_type(self) -> &'static str {
        match self {
            Kind::Run => "tenant.step.run",
            Kind::Compensate => "tenant.step.compensate",
        }
    }
}

impl WebhookCall {
    /// The message id of every attempt of this step's `kind` for this
    /// tenant: derived, so it survives restarts and retried pipelines.
    fn webhook_id(&self, tenant_id: Uuid, kind: Kind) -> String {
        let name = format!("{}:{}", kind.event_type(), self.name);
        format!("msg_{}", Uuid::new_v5(&tenant_id, name.as_bytes()).simple())
    }

    /// Sends one signed message and returns the 2xx answer's body.
    async fn call(&self, ctx: &StepCtx, kind: Kind) -> Result<Vec<u8>, StepError> {
        let endpoint = &self.spec.endpoint;
        let key = self.calls.key.as_deref().ok_or_else(|| {
            StepError::permanent(format!(
                "webhook step {} needs TENANTD_SECRET_KEY to sign its calls",
                self.name
            ))
        })?;
        let target = {
            let mut conn = db::conn(&self.calls.pool)
                .await
                .map_err(|e| StepError::new(e.to_string()))?;
            db::webhooks::step_target(&mut conn, endpoint, ctx.tenant_id, &self.name)
                .await
                .map_err(|e| StepError::new(e.to_string()))?
                .ok_or_else(|| StepError::permanent("the tenant is gone"))?
        };
        let (Some(endpoint_id), Some(url), Some(current)) =
            (target.endpoint_id, &target.url, &target.secret_sealed)
        else {
            return Err(StepError::permanent(format!(
                "no webhook endpoint is named {endpoint:?}"
            )));
        };
        if target.disabled == Some(true) {
            return Err(StepError::new(format!(
                "webhook endpoint {endpoint} is disabled: {}",
                target.disabled_reason.as_deref().unwrap_or("")
            )));
        }
        let outputs = match kind {
            Kind::Run => serde_json::to_value(&ctx.outputs),
            Kind::Compensate => Ok(target.step_output.clone().unwrap_or_default()),
        }
        .map_err(|e| StepError::new(e.to_string()))?;
        let body = serde_json::json!({
            "type": kind.event_type(),
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": {
                "tenant": target.tenant,
                "step": self.name,
                "attempt": ctx.attempt,
                "outputs": outputs,
            },
        });
        let body = serde_json::to_vec(&body).map_err(|e| StepError::new(e.to_string()))?;
        let sealed = Sealed {
            endpoint_id,
            current,
            previous: target.previous_secret_sealed.as_deref(),
        };
        let webhook_id = self.webhook_id(ctx.tenant_id, kind);
        let headers = sign(key, &sealed, &webhook_id, &body).map_err(StepError::permanent)?;
        let answer = self
            .calls
            .outbound
            .post_json(url, &headers, body)
            .await
            .map_err(|e| StepError::new(format!("webhook endpoint {endpoint}: {e}")))?;
        let refused = || {
            format!(
                "webhook endpoint {endpoint} answered HTTP {}{}",
                answer.status,
                excerpt(&answer.body)
            )
        };
        match verdict(Some(answer.status), answer.retry_after) {
            Verdict::Delivered => Ok(answer.body),
            Verdict::Permanent | Verdict::Gone => Err(StepError::permanent(refused())),
            Verdict::RetryLater(asked) => {
                Err(StepError::new(refused()).retry_after(asked.map(|a| a.min(RETRY_AFTER_CAP))))
            }
        }
    }
}

#[async_trait]
impl Step for WebhookCall {
    /// Webhook steps are named by their plans and resolved per tenant
    /// step, never registered; this names the kind.
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let body = self.call(ctx, Kind::Run).await?;
        let output = outputs_of(&body).map_err(|e| {
            StepError::permanent(format!("webhook endpoint {}: {e}", self.spec.endpoint))
        })?;
        if let Some((name, earlier)) = output
            .iter()
            .find_map(|(k, v)| ctx.outputs.get(k).filter(|e| *e != v).map(|e| (k, e)))
        {
            return Err(StepError::permanent(format!(
                "webhook endpoint {} answered output {name:?}, which an earlier step set to {earlier:?}",
                self.spec.endpoint
            )));
        }
        Ok(output)
    }

    async fn compensate_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        self.call(ctx, Kind::Compensate).await?;
        Ok(Output::new())
    }

    fn database_work(&self) -> bool {
        false
    }

    fn compensable(&self) -> bool {
        self.spec.compensate
    }

    fn resources(&self, _ctx: &StepCtx) -> Vec<String> {
        vec![format!(
            "what webhook step {} created through endpoint {}",
            self.name, self.spec.endpoint
        )]
    }
}

/// A 2xx body's outputs: the top-level string, number and boolean members
/// of a JSON object; any other body has none.
fn outputs_of(body: &[u8]) -> Result<Output, String> {
    let Ok(serde_json::Value::Object(members)) = serde_json::from_slice(body) else {
        return Ok(Output::new());
    };
    let mut output = BTreeMap::new();
    for (name, value) in members {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        let well_named = !name.is_empty()
            && name.len() <= MAX_OUTPUT_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !well_named {
            return Err(format!(
                "output name {:?} must be 1 to {MAX_OUTPUT_NAME} characters [A-Za-z0-9_.-]",
                name.chars().take(MAX_OUTPUT_NAME).collect::<String>()
            ));
        }
        if text.chars().count() > MAX_OUTPUT_VALUE {
            return Err(format!(
                "output {name:?} is longer than {MAX_OUTPUT_VALUE} characters"
            ));
        }
        output.insert(name, text);
    }
    if output.len() > MAX_OUTPUTS {
        return Err(format!(
            "the answer sets {} outputs; at most {MAX_OUTPUTS} are kept",
            output.len()
        ));
    }
    Ok(output)
}

/// `": <start of the body>"` for an error message, control characters
/// replaced; empty for an empty or binary body.
fn excerpt(body: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(body) else {
        return String::new();
    };
    let text: String = text
        .trim()
        .chars()
        .take(MAX_ERROR_BODY)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.is_empty() {
        text
    } else {
        format!(": {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_members_of_an_object_become_outputs() {
        let output =
            outputs_of(br#"{"id": "cus_123", "n": 7, "ok": true, "x": null, "o": {}, "a": []}"#)
                .unwrap();
        assert_eq!(
            output,
            BTreeMap::from([
                ("id".into(), "cus_123".into()),
                ("n".into(), "7".into()),
                ("ok".into(), "true".into()),
            ])
        );
        for other in [&b"[1, 2]"[..], b"\"text\"", b"not json", b""] {
            assert!(outputs_of(other).unwrap().is_empty());
        }
    }

    #[test]
    fn odd_names_long_values_and_too_many_outputs_are_refused() {
        assert!(outputs_of(br#"{"bad name": "x"}"#).is_err());
        let long = format!(r#"{{"v": "{}"}}"#, "x".repeat(MAX_OUTPUT_VALUE + 1));
        assert!(outputs_of(long.as_bytes()).is_err());
        let many: Vec<String> = (0..=MAX_OUTPUTS).map(|i| format!(r#""k{i}": 1"#)).collect();
        let many = format!("{{{}}}", many.join(", "));
        assert!(outputs_of(many.as_bytes()).is_err());
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt(b""), "");
        assert_eq!(excerpt(b"bad\nemail"), ": bad email");
        assert_eq!(excerpt(&[0xff, 0xfe]), "");
        let long = "y".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).len(), 2 + MAX_ERROR_BODY);
    }
}
