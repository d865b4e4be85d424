//! The steps that move a tenant's data to another database server, in
//! order:
//!
//! ```text
//! move_freeze         source: the tenant's role reads, cannot write
//! move_copy           pg_dump | pg_restore of the schema into the target
//! move_verify         per table: rows and checksum equal on both sides
//! move_switch         control plane: the tenant names the target (no return)
//! move_restore_writes target: the schema is the tenant's role's again
//! move_drop_source    source: the old copy dropped; the move is done
//! ```
//!
//! Before the switch a step that gives up walks back (the target's copy is
//! dropped, the source is writable again); after it the move only goes
//! forward. The move itself (source, target, what was verified) is in
//! `tenant_moves`; each step reads it, since the claim names the server the
//! tenant was on when the step was claimed.

use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use super::{Output, Step, StepCtx, StepError, access};
use crate::db::fleet::Fleet;
use crate::db::moves::Move;
use crate::db::{self, DbPool};

/// How long a move step waits for a lock on the tenant's objects.
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the move steps share: the control plane, where the move is
/// recorded, and the servers.
pub struct Mover {
    control: DbPool,
    fleet: Fleet,
}

impl Mover {
    pub fn new(control: DbPool, fleet: Fleet) -> Arc<Self> {
        Arc::new(Mover { control, fleet })
    }

    /// The tenant's move in flight.
    async fn current(&self, ctx: &StepCtx) -> Result<Move, StepError> {
        let mut conn = db::conn(&self.control).await.map_err(retry)?;
        db::moves::in_flight(&mut conn, ctx.tenant_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| StepError::permanent("the tenant has no move in flight"))
    }

    /// The server the tenant lives on now.
    async fn home(&self, ctx: &StepCtx) -> Result<String, StepError> {
        let mut conn = db::conn(&self.control).await.map_err(retry)?;
        let row = db::tenants::find(&mut conn, ctx.tenant_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| StepError::permanent("the tenant is gone"))?;
        Ok(row.database_server)
    }

    /// Runs `sql` in one transaction on `server`, waiting at most
    /// [`LOCK_TIMEOUT`] for each lock: a session of the tenant's that
    /// holds its tables fails the attempt, which is retried, rather than
    /// holding the step until its timeout.
    async fn run_sql(&self, server: &str, sql: &str) -> Result<(), StepError> {
        let pool = self.fleet.pool(server).await.map_err(retry)?;
        let mut conn = db::conn(&pool).await.map_err(retry)?;
        let sql = format!(
            "SET LOCAL lock_timeout = '{}ms';\n{sql}",
            LOCK_TIMEOUT.as_millis()
        );
        conn.transaction(async |c| c.batch_execute(&sql).await)
            .await
            .map_err(retry)
    }
}

fn retry(e: impl std::fmt::Display) -> StepError {
    StepError::new(e.to_string())
}

/// `move_freeze`: writes stop on the source, reads go on.
pub struct MoveFreeze(pub Arc<Mover>);

#[async_trait]
impl Step for MoveFreeze {
    fn name(&self) -> &'static str {
        "move_freeze"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let m = self.0.current(ctx).await?;
        self.0
            .run_sql(&m.source, &access::read_only_sql(&ctx.names))
            .await?;
        Ok(Output::new())
    }

    /// The last compensation of a move that walks back: the source is the
    /// tenant's again, and the move is over.
    async fn compensate_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let m = self.0.current(ctx).await?;
        self.0
            .run_sql(&m.source, &access::writable_sql(&ctx.names))
            .await?;
        let mut conn = db::conn(&self.0.control).await.map_err(retry)?;
        db::moves::finish(&mut conn, ctx.tenant_id, "ROLLED_BACK")
            .await
            .map_err(retry)?;
        Ok(Output::new())
    }

    fn resources(&self, ctx: &StepCtx) -> Vec<String> {
        vec![format!(
            "schema {} read-only on its source",
            ctx.names.schema
        )]
    }
}

/// `move_copy`: the schema, as it is on the frozen source, restored on the
/// target in one transaction, owned by the control plane's role until the
/// switch.
pub struct MoveCopy(pub Arc<Mover>);

