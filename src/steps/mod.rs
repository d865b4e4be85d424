//! Provisioning steps: one file per step, each behind the [`Step`] trait, and
//! the [`Registry`] that maps a plan's step names to them.
//!
//! A step's effect lives in one of two places, and the trait keeps them apart:
//! - [`Step::run_in_db`]: work in the tenant database (schema, role, tables,
//!   rows). When tenant data shares the control-plane database it runs inside
//!   the transaction that records the step's completion, so it happens exactly
//!   once even across crashes.
//! - [`Step::run_external`]: work outside (SMTP, RPC). It runs with no
//!   connection held, at least once, so it must be idempotent.

pub mod access;
mod activate;
mod create_schema;
mod deploy_contract;
pub mod deprovision;
pub mod dns_records;
pub mod issue_api_key;
mod mailer;
pub mod moves;
mod names;
pub mod register_oidc_client;
mod run_migrations;
mod seed_roles_and_admin;
mod send_welcome_email;
pub mod tls_certificate;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

pub use activate::Activate;
pub use create_schema::CreateSchema;
pub use deploy_contract::{CONTRACT_ORPHANED, DeployContract};
pub use mailer::{Mailer, Transport};
pub use names::{TenantNames, is_valid_role_prefix};
pub use register_oidc_client::{OidcClients, RegisterOidcClient};
pub use run_migrations::{RunMigrations, TENANT_MIGRATIONS, migrate};
pub use seed_roles_and_admin::{SeedRolesAndAdmin, hash_token};
pub use send_welcome_email::SendWelcomeEmail;
pub use webhook::WebhookCalls;

use crate::db::DbPool;
use crate::domain::WebhookStep;
use crate::soroban::deploy::Deployer;

/// What a step produced: names and ids, never secrets. Merged into the
/// tenant's outputs.
pub type Output = BTreeMap<String, String>;

/// Why an attempt failed. The message is shown to operators (step
/// `last_error`, events), so it must not carry secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    message: String,
    /// No later attempt can succeed (the other side refused the request
    /// itself): the step gives up now, whatever attempts it has left.
    pub permanent: bool,
    /// The other side asked to be left alone this long; the next attempt
    /// waits at least this, even if the backoff is shorter.
    pub retry_after: Option<Duration>,
    /// Not a failure: "not yet, look again after `retry_after`" (a
    /// confirmation, a ledger close, a free channel). The row waits without
    /// a worker and its attempt is not counted; the step's timeout bounds
    /// the whole wait, after which it is an ordinary failure.
    pub not_yet: bool,
    /// What an operator should hear about although the step goes on
    /// (recorded as STEP_WARNING events with the wait).
    pub warnings: Vec<String>,
}

impl StepError {
    /// A failure the step's retry policy handles.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
            retry_after: None,
            not_yet: false,
            warnings: Vec::new(),
        }
    }

    /// Not done yet: look again after `after`, without counting an attempt
    /// or holding a worker meanwhile (see [`StepError::not_yet`]).
    pub fn not_yet(why: impl Into<String>, after: Duration) -> Self {
        Self {
            not_yet: true,
            retry_after: Some(after),
            ..Self::new(why)
        }
    }

    /// With warnings to record (see [`StepError::warnings`]).
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    /// A failure no retry will cure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            ..Self::new(message)
        }
    }

    /// Waits at least `delay` before the next attempt.
    pub fn retry_after(mut self, delay: Option<Duration>) -> Self {
        self.retry_after = delay;
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<diesel::result::Error> for StepError {
    fn from(e: diesel::result::Error) -> Self {
        StepError::new(format!("database: {e}"))
    }
}

/// What a step knows about the tenant it works on.
#[derive(Clone)]
pub struct StepCtx {
    pub tenant_id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub admin_email: String,
    /// Attempt number of this run, from 1.
    pub attempt: i32,
    /// The tenant's schema and role.
    pub names: TenantNames,
    /// Outputs of earlier steps.
    pub outputs: BTreeMap<String, String>,
    /// The tenant database, for external steps that need a short
    /// transaction of their own (never held across the external call).
    pub tenant_db: DbPool,
    /// The name of the server `tenant_db` reaches.
    pub database_server: String,
    /// Deprovisioning drops the data instead of archiving it.
    pub purge: bool,
    /// Roles the tenant's plan adds to the standard ones.
    pub extra_roles: Vec<String>,
    /// The plan's limits (`max_users`, ...), seeded into the tenant schema.
    pub limits: BTreeMap<String, i64>,
    /// The owner the tenant's Soroban contract records (`G...`, `C...`);
    /// empty: the deployer.
    pub contract_owner: String,
}

/// One provisioning step. Every method must be idempotent.
#[async_trait]
pub trait Step: Send + Sync + 'static {
    /// The name plans use.
    fn name(&self) -> &'static str;

    /// Work outside the database; runs first, with no connection held.
    async fn run_external(&self, _ctx: &StepCtx) -> Result<Output, StepError> {
        Ok(Output::new())
    }

    /// Work in the tenant database; see the module doc for when it commits.
    async fn run_in_db(
        &self,
        _conn: &mut AsyncPgConnection,
        _ctx: &StepCtx,
    ) -> Result<Output, StepError> {
        Ok(Output::new())
    }

    /// Undoes the step's external effect. What cannot be undone (a
    /// contract stays on chain) is returned, to be recorded on the step, the
    /// tenant's outputs and the compensation's event.
    async fn compensate_external(&self, _ctx: &StepCtx) -> Result<Output, StepError> {
        Ok(Output::new())
    }

    /// Undoes the step's database effect.
    async fn compensate_in_db(
        &self,
        _conn: &mut AsyncPgConnection,
        _ctx: &StepCtx,
    ) -> Result<(), StepError> {
        Ok(())
    }

    /// Whether `run_in_db` does anything. Steps that say no may have their
    /// completion recorded together with other tenants' in one batched
    /// transaction. The default is the safe answer.
    fn database_work(&self) -> bool {
        true
    }

    /// Whether `run_external` does anything. A step that says no, right
    /// after another step succeeded, may run in that step's completion
    /// transaction (under a savepoint), saving a commit; it still gets its
    /// own events. The default is the safe answer.
    fn external_work(&self) -> bool {
        true
    }

    /// Work in the control-plane database, in the transaction that records
    /// the step's success (a step with such work must keep
    /// `database_work` true, so that its success is not batched).
    async fn run_in_control_plane(
        &self,
        _conn: &mut AsyncPgConnection,
        _ctx: &StepCtx,
    ) -> Result<(), StepError> {
        Ok(())
    }

    /// Whether the step's success commits its pipeline: once it succeeded,
    /// a later step that gives up stops the tenant (NEEDS_ATTENTION)
    /// instead of walking back (a move that switched servers).
    fn point_of_no_return(&self) -> bool {
        false
    }

    /// Whether the saga must run (and mark) this step's compensation. Steps
    /// whose effect cannot or need not be undone (an email) say no, and a
    /// retried pipeline does not run them again.
    fn compensable(&self) -> bool {
        true
    }

    /// What the step leaves behind, listed on the tenant if its
    /// compensation gives up.
    fn resources(&self, _ctx: &StepCtx) -> Vec<String> {
        Vec::new()
    }
}

