//! The one place where application errors become gRPC status codes.
//!
//! Messages sent to clients say what the caller can act on; internal detail
//! (SQL, connection errors) goes to the log only.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;

/// How long a client should wait before retrying after UNAVAILABLE or a
/// full stream cap.
const RETRY_DELAY: Duration = Duration::from_secs(1);

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(violations) => {
                let message = Error::InvalidArgument(violations.clone()).to_string();
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound { resource, id } => Status::with_error_details(
                Code::NotFound,
                format!("{resource} {id} not found"),
                ErrorDetails::with_resource_info(resource, id, "", "not found"),
            ),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::PlanLimit {
                limit,
                message,
                description,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure_violation("PLAN_LIMIT", limit, description),
            ),
            Error::Aborted(message) => Status::aborted(message),
            Error::ResourceExhausted(message) => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(RETRY_DELAY)),
            ),
            Error::RateLimited {
                message,
                retry_after,
            } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::Unauthenticated {
                message,
                tenant_state,
            } => match tenant_state {
                Some(state) => Status::with_error_details(
                    Code::Unauthenticated,
                    message,
                    ErrorDetails::with_error_info(
                        "TENANT_NOT_ACTIVE",
                        "tenantd",
                        [("tenant_state".to_owned(), state.to_string())],
                    ),
                ),
                None => Status::unauthenticated(message),
            },
            Error::Unavailable(detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                Status::with_error_details(
                    Code::Unavailable,
                    "the database is unavailable; retry later",
                    ErrorDetails::with_retry_info(Some(RETRY_DELAY)),
                )
            }
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::internal("internal error; the server log has the details")
            }
        }
    }
}
