//! `tenantd bench contracts`: Soroban deployments through channel accounts
//! on a local network with one-second ledgers. `contract_deploys_per_sec`
//! for each channel count, from the first CreateTenant to the last ACTIVE
//! of a plan that only deploys (the code uploaded before the clock starts),
//! against its physical limit: one transaction per channel per ledger.
//! `wake_p50_ms_during_deploys`: the start of another tenant's first step
//! after its CreateTenant, while `--queued` deployments wait for channels,
//! next to the same figure on an idle server (`wake_p50_ms`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use ed25519_dalek::SigningKey;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{BenchServer, NO_CONTRACT_PLAN, Scratch, add_no_contract_plan, count, request};
use crate::config::ContractsArgs;
use crate::server::BoxError;
use crate::soroban::localnet::{LocalNet, LocalNetConfig};
use crate::soroban::{SecretKey, deploy::generated_channels, tx};
use crate::steps::Registry;

/// The ledger time the figures are defined for.
const LEDGER_INTERVAL: Duration = Duration::from_secs(1);
/// A plan of one step: the deployment.
const CONTRACT_ONLY_PLAN: &str = "bench-contract-only";
/// Dispatcher slots; looks hold one for milliseconds.
const SLOTS: usize = 8;
/// How long a run may take before the figure gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(900);

#[derive(Debug, Serialize)]
pub struct ContractsReport {
    /// Channel count -> deployments per second.
    pub contract_deploys_per_sec: Vec<(usize, f64)>,
    pub wake_p50_ms: f64,
    pub wake_p50_ms_during_deploys: f64,
    /// Channels used while the wake-up was sampled during deployments.
    pub wake_channels: usize,
}

impl ContractsReport {
    /// The figures with their limits and targets, for a person to read.
    pub fn table(&self) -> String {
        use super::targets::{DEPLOYS_PER_CHANNEL_PER_SEC, WAKE_DURING_DEPLOYS_VS_IDLE};
        let mut out = String::new();
        for (channels, rate) in &self.contract_deploys_per_sec {
            let per_channel = rate / *channels as f64;
            out.push_str(&format!(
                "contracts.contract_deploys_per_sec[{channels} channels] {rate:.2}, limit {channels}.00 (one per channel per 1 s ledger), per channel {per_channel:.2} (target {DEPLOYS_PER_CHANNEL_PER_SEC}: {})\n",
                met(DEPLOYS_PER_CHANNEL_PER_SEC.met(per_channel))
            ));
        }
        let ratio = self.wake_p50_ms_during_deploys / self.wake_p50_ms;
        out.push_str(&format!(
            "contracts.wake_p50_ms_during_deploys {:.2} ({} channels), wake_p50_ms {:.2}, ratio {ratio:.2} (target {WAKE_DURING_DEPLOYS_VS_IDLE}: {})\n",
            self.wake_p50_ms_during_deploys,
            self.wake_channels,
            self.wake_p50_ms,
            met(WAKE_DURING_DEPLOYS_VS_IDLE.met(ratio))
        ));
        out
    }
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "not met" }
}

pub(super) async fn measure(
    scratch: &Scratch,
    args: &ContractsArgs,
) -> Result<ContractsReport, BoxError> {
    let mut rates = Vec::new();
    for &channels in &args.channels {
        let tenants = args.ledgers * channels;
        eprintln!("contract_deploys_per_sec: {tenants} deployments through {channels} channel(s)");
        let run = Run::start(scratch, channels, args.poll_ms).await?;
        let rate = run.deploy_rate(tenants).await;
        run.stop().await;
        rates.push((channels, rate?));
    }
    eprintln!(
        "wake_p50_ms: {} creates on an idle server",
        args.wake_samples
    );
    let (wake_p50_ms, _) = super::wake::wake_latency(scratch, args.wake_samples).await?;
    let wake_channels = args.channels.iter().copied().max().unwrap_or(1);
    eprintln!(
        "wake_p50_ms_during_deploys: {} creates while {} deployments queue for {wake_channels} channel(s)",
        args.wake_samples, args.queued
    );
    let run = Run::start(scratch, wake_channels, args.poll_ms).await?;
    let during = run.wake_during(args.queued, args.wake_samples).await;
    run.stop().await;
    Ok(ContractsReport {
        contract_deploys_per_sec: rates,
        wake_p50_ms,
        wake_p50_ms_during_deploys: during?,
        wake_channels,
    })
}

/// A local network with one-second ledgers and a server deploying to it
/// through `channels` generated channels, its code already uploaded.
struct Run {
    server: BenchServer,
    _network: LocalNet,
    stop_network: CancellationToken,
}

