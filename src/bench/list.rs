//! `list_page_p99_ms`: ListTenants at 1k and at 100k tenants, p99 of
//! [`CALLS`] timed calls at each size, [`PAGE_SIZE`] tenants a page, half of
//! them the first page and half a page halfway down the list (its
//! `page_token` reached by following tokens there).
//!
//! The tenants are seeded by SQL straight into one scratch database, as
//! CreateTenant would leave them once ACTIVE: the default plan's steps
//! done, a label, and UUIDv7-like ids in creation order. The same server
//! (API only) is timed at 1k, then 99k more are seeded and it is timed
//! again. The baseline is the 1k figure: keyset pagination reads one index
//! range a page, so the 100k figure should stay close to it.

use std::time::Instant;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde::Serialize;
use tonic::transport::Channel;

use super::{BenchServer, Scratch, ms, quantile};
use crate::proto::ListTenantsRequest;
use crate::proto::tenant_service_client::TenantServiceClient;
use crate::server::BoxError;
use crate::steps::Registry;

/// Tenants in the small list, the baseline.
const SMALL: usize = 1_000;
/// Tenants in the large list.
const LARGE: usize = 100_000;
/// Tenants a page: ListTenants' default.
const PAGE_SIZE: i32 = 50;
/// Timed calls per size, half of them of each page: enough that the p99 of
/// all is the fifth-slowest call, not the slowest.
const CALLS: usize = 400;
/// The largest page ListTenants returns, to walk halfway in few calls.
const MAX_PAGE_SIZE: i32 = 1000;

/// ListTenants page latency at both sizes.
#[derive(Debug, Serialize)]
pub struct ListReport {
    pub page_size: i32,
    pub calls: usize,
    pub at_1k: ListFigures,
    pub at_100k: ListFigures,
    /// `at_100k.p99_ms / at_1k.p99_ms`.
    pub ratio: f64,
}

/// ListTenants page latency at one size.
#[derive(Debug, Serialize)]
pub struct ListFigures {
    pub tenants: i64,
    /// Over every timed call, first pages and later pages.
    pub p99_ms: f64,
    pub first_page_p99_ms: f64,
    pub later_page_p99_ms: f64,
}

pub async fn measure(scratch: &Scratch) -> Result<ListReport, BoxError> {
    let server = BenchServer::start(scratch, |c| c.concurrency = 0, Registry::new()).await?;
    let mut conn = AsyncPgConnection::establish(&server.url).await?;
    let mut client = server.client().await?;
    conn.batch_execute(&seed_sql(1, SMALL)).await?;
    conn.batch_execute("VACUUM ANALYZE").await?;
    let at_1k = time_pages(&mut client, &mut conn).await?;
    conn.batch_execute(&seed_sql(SMALL + 1, LARGE)).await?;
    conn.batch_execute("VACUUM ANALYZE").await?;
    let at_100k = time_pages(&mut client, &mut conn).await?;
    server.stop().await;
    Ok(ListReport {
        page_size: PAGE_SIZE,
        calls: CALLS,
        ratio: at_100k.p99_ms / at_1k.p99_ms,
        at_1k,
        at_100k,
    })
}

/// Times the first page and the page halfway down, alternately.
async fn time_pages(
    client: &mut TenantServiceClient<Channel>,
    conn: &mut AsyncPgConnection,
) -> Result<ListFigures, BoxError> {
    let tenants = super::count(conn, "SELECT count(*) AS n FROM tenants").await?;
    let halfway = token_at(client, tenants as usize / 2).await?;
    let (mut first, mut later) = (Vec::new(), Vec::new());
    // One untimed call of each page warms the connection and the caches.
    for i in 0..CALLS + 2 {
        let (token, times) = if i % 2 == 0 {
            ("", &mut first)
        } else {
            (halfway.as_str(), &mut later)
        };
        let started = Instant::now();
        let page = client
            .list_tenants(ListTenantsRequest {
                page_size: PAGE_SIZE,
                page_token: token.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        if page.tenants.len() != PAGE_SIZE as usize {
            return Err(format!("a page of {} tenants", page.tenants.len()).into());
        }
        if i >= 2 {
            times.push(ms(started));
        }
    }
    let mut all = [first.as_slice(), later.as_slice()].concat();
    let p99 = |times: &mut [f64]| quantile(times, 0.99).unwrap_or(f64::NAN);
    Ok(ListFigures {
        tenants,
        p99_ms: p99(&mut all),
        first_page_p99_ms: p99(&mut first),
        later_page_p99_ms: p99(&mut later),
    })
}

/// The page token that lists from the `skip`-th tenant on.
async fn token_at(
    client: &mut TenantServiceClient<Channel>,
    skip: usize,
) -> Result<String, BoxError> {
    let mut token = String::new();
    let mut skipped = 0;
    while skipped < skip {
        let page = client
            .list_tenants(ListTenantsRequest {
                page_size: MAX_PAGE_SIZE.min((skip - skipped) as i32),
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        skipped += page.tenants.len();
        token = page.next_page_token;
        if token.is_empty() {
            return Err(format!("the list ended after {skipped} tenants").into());
        }
    }
    Ok(token)
}

/// ACTIVE tenants `from..=to` of the default plan with their steps done,
/// one a second up to now, ids in that order (UUIDv7 layout: milliseconds,
/// then version 7 and random bits).
fn seed_sql(from: usize, to: usize) -> String {
    format!(
        "CREATE TEMPORARY TABLE seed AS
         SELECT i, created,
                (lpad(to_hex((extract(epoch FROM created) * 1000)::bigint), 12, '0')
                 || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid AS id
         FROM generate_series({from}, {to}) i,
              LATERAL (SELECT now() - make_interval(secs => {LARGE} - i) AS created,
                              md5(random()::text) AS h) x;

         INSERT INTO tenants (id, slug, display_name, admin_email, plan, plan_version, labels,
                              state, create_time, update_time)
         SELECT id, 'list-' || i, 'List ' || i, 'admin@list-' || i || '.test', 'default', 1,
                jsonb_build_object('team', 'team-' || i % 100), 'ACTIVE', created, created
         FROM seed;

         INSERT INTO tenant_steps (tenant_id, position, name, critical, max_attempts, status,
                                   attempts, start_time, finish_time)
         SELECT s.id, p.n - 1, p.step->>'name', (p.step->>'critical')::boolean,
                (p.step->>'max_attempts')::int, 'SUCCEEDED', 1, s.created, s.created
         FROM seed s, plans,
              jsonb_array_elements(plans.steps) WITH ORDINALITY p(step, n)
         WHERE plans.name = 'default';
         DROP TABLE seed;"
    )
}
