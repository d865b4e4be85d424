//! Use cases. Each owns its transaction and writes state, event and outbox
//! row together; wake-ups are sent only after commit.

mod api_keys;
mod certificates;
mod config;
mod credentials;
mod drift;
mod jobs;
mod lifecycle;
mod moves;
mod placement;
mod plans;
mod quotas;
mod resolve;
mod restore;
mod servers;
mod stats;
mod teardown;
mod tenants;
mod usage;
mod usage_samples;
mod watch;
mod webhooks;

pub use crate::api_keys::ApiKeys;
pub use api_keys::Verified;
pub use certificates::Certificate;
pub use credentials::Credentials;
pub use drift::Reconciled;
pub use jobs::run_exclusive;
pub use plans::{PlanPage, plan_etag};
pub use resolve::ResolveAction;
pub use servers::{DatabaseServer, SERVER_MUTABLE, ServerInput};
pub use teardown::{DEFAULT_GRACE_PERIOD_SECS, DeprovisionMode, MAX_GRACE_PERIOD_SECS};
pub use tenants::ListPage;
pub use usage::{QueryInput, UsageSettings};
pub use webhooks::{EndpointField, EndpointInput, Page, WebhookSettings};

use tokio_util::sync::CancellationToken;

use crate::db::DbPool;
use crate::outbox::Wakeup;
use crate::stream::EventHub;
use crate::telemetry::metrics::{DatabaseSample, Sample};

/// Where tenant schemas and roles live.
#[derive(Clone)]
pub struct TenantDb {
    /// The servers of tenants' data. On a server that is the control-plane
    /// database, tenant DDL commits in the transaction of the state change.
    pub fleet: crate::db::fleet::Fleet,
    pub role_prefix: String,
}

