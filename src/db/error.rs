//! How database failures become application errors: a lost connection is
//! UNAVAILABLE (retryable), anything else is INTERNAL with the detail logged.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::error::Error;

impl From<DieselError> for Error {
    fn from(e: DieselError) -> Self {
        if is_unavailable(&e) {
            return Error::Unavailable(e.to_string());
        }
        match &e {
            DieselError::NotFound => Error::Internal("row expected but not found".into()),
            _ => Error::Internal(e.to_string()),
        }
    }
}

/// A lost or unusable server: retryable once it (or a new primary) is back.
fn is_unavailable(e: &DieselError) -> bool {
    match e {
        // A read-only server is a standby or a demoted primary: the
        // primary is elsewhere (or being elected), so this is transient.
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::ReadOnlyTransaction,
            _,
        )
        | DieselError::BrokenTransactionManager => true,
        DieselError::DatabaseError(_, info) => is_server_unavailable(info.message()),
        // The commit failed and so did the rollback: what failed the commit
        // decides (a closed connection is a lost server).
        DieselError::RollbackErrorOnCommit { commit_error, .. } => is_unavailable(commit_error),
        _ => false,
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
