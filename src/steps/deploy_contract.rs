//! `deploy_contract`: the tenant's Soroban contract, deployed by the
//! server's deployer account at an address derived from the tenant id (see
//! [`crate::soroban::deploy`]). Its compensation cannot delete a contract;
//! it records one that was deployed as orphaned.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Output, Step, StepCtx, StepError};
use crate::db::soroban::CONTRACT_ADDRESS;
use crate::soroban::deploy::{DeployError, Deployer, Progress, Waiting, parse_owner};

/// The output key of a contract left on chain by an undone provisioning.
pub const CONTRACT_ORPHANED: &str = "contract_orphaned";

pub struct DeployContract {
    deployer: Arc<Deployer>,
}

impl DeployContract {
    pub fn new(deployer: Arc<Deployer>) -> Self {
        Self { deployer }
    }

    /// A transaction waits for a ledger or a channel: look again when the
    /// deployer says, holding no worker meanwhile.
    fn not_yet(&self, waiting: Waiting) -> StepError {
        StepError::not_yet(waiting.why, waiting.after).with_warnings(waiting.warnings)
    }
}

fn failure(e: DeployError) -> StepError {
    if e.is_permanent() {
        StepError::permanent(e.to_string())
    } else {
        StepError::new(e.to_string())
    }
}

#[async_trait]
impl Step for DeployContract {
    fn name(&self) -> &'static str {
        crate::db::soroban::DEPLOY_STEP
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        // Checked when the tenant was created.
        let owner = match ctx.contract_owner.as_str() {
            "" => None,
            text => Some(parse_owner(text).map_err(StepError::permanent)?),
        };
        let deployed = match self.deployer.deploy(ctx.tenant_id, owner.as_ref()).await {
            Ok(Progress::Done(deployed)) => deployed,
            Ok(Progress::Waiting(waiting)) => return Err(self.not_yet(waiting)),
            Err(e) => return Err(failure(e)),
        };
        let mut output = Output::from([
            (CONTRACT_ADDRESS.to_owned(), deployed.address),
            ("contract_wasm_hash".to_owned(), deployed.wasm_hash),
            ("contract_salt".to_owned(), deployed.salt),
            (
                "contract_deployer".to_owned(),
                self.deployer.account().to_owned(),
            ),
        ]);
        if let Some(hash) = deployed.transaction {
            output.insert("contract_transaction".to_owned(), hash);
        }
        if let Some(owner) = deployed.owner {
            output.insert("contract_owner".to_owned(), owner);
        }
        Ok(output)
    }

    async fn compensate_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let orphaned = match self.deployer.orphan(ctx.tenant_id).await {
            Ok(Progress::Done(orphaned)) => orphaned,
            Ok(Progress::Waiting(waiting)) => return Err(self.not_yet(waiting)),
            Err(e) => return Err(failure(e)),
        };
        Ok(orphaned
            .map(|address| Output::from([(CONTRACT_ORPHANED.to_owned(), address)]))
            .unwrap_or_default())
    }

    fn database_work(&self) -> bool {
        false
    }

    fn resources(&self, ctx: &StepCtx) -> Vec<String> {
        let address = ctx
            .outputs
            .get(CONTRACT_ADDRESS)
            .cloned()
            .unwrap_or_else(|| format!("{}", self.deployer.address(ctx.tenant_id)));
        vec![format!("Soroban contract {address} (cannot be deleted)")]
    }
}