/// A tenant's own name and certificate: what `dns_records`,
/// `tls_certificate` and deprovisioning reach (`None`: not configured).
#[derive(Clone, Default)]
pub struct Addresses {
    pub dns: Option<Arc<crate::dns::Dns>>,
    pub certificates: Option<Arc<tls_certificate::Certificates>>,
}

/// What the standard steps work with.
pub struct Standard {
    pub mailer: Mailer,
    pub deployer: Arc<Deployer>,
    pub oidc: Arc<OidcClients>,
    pub archives: Arc<crate::archive::Archives>,
    pub pool: DbPool,
    pub fleet: crate::db::fleet::Fleet,
    pub addresses: Addresses,
    pub api_keys: Arc<crate::api_keys::ApiKeys>,
}

/// Step names to implementations, and the webhook steps plans define.
#[derive(Clone, Default)]
pub struct Registry {
    steps: HashMap<&'static str, Arc<dyn Step>>,
    webhooks: Option<Arc<WebhookCalls>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The standard steps of the built-in plans.
    pub fn standard(s: Standard) -> Self {
        let Standard {
            mailer,
            deployer,
            oidc,
            archives,
            pool,
            fleet,
            addresses,
            api_keys,
        } = s;
        let mut registry = Self::new();
        registry.register(issue_api_key::IssueApiKey::new(
            api_keys.clone(),
            pool.clone(),
        ));
        registry.register(dns_records::DnsRecords::new(addresses.dns.clone()));
        registry.register(tls_certificate::TlsCertificate::new(
            addresses.certificates.clone(),
        ));
        registry.register(tls_certificate::TlsCertificate::renewal(
            addresses.certificates.clone(),
        ));
        registry.register(CreateSchema);
        registry.register(RunMigrations);
        registry.register(SeedRolesAndAdmin);
        registry.register(RegisterOidcClient::new(oidc.clone()));
        registry.register(DeployContract::new(deployer));
        registry.register(SendWelcomeEmail::new(
            mailer.clone(),
            api_keys,
            pool.clone(),
        ));
        registry.register(Activate);
        registry.register(deprovision::RevokeAccess::new(oidc, addresses));
        registry.register(deprovision::ArchiveSchema);
        registry.register(deprovision::ExportArchive::new(
            archives,
            pool.clone(),
            fleet.clone(),
        ));
        let mover = moves::Mover::new(pool, fleet);
        registry.register(moves::MoveFreeze(mover.clone()));
        registry.register(moves::MoveCopy(mover.clone()));
        registry.register(moves::MoveVerify(mover.clone()));
        registry.register(moves::MoveSwitch(mover.clone()));
        registry.register(moves::MoveRestoreWrites(mover.clone()));
        registry.register(moves::MoveDropSource(mover));
        registry.register(deprovision::SendDeprovisionNotice::new(mailer));
        registry
    }

    /// Adds (or replaces) a step.
    pub fn register(&mut self, step: impl Step) {
        self.steps.insert(step.name(), Arc::new(step));
    }

    /// Adds every step of `other`, replacing same-named ones.
    pub fn extend(&mut self, other: Registry) {
        self.steps.extend(other.steps);
        if other.webhooks.is_some() {
            self.webhooks = other.webhooks;
        }
    }

    /// Lets plans define webhook steps that call through `calls`.
    pub fn with_webhooks(mut self, calls: WebhookCalls) -> Self {
        self.webhooks = Some(Arc::new(calls));
        self
    }

    /// A built-in (or registered) step by name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Step>> {
        self.steps.get(name).cloned()
    }

    /// The step a tenant's step row runs: its plan's webhook if it has one,
    /// else the registered step of that name.
    pub fn resolve(&self, name: &str, webhook: Option<&WebhookStep>) -> Option<Arc<dyn Step>> {
        match webhook {
            Some(spec) => self.webhooks.as_ref().map(|calls| calls.step(name, spec)),
            None => self.get(name),
        }
    }

    /// The steps a plan may list: every registered step but those of the
    /// deprovisioning and move pipelines, by name.
    pub fn plan_steps(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .steps
            .keys()
            .copied()
            .filter(|name| !crate::domain::is_lifecycle_step(name))
            .collect();
        names.sort_unstable();
        names
    }
}
