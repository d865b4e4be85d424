//! StreamProvisioningStatus: snapshot, every event in order, resume, many
//! watchers, stuck watchers, and a watcher on another replica.

use std::time::Duration;

use futures::StreamExt;
use tenantd::proto::stream_provisioning_status_response::Update;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{CreateTenantRequest, StreamProvisioningStatusRequest, TenantState};
use tenantd::steps::Registry;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::process::ServerProcess;
use crate::common::steps::Scripted;
use crate::common::{TestApp, TestDb, tenant};

fn request(tenant_id: &str, resume: Option<i64>, follow: bool) -> StreamProvisioningStatusRequest {
    StreamProvisioningStatusRequest {
        tenant_id: tenant_id.into(),
        resume_after_event_id: resume,
        follow,
    }
}

/// The snapshot's last event id and the ids of every event after it, until
/// the server ends the stream.
async fn collect(
    client: &mut TenantServiceClient<Channel>,
    req: StreamProvisioningStatusRequest,
) -> (i64, Vec<i64>, Vec<String>) {
    let mut stream = client
        .stream_provisioning_status(req)
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(first)) = stream.next().await else {
        panic!("no snapshot")
    };
    let Some(Update::Snapshot(snapshot)) = first.update else {
        panic!("first message is not a snapshot")
    };
    let (mut ids, mut kinds) = (Vec::new(), Vec::new());
    while let Some(message) = stream.next().await {
        match message.unwrap().update {
            Some(Update::Event(e)) => {
                ids.push(e.id);
                kinds.push(format!(
                    "{}:{}",
                    tenantd::proto::EventKind::try_from(e.kind)
                        .unwrap()
                        .as_str_name(),
                    e.step
                ));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (snapshot.last_event_id, ids, kinds)
}

async fn event_ids_after(app_db: &TestDb, tenant_id: &str, after: i64) -> Vec<i64> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let mut conn = app_db.conn().await;
    let rows: Vec<Id> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT id FROM events WHERE tenant_id = '{tenant_id}' AND id > {after} ORDER BY id"
        )),
        &mut conn,
    )
    .await
    .unwrap();
    rows.into_iter().map(|r| r.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_the_snapshot_then_every_event_until_active() {
    let app = TestApp::start().await;
    let t = app.create("acme", "").await;
    let (mut first, mut second) = (app.client().await, app.client().await);
    // One watcher from the snapshot on, one from the start of the log.
    let (from_snapshot, from_start) = tokio::join!(
        collect(&mut first, request(&t.id, None, false)),
        collect(&mut second, request(&t.id, Some(0), false)),
    );
    let (snapshot_id, ids, _) = from_snapshot;
    assert!(snapshot_id > 0);
    assert_eq!(
        ids,
        event_ids_after(&app.db, &t.id, snapshot_id).await,
        "every event after the snapshot, in order"
    );
    let (_, all, kinds) = from_start;
    assert_eq!(
        all,
        event_ids_after(&app.db, &t.id, 0).await,
        "the whole log, in order"
    );
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(kinds.first().unwrap(), "EVENT_KIND_TENANT_CREATED:");
    assert_eq!(
        kinds.last().unwrap(),
        "EVENT_KIND_STATE_CHANGED:activate",
        "ends with the change to ACTIVE"
    );
    assert_eq!(app.get(&t.id).await.state, TenantState::Active as i32);
    for step in [
        "create_schema",
        "run_migrations",
        "seed_roles_and_admin",
        "deploy_contract",
        "send_welcome_email",
        "activate",
    ] {
        for kind in ["STEP_STARTED", "STEP_SUCCEEDED"] {
            let wanted = format!("EVENT_KIND_{kind}:{step}");
            assert_eq!(
                kinds.iter().filter(|k| **k == wanted).count(),
                1,
                "{wanted} in {kinds:?}"
            );
        }
    }

    // A settled tenant: the snapshot, then the stream ends; by slug too.
    let mut client = first;
    let (_, after, _) = collect(&mut client, request("acme", None, false)).await;
    assert!(after.is_empty());
    for (id, code) in [
        (uuid::Uuid::now_v7().to_string(), Code::NotFound),
        ("no such".into(), Code::InvalidArgument),
    ] {
        let err = client
            .stream_provisioning_status(request(&id, None, false))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_reconnects_gets_exactly_the_missing_events() {
    let gate = Scripted::gated("gate");
    let mut steps = Registry::new();
    steps.register(gate.clone());
    let app = TestApp::start_with(|_| {}, steps).await;
    app.add_plan(
        "gated",
        &[
            ("create_schema", true, 1),
            ("gate", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let t = app.create("acme", "gated").await;

    // Read from the start of the log (the gate may have started before the
    // snapshot) until the gate step has started, then hang up.
    let mut client = app.client().await;
    let mut stream = client
        .stream_provisioning_status(request(&t.id, Some(0), false))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(Ok(message)) = stream.next().await {
        if let Some(Update::Event(e)) = message.update {
            seen.push(e.id);
            if e.step == "gate" {
                break;
            }
        }
    }
    drop(stream);
    let last = *seen.last().expect("saw the gate start");

    gate.open(1);
    app.wait_for(&t.id, TenantState::Active).await;
    let (_, resumed, _) = collect(&mut client, request(&t.id, Some(last), false)).await;
    let missing = event_ids_after(&app.db, &t.id, last).await;
    assert!(!missing.is_empty());
    assert_eq!(
        resumed, missing,
        "exactly the events after the last one seen"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_each_receive_every_event_on_a_bounded_pool() {
    let gate = Scripted::gated("gate");
    let mut steps = Registry::new();
    steps.register(gate.clone());
    let app = TestApp::start_with(|_| {}, steps).await;
    app.add_plan(
        "gated",
        &[
            ("gate", true, 1),
            ("create_schema", true, 1),
            ("activate", true, 1),
        ],
    )
    .await;
    let t = app.create("acme", "gated").await;
    while gate.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut watchers = Vec::new();
    for i in 0..1000 {
        // Ten connections, a hundred streams each.
        if i % 100 == 0 {
            watchers.push((app.client().await, Vec::new()));
        }
        let (client, streams) = watchers.last_mut().unwrap();
        let stream = client
            .stream_provisioning_status(request(&t.id, None, false))
            .await
            .unwrap()
            .into_inner();
        streams.push(stream);
    }
    let connections = app
        .db
        .count(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'",
            app.db.name()
        ))
        .await;
    gate.open(1);

    let mut tasks = Vec::new();
    for (_, streams) in watchers {
        for mut stream in streams {
            tasks.push(tokio::spawn(async move {
                let mut snapshot = 0;
                let mut ids = Vec::new();
                while let Some(message) = stream.next().await {
                    match message.unwrap().update {
                        Some(Update::Snapshot(s)) => snapshot = s.last_event_id,
                        Some(Update::Event(e)) => ids.push(e.id),
                        None => {}
                    }
                }
                (snapshot, ids)
            }));
        }
    }
    let mut complete = 0;
    for task in tasks {
        let (snapshot, ids) = task.await.unwrap();
        assert_eq!(ids, event_ids_after(&app.db, &t.id, snapshot).await);
        complete += 1;
    }
    assert_eq!(complete, 1000);
    // The pool (8) plus the LISTEN connection, plus this test's own query.
    assert!(
        connections <= (app.config.pool_size + 2) as i64,
        "{connections} connections for 1000 watchers"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_does_not_hold_up_the_others() {
    let app = TestApp::start().await;
    let t = app.create("acme", "").await;
    let mut stuck_client = app.client().await;
    // Opened, following, and never read.
    let stuck = stuck_client
        .stream_provisioning_status(request(&t.id, Some(0), true))
        .await
        .unwrap()
        .into_inner();
    for i in 0..20 {
        app.create(&format!("other-{i:02}"), "").await;
    }
    let mut client = app.client().await;
    let (snapshot, ids, _) = collect(&mut client, request(&t.id, Some(0), false)).await;
    assert!(snapshot > 0);
    assert_eq!(
        ids,
        event_ids_after(&app.db, &t.id, 0).await,
        "the normal watcher got everything"
    );
    // stop() waits until every pipeline is done, with the stuck stream
    // still open: the dispatcher was never held up either.
    app.stop().await;
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_steps_run_by_another() {
    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let runner = ServerProcess::spawn_with(&db, mail.path(), 5000, 8).await;
    let watcher_side = ServerProcess::spawn_with(&db, mail.path(), 5000, 0).await;
    let mut api = watcher_side.client().await;
    let created = api
        .create_tenant(CreateTenantRequest {
            tenant: Some(tenant("acme")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let (snapshot, ids, kinds) = collect(&mut api, request(&created.id, Some(0), false)).await;
    assert!(snapshot > 0);
    assert_eq!(ids, event_ids_after(&db, &created.id, 0).await);
    assert!(
        kinds
            .iter()
            .any(|k| k == "EVENT_KIND_STEP_SUCCEEDED:activate"),
        "{kinds:?}"
    );
    runner.terminate().await;
    watcher_side.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listen_connection_is_reopened_and_watchers_keep_up() {
    let app = TestApp::start().await;
    let listener = format!(
        "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'LISTEN%'",
        app.db.name()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        let pid = app.db.count(&listener).await;
        if pid > 0 {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no LISTEN connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    app.db
        .exec(&format!("SELECT pg_terminate_backend({first})"))
        .await;
    let second = loop {
        let pid = app.db.count(&listener).await;
        if pid > 0 && pid != first {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the LISTEN connection was not reopened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(first, second);

    // Streams and pipelines still work after the reconnect.
    let t = app.create("acme", "").await;
    let mut client = app.client().await;
    let (_, ids, _) = collect(&mut client, request(&t.id, Some(0), false)).await;
    assert_eq!(ids, event_ids_after(&app.db, &t.id, 0).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused_and_a_closed_one_frees_its_slot() {
    let app = TestApp::start_with(|c| c.max_watchers = 2, Registry::new()).await;
    let t = app.create("acme", "").await;
    let mut client = app.client().await;
    let first = client
        .stream_provisioning_status(request(&t.id, None, true))
        .await
        .unwrap()
        .into_inner();
    let _second = client
        .stream_provisioning_status(request(&t.id, None, true))
        .await
        .unwrap()
        .into_inner();
    let err = client
        .stream_provisioning_status(request(&t.id, None, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let retry = tonic_types::StatusExt::get_details_retry_info(&err);
    assert!(
        retry.and_then(|r| r.retry_delay).is_some(),
        "says when to retry"
    );

    // The watcher of a closed stream goes away with everything it held.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .stream_provisioning_status(request(&t.id, None, true))
            .await
        {
            Ok(_) => break,
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_streams_never_passes_the_limit() {
    let app = TestApp::start_with(|c| c.max_watchers = 3, Registry::new()).await;
    let t = app.create("acme", "").await;
    let mut opening = Vec::new();
    for _ in 0..12 {
        let mut client = app.client().await;
        let id = t.id.clone();
        opening.push(tokio::spawn(async move {
            client
                .stream_provisioning_status(request(&id, None, true))
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    let mut open = Vec::new();
    for task in opening {
        match task.await.unwrap() {
            Ok(stream) => open.push(stream),
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted),
        }
    }
    assert_eq!(open.len(), 3, "exactly the limit");
    app.stop().await;
}
