//! Usage metering: meters, recording events (idempotent on tenant, meter
//! and id), queries over rollups in a time zone, and cancellations.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use uuid::Uuid;

use super::Ops;
use crate::db;
use crate::domain::usage::{
    self, Aggregation, Bucket, MAX_CANCEL_IDS, MAX_EVENTS_PER_CALL, Meter, UsageEvent, UsageInput,
    UsageOutcome, Window,
};
use crate::domain::{Caller, FieldViolation, validate_tenant_id};
use crate::error::{Error, Result};

/// What the usage use cases need besides the database.
#[derive(Clone, Debug)]
pub struct UsageSettings {
    /// How far behind the server's clock an event may be dated.
    pub late_window: Duration,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            late_window: crate::config::defaults::USAGE_LATE_WINDOW,
        }
    }
}

fn not_found(tenant: Uuid) -> String {
    format!("tenant {tenant} not found")
}

fn meter_not_found(name: &str) -> Error {
    Error::NotFound {
        resource: "meter",
        id: name.to_owned(),
    }
}

fn check_meter(field: &str, name: &str) -> Result<()> {
    let mut out = Vec::new();
    usage::check_meter_name(field, name, &mut out);
    if out.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(out))
    }
}

/// A query as the caller sent it.
#[derive(Debug, Clone)]
pub struct QueryInput {
    pub tenant_id: String,
    pub meter: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub window: Window,
    pub time_zone: String,
}

impl Ops {
    pub async fn create_meter(
        &self,
        name: &str,
        description: &str,
        aggregation: Option<Aggregation>,
        unit: &str,
    ) -> Result<Meter> {
        let aggregation = usage::check_new_meter(name, description, aggregation, unit)
            .map_err(Error::InvalidArgument)?;
        let mut conn = db::conn(&self.pool).await?;
        db::usage::insert_meter(&mut conn, name, description, aggregation, unit)
            .await?
            .ok_or_else(|| Error::AlreadyExists(format!("meter {name} already exists")))
    }

    pub async fn list_meters(&self) -> Result<Vec<Meter>> {
        let mut conn = db::conn(&self.pool).await?;
        db::usage::list_meters(&mut conn).await
    }

