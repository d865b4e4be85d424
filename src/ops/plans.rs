//! Plans: create, read, list, version and delete. A change makes a new
//! version (the `plan_versions` trigger keeps every one); tenants keep theirs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};

use super::Ops;
use crate::db;
use crate::domain::{FieldViolation, Plan, PlanInput, validate_page_size};
use crate::error::{Error, Result};

/// One page of ListPlans.
#[derive(Debug)]
pub struct PlanPage {
    pub plans: Vec<Plan>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// A plan's etag: its version, quoted as HTTP does.
pub fn plan_etag(plan: &Plan) -> String {
    format!("\"{}\"", plan.version)
}

fn plan_not_found(name: &str) -> Error {
    Error::NotFound {
        resource: "plan",
        id: name.to_owned(),
    }
}

fn check_name(field: &str, name: &str) -> Result<()> {
    let mut out = Vec::new();
    crate::domain::check_plan_name(field, name, &mut out);
    if out.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(out))
    }
}

fn check_etag(plan: &Plan, etag: &str) -> Result<()> {
    if etag.is_empty() || etag == plan_etag(plan) {
        Ok(())
    } else {
        Err(Error::Aborted(format!(
            "plan {} changed: its etag is {}, not {etag}",
            plan.name,
            plan_etag(plan)
        )))
    }
}

impl Ops {
    pub async fn create_plan(&self, input: PlanInput) -> Result<Plan> {
        let input = input
            .validate(&self.plan_steps)
            .map_err(Error::InvalidArgument)?;
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            check_endpoints(conn, &input).await?;
            check_meters(conn, &input).await?;
            db::plans::insert(conn, &input)
                .await?
                .ok_or_else(|| Error::AlreadyExists(format!("plan {} already exists", input.name)))
        })
        .await
        .inspect(|plan| self.forget_plan(&plan.name))
    }

    /// The current version, or `version` when it is not 0.
    pub async fn get_plan(&self, name: &str, version: i32) -> Result<Plan> {
        check_name("name", name)?;
        if version < 0 {
            return Err(Error::invalid(
                "version",
                "must not be negative (0: current)",
            ));
        }
        let mut conn = db::conn(&self.pool).await?;
        let plan = if version == 0 {
            db::plans::find(&mut conn, name).await?
        } else {
            db::plans::find_version(&mut conn, name, version).await?
        };
        plan.ok_or_else(|| match version {
            0 => plan_not_found(name),
            v => Error::NotFound {
                resource: "plan version",
                id: format!("{name} v{v}"),
            },
        })
    }

    pub async fn list_plans(&self, page_size: i32, page_token: &str) -> Result<PlanPage> {
        let limit = validate_page_size(page_size).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let after = decode_token(page_token)?;
        let mut conn = db::conn(&self.pool).await?;
        let mut plans = db::plans::list(&mut conn, after.as_deref(), limit + 1).await?;
        let next_page_token = if plans.len() as i64 > limit {
            plans.truncate(limit as usize);
            plans
                .last()
                .map(|p| URL_SAFE_NO_PAD.encode(&p.name))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(PlanPage {
            plans,
            next_page_token,
        })
    }

    /// The next version of a plan, if `etag` (when set) is still current.
    pub async fn update_plan(&self, input: PlanInput, etag: &str) -> Result<Plan> {
        let input = input
            .validate(&self.plan_steps)
            .map_err(Error::InvalidArgument)?;
        let mut conn = db::conn(&self.pool).await?;
        let plan = conn
            .transaction(async |conn| {
                let current = db::plans::lock(conn, &input.name)
                    .await?
                    .ok_or_else(|| plan_not_found(&input.name))?;
                check_etag(&current, etag)?;
                check_endpoints(conn, &input).await?;
                check_meters(conn, &input).await?;
                db::plans::update(conn, &input).await
            })
            .await
            .inspect(|_| self.forget_plan(&input.name))?;
        // A raised limit may lift a suspension now rather than at the next
        // check of the quota job.
        if let Err(e) = self.lift_quota_suspensions(Some(&plan.name)).await {
            tracing::warn!(plan = %plan.name, error = %e, "suspensions under the changed plan are looked at by the quota job");
        }
        Ok(plan)
    }

    /// Deletes a plan no live tenant uses. The exclusive advisory lock waits
    /// for CreateTenant calls that are inserting a tenant of this plan and
    /// holds off new ones until the deletion commits (they then fail: see the
    /// plan_delete_guard migration), so the count below is final.
    pub async fn delete_plan(&self, name: &str, etag: &str) -> Result<()> {
        check_name("name", name)?;
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            let lock = format!(
                "SELECT pg_advisory_xact_lock(hashtext('tenantd.plan:' || {}))",
                quote_literal(name)
            );
            conn.batch_execute(&lock).await?;
            let plan = db::plans::lock(conn, name)
                .await?
                .ok_or_else(|| plan_not_found(name))?;
            check_etag(&plan, etag)?;
            let using = db::plans::tenants_using(conn, name).await?;
            if using > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "plan {name} is used by {using} tenant(s); deprovision and delete them first"
                )));
            }
            db::plans::mark_deleted(conn, name).await?;
            Ok(())
        })
        .await
        .inspect(|()| self.forget_plan(name))
    }
}

/// Every webhook step's endpoint must exist. Their rows stay share-locked
/// until the plan commits, so a concurrent DeleteEndpoint (which locks the
/// row first) either deletes it before this looks, or sees this plan.
async fn check_endpoints(
    conn: &mut diesel_async::AsyncPgConnection,
    input: &PlanInput,
) -> Result<()> {
    let wanted: Vec<String> = input
        .steps
        .iter()
        .filter_map(|s| s.webhook.as_ref().map(|w| w.endpoint.clone()))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let found = db::webhooks::share_lock_endpoints(conn, &wanted).await?;
    let missing: Vec<FieldViolation> = input
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let endpoint = &s.webhook.as_ref()?.endpoint;
            (!found.contains(endpoint)).then(|| {
                FieldViolation::new(
                    format!("plan.steps[{i}].webhook.endpoint"),
                    format!("no webhook endpoint is named {endpoint:?}"),
                )
            })
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(missing))
    }
}

/// Every meter the plan limits must exist. Their rows stay share-locked
/// until the plan commits, as the endpoints' are.
async fn check_meters(conn: &mut diesel_async::AsyncPgConnection, input: &PlanInput) -> Result<()> {
    let wanted: Vec<String> = input.meter_limits.keys().cloned().collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let found = db::usage::share_lock_meters(conn, &wanted).await?;
    let missing: Vec<FieldViolation> = wanted
        .iter()
        .filter(|m| !found.contains(m))
        .map(|m| {
            FieldViolation::new(
                format!("plan.limits.meters[{m:?}]"),
                format!("no meter is named {m:?}"),
            )
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(missing))
    }
}

/// `name` as an SQL literal; names are checked to be `[a-z0-9-]`, so this
/// only wraps it.
fn quote_literal(name: &str) -> String {
    debug_assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    );
    format!("'{name}'")
}

fn decode_token(token: &str) -> Result<Option<String>> {
    super::decode_name_token(token, |name| check_name("page_token", name).is_ok())
}
