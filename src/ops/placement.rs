//! Placement: the database server a new tenant goes to (and a moved one,
//! when no target is named), by the rule CreateTenant's statement applies
//! (see `db::tenants::create`): not draining, reachable at its last check,
//! under its `max_tenants`, matching the tenant's selector; the fewest
//! tenants per unit of weight; ties by name.

use std::collections::BTreeMap;

use diesel_async::AsyncPgConnection;

use super::Ops;
use crate::db;
use crate::domain::Placement;
use crate::domain::placement::SERVER_KEY;
use crate::error::{Error, Result};

impl Ops {
    /// The server a new tenant with `placement` goes to, by the rule
    /// CreateTenant's statement applies; FAILED_PRECONDITION naming why
    /// each server was passed over when none fits.
    pub(super) async fn placement_for(
        &self,
        conn: &mut AsyncPgConnection,
        placement: &Placement,
    ) -> Result<String> {
        self.place(conn, placement, None).await
    }

    /// [`Ops::placement_for`] a tenant that lives on `own`, elsewhere.
    pub(super) async fn placement_except(
        &self,
        conn: &mut AsyncPgConnection,
        placement: &Placement,
        own: &str,
    ) -> Result<String> {
        self.place(conn, placement, Some(own)).await
    }

    async fn place(
        &self,
        conn: &mut AsyncPgConnection,
        placement: &Placement,
        own: Option<&str>,
    ) -> Result<String> {
        let candidates = db::servers::candidates(conn).await?;
        let mut passed = Vec::new();
        let mut fits = Vec::new();
        for c in &candidates {
            let why = if own == Some(c.name.as_str()) {
                Some("the tenant's own".to_owned())
            } else {
                passed_over(c, placement)
            };
            match why {
                Some(why) => passed.push(format!("{} ({why})", c.name)),
                None => fits.push(c),
            }
        }
        if let Some(best) = fits.into_iter().min_by(|a, b| {
            let load = |c: &db::servers::Candidate| c.tenants as f64 / f64::from(c.weight);
            load(a)
                .total_cmp(&load(b))
                .then_with(|| a.name.cmp(&b.name))
        }) {
            return Ok(best.name.clone());
        }
        Err(Error::FailedPrecondition(if placement.is_empty() {
            format!(
                "no database server can take a new tenant: {}",
                passed.join(", ")
            )
        } else {
            format!(
                "no database server matching {placement} can take a new tenant: {}",
                passed.join(", ")
            )
        }))
    }
}

/// Why placement passes `c` over, if it does.
fn passed_over(c: &db::servers::Candidate, placement: &Placement) -> Option<String> {
    let mut labels: BTreeMap<&str, &str> = BTreeMap::new();
    if !c.region.is_empty() {
        labels.insert("region", &c.region);
    }
    if let Some(map) = c.labels.as_object() {
        for (k, v) in map {
            labels.insert(k, v.as_str().unwrap_or_default());
        }
    }
    labels.insert(SERVER_KEY, &c.name);
    let unmatched: Vec<String> = placement
        .pairs()
        .iter()
        .filter(|(k, v)| labels.get(k.as_str()) != Some(&v.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !unmatched.is_empty() {
        Some(format!("does not match {}", unmatched.join(",")))
    } else {
        refuses_tenants(c)
    }
}

/// Why a server takes no more tenants, if it does not: draining,
/// unreachable at its last check, or full.
pub(super) fn refuses_tenants(c: &db::servers::Candidate) -> Option<String> {
    if c.draining {
        Some("draining".into())
    } else if !c.reachable {
        Some(if c.last_error.is_empty() {
            "unreachable at its last check".into()
        } else {
            format!("unreachable at its last check: {}", c.last_error)
        })
    } else if c.max_tenants > 0 && c.tenants >= i64::from(c.max_tenants) {
        Some(format!("full: {} of {} tenants", c.tenants, c.max_tenants))
    } else {
        None
    }
}
