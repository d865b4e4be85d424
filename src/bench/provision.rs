//! `provision_tps` against `raw_provision_tps`: tenants per second from the
//! first CreateTenant to the last ACTIVE, on a plan without contracts and
//! with its email sent to a local SMTP listener, next to the same schema,
//! migrations and seed rows done in one plain transaction per tenant. The
//! gap is what the pipeline (outbox, dispatcher, events) costs.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use super::{BenchServer, NO_CONTRACT_PLAN, Scratch, add_no_contract_plan, count, request, smtp};
use crate::server::BoxError;
use crate::steps::{
    CreateSchema, Registry, RunMigrations, SeedRolesAndAdmin, Step, StepCtx, StepError, TenantNames,
};

/// Tenants per second to ACTIVE on the no-contract plan, `slots` clients
/// and dispatcher slots.
pub(super) async fn provision_throughput(
    scratch: &Scratch,
    slots: usize,
    tenants: usize,
) -> Result<f64, BoxError> {
    let (server, _smtp) = provisioning_server(scratch, slots).await?;
    // The database steps and the email, as raw_provision_tps does them.
    add_no_contract_plan(&server).await?;
    let tps = provision_load(&server, slots, tenants, NO_CONTRACT_PLAN).await?;
    server.stop().await;
    Ok(tps)
}

/// A server with `slots` dispatcher slots whose emails go to a local SMTP
/// listener, which must live as long as it.
pub(super) async fn provisioning_server(
    scratch: &Scratch,
    slots: usize,
) -> Result<(BenchServer, smtp::SmtpSink), BoxError> {
    let smtp = smtp::SmtpSink::start().await?;
    let url = smtp.url();
    let server = BenchServer::start(
        scratch,
        |cfg| {
            cfg.smtp_url = Some(url);
            cfg.concurrency = slots;
        },
        Registry::new(),
    )
    .await?;
    Ok((server, smtp))
}

/// Tenants per second from the first CreateTenant to the last ACTIVE.
pub(super) async fn provision_load(
    server: &BenchServer,
    clients: usize,
    tenants: usize,
    plan: &'static str,
) -> Result<f64, BoxError> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let mut client = server.client().await?;
        tasks.push(tokio::spawn(async move {
            for i in (worker..tenants).step_by(clients) {
                let mut request = request(format!("p-{i}"));
                if let Some(tenant) = request.tenant.as_mut() {
                    tenant.plan = plan.to_owned();
                }
                client.create_tenant(request).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut conn = AsyncPgConnection::establish(&server.url).await?;
    loop {
        let active = count(
            &mut conn,
            "SELECT count(*) AS n FROM tenants WHERE state = 'ACTIVE'",
        )
        .await?;
        if active as usize >= tenants {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(tenants as f64 / started.elapsed().as_secs_f64())
}

/// The provisioning DDL and seed rows of the database steps, one plain
/// transaction per tenant, `connections` at a time.
pub(super) async fn raw_provision(
    url: &str,
    role_prefix: &str,
    connections: usize,
    tenants: usize,
) -> Result<f64, BoxError> {
    let pool = crate::db::pool(url, 1)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let mut conn = AsyncPgConnection::establish(url).await?;
        let (pool, prefix) = (pool.clone(), role_prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in (worker..tenants).step_by(connections) {
                let slug = format!("raw-{i}");
                let ctx = StepCtx {
                    tenant_id: Uuid::now_v7(),
                    names: TenantNames::derive(&slug, &format!("{prefix}r"))
                        .map_err(StepError::new)?,
                    display_name: format!("Bench {slug}"),
                    admin_email: format!("admin@{slug}.test"),
                    slug,
                    attempt: 1,
                    outputs: Default::default(),
                    tenant_db: pool.clone(),
                    database_server: crate::db::fleet::DEFAULT_SERVER.into(),
                    purge: false,
                    extra_roles: Vec::new(),
                    limits: Default::default(),
                    contract_owner: String::new(),
                };
                conn.transaction(async |conn| {
                    CreateSchema.run_in_db(conn, &ctx).await?;
                    RunMigrations.run_in_db(conn, &ctx).await?;
                    SeedRolesAndAdmin.run_in_db(conn, &ctx).await
                })
                .await?;
            }
            Ok::<_, StepError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(tenants as f64 / started.elapsed().as_secs_f64())
}
