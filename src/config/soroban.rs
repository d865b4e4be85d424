//! Soroban contract deployment: the `--soroban-*` flags of `serve`, whose
//! defaults [`Config::new`](super::Config::new) also takes.

use std::fmt;
use std::path::PathBuf;

use clap::Args;

use super::defaults;

/// Where and how tenants' Soroban contracts are deployed.
#[derive(Clone, Args)]
pub struct SorobanArgs {
    /// Soroban RPC endpoint (stellar-rpc), e.g.
    /// `https://soroban-testnet.stellar.org`. Unset: contracts go to a local
    /// Soroban network run in this process (a sandbox whose ledger is kept
    /// in --soroban-local-ledger).
    #[arg(long, env = "TENANTD_SOROBAN_RPC_URL", hide_env_values = true)]
    pub soroban_rpc_url: Option<String>,
    /// Passphrase of the network the RPC endpoint serves; checked against
    /// its getNetwork answer. Required with --soroban-rpc-url.
    #[arg(
        long,
        env = "TENANTD_SOROBAN_NETWORK_PASSPHRASE",
        requires = "soroban_rpc_url"
    )]
    pub soroban_network_passphrase: Option<String>,
    /// Secret key (S...) of the account that deploys and pays; never
    /// logged. Required with --soroban-rpc-url. It also keys the salts that
    /// make contract addresses: changing it changes the addresses.
    #[arg(
        long,
        env = "TENANTD_SOROBAN_DEPLOYER_SECRET",
        hide_env_values = true,
        requires = "soroban_rpc_url"
    )]
    pub soroban_deployer_secret: Option<String>,
    /// The contract's Wasm file, uploaded when the ledger lacks it. Unset
    /// (and no --soroban-wasm-hash): tenantd's built-in minimal contract.
    #[arg(
        long,
        env = "TENANTD_SOROBAN_CONTRACT_WASM",
        conflicts_with = "soroban_wasm_hash"
    )]
    pub soroban_contract_wasm: Option<PathBuf>,
    /// Hex SHA-256 of contract Wasm already uploaded to the network.
    #[arg(long, env = "TENANTD_SOROBAN_WASM_HASH")]
    pub soroban_wasm_hash: Option<String>,
    /// Most stroops one deployment transaction may pay (resources plus
    /// inclusion); a simulation asking more fails the attempt.
    #[arg(long, env = "TENANTD_SOROBAN_FEE_CAP", default_value_t = defaults::SOROBAN_FEE_CAP)]
    pub soroban_fee_cap: i64,
    /// Stroops bid for inclusion on top of the resource fee.
    #[arg(long, env = "TENANTD_SOROBAN_INCLUSION_FEE", default_value_t = defaults::SOROBAN_INCLUSION_FEE)]
    pub soroban_inclusion_fee: u32,
    /// Seconds a deployment transaction stays valid (its time bound) and
    /// its confirmation is awaited; keep it under --step-timeout-secs.
    #[arg(long, env = "TENANTD_SOROBAN_CONFIRM_TIMEOUT_SECS", default_value_t = defaults::SOROBAN_CONFIRM_TIMEOUT_SECS)]
    pub soroban_confirm_timeout_secs: u64,
    /// Milliseconds between polls of a sent transaction's status.
    #[arg(long, env = "TENANTD_SOROBAN_POLL_MS", default_value_t = defaults::SOROBAN_POLL_MS)]
    pub soroban_poll_ms: u64,
    /// Milliseconds one Soroban RPC call may take. A send that times out
    /// may still have arrived: its status is polled and the same bytes are
    /// sent again, never a second transaction.
    #[arg(long, env = "TENANTD_SOROBAN_REQUEST_TIMEOUT_MS", default_value_t = defaults::SOROBAN_REQUEST_TIMEOUT_MS)]
    pub soroban_request_timeout_ms: u64,
    /// A file of channel accounts' secret keys (`S...`, one per line; `#`
    /// starts a comment): the source accounts of deployment transactions,
    /// each with one transaction in flight, so deployments are not one per
    /// ledger. The deployer still authorises every creation (contract
    /// addresses do not change). Unset (and no --soroban-channels): the
    /// deployer sends its transactions itself.
    #[arg(
        long,
        env = "TENANTD_SOROBAN_CHANNEL_SECRETS",
        conflicts_with = "soroban_channels"
    )]
    pub soroban_channel_secrets: Option<PathBuf>,
    /// Channel accounts generated from the deployer's key (the same key
    /// always gives the same channels) and created by the deployer with
    /// --soroban-channel-balance each when missing. 0: none.
    #[arg(long, env = "TENANTD_SOROBAN_CHANNELS", default_value_t = 0)]
    pub soroban_channels: usize,
    /// Stroops a generated channel is created with, and a low one topped up
    /// to (with --soroban-channel-top-up).
    #[arg(long, env = "TENANTD_SOROBAN_CHANNEL_BALANCE", default_value_t = defaults::SOROBAN_CHANNEL_BALANCE)]
    pub soroban_channel_balance: i64,
    /// Below this many stroops a channel is passed over, with a warning
    /// event and the metric tenantd_soroban_channel_skips_total.
    #[arg(long, env = "TENANTD_SOROBAN_CHANNEL_MIN_BALANCE", default_value_t = defaults::SOROBAN_CHANNEL_MIN_BALANCE)]
    pub soroban_channel_min_balance: i64,
    /// The deployer tops up a channel found below
    /// --soroban-channel-min-balance to --soroban-channel-balance.
    #[arg(long, env = "TENANTD_SOROBAN_CHANNEL_TOP_UP")]
    pub soroban_channel_top_up: bool,
    /// The local network's ledger file (default
    /// `<data-dir>/soroban-ledger.xdr`); ignored with --soroban-rpc-url.
    #[arg(long, env = "TENANTD_SOROBAN_LOCAL_LEDGER")]
    pub soroban_local_ledger: Option<PathBuf>,
}