#[async_trait]
impl Step for MoveCopy {
    fn name(&self) -> &'static str {
        "move_copy"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let m = self.0.current(ctx).await?;
        if self.0.home(ctx).await? != m.source {
            return Err(StepError::permanent(
                "the tenant is no longer on the move's source",
            ));
        }
        let (source_pool, target_pool) = (
            self.0.fleet.pool(&m.source).await.map_err(retry)?,
            self.0.fleet.pool(&m.target).await.map_err(retry)?,
        );
        let mut source = db::conn(&source_pool).await.map_err(retry)?;
        let mut target = db::conn(&target_pool).await.map_err(retry)?;
        let (here, there) = (
            db::schemas::identity(&mut source).await.map_err(retry)?,
            db::schemas::identity(&mut target).await.map_err(retry)?,
        );
        if here == there {
            return Err(StepError::permanent(format!(
                "database servers {} and {} are the same database; nothing to move",
                m.source, m.target
            )));
        }
        let schema = &ctx.names.schema;
        let bytes = db::schemas::schema_bytes(&mut source, schema)
            .await
            .map_err(retry)?;
        // What an earlier attempt restored is not the tenant's yet (it
        // still lives on the source): it goes, and the copy is made anew.
        let role = &ctx.names.role;
        target
            .batch_execute(&format!(
                "DO $$ BEGIN
                     IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                         CREATE ROLE \"{role}\" NOLOGIN;
                     END IF;
                 END $$;
                 GRANT \"{role}\" TO CURRENT_USER;
                 DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;"
            ))
            .await
            .map_err(retry)?;
        drop((source, target));
        if let Some(bytes) = bytes {
            let (from, to) = (
                self.0.fleet.target(&m.source).await.map_err(retry)?,
                self.0.fleet.target(&m.target).await.map_err(retry)?,
            );
            copy_schema(&from, &to, schema).await?;
            let mut conn = db::conn(&self.0.control).await.map_err(retry)?;
            db::moves::copied(&mut conn, m.id, bytes)
                .await
                .map_err(retry)?;
        }
        Ok(Output::new())
    }

    /// Drops the target's copy while the tenant still lives on the source.
    async fn compensate_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let m = self.0.current(ctx).await?;
        if self.0.home(ctx).await? != m.source {
            return Err(StepError::permanent(
                "the tenant is not on the move's source; its copy on the target is live",
            ));
        }
        self.0
            .run_sql(
                &m.target,
                &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", ctx.names.schema),
            )
            .await?;
        Ok(Output::new())
    }

    fn resources(&self, ctx: &StepCtx) -> Vec<String> {
        vec![format!(
            "a copy of schema {} on the move's target",
            ctx.names.schema
        )]
    }
}

/// `pg_dump` of `schema` on `from` piped into `pg_restore` on `to`, in one
/// transaction there.
async fn copy_schema(
    from: &db::fleet::Target,
    to: &db::fleet::Target,
    schema: &str,
) -> Result<(), StepError> {
    let mut dump = crate::archive::tool("pg_dump", Some(from))
        .arg("--format=custom")
        .arg("--compress=0")
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg(format!("--schema={schema}"))
        .arg(format!("--dbname={}", from.url))
        .spawn()
        .map_err(|e| StepError::new(format!("running pg_dump: {e}")))?;
    let piped: Stdio = dump
        .stdout
        .take()
        .ok_or_else(|| StepError::new("pg_dump has no output"))?
        .try_into()
        .map_err(|e| StepError::new(format!("piping pg_dump: {e}")))?;
    let restore = crate::archive::tool("pg_restore", Some(to))
        .stdin(piped)
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("--exit-on-error")
        .arg("--single-transaction")
        .arg(format!("--dbname={}", to.url))
        .spawn()
        .map_err(|e| StepError::new(format!("running pg_restore: {e}")))?;
    let (dumped, restored) = tokio::join!(dump.wait_with_output(), restore.wait_with_output());
    let dumped = dumped.map_err(|e| StepError::new(format!("pg_dump: {e}")))?;
    let restored = restored.map_err(|e| StepError::new(format!("pg_restore: {e}")))?;
    if !dumped.status.success() {
        return Err(StepError::new(format!(
            "pg_dump of {schema} failed: {}",
            String::from_utf8_lossy(&dumped.stderr).trim()
        )));
    }
    if !restored.status.success() {
        return Err(StepError::new(format!(
            "pg_restore of {schema} failed: {}",
            String::from_utf8_lossy(&restored.stderr).trim()
        )));
    }
    Ok(())
}

/// `move_verify`: every table has the same rows on both sides (counts and
/// an order-independent checksum of the rows' text).
pub struct MoveVerify(pub Arc<Mover>);