    /// Deletes a meter and the usage recorded on it; built-in meters stay.
    pub async fn delete_meter(&self, name: &str) -> Result<()> {
        check_meter("name", name)?;
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            let meter = db::usage::lock_meter(conn, name)
                .await?
                .ok_or_else(|| meter_not_found(name))?;
            if meter.builtin {
                return Err(Error::FailedPrecondition(format!(
                    "meter {name} is built in and cannot be deleted"
                )));
            }
            let plans = db::usage::plans_limiting(conn, name).await?;
            if !plans.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "meter {name} is limited by plan(s) {}; remove the limit first",
                    plans.join(", ")
                )));
            }
            db::usage::delete_meter(conn, name).await
        })
        .await
    }

    /// Records a call's events: one outcome per event, in order. The
    /// accepted ones commit together.
    pub async fn record_usage(
        &self,
        caller: &Caller,
        inputs: Vec<UsageInput>,
    ) -> Result<Vec<UsageOutcome>> {
        if inputs.is_empty() || inputs.len() > MAX_EVENTS_PER_CALL {
            return Err(Error::invalid(
                "events",
                format!(
                    "must hold 1 to {MAX_EVENTS_PER_CALL} events, not {}",
                    inputs.len()
                ),
            ));
        }
        let now = Utc::now();
        let mut outcomes: Vec<Option<UsageOutcome>> = vec![None; inputs.len()];
        let mut checked: Vec<Option<UsageEvent>> = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            match usage::check_event(input, now, self.usage.late_window) {
                // Another tenant, for a tenant-scoped caller, is one that
                // does not exist.
                Ok(event) if !caller.reaches(event.tenant_id) => {
                    outcomes[i] = Some(UsageOutcome::Rejected(not_found(event.tenant_id)));
                    checked.push(None);
                }
                Ok(event) => checked.push(Some(event)),
                Err(reason) => {
                    outcomes[i] = Some(UsageOutcome::Rejected(reason));
                    checked.push(None);
                }
            }
        }
        // A key sent twice in one call: the first goes to the database, the
        // others follow it.
        let mut first: HashMap<(Uuid, &str, &str), usize> = HashMap::new();
        let mut repeats: Vec<(usize, usize)> = Vec::new();
        for (i, event) in checked.iter().enumerate() {
            if let Some(e) = event {
                match first.entry((e.tenant_id, &e.meter, &e.id)) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(i);
                    }
                    std::collections::hash_map::Entry::Occupied(o) => repeats.push((i, *o.get())),
                }
            }
        }
        let mut firsts: Vec<usize> = first.into_values().collect();
        firsts.sort_unstable();
        if !firsts.is_empty() {
            let decided = {
                let mut conn = db::conn(&self.pool).await?;
                conn.transaction(async |conn| store_events(conn, &checked, &firsts).await)
                    .await?
            };
            // The connection is back in the pool: the thresholds take their own.
            let stored: Vec<&UsageEvent> = decided
                .iter()
                .filter(|(_, o)| *o == UsageOutcome::Accepted)
                .filter_map(|(i, _)| checked[*i].as_ref())
                .collect();
            self.after_usage(&stored).await;
            for (i, outcome) in decided {
                outcomes[i] = Some(outcome);
            }
        }
        for (i, of) in repeats {
            let (Some(event), Some(original)) = (&checked[i], &checked[of]) else {
                continue;
            };
            outcomes[i] = Some(match (&outcomes[of], usage::conflict(original, event)) {
                (Some(UsageOutcome::Rejected(reason)), _) => UsageOutcome::Rejected(reason.clone()),
                (_, Some(reason)) => UsageOutcome::Conflict(reason),
                (Some(UsageOutcome::Conflict(reason)), None) => {
                    UsageOutcome::Conflict(reason.clone())
                }
                _ => UsageOutcome::Duplicate,
            });
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| Error::Internal("a usage event got no outcome".into())))
            .collect()
    }

    /// A tenant's usage on one meter, window by window.
    pub async fn query_usage(
        &self,
        caller: &Caller,
        input: QueryInput,
    ) -> Result<(Aggregation, Vec<Bucket>)> {
        let tenant_id = validate_tenant_id("tenant_id", &input.tenant_id)
            .map_err(|v| Error::InvalidArgument(vec![v]))?;
        if !caller.reaches(tenant_id) {
            return Err(Error::tenant_not_found(tenant_id));
        }
        let query = usage::check_query(
            tenant_id,
            &input.meter,
            input.start,
            input.end.unwrap_or_else(Utc::now),
            input.window,
            &input.time_zone,
        )
        .map_err(Error::InvalidArgument)?;
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            let meter = self.usage_target(conn, tenant_id, &query.meter).await?;
            let buckets = db::usage::query(conn, &query, meter.aggregation).await?;
            Ok((meter.aggregation, buckets))
        })
        .await
    }

    /// Takes events back; returns how many stopped counting and the ids
    /// that were not there to cancel.
    pub async fn cancel_usage(
        &self,
        tenant_id: &str,
        meter: &str,
        ids: Vec<String>,
    ) -> Result<(usize, Vec<String>)> {
        let mut out = Vec::new();
        let tenant_id = validate_tenant_id("tenant_id", tenant_id).map_err(|v| out.push(v));
        usage::check_meter_name("meter", meter, &mut out);
        if ids.is_empty() || ids.len() > MAX_CANCEL_IDS {
            out.push(FieldViolation::new(
                "ids",
                format!("must hold 1 to {MAX_CANCEL_IDS} ids, not {}", ids.len()),
            ));
        }
        let (Ok(tenant_id), true) = (tenant_id, out.is_empty()) else {
            return Err(Error::InvalidArgument(out));
        };
        let mut conn = db::conn(&self.pool).await?;
        let cancelled = conn
            .transaction(async |conn| {
                self.usage_target(conn, tenant_id, meter).await?;
                db::usage::cancel_events(conn, tenant_id, meter, &ids).await
            })
            .await?;
        let gone: HashSet<&String> = cancelled.iter().collect();
        let mut not_found: Vec<String> = Vec::new();
        for id in &ids {
            if !gone.contains(id) && !not_found.contains(id) {
                not_found.push(id.clone());
            }
        }
        Ok((cancelled.len(), not_found))
    }

    /// The meter a query or cancellation reads, after checking its tenant.
    async fn usage_target(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        tenant_id: Uuid,
        meter: &str,
    ) -> Result<Meter> {
        if db::usage::existing_tenants(conn, &[tenant_id])
            .await?
            .is_empty()
        {
            return Err(Error::tenant_not_found(tenant_id));
        }
        db::usage::find_meters(conn, &[meter.to_owned()])
            .await?
            .pop()
            .ok_or_else(|| meter_not_found(meter))
    }
}

