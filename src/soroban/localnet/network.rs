//! The network's settings: the values stellar-core keeps in config-setting
//! ledger entries (fees, limits, TTLs, the cost model), fixed here to the
//! public network's order of magnitude so that what passes locally would
//! pass there.
//!
//! The cost model is the host's own calibration: `Budget::default()` carries
//! it, but only exposes it through metering, so [`calibrated_cost_params`]
//! reads each cost type back by charging it twice (input 0, then input 128,
//! which undoes the 7-bit scaling of the linear term).

use soroban_env_host::budget::Budget;
use soroban_env_host::fees::{FeeConfiguration, RentFeeConfiguration};
use soroban_env_host::xdr::{
    ContractCostParamEntry, ContractCostParams, ContractCostType, ExtensionPoint,
};
use soroban_env_host::{HostError, LedgerInfo};
use soroban_simulation::NetworkConfig;

/// The protocol the network runs: the one soroban-env-host 30.0.0 implements.
pub const PROTOCOL_VERSION: u32 = 30;

/// Minimum inclusion fee per operation, in stroops (core's base fee).
pub const BASE_FEE: i64 = 100;

/// Base reserve in stroops, as on the public network.
pub const BASE_RESERVE: u32 = 5_000_000;

/// Most instructions one transaction may declare (public network: 100M).
pub const TX_MAX_INSTRUCTIONS: u32 = 100_000_000;

/// Most memory the host may use for one transaction (public network: 40 MiB).
pub const TX_MEMORY_LIMIT: u32 = 40 * 1024 * 1024;

/// Most footprint entries (read-only plus read-write) one transaction may declare.
pub const TX_MAX_FOOTPRINT_ENTRIES: usize = 100;

/// Most read-write entries one transaction may declare.
pub const TX_MAX_WRITE_ENTRIES: usize = 50;

/// Most bytes one transaction may declare for disk reads (public network: 200 KB).
pub const TX_MAX_DISK_READ_BYTES: u32 = 200_000;

/// Most bytes one transaction may declare for writes (public network: 129 KiB).
pub const TX_MAX_WRITE_BYTES: u32 = 132_096;

/// Largest transaction envelope accepted, in bytes (public network: 129 KiB).
pub const TX_MAX_SIZE_BYTES: usize = 132_096;

/// Most bytes of contract events plus return value per transaction.
pub const TX_MAX_CONTRACT_EVENTS_SIZE_BYTES: u32 = 16_384;

/// TTL of a new persistent entry, in ledgers (public network: 120 days).
pub const MIN_PERSISTENT_TTL: u32 = 2_073_600;

/// TTL of a new temporary entry, in ledgers (public network: one day).
pub const MIN_TEMPORARY_TTL: u32 = 17_280;

/// The furthest an entry's TTL may be extended, in ledgers (about 180 days).
pub const MAX_ENTRY_TTL: u32 = 3_110_400;

/// Input that turns a scaled linear term into the charged amount: the host
/// keeps linear terms scaled by 2^7 and shifts the product back.
const LINEAR_PROBE_INPUT: u64 = 1 << 7;

/// The network configuration the simulator and the apply path share.
pub fn network_config() -> Result<NetworkConfig, HostError> {
    let (cpu_cost_params, memory_cost_params) = calibrated_cost_params()?;
    Ok(NetworkConfig {
        // The public network's fee settings (protocol 23 values).
        fee_configuration: FeeConfiguration {
            fee_per_instruction_increment: 25,
            fee_per_disk_read_entry: 6_250,
            fee_per_write_entry: 10_000,
            fee_per_disk_read_1kb: 1_786,
            fee_per_write_1kb: 3_500,
            fee_per_historical_1kb: 16_235,
            fee_per_contract_event_1kb: 10_000,
            fee_per_transaction_size_1kb: 1_624,
        },
        rent_fee_configuration: RentFeeConfiguration {
            fee_per_write_1kb: 3_500,
            fee_per_rent_1kb: 4_000,
            fee_per_write_entry: 10_000,
            persistent_rent_rate_denominator: 1_402,
            temporary_rent_rate_denominator: 2_804,
        },
        tx_max_instructions: i64::from(TX_MAX_INSTRUCTIONS),
        tx_memory_limit: TX_MEMORY_LIMIT,
        cpu_cost_params,
        memory_cost_params,
        min_temp_entry_ttl: MIN_TEMPORARY_TTL,
        min_persistent_entry_ttl: MIN_PERSISTENT_TTL,
        max_entry_ttl: MAX_ENTRY_TTL,
    })
}

/// The ledger info the host sees for ledger `sequence` closing at `timestamp`.
pub fn ledger_info(
    config: &NetworkConfig,
    network_id: [u8; 32],
    sequence: u32,
    timestamp: u64,
) -> LedgerInfo {
    let mut info = LedgerInfo {
        protocol_version: PROTOCOL_VERSION,
        sequence_number: sequence,
        timestamp,
        network_id,
        base_reserve: BASE_RESERVE,
        ..LedgerInfo::default()
    };
    config.fill_config_fields_in_ledger_info(&mut info);
    info
}

/// The host's calibrated (cpu, memory) cost parameters, one entry per
/// `ContractCostType` in discriminant order.
pub fn calibrated_cost_params() -> Result<(ContractCostParams, ContractCostParams), HostError> {
    let mut cpu = Vec::with_capacity(ContractCostType::VARIANTS.len());
    let mut mem = Vec::with_capacity(ContractCostType::VARIANTS.len());
    for ty in ContractCostType::VARIANTS {
        let (cpu_entry, mem_entry) = match probe_linear(ty) {
            Ok(entries) => entries,
            // Constant-cost types refuse an input; their linear term is never used.
            Err(_) => probe_constant(ty)?,
        };
        cpu.push(cpu_entry);
        mem.push(mem_entry);
    }
    Ok((params(cpu)?, params(mem)?))
}