impl Default for SorobanArgs {
    fn default() -> Self {
        Self {
            soroban_rpc_url: None,
            soroban_network_passphrase: None,
            soroban_deployer_secret: None,
            soroban_contract_wasm: None,
            soroban_wasm_hash: None,
            soroban_fee_cap: defaults::SOROBAN_FEE_CAP,
            soroban_inclusion_fee: defaults::SOROBAN_INCLUSION_FEE,
            soroban_confirm_timeout_secs: defaults::SOROBAN_CONFIRM_TIMEOUT_SECS,
            soroban_poll_ms: defaults::SOROBAN_POLL_MS,
            soroban_request_timeout_ms: defaults::SOROBAN_REQUEST_TIMEOUT_MS,
            soroban_local_ledger: None,
            soroban_channel_secrets: None,
            soroban_channels: 0,
            soroban_channel_balance: defaults::SOROBAN_CHANNEL_BALANCE,
            soroban_channel_min_balance: defaults::SOROBAN_CHANNEL_MIN_BALANCE,
            soroban_channel_top_up: false,
        }
    }
}

impl fmt::Debug for SorobanArgs {
    // The secret key is left out, and the URL, which may carry an API key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SorobanArgs")
            .field(
                "soroban_rpc_url",
                &self.soroban_rpc_url.as_ref().map(|_| "<set>"),
            )
            .field(
                "soroban_network_passphrase",
                &self.soroban_network_passphrase,
            )
            .field(
                "soroban_deployer_secret",
                &self.soroban_deployer_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("soroban_contract_wasm", &self.soroban_contract_wasm)
            .field("soroban_wasm_hash", &self.soroban_wasm_hash)
            .field("soroban_fee_cap", &self.soroban_fee_cap)
            .field("soroban_channel_secrets", &self.soroban_channel_secrets)
            .field("soroban_channels", &self.soroban_channels)
            .field("soroban_channel_top_up", &self.soroban_channel_top_up)
            .finish_non_exhaustive()
    }
}
