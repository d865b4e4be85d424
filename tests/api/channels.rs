//! Soroban channel accounts: deployments from several source accounts at
//! once, each with one transaction in flight, the deployer authorising
//! every creation; channels that are low passed over; kill -9 with
//! transactions in flight on several channels.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use tenantd::proto::TenantState;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::soroban::{contract_id, parse_account_id, parse_salt};
use tenantd::steps::Registry;
use tonic::transport::Channel;

use crate::common::process::ServerProcess;
use crate::common::soroban::{Net, PASSPHRASE};
use crate::common::{TestApp, TestDb, tenant};

#[derive(QueryableByName, Debug)]
struct Sent {
    #[diesel(sql_type = Text)]
    hash: String,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = BigInt)]
    sequence: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    purpose: String,
}

async fn sent(db: &TestDb) -> Vec<Sent> {
    let mut conn = db.conn().await;
    diesel::sql_query(
        "SELECT hash, source, sequence, status, purpose
         FROM soroban_transactions ORDER BY create_time",
    )
    .load(&mut conn)
    .await
    .unwrap()
}

/// No sequence number of a source carries two different transactions.
fn assert_one_transaction_per_sequence(sent: &[Sent]) {
    let mut seen: HashMap<(&str, i64), &str> = HashMap::new();
    for t in sent {
        if let Some(other) = seen.insert((&t.source, t.sequence), &t.hash) {
            assert_eq!(
                other, t.hash,
                "sequence {} of {} used by two transactions: {sent:#?}",
                t.sequence, t.source
            );
        }
    }
}