#[async_trait]
impl Step for MoveVerify {
    fn name(&self) -> &'static str {
        "move_verify"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let m = self.0.current(ctx).await?;
        let schema = &ctx.names.schema;
        let (source_pool, target_pool) = (
            self.0.fleet.pool(&m.source).await.map_err(retry)?,
            self.0.fleet.pool(&m.target).await.map_err(retry)?,
        );
        let mut source = db::conn(&source_pool).await.map_err(retry)?;
        let mut target = db::conn(&target_pool).await.map_err(retry)?;
        let (here, there) = tokio::join!(
            db::schemas::table_sums(&mut source, schema),
            db::schemas::table_sums(&mut target, schema)
        );
        let (here, there) = (here.map_err(retry)?, there.map_err(retry)?);
        if here != there {
            let names: std::collections::BTreeSet<&String> =
                here.keys().chain(there.keys()).collect();
            let differ: Vec<String> = names
                .into_iter()
                .filter(|t| here.get(*t) != there.get(*t))
                .map(|t| match (here.get(t), there.get(t)) {
                    (Some(a), Some(b)) => format!("{t} ({} rows here, {} there)", a.0, b.0),
                    (Some(_), None) => format!("{t} (missing on the target)"),
                    _ => format!("{t} (only on the target)"),
                })
                .collect();
            return Err(StepError::permanent(format!(
                "the copy differs from the source: {}",
                differ.join(", ")
            )));
        }
        let tables: serde_json::Map<String, serde_json::Value> = here
            .into_iter()
            .map(|(t, (rows, sum))| (t, serde_json::json!({"rows": rows, "checksum": sum})))
            .collect();
        let mut conn = db::conn(&self.0.control).await.map_err(retry)?;
        db::moves::verified(&mut conn, m.id, &serde_json::Value::Object(tables))
            .await
            .map_err(retry)?;
        Ok(Output::new())
    }

    fn compensable(&self) -> bool {
        false
    }
}

/// `move_switch`: the tenant names the target, in the transaction that
/// records this step. From here the move only goes forward.
pub struct MoveSwitch(pub Arc<Mover>);

#[async_trait]
impl Step for MoveSwitch {
    fn name(&self) -> &'static str {
        "move_switch"
    }

    async fn run_in_control_plane(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<(), StepError> {
        let m = db::moves::in_flight(conn, ctx.tenant_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| StepError::permanent("the tenant has no move in flight"))?;
        if db::moves::switch(conn, ctx.tenant_id, &m)
            .await
            .map_err(retry)?
        {
            Ok(())
        } else {
            Err(StepError::permanent(
                "the tenant is on neither side of its move",
            ))
        }
    }

    fn compensable(&self) -> bool {
        false
    }

    fn point_of_no_return(&self) -> bool {
        true
    }
}

/// `move_restore_writes`: the tenant's role owns its schema on the target.
pub struct MoveRestoreWrites(pub Arc<Mover>);

#[async_trait]
impl Step for MoveRestoreWrites {
    fn name(&self) -> &'static str {
        "move_restore_writes"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let m = self.0.current(ctx).await?;
        self.0
            .run_sql(&m.target, &access::writable_sql(&ctx.names))
            .await?;
        Ok(Output::new())
    }

    fn compensable(&self) -> bool {
        false
    }
}

/// `move_drop_source`: the source's copy is dropped (and the tenant's role
/// there, unless it still owns something in another database of that
/// cluster); the move is done.
pub struct MoveDropSource(pub Arc<Mover>);

#[async_trait]
impl Step for MoveDropSource {
    fn name(&self) -> &'static str {
        "move_drop_source"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let m = self.0.current(ctx).await?;
        if self.0.home(ctx).await? != m.target {
            return Err(StepError::permanent(
                "the tenant is not on the move's target; its source copy stays",
            ));
        }
        let (schema, role) = (&ctx.names.schema, &ctx.names.role);
        self.0
            .run_sql(
                &m.source,
                &format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;
                     DO $$ BEGIN
                         DROP ROLE IF EXISTS \"{role}\";
                     EXCEPTION WHEN dependent_objects_still_exist THEN NULL;
                     END $$;"
                ),
            )
            .await?;
        Ok(Output::new())
    }

    async fn run_in_control_plane(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<(), StepError> {
        db::moves::finish(conn, ctx.tenant_id, "MOVED")
            .await
            .map_err(retry)
    }

    fn compensable(&self) -> bool {
        false
    }
}
