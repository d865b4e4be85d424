//! The deprovisioning steps: revoke access, archive (or drop) the data,
//! tell the admin. The purge after the grace period is a scheduled job.

use async_trait::async_trait;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use lettre::message::Mailbox;

use std::sync::Arc;

use super::register_oidc_client::OidcClients;
use super::{Mailer, Output, Step, StepCtx, StepError, access};

/// The archive's name: the slug plus the start of the tenant id, so that a
/// new tenant may take the slug while the old data waits for its purge.
pub fn archived_schema(ctx: &StepCtx) -> String {
    let id = ctx.tenant_id.simple().to_string();
    format!("archived_{}_{}", ctx.slug.replace('-', "_"), &id[..8])
}

/// `revoke_access`: the tenant's OpenID client is deleted at the identity
/// provider, if it has one; its certificate is revoked and its DNS records
/// deleted, if it has them; the tenant role loses its schema; pending
/// invitations are revoked.
pub struct RevokeAccess {
    oidc: Arc<OidcClients>,
    addresses: super::Addresses,
}

impl RevokeAccess {
    pub fn new(oidc: Arc<OidcClients>, addresses: super::Addresses) -> Self {
        RevokeAccess { oidc, addresses }
    }
}

#[async_trait]
impl Step for RevokeAccess {
    fn name(&self) -> &'static str {
        "revoke_access"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        self.oidc.remove(ctx.tenant_id).await?;
        // The certificate is revoked (its challenge record cleared while the
        // name is still the tenant's), then the name stops pointing at the
        // service.
        super::tls_certificate::remove(self.addresses.certificates.as_deref(), ctx).await?;
        super::dns_records::remove(self.addresses.dns.as_deref(), ctx).await?;
        Ok(Output::new())
    }

    async fn run_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<Output, StepError> {
        let schema = &ctx.names.schema;
        conn.batch_execute(&format!(
            "DO $$ BEGIN
                 IF to_regclass('{schema}.invitations') IS NOT NULL THEN
                     EXECUTE format('UPDATE %I.invitations SET revoked_at = now()
                                     WHERE revoked_at IS NULL AND used_at IS NULL', '{schema}');
                 END IF;
             END $$;"
        ))
        .await?;
        conn.batch_execute(&access::revoke_sql(&ctx.names)).await?;
        Ok(Output::new())
    }

    fn compensable(&self) -> bool {
        false
    }
}

/// `archive_schema`: renames the schema out of the tenant's name (ARCHIVE)
/// or drops it (PURGE), then drops the tenant's role.
pub struct ArchiveSchema;

#[async_trait]
impl Step for ArchiveSchema {
    fn name(&self) -> &'static str {
        "archive_schema"
    }

    fn external_work(&self) -> bool {
        false
    }

    async fn run_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<Output, StepError> {
        let (schema, role) = (&ctx.names.schema, &ctx.names.role);
        let archived = archived_schema(ctx);
        let data = if ctx.purge {
            format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;")
        } else {
            format!(
                "DO $$ BEGIN
                     IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{schema}') THEN
                         ALTER SCHEMA \"{schema}\" RENAME TO \"{archived}\";
                     END IF;
                 END $$;"
            )
        };
        conn.batch_execute(&format!(
            "{data}
             DO $$ BEGIN
                 IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                     DROP OWNED BY \"{role}\";
                     DROP ROLE \"{role}\";
                 END IF;
             END $$;"
        ))
        .await?;
        let output = if ctx.purge {
            Output::from([("purged".to_owned(), "true".to_owned())])
        } else {
            Output::from([("archived_schema".to_owned(), archived)])
        };
        Ok(output)
    }

    fn compensable(&self) -> bool {
        false
    }
}

/// `export_archive`: an archived tenant's verified export. Its schema,
/// renamed by `archive_schema`, is dumped with `pg_dump` into the archive
/// directory; the file's SHA-256 is recorded with the tables
/// `pg_restore --list` finds in it, which must be the schema's, before
/// the tenant counts as DEPROVISIONED. Nothing for a purge.
pub struct ExportArchive {
    archives: Arc<crate::archive::Archives>,
    pool: crate::db::DbPool,
    fleet: crate::db::fleet::Fleet,
}

