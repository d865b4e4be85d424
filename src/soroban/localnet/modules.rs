//! The parsed Wasm of every contract on the ledger, as stellar-core keeps
//! it: modules are parsed once, outside any transaction's budget, and every
//! invocation instantiates from this cache. Without it each invocation would
//! pay for parsing, which the simulator (running with the cache semantics)
//! did not budget for.

use soroban_env_host::budget::{AsBudget, Budget};
use soroban_env_host::xdr::{LedgerEntryData, ScErrorCode, ScErrorType};
use soroban_env_host::{CompilationContext, ErrorHandler, HostError, ModuleCache, Val};

use super::ledger::Ledger;
use super::network::PROTOCOL_VERSION;

/// Parsing happens outside any transaction, on a budget without limits.
#[derive(Clone)]
pub struct Context(Budget);

impl Context {
    pub fn budget(&self) -> Budget {
        self.0.clone()
    }
}

impl ErrorHandler for Context {
    fn map_err<T, E>(&self, res: Result<T, E>) -> Result<T, HostError>
    where
        soroban_env_host::Error: From<E>,
        E: std::fmt::Debug,
    {
        res.map_err(|e| HostError::from(soroban_env_host::Error::from(e)))
    }

    fn error(&self, error: soroban_env_host::Error, _msg: &str, _args: &[Val]) -> HostError {
        HostError::from(error)
    }
}

impl AsBudget for Context {
    fn as_budget(&self) -> &Budget {
        &self.0
    }
}

impl CompilationContext for Context {}

/// The module cache and the context it parses in.
pub struct Modules {
    context: Context,
    cache: ModuleCache,
}

impl Modules {
    /// A cache holding every contract code entry of `ledger`.
    pub fn new(
        ledger: &Ledger,
        cost_params: (
            &soroban_env_host::xdr::ContractCostParams,
            &soroban_env_host::xdr::ContractCostParams,
        ),
    ) -> Result<Self, HostError> {
        let budget = Budget::try_from_configs(
            u64::MAX,
            u64::MAX,
            cost_params.0.clone(),
            cost_params.1.clone(),
        )?;
        let context = Context(budget);
        let cache = ModuleCache::new(&context)?;
        let mut modules = Self { context, cache };
        for stored in ledger.entries.values() {
            if let LedgerEntryData::ContractCode(code) = &stored.entry.data {
                modules.add(&code.code)?;
            }
        }
        Ok(modules)
    }

    /// Parses and caches `wasm` unless it is there already.
    pub fn add(&mut self, wasm: &[u8]) -> Result<(), HostError> {
        use sha2::{Digest, Sha256};
        let hash = soroban_env_host::xdr::Hash(Sha256::digest(wasm).into());
        if self.cache.contains_module(&hash)? {
            return Ok(());
        }
        self.cache
            .parse_and_cache_module_simple(&self.context, PROTOCOL_VERSION, wasm)
            .map_err(|e| {
                tracing::debug!(error = %e, "stored Wasm does not parse");
                HostError::from((ScErrorType::WasmVm, ScErrorCode::InvalidInput))
            })
    }

    pub fn cache(&self) -> ModuleCache {
        self.cache.clone()
    }

    pub fn context(&self) -> &Context {
        &self.context
    }
}
