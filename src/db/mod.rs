//! The datastore: the connection pool, migrations, row models and queries.
//!
//! Every query takes `&mut AsyncPgConnection`, never the pool, so that a use
//! case can compose several of them in one transaction.

pub mod api_keys;
pub mod certificates;
pub mod config;
pub mod drift;
pub mod embedded;
mod error;
pub mod events;
pub mod exports;
pub mod fleet;
pub mod models;
pub mod moves;
pub mod oidc;
pub mod outbox;
pub mod plans;
pub mod prepared;
pub mod schema;
pub mod schemas;
pub mod servers;
pub mod soroban;
pub mod stats;
pub mod tenants;
pub mod usage;
pub mod webhooks;

use std::time::Duration;

use diesel::Connection as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use self::error::{is_check_violation, is_unique_violation};
use crate::error::{Error, Result};

/// The control plane's migrations, embedded in the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Serialises `migrate` across replicas that start at the same time.
const MIGRATION_LOCK_KEY: i64 = 0x7465_6e61_6e74_6400; // "tenantd\0"

/// A pool of async Postgres connections.
pub type DbPool = Pool<AsyncPgConnection>;
/// A connection checked out of the pool.
pub type PooledConn = Object<AsyncPgConnection>;

/// How long a caller waits for a pooled connection, or for a new one to be
/// established, before the RPC fails with UNAVAILABLE. Short, so that a
/// database outage surfaces as a fast error instead of a hang.
pub const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the pool; connections are opened lazily. Recycling only checks
/// that a connection is not broken or inside a transaction: a `SELECT 1` per
/// checkout would add a round trip to every RPC, and a connection that died
/// meanwhile fails its first query as UNAVAILABLE, which clients retry.
pub fn pool(database_url: &str, max_size: usize) -> Result<DbPool> {
    build_pool(database_url, max_size, RecyclingMethod::Fast)
}

/// A pool whose connections are checked with a query at each checkout: for
/// a registered tenant database server, where a step's handful of queries
/// is worth the round trip, so that after that server restarts no step
/// spends an attempt on a connection from before.
pub fn verified_pool(database_url: &str, max_size: usize) -> Result<DbPool> {
    build_pool(database_url, max_size, RecyclingMethod::Verified)
}

fn build_pool(
    database_url: &str,
    max_size: usize,
    recycling: RecyclingMethod<AsyncPgConnection>,
) -> Result<DbPool> {
    let mut config = ManagerConfig::default();
    config.recycling_method = recycling;
    config.custom_setup = Box::new(|url| Box::pin(establish_writable(url.to_owned())));
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .map_err(|e| Error::Internal(format!("building the connection pool: {e}")))
}

/// A new connection, refused when it lands on a server in recovery (a
/// standby, or a demoted primary that still answers): with several hosts in
/// the URL, libpq's `target_session_attrs=read-write` picks the primary,
/// and without it nothing tenantd does could run there. The pool then
/// reports UNAVAILABLE and the next checkout tries again.
async fn establish_writable(url: String) -> diesel::ConnectionResult<AsyncPgConnection> {
    use diesel_async::AsyncConnection;
    let mut conn = AsyncPgConnection::establish(&url).await?;
    let read_only = in_recovery(&mut conn)
        .await
        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    if read_only {
        return Err(diesel::ConnectionError::BadConnection(
            "the database server is read-only (in recovery), not the primary".into(),
        ));
    }
    Ok(conn)
}

/// Whether the server is in recovery: a standby, read-only.
async fn in_recovery(conn: &mut AsyncPgConnection) -> diesel::QueryResult<bool> {
    #[derive(diesel::QueryableByName)]
    struct Recovery {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        in_recovery: bool,
    }
    let server: Recovery = diesel::sql_query("SELECT pg_is_in_recovery() AS in_recovery")
        .get_result(conn)
        .await?;
    Ok(server.in_recovery)
}

/// Checks a connection out of the pool; failures are UNAVAILABLE.
pub async fn conn(pool: &DbPool) -> Result<PooledConn> {
    let started = std::time::Instant::now();
    let conn = pool.get().await;
    crate::telemetry::metrics::pool_wait(started.elapsed());
    conn.map_err(|e| Error::Unavailable(e.to_string()))
}

/// Applies pending migrations, holding an advisory lock so that replicas
/// starting together do not race.
pub async fn migrate(database_url: &str) -> Result<Vec<String>> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
        let mut conn =
            <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                .map_err(|e| Error::Unavailable(e.to_string()))?;
        conn.transaction(|conn| {
            diesel::RunQueryDsl::execute(
                diesel::sql_query(format!(
                    "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                )),
                conn,
            )?;
            let applied = conn
                .run_pending_migrations(MIGRATIONS)
                .map_err(|e| diesel::result::Error::QueryBuilderError(e.to_string().into()))?;
            Ok::<_, diesel::result::Error>(applied.iter().map(ToString::to_string).collect())
        })
        .map_err(Error::from)
    })
    .await
    .map_err(|e| Error::Internal(format!("migration task: {e}")))?
}

/// For health checks: the server answers and takes writes. A server in
/// recovery (a standby, or a demoted primary that still answers) is
/// UNAVAILABLE: nothing tenantd does can run there.
pub async fn ping(conn: &mut AsyncPgConnection) -> Result<()> {
    if in_recovery(conn).await? {
        return Err(Error::Unavailable(
            "the database server is read-only (in recovery): no primary".into(),
        ));
    }
    Ok(())
}