impl ExportArchive {
    pub fn new(
        archives: Arc<crate::archive::Archives>,
        pool: crate::db::DbPool,
        fleet: crate::db::fleet::Fleet,
    ) -> Self {
        Self {
            archives,
            pool,
            fleet,
        }
    }
}

/// Exports an archived tenant's schema and records the verified export.
pub async fn export_verified(
    archives: &crate::archive::Archives,
    target: &crate::db::fleet::Target,
    control: &mut AsyncPgConnection,
    tenant_db: &mut AsyncPgConnection,
    tenant: uuid::Uuid,
    schema: &str,
) -> Result<crate::archive::Export, String> {
    let Some(expected) = crate::db::exports::schema_tables(tenant_db, schema)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Err(format!("the archived schema {schema} does not exist"));
    };
    let export = archives.export(target, tenant, schema).await?;
    let expected: std::collections::BTreeSet<String> = expected.into_iter().collect();
    if export.tables != expected {
        return Err(format!(
            "the export of {schema} lists tables [{}], the schema has [{}]",
            export.tables.iter().cloned().collect::<Vec<_>>().join(", "),
            expected.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    crate::db::exports::record(control, tenant, schema, &export)
        .await
        .map_err(|e| e.to_string())?;
    Ok(export)
}

#[async_trait]
impl Step for ExportArchive {
    fn name(&self) -> &'static str {
        "export_archive"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        if ctx.purge {
            return Ok(Output::new());
        }
        let schema = archived_schema(ctx);
        let mut control = crate::db::conn(&self.pool)
            .await
            .map_err(|e| StepError::new(e.to_string()))?;
        let mut tenant_db = crate::db::conn(&ctx.tenant_db)
            .await
            .map_err(|e| StepError::new(e.to_string()))?;
        let exists = crate::db::exports::schema_tables(&mut tenant_db, &schema)
            .await
            .map_err(|e| StepError::new(e.to_string()))?
            .is_some();
        if !exists {
            // The tenant never had a schema (its plan made none): no data,
            // nothing to export.
            return Ok(Output::new());
        }
        let target = self
            .fleet
            .target(&ctx.database_server)
            .await
            .map_err(|e| StepError::new(e.to_string()))?;
        let export = export_verified(
            &self.archives,
            &target,
            &mut control,
            &mut tenant_db,
            ctx.tenant_id,
            &schema,
        )
        .await
        .map_err(StepError::new)?;
        Ok(Output::from([
            ("export_sha256".to_owned(), export.sha256),
            ("export_bytes".to_owned(), export.bytes.to_string()),
        ]))
    }

    fn database_work(&self) -> bool {
        false
    }

    fn compensable(&self) -> bool {
        false
    }
}

/// `send_deprovision_notice`: tells the admin; not critical.
pub struct SendDeprovisionNotice {
    mailer: Mailer,
}

impl SendDeprovisionNotice {
    pub fn new(mailer: Mailer) -> Self {
        Self { mailer }
    }
}

#[async_trait]
impl Step for SendDeprovisionNotice {
    fn name(&self) -> &'static str {
        "send_deprovision_notice"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let to: Mailbox = super::mailer::recipient(&ctx.admin_email)?;
        let fate = if ctx.purge {
            "Its data has been deleted."
        } else {
            "Its data is archived and will be deleted when the grace period ends."
        };
        let subject = format!("{} has been shut down", ctx.display_name);
        let body = format!(
            "Hello,\n\nthe workspace \"{}\" has been shut down. {fate}\n",
            ctx.display_name
        );
        self.mailer
            .send(to, subject, "deprovision", ctx.tenant_id, body)
            .await?;
        Ok(Output::new())
    }

    fn database_work(&self) -> bool {
        false
    }

    fn compensable(&self) -> bool {
        false
    }
}
