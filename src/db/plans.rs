//! Queries on `plans`.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::plans;
use crate::domain::{Plan, PlanStep};
use crate::error::{Error, Result};

/// The plan called `name`, if it exists.
pub async fn find(conn: &mut AsyncPgConnection, name: &str) -> Result<Option<Plan>> {
    let row: Option<(String, i32, serde_json::Value)> = plans::table
        .find(name)
        .select((plans::name, plans::version, plans::steps))
        .first(conn)
        .await
        .optional()?;
    row.map(|(name, version, steps)| {
        let steps: Vec<PlanStep> = serde_json::from_value(steps)
            .map_err(|e| Error::Internal(format!("plan {name} has malformed steps: {e}")))?;
        Ok(Plan {
            name,
            version,
            steps,
        })
    })
    .transpose()
}
