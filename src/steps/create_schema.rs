//! `create_schema`: the tenant's schema and the NOLOGIN role that owns it,
//! with nothing granted to PUBLIC.

use async_trait::async_trait;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use super::{Output, Step, StepCtx, StepError};

pub struct CreateSchema;

#[async_trait]
impl Step for CreateSchema {
    fn name(&self) -> &'static str {
        "create_schema"
    }

    fn external_work(&self) -> bool {
        false
    }

    async fn run_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<Output, StepError> {
        let role = ctx.names.role_ident();
        let schema = ctx.names.schema_ident();
        let role_literal = ctx.names.role.clone();
        // Names are validated identifiers (see names.rs), quoted here.
        conn.batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role_literal}') THEN
                     CREATE ROLE {role} NOLOGIN;
                 END IF;
             END $$;
             GRANT {role} TO CURRENT_USER;
             CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role};
             REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;"
        ))
        .await?;
        Ok(Output::from([
            ("schema_name".to_owned(), ctx.names.schema.clone()),
            ("role_name".to_owned(), ctx.names.role.clone()),
        ]))
    }

    async fn compensate_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<(), StepError> {
        let role = ctx.names.role_ident();
        let schema = ctx.names.schema_ident();
        let role_literal = ctx.names.role.clone();
        conn.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE;
             DO $$ BEGIN
                 IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role_literal}') THEN
                     DROP OWNED BY {role};
                     DROP ROLE {role};
                 END IF;
             END $$;"
        ))
        .await?;
        Ok(())
    }

    fn resources(&self, ctx: &StepCtx) -> Vec<String> {
        vec![
            format!("schema {}", ctx.names.schema),
            format!("role {}", ctx.names.role),
        ]
    }
}