/// The application: what every transport calls into.
#[derive(Clone)]
pub struct Ops {
    pool: DbPool,
    wakeup: Wakeup,
    hub: EventHub,
    tenant_db: TenantDb,
    /// Ends streams at shutdown.
    shutdown: CancellationToken,
    /// Status streams this process serves at most: one permit each, held
    /// by the stream's watcher until it ends.
    watch_slots: std::sync::Arc<tokio::sync::Semaphore>,
    max_watchers: usize,
    /// Steps a plan may list (the registry's provisioning steps).
    plan_steps: std::sync::Arc<[&'static str]>,
    /// The Soroban deployer, for the drift check of tenants' contracts.
    deployer: Option<std::sync::Arc<crate::soroban::deploy::Deployer>>,
    /// Exports of archived tenants; `None` where none are made (tests of
    /// other parts).
    archives: Option<std::sync::Arc<crate::archive::Archives>>,
    /// The steps themselves, for what only they know (whether a step's
    /// effect is undone by its compensation).
    steps: crate::steps::Registry,
    /// The secret key and address rule of webhook endpoints.
    webhooks: WebhookSettings,
    /// Usage metering settings (the late window).
    usage: UsageSettings,
    /// Usage figures CheckQuota reads from memory, and thresholds announced.
    quotas: std::sync::Arc<quotas::QuotaMemory>,
    /// Current plan versions CreateTenant has read. A version is immutable,
    /// and the insert checks it is still the current one, so an entry that
    /// another replica made stale is noticed and read again.
    plans: std::sync::Arc<
        std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<crate::domain::Plan>>>,
    >,
    /// API keys' settings and VerifyApiKey's memory.
    api_keys: std::sync::Arc<ApiKeys>,
}

impl Ops {
    pub fn new(
        pool: DbPool,
        wakeup: Wakeup,
        hub: EventHub,
        tenant_db: TenantDb,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            pool,
            wakeup,
            hub,
            tenant_db,
            shutdown,
            watch_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(
                tokio::sync::Semaphore::MAX_PERMITS,
            )),
            max_watchers: tokio::sync::Semaphore::MAX_PERMITS,
            plan_steps: std::sync::Arc::from(Vec::new()),
            steps: crate::steps::Registry::new(),
            archives: None,
            deployer: None,
            webhooks: WebhookSettings {
                secret_key: None,
                allow_private: false,
            },
            usage: UsageSettings::default(),
            quotas: std::sync::Arc::default(),
            plans: std::sync::Arc::default(),
            api_keys: std::sync::Arc::new(ApiKeys::new(
                crate::config::api_keys::ApiKeyConfig::default(),
                None,
            )),
        }
    }

    /// API keys made and checked with these settings (the secret key
    /// derives their pepper).
    pub fn with_api_keys(mut self, keys: std::sync::Arc<ApiKeys>) -> Self {
        self.api_keys = keys;
        self
    }

    /// The plan's current version, from the cache unless `reload`.
    async fn current_plan(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        name: &str,
        reload: bool,
    ) -> crate::error::Result<Option<std::sync::Arc<crate::domain::Plan>>> {
        if !reload && let Some(plan) = self.plans.read().ok().and_then(|p| p.get(name).cloned()) {
            return Ok(Some(plan));
        }
        let plan = crate::db::plans::find(conn, name)
            .await?
            .map(std::sync::Arc::new);
        if let Ok(mut cache) = self.plans.write() {
            match &plan {
                Some(plan) => cache.insert(name.to_owned(), plan.clone()),
                None => cache.remove(name),
            };
        }
        Ok(plan)
    }

    /// Drops a plan from the cache after this process changed it.
    fn forget_plan(&self, name: &str) {
        if let Ok(mut cache) = self.plans.write() {
            cache.remove(name);
        }
        self.quotas.forget_limits();
    }

    /// Webhook endpoints' secret key and address rule.
    pub fn with_webhooks(mut self, settings: WebhookSettings) -> Self {
        self.webhooks = settings;
        self
    }

    /// The steps plans may list.
    pub fn with_usage(mut self, settings: UsageSettings) -> Self {
        self.usage = settings;
        self
    }

    /// The deployer whose contracts the reconciler checks.
    pub fn with_deployer(
        mut self,
        deployer: std::sync::Arc<crate::soroban::deploy::Deployer>,
    ) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// Where archived tenants' exports are, for the purge and restores.
    pub fn with_archives(mut self, archives: std::sync::Arc<crate::archive::Archives>) -> Self {
        self.archives = Some(archives);
        self
    }

    /// The steps this server runs; plans may list its provisioning steps.
    pub fn with_steps(mut self, registry: crate::steps::Registry) -> Self {
        self.plan_steps = registry.plan_steps().into();
        self.steps = registry;
        self
    }

    /// Caps the status streams this process serves.
    pub fn with_max_watchers(mut self, max: usize) -> Self {
        self.max_watchers = max.min(tokio::sync::Semaphore::MAX_PERMITS);
        self.watch_slots = std::sync::Arc::new(tokio::sync::Semaphore::new(self.max_watchers));
        self
    }

    /// Whether the control-plane database answers a `SELECT 1`.
    pub async fn database_ok(&self) -> bool {
        match crate::db::conn(&self.pool).await {
            Ok(mut conn) => crate::db::ping(&mut conn).await.is_ok(),
            Err(_) => false,
        }
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// What `/metrics` reads at scrape time; the database part is `None`
    /// if it does not answer within `timeout`.
    pub async fn metrics_sample(&self, timeout: std::time::Duration) -> Sample {
        let database = tokio::time::timeout(timeout, self.database_sample())
            .await
            .ok()
            .and_then(|sampled| {
                sampled
                    .map_err(|e| tracing::debug!(error = %e, "metrics: database not sampled"))
                    .ok()
            });
        Sample {
            database,
            watchers: self.hub.watchers(),
            pool: self.pool.status(),
        }
    }

    async fn database_sample(&self) -> crate::error::Result<DatabaseSample> {
        let mut conn = crate::db::conn(&self.pool).await?;
        let backlog = crate::db::outbox::backlog(&mut conn).await?;
        Ok(DatabaseSample {
            tenants_by_state: crate::db::stats::tenants_by_state(
                &mut conn,
                <crate::domain::TenantState as strum::VariantArray>::VARIANTS,
            )
            .await?,
            outbox_rows: backlog.rows,
            outbox_due: backlog.due,
            oldest_due_age: std::time::Duration::from_secs_f64(backlog.oldest_due_secs.max(0.0)),
            webhook_pending: crate::db::webhooks::pending_count(&mut conn).await?,
        })
    }
}

/// A ListPlans or ListEndpoints page token: the last name of the previous
/// page, base64url; `valid` is the name rule it must still meet.
fn decode_name_token(
    token: &str,
    valid: impl Fn(&str) -> bool,
) -> crate::error::Result<Option<String>> {
    use base64::Engine as _;
    if token.is_empty() {
        return Ok(None);
    }
    let invalid =
        || crate::error::Error::invalid("page_token", "is not a token this server issued");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let name = String::from_utf8(bytes).map_err(|_| invalid())?;
    if !valid(&name) {
        return Err(invalid());
    }
    Ok(Some(name))
}
