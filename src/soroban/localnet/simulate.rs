//! `simulateTransaction`: the host function of an envelope run in recording
//! mode against the latest ledger, as stellar-rpc does, to learn its
//! footprint, resources, fee and the authorizations it needs.

use std::rc::Rc;

use soroban_env_host::e2e_invoke::RecordingInvocationAuthMode;
use soroban_env_host::xdr::{
    AccountId, Limits, OperationBody, PublicKey, TransactionEnvelope, Uint256, WriteXdr,
};
use soroban_simulation::NetworkConfig;
use soroban_simulation::simulation::{
    SimulationAdjustmentConfig, simulate_invoke_host_function_op,
};

use super::ledger::{Ledger, Snapshot};
use super::network;
use super::validate::muxed_key;
use crate::soroban::rpc::{SimulateHostFunctionResult, SimulateTransactionResult};

/// Simulates `envelope` as if it were applied in the next ledger, closing at `now`.
pub fn simulate(
    ledger: &Ledger,
    config: &NetworkConfig,
    network_id: [u8; 32],
    envelope: &TransactionEnvelope,
    now: u64,
) -> SimulateTransactionResult {
    let failure = |error: String| SimulateTransactionResult {
        latest_ledger: ledger.sequence,
        error: Some(error),
        ..SimulateTransactionResult::default()
    };
    let TransactionEnvelope::Tx(v1) = envelope else {
        return failure("only v1 transaction envelopes can be simulated".into());
    };
    // stellar-rpc's answers; it also simulates extending and restoring,
    // which this network does not offer.
    let [op] = v1.tx.operations.as_slice() else {
        return failure("Transaction contains more than one operation".into());
    };
    let OperationBody::InvokeHostFunction(invoke) = &op.body else {
        return failure(format!(
            "Transaction contains unsupported operation type: OperationType{}",
            op.body.name()
        ));
    };
    let source = op.source_account.as_ref().unwrap_or(&v1.tx.source_account);
    let source = AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(muxed_key(source))));
    let auth_mode = if invoke.auth.is_empty() {
        // Record what the invocation needs; only the root call may be
        // authorized by recording, as stellar-rpc does by default.
        RecordingInvocationAuthMode::recording(true, false)
    } else {
        RecordingInvocationAuthMode::Enforcing(invoke.auth.to_vec())
    };
    let info = network::ledger_info(
        config,
        network_id,
        ledger.sequence + 1,
        now.max(ledger.close_time),
    );
    let simulated = simulate_invoke_host_function_op(
        Rc::new(Snapshot(Rc::clone(&ledger.entries))),
        config,
        &SimulationAdjustmentConfig::default_adjustment(),
        &info,
        invoke.host_function.clone(),
        auth_mode,
        &source,
        rand::random(),
        true,
    );
    let simulated = match simulated {
        Ok(simulated) => simulated,
        Err(e) => return failure(format!("simulation failed: {e}")),
    };
    let events = simulated
        .diagnostic_events
        .iter()
        .filter_map(|e| e.to_xdr_base64(Limits::none()).ok())
        .collect();
    let value = match simulated.invoke_result {
        Ok(value) => value,
        Err(e) => {
            return SimulateTransactionResult {
                events,
                ..failure(format!("HostError: {e:?}"))
            };
        }
    };
    let Some(data) = simulated.transaction_data else {
        return failure("simulation produced no transaction data".into());
    };
    let encoded = (|| -> Result<_, soroban_env_host::xdr::Error> {
        let auth = simulated
            .auth
            .iter()
            .map(|a| a.to_xdr_base64(Limits::none()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            auth,
            value.to_xdr_base64(Limits::none())?,
            data.to_xdr_base64(Limits::none())?,
        ))
    })();
    match encoded {
        Ok((auth, xdr, transaction_data)) => SimulateTransactionResult {
            latest_ledger: ledger.sequence,
            error: None,
            transaction_data: Some(transaction_data),
            min_resource_fee: Some(data.resource_fee.to_string()),
            results: vec![SimulateHostFunctionResult { auth, xdr }],
            events,
        },
        Err(e) => failure(format!("encoding the simulation result: {e}")),
    }
}
