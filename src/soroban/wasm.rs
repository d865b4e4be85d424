//! The built-in contracts, assembled here as Wasm so that no Rust-to-Wasm
//! toolchain is needed in the build.
//!
//! A Soroban contract is an ordinary Wasm module with two extra rules the
//! host checks when it parses the code: a `contractenvmetav0` custom section
//! saying which host interface it was built for, and exported functions that
//! take and return 64-bit `Val`s. Host functions are imported by the short
//! names of the host's `env.json` (module `l`, function `_` is
//! `put_contract_data`).
//!
//! | contract | exports |
//! |---|---|
//! | [`tenant_contract`] | `__constructor(tenant, owner)`, `tenant() -> [tenant, owner]`, `version() -> 1` |
//! | [`minimal_contract`] | `version() -> 1`: a contract without a constructor |

use soroban_env_host::{StorageType, Symbol, Val};
use stellar_xdr::{Limits, ScEnvMetaEntry, ScEnvMetaEntryInterfaceVersion, WriteXdr};
use wasm_encoder::{
    CodeSection, CustomSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
    ImportSection, Instruction, Module, TypeSection, ValType,
};

/// The host interface the contracts declare: protocol 30, no pre-release.
/// Host 30.0.0 accepts contracts of its own protocol only with its own
/// pre-release number (0) and older ones only when finalized (also 0).
/// Constructors need protocol 22 or later.
pub const INTERFACE_PROTOCOL: u32 = 30;

/// The name of the custom section the host reads the interface version from.
const ENV_META_SECTION: &str = "contractenvmetav0";

/// What `version` returns: the `Val` of `U32(1)`, the number in the upper
/// 32 bits over the `U32Val` tag (4) in the low byte.
const VERSION_VAL: i64 = (1 << 32) | 4;

/// The instance-storage key under which the tenant contract keeps what its
/// constructor was given.
pub const TENANT_KEY: &str = "tenant";

/// The tenant's own contract. Its constructor takes the tenant's id (a
/// `String`) and its owner (an `Address`) and keeps both, as the vector
/// `[tenant, owner]`, in the instance storage under [`TENANT_KEY`];
/// `tenant()` returns that vector and writes nothing.
pub fn tenant_contract() -> Vec<u8> {
    let key = symbol(TENANT_KEY);
    let instance = StorageType::Instance as i64;
    let void = Val::VOID.to_val().get_payload() as i64;

    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I64]); // 0: () -> Val
    types.ty().function([ValType::I64], [ValType::I64]); // 1: (Val) -> Val
    types.ty().function([ValType::I64; 2], [ValType::I64]); // 2: (Val, Val) -> Val
    types.ty().function([ValType::I64; 3], [ValType::I64]); // 3: (Val, Val, Val) -> Val
    module.section(&types);

    // Imported functions come first in the function index space.
    let mut imports = ImportSection::new();
    imports.import("v", "_", EntityType::Function(0)); // 0: vec_new
    imports.import("v", "6", EntityType::Function(2)); // 1: vec_push_back
    imports.import("l", "_", EntityType::Function(3)); // 2: put_contract_data
    imports.import("l", "1", EntityType::Function(2)); // 3: get_contract_data
    module.section(&imports);
    const VEC_NEW: u32 = 0;
    const VEC_PUSH_BACK: u32 = 1;
    const PUT_CONTRACT_DATA: u32 = 2;
    const GET_CONTRACT_DATA: u32 = 3;

    let mut functions = FunctionSection::new();
    functions.function(2); // 4: __constructor(tenant, owner)
    functions.function(0); // 5: tenant()
    functions.function(0); // 6: version()
    module.section(&functions);

    let mut exports = ExportSection::new();
    exports.export("__constructor", ExportKind::Func, 4);
    exports.export("tenant", ExportKind::Func, 5);
    exports.export("version", ExportKind::Func, 6);
    module.section(&exports);

    let mut code = CodeSection::new();
    // put_contract_data(key, vec_push_back(vec_push_back(vec_new(), tenant), owner), instance)
    let mut constructor = Function::new([]);
    constructor
        .instruction(&Instruction::I64Const(key))
        .instruction(&Instruction::Call(VEC_NEW))
        .instruction(&Instruction::LocalGet(0))
        .instruction(&Instruction::Call(VEC_PUSH_BACK))
        .instruction(&Instruction::LocalGet(1))
        .instruction(&Instruction::Call(VEC_PUSH_BACK))
        .instruction(&Instruction::I64Const(instance))
        .instruction(&Instruction::Call(PUT_CONTRACT_DATA))
        .instruction(&Instruction::Drop)
        // A constructor must return void.
        .instruction(&Instruction::I64Const(void))
        .instruction(&Instruction::End);
    code.function(&constructor);
    let mut tenant = Function::new([]);
    tenant
        .instruction(&Instruction::I64Const(key))
        .instruction(&Instruction::I64Const(instance))
        .instruction(&Instruction::Call(GET_CONTRACT_DATA))
        .instruction(&Instruction::End);
    code.function(&tenant);
    code.function(&version_body());
    module.section(&code);

    module.section(&env_meta_section());
    module.finish()
}

