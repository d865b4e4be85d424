//! `tenantd contract-id`: the published testnet vector from the command line,
//! and clear refusals of bad input.

use std::process::{Command, Output};

const DEPLOYER: &str = "GCYTFXNAFGBZ5BCKCVXGQ7N57PM6EZLTLRKI2TNQCTSS4GXTHIV2ZC7U";
const SALT: &str = "cf72be055811cd78a0fc1873d532f9432f886efe9c0ef09f75a02d04c3053dc6";
const TESTNET: &str = "Test SDF Network ; September 2015";
/// The address testnet gave the contract `DEPLOYER` deployed with `SALT`.
const CONTRACT: &str = "CC5CKCWU5QZLE3ZLIM3ETKZEC3DIY2RY66EAMW27CEFWI7ADZBHF3NOC";

fn contract_id(deployer: &str, salt: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args([
            "contract-id",
            "--deployer",
            deployer,
            "--salt",
            salt,
            "--network-passphrase",
            TESTNET,
        ])
        .env_clear()
        .output()
        .expect("run tenantd contract-id")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn contract_id_prints_the_address_the_network_assigns() {
    let output = contract_id(DEPLOYER, SALT);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{CONTRACT}\n")
    );
}

#[test]
fn contract_id_refuses_bad_input_clearly() {
    let secret = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
    let typo = format!("{}A", &DEPLOYER[..DEPLOYER.len() - 1]);
    let cases = [
        (typo.as_str(), SALT, "not a Stellar account id (G...)"),
        (CONTRACT, SALT, "not a Stellar account id (G...)"),
        (secret, SALT, "not a Stellar account id (G...)"),
        (
            DEPLOYER,
            &SALT[..62],
            "the salt must be 64 hex characters (32 bytes): got 62",
        ),
        (
            DEPLOYER,
            "0xcf72",
            "the salt must be 64 hex characters (32 bytes): got 6",
        ),
        (
            DEPLOYER,
            &format!("zz{}", &SALT[2..]),
            "the salt must be 64 hex characters (32 bytes)",
        ),
    ];
    for (deployer, salt, expected) in cases {
        let output = contract_id(deployer, salt);
        let err = stderr(&output);
        assert!(!output.status.success(), "{deployer} {salt}: {err}");
        assert!(output.stdout.is_empty(), "{deployer} {salt}");
        assert!(err.contains(expected), "{deployer} {salt}: {err}");
        assert!(!err.contains(secret), "a secret key is never echoed: {err}");
    }
}
