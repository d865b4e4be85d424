//! The measured meters: `storage_bytes` (the size of a tenant's schema) and
//! `users` (rows of its users table), sampled for every ACTIVE and
//! SUSPENDED tenant and recorded through the same path as callers' events.

use std::collections::BTreeMap;

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use super::Ops;
use crate::db;
use crate::domain::Caller;
use crate::domain::usage::{MAX_EVENTS_PER_CALL, UsageInput, UsageOutcome};
use crate::error::Result;
use crate::steps::TenantNames;

/// Tenants read, measured and recorded at a time: two events each, so one
/// batch is one RecordUsage-sized write.
const SAMPLE_BATCH: i64 = (MAX_EVENTS_PER_CALL / 2) as i64;

/// The actor of sampled events.
const SAMPLER: &str = "usage-sampler";

impl Ops {
    /// Samples every ACTIVE and SUSPENDED tenant, or with `unsampled` only
    /// those never sampled (a tenant that just became ACTIVE); returns how
    /// many tenants were sampled. The events' ids name the sampling time
    /// (to the second), so running it twice in one second counts once.
    pub async fn sample_usage(&self, unsampled: bool) -> Result<usize> {
        let at = Utc::now().trunc_subsecs(0);
        let id = format!("sample:{}", at.format("%Y-%m-%dT%H:%M:%SZ"));
        let caller = Caller::system(SAMPLER);
        let mut after: Option<Uuid> = None;
        let mut sampled = 0;
        loop {
            let tenants = {
                let mut conn = db::conn(&self.pool).await?;
                db::usage::tenants_to_sample(&mut conn, unsampled, after, SAMPLE_BATCH).await?
            };
            let Some((last, _, _)) = tenants.last() else {
                return Ok(sampled);
            };
            after = Some(*last);
            // Each server's tenants with one connection of its pool.
            let mut by_server: BTreeMap<&str, Vec<(Uuid, String)>> = BTreeMap::new();
            for (tenant, slug, server) in &tenants {
                match TenantNames::derive(slug, &self.tenant_db.role_prefix) {
                    Ok(names) => by_server
                        .entry(server)
                        .or_default()
                        .push((*tenant, names.schema)),
                    Err(e) => tracing::warn!(%tenant, error = %e, "not sampled"),
                }
            }
            let mut events = Vec::with_capacity(tenants.len() * 2);
            let mut measured = 0;
            for (server, named) in by_server {
                let mut sample = |tenant: &Uuid, meter: &str, value: f64| {
                    events.push(UsageInput {
                        id: id.clone(),
                        tenant_id: tenant.to_string(),
                        meter: meter.to_owned(),
                        value,
                        time: Some(Ok(at)),
                        subject: String::new(),
                    })
                };
                match self.measure(server, &named).await {
                    Ok(figures) => {
                        for (tenant, bytes, users) in figures {
                            sample(&tenant, "storage_bytes", bytes as f64);
                            measured += 1;
                            if let Some(users) = users {
                                sample(&tenant, "users", users as f64);
                            }
                        }
                    }
                    // The next run measures them; the server's other work
                    // retries on its own.
                    Err(e) => tracing::warn!(%server, error = %e, tenants = named.len(),
                        "database server not sampled"),
                }
            }
            if events.is_empty() {
                continue;
            }
            for (outcome, event) in self
                .record_usage(&caller, events.clone())
                .await?
                .iter()
                .zip(&events)
            {
                match outcome {
                    UsageOutcome::Accepted | UsageOutcome::Duplicate => {}
                    other => {
                        tracing::warn!(tenant = %event.tenant_id, meter = %event.meter, ?other, "a usage sample was not recorded")
                    }
                }
            }
            sampled += measured;
        }
    }

    /// Schema bytes and user counts of tenants on one server; a schema
    /// that is gone (purged meanwhile) is left out.
    async fn measure(
        &self,
        server: &str,
        named: &[(Uuid, String)],
    ) -> Result<Vec<(Uuid, i64, Option<i64>)>> {
        let pool = self.tenant_db.fleet.pool(server).await?;
        let mut conn = db::conn(&pool).await?;
        let schemas: Vec<String> = named.iter().map(|(_, s)| s.clone()).collect();
        let sizes: std::collections::HashMap<String, i64> =
            db::usage::schema_bytes(&mut conn, &schemas)
                .await?
                .into_iter()
                .collect();
        let mut figures = Vec::with_capacity(named.len());
        for (tenant, schema) in named {
            let Some(bytes) = sizes.get(schema) else {
                continue;
            };
            let users = db::usage::user_count(&mut conn, schema).await?;
            figures.push((*tenant, *bytes, users));
        }
        Ok(figures)
    }
}