/// A minimal valid Soroban contract without a constructor: one exported
/// function `version` taking no arguments and returning `U32(1)`.
pub fn minimal_contract() -> Vec<u8> {
    let mut module = Module::new();

    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I64]);
    module.section(&types);

    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);

    let mut exports = ExportSection::new();
    exports.export("version", ExportKind::Func, 0);
    module.section(&exports);

    let mut code = CodeSection::new();
    code.function(&version_body());
    module.section(&code);

    module.section(&env_meta_section());
    module.finish()
}

fn version_body() -> Function {
    let mut body = Function::new([]);
    body.instruction(&Instruction::I64Const(VERSION_VAL))
        .instruction(&Instruction::End);
    body
}

/// The `Val` bits of a short symbol (at most 9 characters of `[_0-9A-Za-z]`),
/// as the host encodes it inline.
fn symbol(name: &str) -> i64 {
    // Invariant: the names passed here are constants of at most 9 valid
    // characters, which always fit a small symbol.
    let symbol = Symbol::try_from_small_str(name).expect("a short constant symbol");
    symbol.to_val().get_payload() as i64
}

fn env_meta_section() -> CustomSection<'static> {
    let entry = ScEnvMetaEntry::ScEnvMetaKindInterfaceVersion(ScEnvMetaEntryInterfaceVersion {
        protocol: INTERFACE_PROTOCOL,
        pre_release: 0,
    });
    // Invariant: the entry is two fixed-size integers and the writer an
    // unlimited in-memory buffer, so encoding cannot fail.
    let meta = entry
        .to_xdr(Limits::none())
        .expect("a fixed-size XDR value always encodes");
    CustomSection {
        name: ENV_META_SECTION.into(),
        data: meta.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contracts_are_wasm_modules_with_env_meta() {
        for wasm in [minimal_contract(), tenant_contract()] {
            assert_eq!(&wasm[..4], b"\0asm");
            let name = ENV_META_SECTION.as_bytes();
            assert!(wasm.windows(name.len()).any(|w| w == name));
            // The XDR payload: union discriminant 0, protocol 30, pre-release 0.
            let payload = [0, 0, 0, 0, 0, 0, 0, 30, 0, 0, 0, 0];
            assert!(wasm.windows(payload.len()).any(|w| w == payload));
        }
    }

    #[test]
    fn the_tenant_key_is_a_small_symbol() {
        let bits = symbol(TENANT_KEY);
        // SymbolSmall's tag is 14, in the low byte.
        assert_eq!(bits & 0xff, 14);
        assert_ne!(symbol("owner"), bits);
    }
}
