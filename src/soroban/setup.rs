//! From settings to a [`Deployer`]: a remote Soroban RPC endpoint, or the
//! local network started here when none is configured.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::SecretKey;
use super::client::Client;
use super::deploy::{DeployConfig, Deployer, Funding, Wasm, generated_channels};
use super::localnet::{LocalNet, LocalNetConfig};
use crate::config::SorobanArgs;
use crate::db::DbPool;

/// The passphrase of a standalone network (the one stellar-core's
/// quickstart image runs), used by the local network.
pub const LOCAL_NETWORK_PASSPHRASE: &str = "Standalone Network ; February 2017";

/// How often the local network closes a ledger: fast enough that a
/// deployment takes a fraction of a second, slow enough to batch.
pub const LOCAL_LEDGER_INTERVAL: Duration = Duration::from_millis(100);

/// The local network's deployer starts with this many stroops (10,000 XLM).
const LOCAL_DEPLOYER_BALANCE: i64 = 100_000_000_000;

/// Seed of the local network's deployer key. The network is a sandbox, so
/// a fixed key is fine, and it keeps contract addresses stable across
/// restarts, like the ledger file.
const LOCAL_DEPLOYER_SEED: &[u8] = b"tenantd local Soroban network deployer";

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The deployer the settings ask for, and the local network it deploys to
/// if no RPC endpoint is configured.
pub async fn deployer(
    args: &SorobanArgs,
    pool: DbPool,
    shutdown: CancellationToken,
) -> Result<(Arc<Deployer>, Option<LocalNet>), Error> {
    let wasm = match (&args.soroban_contract_wasm, &args.soroban_wasm_hash) {
        (Some(path), _) => Wasm::Code(
            tokio::fs::read(path)
                .await
                .map_err(|e| {
                    format!(
                        "reading TENANTD_SOROBAN_CONTRACT_WASM {}: {e}",
                        path.display()
                    )
                })?
                .into(),
        ),
        (None, Some(hash)) => {
            let mut bytes = [0; 32];
            hex::decode_to_slice(hash, &mut bytes).map_err(|_| {
                "TENANTD_SOROBAN_WASM_HASH must be 64 hex characters (a SHA-256 hash)".to_owned()
            })?;
            Wasm::Hash(bytes)
        }
        (None, None) => Wasm::built_in(),
    };
    let (url, passphrase, secret, local, poll_interval) = match &args.soroban_rpc_url {
        Some(url) => {
            let passphrase = args.soroban_network_passphrase.clone().ok_or(
                "TENANTD_SOROBAN_NETWORK_PASSPHRASE is required with TENANTD_SOROBAN_RPC_URL",
            )?;
            let secret = args.soroban_deployer_secret.as_deref().ok_or(
                "TENANTD_SOROBAN_DEPLOYER_SECRET is required with TENANTD_SOROBAN_RPC_URL",
            )?;
            let secret = SecretKey::from_strkey(secret)
                .map_err(|e| format!("TENANTD_SOROBAN_DEPLOYER_SECRET: {e}"))?;
            (
                url.clone(),
                passphrase,
                secret,
                None,
                Duration::from_millis(args.soroban_poll_ms),
            )
        }
        None => {
            if let Some(dir) = args.soroban_local_ledger.as_ref().and_then(|f| f.parent()) {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    format!(
                        "cannot create the folder of the local Soroban ledger {}: {e}",
                        dir.display()
                    )
                })?;
            }
            let secret = local_deployer();
            let net = LocalNet::start(
                LocalNetConfig {
                    network_passphrase: LOCAL_NETWORK_PASSPHRASE.to_owned(),
                    ledger_interval: LOCAL_LEDGER_INTERVAL,
                    accounts: vec![(secret.public_key(), LOCAL_DEPLOYER_BALANCE)],
                    state_file: args.soroban_local_ledger.clone(),
                },
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                shutdown.clone(),
            )
            .await?;
            tracing::info!(
                url = %net.url(),
                ledger = ?args.soroban_local_ledger,
                deployer = %secret.public_key(),
                "no TENANTD_SOROBAN_RPC_URL: contracts are deployed to the local Soroban network in this process"
            );
            (
                net.url(),
                LOCAL_NETWORK_PASSPHRASE.to_owned(),
                secret,
                Some(net),
                LOCAL_LEDGER_INTERVAL.min(Duration::from_millis(args.soroban_poll_ms)),
            )
        }
    };
    let (channels, generated) = match &args.soroban_channel_secrets {
        Some(path) => (channel_secrets(path).await?, false),
        None => (
            generated_channels(&secret, args.soroban_channels),
            args.soroban_channels > 0,
        ),
    };
    let client = Client::new(&url, Duration::from_millis(args.soroban_request_timeout_ms))?;
    let config = DeployConfig {
        network_passphrase: passphrase,
        secret,
        wasm,
        fee_cap: args.soroban_fee_cap,
        inclusion_fee: args.soroban_inclusion_fee,
        confirm_timeout: Duration::from_secs(args.soroban_confirm_timeout_secs),
        poll_interval,
        channels,
        funding: Funding {
            min_balance: args.soroban_channel_min_balance,
            balance: args.soroban_channel_balance,
            top_up: args.soroban_channel_top_up,
        },
    };
    let deployer = Arc::new(Deployer::new(client, config, pool));
    if generated || args.soroban_channel_top_up {
        deployer.prepare_channels(generated, shutdown);
    }
    Ok((deployer, local))
}

/// The channel keys in `path`: one `S...` per line, blank lines and `#`
/// comments skipped. An unreadable line is named by its number, never
/// echoed (it may be a key).
async fn channel_secrets(path: &std::path::Path) -> Result<Vec<SecretKey>, Error> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        format!(
            "reading TENANTD_SOROBAN_CHANNEL_SECRETS {}: {e}",
            path.display()
        )
    })?;
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let key = SecretKey::from_strkey(line).map_err(|_| {
            format!(
                "TENANTD_SOROBAN_CHANNEL_SECRETS {} line {}: not a Stellar secret seed (S...)",
                path.display(),
                number + 1
            )
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(format!(
            "TENANTD_SOROBAN_CHANNEL_SECRETS {} holds no secret key",
            path.display()
        )
        .into());
    }
    Ok(keys)
}

/// The local network's deployer.
fn local_deployer() -> SecretKey {
    SecretKey::from_signing_key(SigningKey::from_bytes(
        &Sha256::digest(LOCAL_DEPLOYER_SEED).into(),
    ))
}
