//! `deploy_contract`: the tenant's Soroban contract, deployed by the
//! server's deployer account at an address derived from the tenant id (see
//! [`crate::soroban::deploy`]). Its compensation cannot delete a contract;
//! it records one that was deployed as orphaned.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Output, Step, StepCtx, StepError};
use crate::db::soroban::CONTRACT_ADDRESS;
use crate::soroban::deploy::{DeployError, Deployer};

/// The output key of a contract left on chain by an undone provisioning.
pub const CONTRACT_ORPHANED: &str = "contract_orphaned";

pub struct DeployContract {
    deployer: Arc<Deployer>,
}

impl DeployContract {
    pub fn new(deployer: Arc<Deployer>) -> Self {
        Self { deployer }
    }
}

#[async_trait]
impl Step for DeployContract {
    fn name(&self) -> &'static str {
        "deploy_contract"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let deployed = self.deployer.deploy(ctx.tenant_id).await.map_err(|e| {
            if matches!(e, DeployError::InUse(_)) {
                StepError::not_yet(e.to_string(), self.deployer.poll_interval())
            } else {
                StepError::new(e.to_string())
            }
        })?;
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
        Ok(output)
    }

    async fn compensate_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let orphaned = self
            .deployer
            .orphan(ctx.tenant_id)
            .await
            .map_err(|e| StepError::new(e.to_string()))?;
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
