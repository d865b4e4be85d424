//! Wires the pieces together and runs them until shutdown.
//!
//! Shutdown order: health flips to NOT_SERVING, the gRPC server stops
//! accepting and drains in-flight calls, background tasks are cancelled, and
//! everything is awaited for at most `shutdown_timeout`.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::ops::Ops;
use crate::outbox::Wakeup;
use crate::{db, grpc};

/// Any startup or serving failure, for `main` to report.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Migrates the database, then serves on `listener` until `shutdown` fires.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), BoxError> {
    let applied = db::migrate(&config.database_url).await?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "applied control-plane migrations");
    }
    let pool = db::pool(&config.database_url, config.pool_size)?;
    let tracker = TaskTracker::new();
    let background = CancellationToken::new();

    let wakeup = Wakeup::new();
    wakeup.spawn_notifier(
        pool.clone(),
        config.notify_debounce,
        background.clone(),
        &tracker,
    );
    let ops = Ops::new(pool, wakeup);
    let (routes, health) = grpc::routes(ops).await?;

    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "serving gRPC");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let drained = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
            grpc::set_not_serving(&health).await;
        }
    };
    let serve = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, drained);
    tokio::pin!(serve);

    // Serve until shutdown; then give the drain `shutdown_timeout` at most.
    tokio::select! {
        served = &mut serve => served?,
        () = shutdown.cancelled() => {
            if tokio::time::timeout(config.shutdown_timeout, &mut serve).await.is_err() {
                tracing::warn!("in-flight calls did not finish within the shutdown timeout");
            }
        }
    }
    background.cancel();
    tracker.close();
    if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within the shutdown timeout");
    }
    tracing::info!("stopped");
    Ok(())
}

/// `tenantd serve`: resolves the database (starting the embedded cluster when
/// no URL is given), binds, and runs until SIGTERM or ctrl-c.
pub async fn serve(args: crate::config::ServeArgs) -> Result<(), BoxError> {
    let (database_url, embedded) = resolve_database(&args.database).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (TENANTD_LISTEN): {e}", args.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let served = run(args.resolve(database_url), listener, shutdown).await;
    if let Some(pg) = embedded {
        tracing::info!("stopping the embedded PostgreSQL");
        pg.stop().await?;
    }
    served
}

/// `tenantd migrate`.
pub async fn migrate(args: crate::config::DatabaseArgs) -> Result<(), BoxError> {
    let (database_url, embedded) = resolve_database(&args).await?;
    let migrated = db::migrate(&database_url).await;
    if let Some(pg) = embedded {
        pg.stop().await?;
    }
    let applied = migrated?;
    tracing::info!(count = applied.len(), migrations = ?applied, "migrations applied");
    Ok(())
}

/// The configured URL, or the embedded cluster's (started here).
async fn resolve_database(
    args: &crate::config::DatabaseArgs,
) -> Result<(String, Option<db::embedded::EmbeddedPostgres>), BoxError> {
    if let Some(url) = &args.database_url {
        return Ok((url.clone(), None));
    }
    let dir = args.data_dir.join("pg");
    tracing::info!(dir = %dir.display(), "no DATABASE_URL: using the embedded PostgreSQL cluster");
    let pg = db::embedded::EmbeddedPostgres::start(&dir).await?;
    tracing::info!(url = %pg.database_url(), "embedded PostgreSQL is up");
    Ok((pg.database_url(), Some(pg)))
}

async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only ctrl-c stops the server");
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    token.cancel();
}
