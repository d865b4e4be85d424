//! Wires the pieces together and runs them until shutdown.
//!
//! Shutdown order: health flips to NOT_SERVING, the gRPC server stops
//! accepting and drains in-flight calls, background tasks are cancelled, and
//! everything is awaited for at most `shutdown_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::db::DbPool;
use crate::ops::{Ops, TenantDb};
use crate::outbox::dispatcher::Dispatcher;
use crate::outbox::{Backoff, DispatcherConfig, Hooks, Wakeup, listener};
use crate::steps::tls_certificate::Certificates;
use crate::steps::{Addresses, Mailer, OidcClients, Registry, WebhookCalls, is_valid_role_prefix};
use crate::stream::EventHub;
use crate::{db, grpc, soroban};

/// Any startup or serving failure, for `main` to report.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Migrates the database, then serves on `listener` until `shutdown` fires.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), BoxError> {
    run_with(config, listener, shutdown, Registry::new()).await
}

/// [`run`] with extra steps registered beside the standard ones.
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    extra_steps: Registry,
) -> Result<(), BoxError> {
    serve_all(config, listener, shutdown, extra_steps, Hooks::from_env()).await
}

/// [`run_with`], with a test's hooks in the dispatcher.
#[cfg(feature = "test-hooks")]
pub async fn run_with_hooks(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    extra_steps: Registry,
    hooks: Hooks,
) -> Result<(), BoxError> {
    serve_all(config, listener, shutdown, extra_steps, hooks).await
}

