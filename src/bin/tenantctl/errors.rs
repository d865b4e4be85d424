//! gRPC errors as a sentence a user can act on, with the server's details
//! (field violations, the missing resource, when to retry).

use tonic::Code;
use tonic_types::StatusExt;

/// Exit status for an RPC that failed (clap uses 2 for usage errors).
pub const RPC_FAILED: u8 = 1;

/// Why a command did not succeed.
pub enum Failure {
    /// Could not talk to the server, or it refused the call.
    Rpc(String),
    /// `watch` saw the tenant end badly.
    Settled(String),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Failure::Rpc(describe(&status, "tenantctl get"))
    }
}

/// The status as lines: what went wrong, the server's message, its details
/// and what to do about it; `reread` is the command that reads the
/// resource again after a conflict.
pub fn describe(status: &tonic::Status, reread: &str) -> String {
    let details = status.get_error_details();
    let over_limit = details
        .precondition_failure()
        .is_some_and(|f| f.violations.iter().any(|v| v.r#type == "PLAN_LIMIT"));
    let what = match status.code() {
        Code::FailedPrecondition if over_limit => "over the plan's limit",
        Code::InvalidArgument => "invalid request",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::FailedPrecondition => "not allowed in the current state",
        Code::Aborted => "conflict",
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "too many requests",
        Code::Unavailable => "service unavailable",
        Code::DeadlineExceeded => "timed out",
        Code::Unimplemented => "not supported by this server",
        Code::Cancelled => "cancelled",
        _ => "server error",
    };
    let mut text = format!("{what} ({:?}): {}", status.code(), status.message());

    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(resource) = details.resource_info()
        && !resource.resource_name.is_empty()
    {
        text.push_str(&format!(
            "\n  {} {}",
            resource.resource_type, resource.resource_name
        ));
    }
    if let Some(failure) = details.precondition_failure() {
        for v in &failure.violations {
            text.push_str(&format!("\n  {}: {}", v.subject, v.description));
        }
    }
    let retry = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .map(|d| format!(" in {} ms", d.as_millis()));
    let hint = match status.code() {
        Code::Unauthenticated => Some(
            "pass --token or set TENANTD_TOKEN (an operator can mint one with `tenantd token`)"
                .to_owned(),
        ),
        Code::PermissionDenied => {
            Some("ask for a token with the scope this command needs".to_owned())
        }
        Code::FailedPrecondition if over_limit => {
            Some("choose a value within the limit".to_owned())
        }
        Code::Aborted => Some(format!(
            "it changed or is busy: read it again (`{reread}`) and retry"
        )),
        Code::ResourceExhausted | Code::Unavailable => Some(format!(
            "retry{}",
            retry.unwrap_or_else(|| " later".to_owned())
        )),
        _ => None,
    };
    if let Some(hint) = hint {
        text.push_str(&format!("\n  hint: {hint}"));
    }
    text
}