/// Stores the events at `firsts` (each key once) in the caller's
/// transaction; returns each one's outcome.
async fn store_events(
    conn: &mut diesel_async::AsyncPgConnection,
    checked: &[Option<UsageEvent>],
    firsts: &[usize],
) -> Result<Vec<(usize, UsageOutcome)>> {
    let events: Vec<(usize, &UsageEvent)> = firsts
        .iter()
        .filter_map(|&i| checked[i].as_ref().map(|e| (i, e)))
        .collect();
    let mut names: Vec<String> = events.iter().map(|(_, e)| e.meter.clone()).collect();
    names.sort_unstable();
    names.dedup();
    let meters: HashSet<String> = db::usage::find_meters(conn, &names)
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let mut tenants: Vec<Uuid> = events.iter().map(|(_, e)| e.tenant_id).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let tenants: HashSet<Uuid> = db::usage::existing_tenants(conn, &tenants)
        .await?
        .into_iter()
        .collect();
    let mut decided = Vec::with_capacity(events.len());
    let mut storable = Vec::new();
    for (i, e) in events {
        if !meters.contains(&e.meter) {
            decided.push((
                i,
                UsageOutcome::Rejected(format!("unknown meter {:?}", e.meter)),
            ));
        } else if !tenants.contains(&e.tenant_id) {
            decided.push((
                i,
                UsageOutcome::Rejected(format!("tenant {} not found", e.tenant_id)),
            ));
        } else {
            storable.push((i, e));
        }
    }
    if storable.is_empty() {
        return Ok(decided);
    }
    let rows: Vec<&UsageEvent> = storable.iter().map(|(_, e)| *e).collect();
    let stored: HashSet<(Uuid, String, String)> = db::usage::insert_events(conn, &rows)
        .await?
        .into_iter()
        .collect();
    let mut seen_before = Vec::new();
    for (i, e) in storable {
        if stored.contains(&(e.tenant_id, e.meter.clone(), e.id.clone())) {
            decided.push((i, UsageOutcome::Accepted));
        } else {
            seen_before.push((i, e));
        }
    }
    if !seen_before.is_empty() {
        let keys: Vec<(Uuid, &str, &str)> = seen_before
            .iter()
            .map(|(_, e)| (e.tenant_id, e.meter.as_str(), e.id.as_str()))
            .collect();
        let found: HashMap<(Uuid, String, String), UsageEvent> =
            db::usage::find_events(conn, &keys)
                .await?
                .into_iter()
                .map(|e| ((e.tenant_id, e.meter.clone(), e.id.clone()), e))
                .collect();
        for (i, e) in seen_before {
            let key = (e.tenant_id, e.meter.clone(), e.id.clone());
            let outcome = match found.get(&key) {
                Some(stored) => match usage::conflict(stored, e) {
                    Some(reason) => UsageOutcome::Conflict(reason),
                    None => UsageOutcome::Duplicate,
                },
                // Stored and deleted since (its tenant or meter went) in
                // the moment between the two statements.
                None => {
                    UsageOutcome::Rejected("the event's tenant or meter was just deleted".into())
                }
            };
            decided.push((i, outcome));
        }
    }
    Ok(decided)
}