impl Run {
    async fn start(scratch: &Scratch, channels: usize, poll_ms: u64) -> Result<Self, BoxError> {
        let deployer = SecretKey::from_signing_key(SigningKey::from_bytes(&rand::random()));
        let stop_network = CancellationToken::new();
        let network = LocalNet::start(
            LocalNetConfig {
                network_passphrase: crate::soroban::setup::LOCAL_NETWORK_PASSPHRASE.to_owned(),
                ledger_interval: LEDGER_INTERVAL,
                accounts: vec![(deployer.public_key(), 1_000_000_000_000)],
                state_file: None,
            },
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            stop_network.clone(),
        )
        .await?;
        let secret = format!(
            "{}",
            stellar_strkey::ed25519::PrivateKey(deployer.signing_key().to_bytes()).as_unredacted()
        );
        let url = network.url();
        let server = BenchServer::start(
            scratch,
            |cfg| {
                cfg.concurrency = SLOTS;
                let soroban = &mut cfg.soroban;
                soroban.soroban_rpc_url = Some(url);
                soroban.soroban_network_passphrase =
                    Some(crate::soroban::setup::LOCAL_NETWORK_PASSPHRASE.to_owned());
                soroban.soroban_deployer_secret = Some(secret);
                soroban.soroban_poll_ms = poll_ms;
                soroban.soroban_channels = channels;
            },
            Registry::new(),
        )
        .await?;
        AsyncPgConnection::establish(&server.url)
            .await?
            .batch_execute(&format!(
                "INSERT INTO plans (name, steps) VALUES ('{CONTRACT_ONLY_PLAN}',
                 '[{{\"name\": \"deploy_contract\", \"critical\": true, \"max_attempts\": 5}}]')"
            ))
            .await?;
        add_no_contract_plan(&server).await?;
        let run = Run {
            server,
            _network: network.clone(),
            stop_network,
        };
        // The channels exist, and the code is on the ledger, before any
        // figure is timed.
        for channel in generated_channels(&deployer, channels) {
            let key = tx::account_key(&channel.public_key());
            let deadline = Instant::now() + RUN_LIMIT;
            while network.entry(&key).await.is_none() {
                if Instant::now() >= deadline {
                    return Err("the channels were never created".into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        run.create(0..1, CONTRACT_ONLY_PLAN).await?;
        run.wait_active(1).await?;
        Ok(run)
    }

    async fn create(&self, range: std::ops::Range<usize>, plan: &str) -> Result<(), BoxError> {
        let mut client = self.server.client().await?;
        for i in range {
            let mut request = request(format!("c-{plan}-{i}"));
            if let Some(tenant) = request.tenant.as_mut() {
                tenant.plan = plan.to_owned();
            }
            client.create_tenant(request).await?;
        }
        Ok(())
    }

    async fn wait_active(&self, tenants: usize) -> Result<(), BoxError> {
        let mut conn = AsyncPgConnection::establish(&self.server.url).await?;
        let deadline = Instant::now() + RUN_LIMIT;
        loop {
            let active = count(
                &mut conn,
                "SELECT count(*) AS n FROM tenants WHERE state = 'ACTIVE'",
            )
            .await?;
            if active as usize >= tenants {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(
                    format!("{active} of {tenants} tenants ACTIVE after {RUN_LIMIT:?}").into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deployments per second, the first CreateTenant to the last ACTIVE.
    async fn deploy_rate(&self, tenants: usize) -> Result<f64, BoxError> {
        let started = Instant::now();
        self.create(1..tenants + 1, CONTRACT_ONLY_PLAN).await?;
        self.wait_active(tenants + 1).await?;
        Ok(tenants as f64 / started.elapsed().as_secs_f64())
    }

    /// The median wake-up of no-contract tenants created one at a time
    /// while `queued` deployments wait.
    async fn wake_during(&self, queued: usize, samples: usize) -> Result<f64, BoxError> {
        self.create(1..queued + 1, CONTRACT_ONLY_PLAN).await?;
        let mut client = self.server.client().await?;
        for i in 0..samples {
            let mut request = request(format!("w-{i}"));
            if let Some(tenant) = request.tenant.as_mut() {
                tenant.plan = NO_CONTRACT_PLAN.to_owned();
            }
            client.create_tenant(request).await?;
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let mut conn = AsyncPgConnection::establish(&self.server.url).await?;
        let pending = count(
            &mut conn,
            "SELECT count(*) AS n FROM tenants WHERE state = 'PROVISIONING' AND plan = 'bench-contract-only'",
        )
        .await?;
        if pending == 0 {
            eprintln!("  (every deployment finished before the last sample: add --queued)");
        }
        super::wake::first_step_p50(&mut conn).await
    }

    async fn stop(self) {
        self.server.stop().await;
        self.stop_network.cancel();
    }
}
