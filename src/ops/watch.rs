//! StreamProvisioningStatus: resolve the tenant, then hand over to the hub.

use tokio::sync::mpsc;
use uuid::Uuid;

use super::Ops;
use crate::db;
use crate::domain::FieldViolation;
use crate::error::{Error, Result};
use crate::stream::{self, WatchItem, WatchRequest};

impl Ops {
    /// Starts a watcher of the tenant named by `tenant` (its id or its slug).
    pub async fn watch_tenant(
        &self,
        caller: &crate::domain::Caller,
        tenant: &str,
        resume_after: Option<i64>,
        follow: bool,
    ) -> Result<mpsc::Receiver<Result<WatchItem>>> {
        if let Some(after) = resume_after
            && after < 0
        {
            return Err(Error::invalid(
                "resume_after_event_id",
                "must not be negative",
            ));
        }
        // Taken before anything else, so a burst cannot pass the cap.
        let slot = self.watch_slots.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "this server already serves {} status streams; retry later or on another replica",
                self.max_watchers
            ))
        })?;
        let tenant_id = self.id_or_slug(tenant).await?;
        // Another tenant, for a tenant-scoped caller, is one that does not
        // exist.
        if !caller.reaches(tenant_id) {
            return Err(Error::tenant_not_found(tenant));
        }
        let request = WatchRequest {
            tenant_id,
            resume_after,
            follow,
        };
        stream::watch(&self.hub, request, slot, self.shutdown.clone()).await
    }

    /// A tenant id, or the id of the live tenant with this slug.
    async fn id_or_slug(&self, tenant: &str) -> Result<Uuid> {
        if let Ok(id) = Uuid::try_parse(tenant) {
            return Ok(id);
        }
        let is_slug = (3..=40).contains(&tenant.len())
            && tenant.as_bytes()[0].is_ascii_lowercase()
            && tenant
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !is_slug {
            return Err(Error::InvalidArgument(vec![FieldViolation::new(
                "tenant_id",
                "must be a tenant id (UUID) or a tenant slug",
            )]));
        }
        let mut conn = db::conn(self.pool()).await?;
        db::tenants::find_by_slug(&mut conn, tenant)
            .await?
            .map(|row| row.id)
            .ok_or_else(|| Error::tenant_not_found(tenant))
    }
}