async fn serve_all(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    extra_steps: Registry,
    hooks: Hooks,
) -> Result<(), BoxError> {
    if !is_valid_role_prefix(&config.tenant_role_prefix) {
        return Err(format!(
            "TENANTD_TENANT_ROLE_PREFIX {:?} must be 1 to 20 characters of [a-z0-9_], starting with a letter",
            config.tenant_role_prefix
        )
        .into());
    }
    let applied = db::migrate(&config.database_url).await?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "applied control-plane migrations");
    }
    let pool = db::pool(&config.database_url, config.pool_size)?;
    if config.webhooks.secret_key.is_none() {
        let mut conn = db::conn(&pool).await?;
        let endpoints = db::webhooks::endpoint_count(&mut conn).await?;
        if endpoints > 0 {
            return Err(format!(
                "{endpoints} webhook endpoint(s) exist, and their secrets need TENANTD_SECRET_KEY, which is not set"
            )
            .into());
        }
    }
    let tenant_pool = match &config.tenant_database_url {
        Some(url) => db::pool(url, config.pool_size)?,
        None => pool.clone(),
    };
    let fleet = db::fleet::Fleet::new(
        pool.clone(),
        tenant_pool,
        config
            .tenant_database_url
            .as_deref()
            .unwrap_or(&config.database_url),
        config.tenant_database_url.is_none(),
        config.webhooks.secret_key.clone(),
        config.pool_size,
    )?;
    // The local Soroban network, if one is started, lives as long as this.
    let (deployer, _local_network) =
        soroban::setup::deployer(&config.soroban, pool.clone(), shutdown.clone()).await?;
    let outbound =
        crate::outbound::Outbound::new(config.webhooks.allow_private, config.webhooks.timeout)?;
    let webhook_calls = WebhookCalls::new(
        pool.clone(),
        config.webhooks.secret_key.clone(),
        outbound.clone(),
    );
    let identity = crate::oidc::IdentityProvider::new(config.oidc.clone(), config.step_timeout)?;
    let oidc_clients = Arc::new(OidcClients::new(
        pool.clone(),
        config.webhooks.secret_key.clone(),
        Arc::new(identity),
    ));
    let archives = Arc::new(crate::archive::Archives::new(config.archive_dir.clone()));
    let api_keys = Arc::new(crate::api_keys::ApiKeys::new(
        config.api_keys.clone(),
        config.webhooks.secret_key.clone(),
    ));
    let mut registry = Registry::standard(crate::steps::Standard {
        mailer: mailer(&config).await?,
        deployer: deployer.clone(),
        oidc: oidc_clients,
        archives: archives.clone(),
        pool: pool.clone(),
        fleet: fleet.clone(),
        addresses: addresses(&config, &pool)?,
        api_keys: api_keys.clone(),
    })
    .with_webhooks(webhook_calls);
    registry.extend(extra_steps);

    let tracker = TaskTracker::new();
    let wakeup = Wakeup::new();
    wakeup.spawn_notifier(
        pool.clone(),
        config.notify_debounce,
        shutdown.clone(),
        &tracker,
    );
    // One LISTEN connection serves the dispatcher and the event hub.
    let listening = listener::spawn(
        config.database_url.clone(),
        wakeup.clone(),
        shutdown.clone(),
        &tracker,
    );
    let hub = EventHub::start(pool.clone(), wakeup.clone(), shutdown.clone(), &tracker).await?;
    if config.concurrency > 0 {
        let dispatcher_config = DispatcherConfig {
            owner: owner_id(),
            concurrency: config.concurrency,
            lease: config.lease,
            poll_interval: config.poll_interval,
            backoff: Backoff {
                base: config.retry_base,
                cap: config.retry_cap,
            },
            step_timeout: config.step_timeout,
            role_prefix: config.tenant_role_prefix.clone(),
            shutdown_grace: config.shutdown_timeout / 2,
            hooks,
        };
        let dispatcher = Dispatcher {
            config: dispatcher_config,
            pool: pool.clone(),
            fleet: fleet.clone(),
            registry: registry.clone(),
            wakeup: wakeup.clone(),
            shutdown: shutdown.clone(),
            completer: None,
        };
        dispatcher.spawn(listening, &tracker);
    } else {
        tracing::info!("concurrency 0: serving the API only, no dispatcher");
    }
    fleet.spawn_sweeper(shutdown.clone(), &tracker);
    let tenant_db = TenantDb {
        fleet,
        role_prefix: config.tenant_role_prefix.clone(),
    };
    if let Some(key) = &config.webhooks.secret_key {
        crate::webhooks::spawn(
            crate::webhooks::SenderConfig {
                owner: owner_id(),
                concurrency: config.webhooks.concurrency,
                timeout: config.webhooks.timeout,
                poll_interval: config.poll_interval,
                schedule: config.webhooks.schedule.clone(),
            },
            pool.clone(),
            key.clone(),
            outbound,
            wakeup.clone(),
            shutdown.clone(),
            &tracker,
        );
    }
    let ops = Ops::new(pool, wakeup, hub, tenant_db, shutdown.clone())
        .with_max_watchers(config.max_watchers)
        .with_steps(registry.clone())
        .with_archives(archives)
        .with_deployer(deployer)
        .with_webhooks(crate::ops::WebhookSettings {
            secret_key: config.webhooks.secret_key.clone(),
            allow_private: config.webhooks.allow_private,
        })
        .with_usage(crate::ops::UsageSettings {
            late_window: config.usage_late_window,
        })
        .with_api_keys(api_keys.clone());
    ops.start_api_key_tasks(shutdown.clone(), &tracker);
    let (routes, health) =
        grpc::routes(ops.clone(), config.auth.clone(), config.rate_limit).await?;

    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr, ops.clone(), shutdown.clone(), &tracker).await?;
    }
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "serving gRPC");
    tracker.spawn(watch_database(
        ops.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let scheduler = crate::scheduler::start(ops.clone(), &config.schedules)
        .await
        .map_err(|e| format!("starting the scheduled jobs (check the *_SCHEDULE settings): {e}"))?;
    if config.demo {
        let (demo, stop) = (crate::demo::run(ops, addr.to_string()), shutdown.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = demo => {}
                () = stop.cancelled() => {}
            }
        });
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let drained = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!(
                "shutting down: NOT_SERVING, no new claims, draining in-flight calls and steps"
            );
            grpc::set_not_serving(&health).await;
        }
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls_config(tls).await?)?;
        tracing::info!(mutual = tls.client_ca_file.is_some(), "serving TLS");
    }
    let serve = builder
        .layer(grpc::MeteredLayer)
        // One span per RPC, named by its method, around everything it logs.
        .trace_fn(|request| {
            let method = request.uri().path();
            tracing::info_span!("rpc", method, otel.name = method, otel.kind = "server")
        })
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, drained);
    tokio::pin!(serve);

    // Serve until shutdown; then give the drain `shutdown_timeout` at most.
    let deadline = tokio::select! {
        served = &mut serve => { served?; tokio::time::Instant::now() + config.shutdown_timeout }
        () = shutdown.cancelled() => {
            let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
            if tokio::time::timeout_at(deadline, &mut serve).await.is_err() {
                tracing::warn!("in-flight calls did not finish within the shutdown timeout");
            }
            deadline
        }
    };
    shutdown.cancel();
    if let Err(e) = scheduler.shutdown().await {
        tracing::warn!(error = %e, "stopping the scheduled jobs");
    }
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "steps still running at the shutdown timeout; their leases will expire and another replica resumes them"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often health checks the database.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// A database that does not answer within this is reported down.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps the health service in step with the database: NOT_SERVING while it
/// does not answer, SERVING again when it does (until shutdown flips it).
async fn watch_database(
    ops: Ops,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
        let ok = tokio::time::timeout(HEALTH_TIMEOUT, ops.database_ok())
            .await
            .unwrap_or(false);
        if ok != serving && !shutdown.is_cancelled() {
            serving = ok;
            if ok {
                tracing::info!("database reachable again: SERVING");
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
            }
            grpc::set_serving(&health, ok).await;
        }
    }
}

/// A scrape reads the database for at most this long.
const SCRAPE_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves Prometheus metrics on `addr` (GET /metrics) until shutdown.
async fn serve_metrics(
    addr: SocketAddr,
    ops: Ops,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), BoxError> {
    let handle = crate::telemetry::metrics::handle();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (TENANTD_METRICS_LISTEN): {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving Prometheus metrics on /metrics");
    let scrape = move || {
        let (ops, handle) = (ops.clone(), handle.clone());
        async move {
            let sample = ops.metrics_sample(SCRAPE_DB_TIMEOUT).await;
            crate::telemetry::metrics::record_sample(&sample);
            handle.run_upkeep();
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

/// The server's TLS identity and, for mutual TLS, the client CAs.
async fn tls_config(
    tls: &crate::config::Tls,
) -> Result<tonic::transport::ServerTlsConfig, BoxError> {
    let read = |path: &std::path::Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))
        }
    };
    let identity = tonic::transport::Identity::from_pem(
        read(&tls.cert_file).await?,
        read(&tls.key_file).await?,
    );
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(ca).await?));
    }
    Ok(config)
}