/// Reads a linear cost type: charge input 0, then input 128.
fn probe_linear(
    ty: ContractCostType,
) -> Result<(ContractCostParamEntry, ContractCostParamEntry), HostError> {
    // A fresh budget per type keeps most probes far below the default limits.
    let budget = Budget::default();
    let limit = budget.get_cpu_insns_remaining()?;
    let (cpu0, mem0) = consumed(&budget)?;
    budget.charge(ty, Some(0))?;
    let (cpu1, mem1) = consumed(&budget)?;
    let cpu_const = cpu1 - cpu0;
    let mem_const = mem1 - mem0;
    // The cpu count is updated before the limit is checked, so even a probe
    // over the limit reads the cpu term exactly.
    let over = budget.charge(ty, Some(LINEAR_PROBE_INPUT)).is_err();
    let (cpu2, mem2) = consumed(&budget)?;
    let cpu_linear = (cpu2 - cpu1) - cpu_const;
    if !over {
        return Ok((
            entry(cpu_const, cpu_linear),
            entry(mem_const, (mem2 - mem1) - mem_const),
        ));
    }
    // The pairing and multi-scalar-multiplication types cost more cpu per
    // unit than the default budget holds at input 128, and memory is only
    // charged once cpu is within the limit: read memory at the largest
    // input that fits. The scaled term is then exact to within 128/input
    // (rounded up, so the network never undercharges).
    let input = (limit.saturating_sub(cpu_const) << 7) / cpu_linear.max(1);
    let input = input.clamp(1, LINEAR_PROBE_INPUT - 1);
    let budget = Budget::default();
    let (_, mem0) = consumed(&budget)?;
    budget.charge(ty, Some(input))?;
    let (_, mem1) = consumed(&budget)?;
    let floor = mem1 - mem0 - mem_const;
    let mem_linear = ((floor + 1) << 7).div_ceil(input) - 1;
    Ok((entry(cpu_const, cpu_linear), entry(mem_const, mem_linear)))
}

/// Reads a constant cost type: one charge without input.
fn probe_constant(
    ty: ContractCostType,
) -> Result<(ContractCostParamEntry, ContractCostParamEntry), HostError> {
    let budget = Budget::default();
    let (cpu0, mem0) = consumed(&budget)?;
    budget.charge(ty, None)?;
    let (cpu1, mem1) = consumed(&budget)?;
    Ok((entry(cpu1 - cpu0, 0), entry(mem1 - mem0, 0)))
}

fn consumed(budget: &Budget) -> Result<(u64, u64), HostError> {
    Ok((
        budget.get_cpu_insns_consumed()?,
        budget.get_mem_bytes_consumed()?,
    ))
}

fn entry(const_term: u64, linear_term: u64) -> ContractCostParamEntry {
    ContractCostParamEntry {
        ext: ExtensionPoint::V0,
        // Calibrated terms are at most a few million; they fit in i64.
        const_term: i64::try_from(const_term).unwrap_or(i64::MAX),
        linear_term: i64::try_from(linear_term).unwrap_or(i64::MAX),
    }
}

fn params(entries: Vec<ContractCostParamEntry>) -> Result<ContractCostParams, HostError> {
    entries
        .try_into()
        .map(ContractCostParams)
        .map_err(|e: soroban_env_host::xdr::Error| HostError::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_params_reproduce_the_default_budget() {
        let (cpu, mem) = calibrated_cost_params().unwrap();
        assert_eq!(cpu.0.len(), ContractCostType::VARIANTS.len());
        assert_eq!(mem.0.len(), ContractCostType::VARIANTS.len());
        // WasmInsnExec costs 4 cpu per fuel and no memory in the calibration.
        let wasm = ContractCostType::WasmInsnExec as usize;
        assert_eq!(cpu.0[wasm].const_term, 4);
        assert_eq!(mem.0[wasm].const_term, 0);
        // Budgets built from them charge what the default budget charges.
        for ty in ContractCostType::VARIANTS {
            if matches!(
                ty,
                ContractCostType::Bls12381G2Msm
                    | ContractCostType::Bls12381Pairing
                    | ContractCostType::Bn254Pairing
            ) {
                // Read approximately (see `probe_linear`); checked below.
                continue;
            }
            let ours =
                Budget::try_from_configs(u64::MAX, u64::MAX, cpu.clone(), mem.clone()).unwrap();
            let default = Budget::default();
            let input = if default.charge(ty, Some(7)).is_ok() {
                Some(7)
            } else {
                default.charge(ty, None).unwrap();
                None
            };
            ours.charge(ty, input).unwrap();
            assert_eq!(
                ours.get_cpu_insns_consumed().unwrap(),
                default.get_cpu_insns_consumed().unwrap(),
                "{ty:?}"
            );
            assert_eq!(
                ours.get_mem_bytes_consumed().unwrap(),
                default.get_mem_bytes_consumed().unwrap(),
                "{ty:?}"
            );
        }
    }

    #[test]
    fn costly_types_are_read_close_to_their_calibration() {
        let (cpu, mem) = calibrated_cost_params().unwrap();
        let pairing = ContractCostType::Bls12381Pairing as usize;
        // The calibration in soroban-env-host 30.0.0's budget.rs.
        assert_eq!(cpu.0[pairing].const_term, 10_558_948);
        assert_eq!(cpu.0[pairing].linear_term, 632_860_943);
        assert_eq!(mem.0[pairing].const_term, 2_204);
        let mem_linear = mem.0[pairing].linear_term;
        assert!(
            (9_340_474..9_340_474 + 8).contains(&mem_linear),
            "{mem_linear}"
        );
    }
}
