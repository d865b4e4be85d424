//! The one error type of the application layer.
//!
//! Variants carry what the caller may read; `Unavailable` and `Internal` carry
//! internal detail that is logged, never sent (see `grpc::status`).

use crate::domain::FieldViolation;

/// Everything a use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; one violation per offending field.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No such resource (or it was deleted).
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },
    /// A unique name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The resource's state forbids the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A value past a limit of the tenant's plan (FAILED_PRECONDITION with a
    /// `PLAN_LIMIT` violation whose subject is `limit`, e.g. `max_users`).
    #[error("{message}")]
    PlanLimit {
        limit: String,
        message: String,
        /// What the plan allows, for the violation's description.
        description: String,
    },
    /// A concurrent change won: etag mismatch or a running lifecycle operation.
    #[error("{0}")]
    Aborted(String),
    /// A limit of this server was reached (e.g. concurrent streams).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A rate limit was reached; the caller may retry after `retry_after`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// A credential (an API key) that does not hold. `tenant_state` is set
    /// only when the credential is good but its tenant is not ACTIVE.
    #[error("{message}")]
    Unauthenticated {
        message: String,
        tenant_state: Option<crate::domain::TenantState>,
    },
    /// The database cannot be reached; retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected state; the detail is for the logs only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single field violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The tenant `id` does not exist.
    pub fn tenant_not_found(id: impl ToString) -> Self {
        Error::NotFound {
            resource: "tenant",
            id: id.to_string(),
        }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result of a use case.
pub type Result<T, E = Error> = std::result::Result<T, E>;