/// SMTP when configured, else `.eml` files in the mail folder.
async fn mailer(config: &Config) -> Result<Mailer, BoxError> {
    let from = config.mail_from.parse().map_err(|e| {
        format!(
            "TENANTD_MAIL_FROM {:?} is not a mailbox: {e}",
            config.mail_from
        )
    })?;
    match &config.smtp_url {
        Some(url) => Ok(Mailer::smtp(url, from, config.invitation_url.clone())?),
        None => {
            tokio::fs::create_dir_all(&config.mail_dir)
                .await
                .map_err(|e| {
                    format!(
                        "cannot create mail folder {}: {e}",
                        config.mail_dir.display()
                    )
                })?;
            tracing::info!(dir = %config.mail_dir.display(), "no TENANTD_SMTP_URL: welcome emails are written as .eml files");
            Ok(Mailer::files(
                config.mail_dir.clone(),
                from,
                config.invitation_url.clone(),
            ))
        }
    }
}

/// The DNS server and the certificate authority of tenants' own names, as
/// configured.
fn addresses(config: &Config, pool: &DbPool) -> Result<Addresses, BoxError> {
    let dns = config
        .dns
        .as_ref()
        .map(crate::dns::Dns::new)
        .transpose()?
        .map(Arc::new);
    let certificates = match (&config.acme, &dns) {
        (Some(acme), Some(dns)) => Some(Arc::new(Certificates::new(
            crate::acme::Acme::new(
                acme.clone(),
                pool.clone(),
                config.webhooks.secret_key.clone(),
            ),
            dns.clone(),
            pool.clone(),
            config.schedules.renew_before,
        ))),
        (Some(_), None) => {
            return Err(
                "--acme-directory-url needs --dns-server: certificates are validated by DNS-01"
                    .into(),
            );
        }
        (None, _) => None,
    };
    Ok(Addresses { dns, certificates })
}

/// This process in leases: host, pid and a random suffix (pids repeat
/// across restarts in containers).
fn owner_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tenantd".to_owned());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// `tenantd serve`: resolves the database (starting the embedded cluster when
/// no URL is given), binds, and runs until SIGTERM or ctrl-c.
pub async fn serve(args: crate::config::ServeArgs) -> Result<(), BoxError> {
    let verifier = args.auth.verifier()?;
    let oidc = args.oidc.resolve()?;
    let dns = args.dns.resolve()?;
    let acme = args.acme.resolve()?;
    if verifier.is_none() {
        if args.database.database_url.is_some() && !args.insecure_no_auth {
            return Err(
                "no authentication configured: set TENANTD_AUTH_HS256_SECRET or \
                        TENANTD_AUTH_PUBLIC_KEY_FILE, or pass --insecure-no-auth"
                    .into(),
            );
        }
        tracing::warn!("AUTHENTICATION IS OFF: every caller may create, change and delete tenants");
    }
    let (database_url, embedded) = resolve_database(&args.database).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (TENANTD_LISTEN): {e}", args.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let mut config = args.resolve(database_url);
    config.auth = verifier;
    config.oidc = oidc;
    config.dns = dns;
    config.acme = acme;
    config.api_keys = args.api_keys.resolve()?;
    config.webhooks.secret_key = match (&args.webhooks.secret_key, &embedded) {
        (Some(text), _) => Some(std::sync::Arc::new(crate::secrets::SecretKey::from_base64(
            &text.clone().into(),
        )?)),
        (None, Some(_)) => Some(std::sync::Arc::new(
            crate::secrets::SecretKey::load_or_create(&args.database.data_dir.join("secret.key"))?,
        )),
        (None, None) => None,
    };
    if embedded.is_some() {
        // The embedded default calls the developer's own services.
        config.webhooks.allow_private = true;
    }
    let served = run(config, listener, shutdown).await;
    if let Some(pg) = embedded {
        tracing::info!("stopping the embedded PostgreSQL");
        pg.stop().await?;
    }
    served
}

/// `tenantd token`: prints a bearer token.
pub fn token(args: crate::config::TokenArgs) -> Result<(), BoxError> {
    let secret = args
        .auth
        .auth_hs256_secret
        .as_deref()
        .ok_or("tenantd token signs with TENANTD_AUTH_HS256_SECRET, which is not set")?;
    let scopes = crate::auth::parse_scopes(&args.scopes)?;
    let token = crate::auth::mint_hs256_for(
        secret.as_bytes(),
        &args.subject,
        &scopes,
        args.ttl,
        args.auth.auth_issuer.as_deref(),
        args.auth.auth_audience.as_deref(),
        args.tenant_id,
    )?;
    println!("{token}");
    Ok(())
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
