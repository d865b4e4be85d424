//! `run_migrations`: versioned tenant migrations, embedded in the binary and
//! recorded in the tenant's own `schema_migrations`, so re-running is a no-op.

use async_trait::async_trait;
use diesel::sql_types::{Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use super::{Output, Step, StepCtx, StepError};

/// (version, name, SQL), in order. Append only: a shipped migration never
/// changes.
pub const TENANT_MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "core", include_str!("tenant_migrations/0001_core.sql")),
    (
        2,
        "plan_limits",
        include_str!("tenant_migrations/0002_plan_limits.sql"),
    ),
];

pub struct RunMigrations;

#[async_trait]
impl Step for RunMigrations {
    fn name(&self) -> &'static str {
        "run_migrations"
    }

    fn external_work(&self) -> bool {
        false
    }

    async fn run_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<Output, StepError> {
        migrate(conn, &ctx.names).await?;
        let latest = TENANT_MIGRATIONS.last().map_or(0, |(v, _, _)| *v);
        Ok(Output::from([(
            "schema_version".to_owned(),
            latest.to_string(),
        )]))
    }
}

/// Applies the tenant migrations not yet recorded in the schema's
/// `schema_migrations`, as the tenant's role; the versions applied.
pub async fn migrate(
    conn: &mut AsyncPgConnection,
    names: &super::TenantNames,
) -> Result<Vec<String>, StepError> {
    let schema = names.schema_ident();
    let role = names.role_ident();
    // Objects are created as the tenant's role so that it owns them;
    // RESET below hands the transaction back to the control plane.
    conn.batch_execute(&format!(
        "SET LOCAL search_path TO {schema};
         SET LOCAL ROLE {role};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );
         LOCK TABLE schema_migrations IN EXCLUSIVE MODE;"
    ))
    .await?;
    let mut applied = Vec::new();
    for (version, name, sql) in TENANT_MIGRATIONS {
        let inserted = diesel::sql_query(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind::<Integer, _>(*version)
        .bind::<Text, _>(*name)
        .execute(conn)
        .await?;
        if inserted == 1 {
            conn.batch_execute(sql).await?;
            applied.push(version.to_string());
        }
    }
    conn.batch_execute("RESET ROLE; RESET search_path;").await?;
    Ok(applied)
}
