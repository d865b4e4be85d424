//! The smallest contract the network accepts: what the local network and
//! the deployment tests upload when they need real, valid Wasm without a
//! Rust-to-Wasm toolchain in the build.
//!
//! A Soroban contract is an ordinary Wasm module with two extra rules the
//! host checks when it parses the code: a `contractenvmetav0` custom section
//! saying which host interface it was built for, and exported functions that
//! take and return 64-bit `Val`s.

use stellar_xdr::{Limits, ScEnvMetaEntry, ScEnvMetaEntryInterfaceVersion, WriteXdr};
use wasm_encoder::{
    CodeSection, CustomSection, ExportKind, ExportSection, Function, FunctionSection, Instruction,
    Module, TypeSection, ValType,
};

/// The host interface the contract declares: protocol 30, no pre-release.
/// Host 30.0.0 accepts contracts of its own protocol only with its own
/// pre-release number (0) and older ones only when finalized (also 0).
pub const INTERFACE_PROTOCOL: u32 = 30;

/// The name of the custom section the host reads the interface version from.
const ENV_META_SECTION: &str = "contractenvmetav0";

/// What `version` returns: the `Val` of `U32(1)`, the number in the upper
/// 32 bits over the `U32Val` tag (4) in the low byte.
const VERSION_VAL: i64 = (1 << 32) | 4;

/// A minimal valid Soroban contract: one exported function `version`
/// taking no arguments and returning `U32(1)`.
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
    let mut body = Function::new([]);
    body.instruction(&Instruction::I64Const(VERSION_VAL));
    body.instruction(&Instruction::End);
    code.function(&body);
    module.section(&code);

    let meta = env_meta();
    module.section(&CustomSection {
        name: ENV_META_SECTION.into(),
        data: meta.as_slice().into(),
    });
    module.finish()
}

fn env_meta() -> Vec<u8> {
    let entry = ScEnvMetaEntry::ScEnvMetaKindInterfaceVersion(ScEnvMetaEntryInterfaceVersion {
        protocol: INTERFACE_PROTOCOL,
        pre_release: 0,
    });
    // Invariant: the entry is two fixed-size integers and the writer an
    // unlimited in-memory buffer, so encoding cannot fail.
    entry
        .to_xdr(Limits::none())
        .expect("a fixed-size XDR value always encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_is_a_wasm_module_with_env_meta() {
        let wasm = minimal_contract();
        assert_eq!(&wasm[..4], b"\0asm");
        let name = ENV_META_SECTION.as_bytes();
        assert!(wasm.windows(name.len()).any(|w| w == name));
        // The XDR payload: union discriminant 0, protocol 30, pre-release 0.
        let payload = [0, 0, 0, 0, 0, 0, 0, 30, 0, 0, 0, 0];
        assert!(wasm.windows(payload.len()).any(|w| w == payload));
    }
}
