//! `deploy_contract` end to end: a real server deploying through its
//! Soroban RPC client to the local Soroban network (the network's own host
//! and simulator behind a JSON-RPC server) run by the test, so the test can
//! look at the ledger, pause it and inject RPC failures.

use std::time::Duration;

use stellar_xdr::{Limits, WriteXdr};
use tenantd::proto::{StepStatus, TenantState};
use tenantd::soroban::localnet::Fault;
use tenantd::soroban::{rpc, wasm};
use tenantd::steps::Registry;

use crate::common::process::ServerProcess;
use crate::common::soroban::{Net, PASSPHRASE};
use crate::common::steps::Scripted;
use crate::common::{TestApp, TestDb, tenant, violated_fields};

fn step<'a>(tenant: &'a tenantd::proto::Tenant, name: &str) -> &'a tenantd::proto::Step {
    tenant
        .steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

#[tokio::test]
async fn a_tenant_becomes_active_with_its_contract_on_the_ledger() {
    let net = Net::start().await;
    let app = TestApp::start_with(|c| net.configure(c), Registry::new()).await;

    let created = app.create("acme", "").await;
    let names: Vec<&str> = created.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "create_schema",
            "run_migrations",
            "seed_roles_and_admin",
            "issue_api_key",
            "deploy_contract",
            "send_welcome_email",
            "activate"
        ]
    );
    let tenant = app.wait_for(&created.id, TenantState::Active).await;
    let address = tenant.contract_address.clone();
    assert!(
        address.starts_with('C') && address.len() == 56,
        "{address:?}"
    );
    assert_eq!(tenant.outputs["contract_address"], address);
    assert_eq!(step(&tenant, "deploy_contract").attempts, 1);

    // On the ledger: the instance, with the built-in contract's code, and
    // what its constructor kept: the tenant's id and its owner (the
    // deployer by default), which the step checked through tenant().
    let expected: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(wasm::tenant_contract()).into()
    };
    assert_eq!(net.instance(&address).await, Some(expected));
    assert_eq!(
        net.stored_tenant(&address).await,
        Some((created.id.clone(), net.deployer()))
    );
    assert_eq!(tenant.outputs["contract_owner"], net.deployer());
    assert_eq!(tenant.outputs["contract_wasm_hash"], hex::encode(expected));
    let creations = net.creations_of(&address);
    assert_eq!(creations.len(), 1);
    assert!(creations[0].success);
    assert_eq!(
        tenant.outputs["contract_transaction"],
        hex::encode(creations[0].hash)
    );

    // The operator command derives the same address from the outputs.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["contract-id", "--deployer"])
        .arg(&tenant.outputs["contract_deployer"])
        .arg("--salt")
        .arg(&tenant.outputs["contract_salt"])
        .args(["--network-passphrase", PASSPHRASE])
        .output()
        .expect("tenantd contract-id");
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), address);
    // The salt does not show the tenant id.
    assert!(!tenant.outputs["contract_salt"].contains(&created.id.replace('-', "")));

    // A watcher saw the address as the step succeeded.
    let events = app.events(&created.id).await;
    assert!(
        events
            .iter()
            .any(|(kind, step, message)| kind == "STEP_SUCCEEDED"
                && step == "deploy_contract"
                && message.contains(&format!("contract_address={address}"))),
        "{events:?}"
    );

    // A second tenant: its own address, and no second upload of the code.
    let other = app.create("globex", "").await;
    let other = app.wait_for(&other.id, TenantState::Active).await;
    assert_ne!(other.contract_address, address);
    assert!(net.instance(&other.contract_address).await.is_some());
    assert_eq!(net.uploads(), 1);

    let mut conn = app.db.conn().await;
    assert_eq!(
        tenantd::db::soroban::history(&mut conn, tenant.id.parse().unwrap())
            .await
            .unwrap(),
        [
            ("upload_wasm".to_owned(), "succeeded".to_owned()),
            ("create_contract".to_owned(), "succeeded".to_owned())
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_crash_between_send_and_confirm_does_not_deploy_twice() {
    let net = Net::start().await;
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let env = net.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::spawn_full(&db, mail.path(), 2_000, 4, &env, None).await;

    // A first tenant uploads the code.
    let first = server.create("first").await;
    server.wait_active(&first.id).await;

    // The ledger stops closing: the next transaction stays pending.
    net.net.pause(true);
    let accepted = net.net.accepted().len();
    let tenant = server.create("crashy").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while net.net.accepted().len() == accepted {
        assert!(tokio::time::Instant::now() < deadline, "nothing was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = *net.net.accepted().last().unwrap();
    server.kill_9().await;

    let server = ServerProcess::spawn_full(&db, mail.path(), 2_000, 4, &env, None).await;
    // Give the new process time to find the transaction and re-send it
    // while it is still pending, then let the ledger close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    net.net.pause(false);
    let active = server.wait_active(&tenant.id).await;

    let address = active.contract_address.clone();
    let creations = net.creations_of(&address);
    assert_eq!(creations.len(), 1, "deployed more than once");
    assert_eq!(creations[0].hash, sent, "a second transaction was built");
    assert_eq!(active.outputs["contract_transaction"], hex::encode(sent));
    assert_eq!(net.net.accepted().len(), accepted + 1);
    assert!(net.instance(&address).await.is_some());
    server.terminate().await;
}

#[tokio::test]
async fn rpc_failures_are_retried_or_reported_clearly() {
    let net = Net::start().await;
    let app = TestApp::start_with(|c| net.configure(c), Registry::new()).await;

    // TRY_AGAIN_LATER twice: the same transaction goes out again, within
    // the attempt.
    net.net
        .inject(rpc::SEND_TRANSACTION, Fault::TryAgainLater, 2);
    let patient = app.create("patient", "").await;
    let patient = app.wait_for(&patient.id, TenantState::Active).await;
    assert_eq!(step(&patient, "deploy_contract").attempts, 1);

    // A send that is served but answered too late (the client times out):
    // the status poll finds it applied; nothing is sent twice.
    net.net.inject(
        rpc::SEND_TRANSACTION,
        Fault::Delay(Duration::from_millis(1_500)),
        1,
    );
    let slow = app.create("slowpoke", "").await;
    let slow = app.wait_for(&slow.id, TenantState::Active).await;
    assert_eq!(step(&slow, "deploy_contract").attempts, 1);
    assert_eq!(net.creations_of(&slow.contract_address).len(), 1);

    // ERROR from sendTransaction: the attempt fails with the result code,
    // the next one deploys.
    net.net.inject(rpc::SEND_TRANSACTION, Fault::Error, 1);
    let rejected = app.create("rejected", "").await;
    let rejected = app.wait_for(&rejected.id, TenantState::Active).await;
    assert_eq!(step(&rejected, "deploy_contract").attempts, 2);
    let events = app.events(&rejected.id).await;
    assert!(
        events
            .iter()
            .any(|(kind, _, message)| kind == "STEP_RETRYING"
                && message.contains("was rejected: txINTERNAL_ERROR")),
        "{events:?}"
    );

    // A JSON-RPC error object: named with its method.
    net.net.inject(rpc::GET_NETWORK, Fault::RpcError, 1);
    let refused = app.create("refused", "").await;
    let refused = app.wait_for(&refused.id, TenantState::Active).await;
    assert_eq!(step(&refused, "deploy_contract").attempts, 2);
    let events = app.events(&refused.id).await;
    assert!(
        events
            .iter()
            .any(|(_, _, message)| message.contains("Soroban RPC refused getNetwork")),
        "{events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_network_fails_the_step_and_compensates_earlier_steps() {
    let net = Net::start().await;
    let app = TestApp::start_with(
        |c| {
            net.configure(c);
            c.soroban.soroban_network_passphrase =
                Some("Test SDF Network ; September 2015".to_owned());
        },
        Registry::new(),
    )
    .await;
    app.add_plan(
        "contract",
        &[
            ("create_schema", true, 1),
            ("deploy_contract", true, 2),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("lost", "contract").await;
    let failed = app.wait_for(&created.id, TenantState::Failed).await;
    let deploy = step(&failed, "deploy_contract");
    assert_eq!(deploy.status, StepStatus::Failed as i32);
    assert_eq!(deploy.attempts, 2);
    assert!(
        failed
            .state_reason
            .contains("is on network \"Standalone Network ; February 2017\"")
            || deploy.last_error.contains("Standalone Network"),
        "{failed:?}"
    );
    assert_eq!(
        step(&failed, "create_schema").status,
        StepStatus::Compensated as i32
    );
    let schema = failed
        .outputs
        .get("schema_name")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'"
            ))
            .await,
        0
    );
    // Nothing reached the network, and nothing is recorded as orphaned.
    assert!(net.net.applied().is_empty());
    assert!(!failed.outputs.contains_key("contract_orphaned"));
    app.stop().await;
}

#[tokio::test]
async fn an_undone_provisioning_records_its_contract_as_orphaned() {
    let net = Net::start().await;
    let mut steps = Registry::new();
    let breaking = Scripted::new("break_after_deploy");
    breaking
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    steps.register(breaking);
    let app = TestApp::start_with(|c| net.configure(c), steps).await;
    app.add_plan(
        "fragile",
        &[
            ("create_schema", true, 1),
            ("deploy_contract", true, 1),
            ("break_after_deploy", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let created = app.create("fragile", "fragile").await;
    let failed = app.wait_for(&created.id, TenantState::Failed).await;
    let address = failed.contract_address.clone();
    assert!(net.instance(&address).await.is_some(), "the contract stays");
    assert_eq!(failed.outputs["contract_orphaned"], address);
    assert_eq!(
        step(&failed, "deploy_contract").status,
        StepStatus::Compensated as i32
    );
    let events = app.events(&created.id).await;
    assert!(
        events
            .iter()
            .any(|(kind, step, message)| kind == "COMPENSATION_SUCCEEDED"
                && step == "deploy_contract"
                && message.contains(&format!("contract_orphaned={address}"))),
        "{events:?}"
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM contract_deployments
                 WHERE contract_address = '{address}' AND status = 'orphaned'"
            ))
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn an_independent_xdr_implementation_reads_what_the_server_signed() {
    let net = Net::start().await;
    // From a channel: the channel signs the transaction, the deployer its
    // authorization of the creation.
    let app = TestApp::start_with(
        |c| {
            net.configure(c);
            c.soroban.soroban_channels = 2;
        },
        Registry::new(),
    )
    .await;
    let created = app.create("checked", "").await;
    let tenant = app.wait_for(&created.id, TenantState::Active).await;
    let hash = &tenant.outputs["contract_transaction"];
    let envelope: String = {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            envelope_xdr: String,
        }
        let mut conn = app.db.conn().await;
        let row: Row = diesel_async::RunQueryDsl::get_result(
            diesel::sql_query("SELECT envelope_xdr FROM soroban_transactions WHERE hash = $1")
                .bind::<diesel::sql_types::Text, _>(hash),
            &mut conn,
        )
        .await
        .unwrap();
        row.envelope_xdr
    };
    // The same bytes the network applied.
    let applied = net.creations_of(&tenant.contract_address);
    assert_eq!(
        applied[0].envelope.to_xdr_base64(Limits::none()).unwrap(),
        envelope
    );

    let python = crate::examples::python().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/examples/python/stellar_check.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(&envelope)
        .arg(PASSPHRASE)
        .output()
        .await
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["xdr_roundtrip"], true, "{report}");
    assert_eq!(report["model_roundtrip"], true, "{report}");
    assert_eq!(report["hash"], hash.as_str());
    let deployer = tenant.outputs["contract_deployer"].as_str();
    let source = report["source"].as_str().unwrap();
    assert_ne!(source, deployer, "sent from a channel: {report}");
    assert!(net.channels(2).contains(&source.to_owned()), "{report}");
    assert_eq!(report["contract"], tenant.contract_address.as_str());
    assert_eq!(report["salt"], tenant.outputs["contract_salt"].as_str());
    assert_eq!(report["signatures"].as_array().unwrap().len(), 1);
    assert_eq!(report["signatures"][0]["valid"], true, "{report}");
    assert_eq!(report["signatures"][0]["hint_matches"], true, "{report}");
    // The constructor gets the tenant and its owner; the deployer signed
    // the creation with an address credential that verifies.
    assert_eq!(
        report["constructor_args"],
        serde_json::json!([created.id, deployer]),
        "{report}"
    );
    assert_eq!(
        report["authorizations"],
        serde_json::json!([{"type": "address", "address": deployer, "valid": [true]}]),
        "{report}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_waiting_their_turn_leave_the_workers_to_other_tenants() {
    tenantd::telemetry::metrics::handle();
    let net = Net::start().await;
    let quick = Scripted::new("quick");
    let mut steps = Registry::new();
    steps.register(quick.clone());
    // Two workers, six deployments that take a ledger each from one
    // deployer: those waiting their turn must not hold a worker.
    let app = TestApp::start_with(
        |c| {
            net.configure(c);
            c.concurrency = 2;
        },
        steps,
    )
    .await;
    app.add_plan("quick", &[("quick", true, 1)]).await;
    let mut deploying = Vec::new();
    for i in 0..6 {
        deploying.push(app.create(&format!("burst-{i}"), "").await);
    }
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(app.create(&format!("other-{i}"), "quick").await);
    }
    for t in &others {
        app.wait_for(&t.id, TenantState::Active).await;
    }
    let mut still = 0;
    for t in &deploying {
        if app.get(&t.id).await.state() == TenantState::Provisioning {
            still += 1;
        }
    }
    assert!(still > 0, "the others waited for every deployment");
    for t in &deploying {
        let t = app.wait_for(&t.id, TenantState::Active).await;
        let address = &t.outputs["contract_address"];
        assert_eq!(net.creations_of(address).len(), 1, "{address}");
        assert!(
            step(&t, "deploy_contract").attempts <= 2,
            "{:?}",
            step(&t, "deploy_contract")
        );
    }
    let metrics = tenantd::telemetry::metrics::handle().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tenantd_step_waits_total")
                && l.contains("step=\"deploy_contract\"")),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_given_an_owner_gets_a_contract_that_names_it() {
    let net = Net::start().await;
    let app = TestApp::start_with(|c| net.configure(c), Registry::new()).await;
    let mut client = app.client().await;
    let owner_key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let account_owner = format!(
        "{}",
        stellar_strkey::ed25519::PublicKey(owner_key.verifying_key().to_bytes())
    );
    let contract_owner = format!("{}", stellar_strkey::Contract(rand::random()));

    // Not an address: refused, naming the field, and nothing is stored.
    for bad in [
        "nope",
        "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH",
    ] {
        let mut t = tenant("bad-owner");
        t.contract_owner = bad.to_owned();
        let e = client
            .create_tenant(tenantd::proto::CreateTenantRequest {
                tenant: Some(t),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert_eq!(violated_fields(&e), ["tenant.contract_owner"]);
        assert!(!e.message().contains("SCCS5"), "{}", e.message());
    }
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tenants").await, 0);

    for (slug, owner) in [
        ("by-account", &account_owner),
        ("by-contract", &contract_owner),
    ] {
        let mut t = tenant(slug);
        t.contract_owner = owner.clone();
        let created = client
            .create_tenant(tenantd::proto::CreateTenantRequest {
                tenant: Some(t),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tenant
            .unwrap();
        assert_eq!(&created.contract_owner, owner);
        let active = app.wait_for(&created.id, TenantState::Active).await;
        assert_eq!(&active.contract_owner, owner);
        assert_eq!(&active.outputs["contract_owner"], owner);
        assert_eq!(
            net.stored_tenant(&active.contract_address).await,
            Some((created.id.clone(), owner.clone()))
        );
    }
    app.stop().await;
}