async fn create_many(
    client: &mut TenantServiceClient<Channel>,
    prefix: &str,
    n: usize,
    plan: &str,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut t = tenant(&format!("{prefix}-{i:03}"));
        t.plan = plan.to_owned();
        let req = tenantd::proto::CreateTenantRequest {
            tenant: Some(t),
            ..Default::default()
        };
        ids.push(
            client
                .create_tenant(req)
                .await
                .unwrap()
                .into_inner()
                .tenant
                .unwrap()
                .id,
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_contracts_through_eight_channels_land_once_each_at_their_derived_addresses() {
    let net = Net::start().await;
    let app = TestApp::start_with(
        |c| {
            net.configure(c);
            c.soroban.soroban_channels = 8;
            c.concurrency = 8;
        },
        Registry::new(),
    )
    .await;
    app.add_plan("contract", &[("deploy_contract", true, 5)])
        .await;
    let channels = net.channels(8);
    // The server creates its channels from the deployer as it starts.
    for channel in &channels {
        net.wait_for_account(channel).await;
    }
    let mut client = app.client().await;
    let ids = create_many(&mut client, "chan", 50, "contract").await;
    let deployer = parse_account_id(&net.deployer()).unwrap();
    let mut addresses = HashSet::new();
    for id in &ids {
        let t = app.wait_for(id, TenantState::Active).await;
        let address = t.contract_address.clone();
        // The address the deployer and the salt derive, as before channels.
        let salt = parse_salt(&t.outputs["contract_salt"]).unwrap();
        assert_eq!(
            format!("{}", contract_id(PASSPHRASE, &deployer, salt)),
            address
        );
        assert_eq!(t.outputs["contract_deployer"], net.deployer());
        let created = net.creations_of(&address);
        assert_eq!(
            created.len(),
            1,
            "{address} created {} times",
            created.len()
        );
        assert!(created[0].success);
        assert_eq!(
            net.stored_tenant(&address).await,
            Some((id.clone(), net.deployer()))
        );
        assert!(addresses.insert(address));
    }
    let sent = sent(&app.db).await;
    assert_one_transaction_per_sequence(&sent);
    let sources: HashSet<&str> = sent
        .iter()
        .filter(|t| t.status == "succeeded" && t.purpose != "fund_channels")
        .map(|t| t.source.as_str())
        .collect();
    assert!(
        sources.len() >= 4,
        "deployments spread over {} channel(s) only: {sources:?}",
        sources.len()
    );
    assert!(
        sources.iter().all(|s| channels.contains(&s.to_string())),
        "{sources:?}"
    );
    assert!(
        !sources.contains(net.deployer().as_str()),
        "the deployer sent a deployment"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_with_transactions_in_flight_on_several_channels_deploys_each_contract_once() {
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let net = db.soroban().await;
    let env: Vec<(&str, String)> = net
        .env()
        .into_iter()
        .chain([
            ("TENANTD_SOROBAN_CHANNELS", "4".to_owned()),
            // Nothing may expire while the network is held.
            ("TENANTD_SOROBAN_CONFIRM_TIMEOUT_SECS", "60".to_owned()),
        ])
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::spawn_full(&db, mail.path(), 2_000, 8, &env, None).await;
    // The code goes up first, so that what is held next is creations.
    let first = server.create("first").await;
    server.wait_active(&first.id).await;

    net.net.pause(true);
    let mut ids = vec![first.id];
    for i in 0..8 {
        ids.push(server.create(&format!("held-{i}")).await.id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pending: HashSet<String> = sent(&db)
            .await
            .into_iter()
            .filter(|t| t.status == "pending")
            .map(|t| t.source)
            .collect();
        if pending.len() >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never 3 channels in flight: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill_9().await;
    net.net.pause(false);

    let server = ServerProcess::spawn_full(&db, mail.path(), 2_000, 8, &env, None).await;
    for id in &ids {
        let t = server.wait_active(id).await;
        let created = net.creations_of(&t.contract_address);
        assert_eq!(
            created.len(),
            1,
            "{} created {} times",
            t.contract_address,
            created.len()
        );
    }
    let sent = sent(&db).await;
    assert_one_transaction_per_sequence(&sent);
    assert!(sent.iter().all(|t| t.status != "pending"), "{sent:#?}");
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_too_poor_to_pay_is_passed_over_with_a_warning_and_topped_up_if_asked() {
    tenantd::telemetry::metrics::handle();
    let keys: Vec<ed25519_dalek::SigningKey> = (0..3)
        .map(|_| ed25519_dalek::SigningKey::from_bytes(&rand::random()))
        .collect();
    let public = |k: &ed25519_dalek::SigningKey| {
        stellar_strkey::ed25519::PublicKey(k.verifying_key().to_bytes())
    };
    // Two channels with 100 XLM, one with 2 XLM: under the minimum.
    let net = Net::start_with(vec![
        (public(&keys[0]), 1_000_000_000),
        (public(&keys[1]), 1_000_000_000),
        (public(&keys[2]), 20_000_000),
    ])
    .await;
    let poor = format!("{}", public(&keys[2]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("channels");
    let secrets: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{}",
                stellar_strkey::ed25519::PrivateKey(k.to_bytes()).as_unredacted()
            )
        })
        .collect();
    std::fs::write(&file, format!("# channels\n{}\n\n", secrets.join("\n"))).unwrap();

    let app = TestApp::start_with(
        |c| {
            net.configure(c);
            c.soroban.soroban_channel_secrets = Some(file.clone());
        },
        Registry::new(),
    )
    .await;
    app.add_plan("contract", &[("deploy_contract", true, 5)])
        .await;
    let mut client = app.client().await;
    let ids = create_many(&mut client, "poor", 6, "contract").await;
    for id in &ids {
        let t = app.wait_for(id, TenantState::Active).await;
        assert_eq!(net.creations_of(&t.contract_address).len(), 1);
    }
    let sent = sent(&app.db).await;
    assert!(
        sent.iter().all(|t| t.source != poor),
        "the poor channel sent: {sent:#?}"
    );
    assert!(sent.iter().any(|t| t.status == "succeeded"));
    // Said once, as a warning on a tenant whose deployment passed it over.
    let mut warnings = 0;
    for id in &ids {
        warnings += app
            .events(id)
            .await
            .iter()
            .filter(|(kind, step, message)| {
                kind == "STEP_WARNING" && step == "deploy_contract" && message.contains(&poor)
            })
            .count();
    }
    assert_eq!(warnings, 1);
    let metrics = tenantd::telemetry::metrics::handle().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tenantd_soroban_channel_skips_total")
                && l.contains(&poor)
                && l.contains("reason=\"low_balance\"")),
        "{metrics}"
    );
    assert_eq!(
        net.balance(&poor).await,
        Some(20_000_000),
        "topped up unasked"
    );
    app.stop().await;

    // Asked to top up: the deployer brings it back to the channel balance.
    let app = TestApp::start_with(
        |c| {
            net.configure(c);
            c.soroban.soroban_channel_secrets = Some(file.clone());
            c.soroban.soroban_channel_top_up = true;
        },
        Registry::new(),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while net.balance(&poor).await != Some(tenantd::config::defaults::SOROBAN_CHANNEL_BALANCE) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not topped up: {:?}",
            net.balance(&poor).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
