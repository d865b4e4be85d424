//! How database failures become application errors: a lost connection is
//! UNAVAILABLE (retryable), anything else is INTERNAL with the detail logged.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::error::Error;

impl From<DieselError> for Error {
    fn from(e: DieselError) -> Self {
        match &e {
            // A read-only server is a standby or a demoted primary: the
            // primary is elsewhere (or being elected), so this is transient.
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::ReadOnlyTransaction,
                _,
            )
            | DieselError::BrokenTransactionManager => Error::Unavailable(e.to_string()),
            DieselError::DatabaseError(_, info) if is_server_unavailable(info.message()) => {
                Error::Unavailable(e.to_string())
            }
            DieselError::NotFound => Error::Internal("row expected but not found".into()),
            _ => Error::Internal(e.to_string()),
        }
    }
}

/// Messages Postgres sends when it is shutting down or refusing connections.
fn is_server_unavailable(message: &str) -> bool {
    message.contains("terminating connection")
        || message.contains("the database system is")
        || message.contains("connection to server")
}

/// Whether `e` is a unique violation of `constraint`.
pub fn is_unique_violation(e: &DieselError, constraint: &str) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
        if info.constraint_name() == Some(constraint))
}

/// Whether `e` is the check `constraint` (or a trigger raising it) failing.
pub fn is_check_violation(e: &DieselError, constraint: &str) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, info)
        if info.constraint_name() == Some(constraint))
}
