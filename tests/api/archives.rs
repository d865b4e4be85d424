//! Deprovisioning as a policy: a verified export for every archive,
//! RestoreTenant from the archived schema and from the export, legal holds,
//! and grace periods that only grow.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tenantd::proto::{
    DeleteTenantRequest, DeprovisionMode, DeprovisionRequest, RestoreTenantRequest, Tenant,
    TenantState, UpdateTenantRequest,
};
use tenantd::steps::Registry;
use tonic::Code;

use crate::common::{TestApp, violated_fields};

/// `md5` of every table's rows, by table: equal sets of rows, equal sums.
async fn checksums(app: &TestApp, schema: &str) -> BTreeMap<String, String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        tablename: String,
    }
    let mut conn = app.db.conn().await;
    let tables: Vec<Row> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = '{schema}' ORDER BY 1"
        )),
        &mut conn,
    )
    .await
    .unwrap();
    let mut sums = BTreeMap::new();
    for Row { tablename } in tables {
        #[derive(diesel::QueryableByName)]
        struct Sum {
            #[diesel(sql_type = diesel::sql_types::Text)]
            sum: String,
        }
        let sum: Sum = diesel_async::RunQueryDsl::get_result(
            diesel::sql_query(format!(
                "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), 'empty') AS sum
                 FROM \"{schema}\".\"{tablename}\" t"
            )),
            &mut conn,
        )
        .await
        .unwrap();
        sums.insert(tablename, sum.sum);
    }
    sums
}

async fn deprovision(app: &TestApp, id: &str, mode: DeprovisionMode, grace_secs: i64) -> Tenant {
    app.client
        .clone()
        .deprovision(DeprovisionRequest {
            tenant_id: id.into(),
            mode: mode as i32,
            grace_period: Some(prost_types::Duration {
                seconds: grace_secs,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("deprovision")
        .into_inner()
        .tenant
        .unwrap()
}

async fn restore(app: &TestApp, id: &str, target: TenantState) -> Result<Tenant, tonic::Status> {
    app.client
        .clone()
        .restore_tenant(RestoreTenantRequest {
            tenant_id: id.into(),
            target_state: target as i32,
        })
        .await
        .map(|r| r.into_inner().tenant.unwrap())
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn owner_of(schema: &str) -> String {
    format!(
        "SELECT count(*) FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
         WHERE n.nspname = '{schema}' AND r.rolname = "
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_are_exported_verified_and_restored_row_for_row() {
    let app = TestApp::start_with(
        |c| c.schedules.purge = "* * * * * *".into(),
        Registry::new(),
    )
    .await;
    let created = app.create("keep", "").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    app.db
        .exec(
            "CREATE TABLE tenant_keep.documents AS
                 SELECT i, md5(i::text) AS body FROM generate_series(1, 500) i",
        )
        .await;
    let before = checksums(&app, "tenant_keep").await;
    assert!(before.len() >= 3, "{before:?}");
    let role = t.outputs["role_name"].clone();

    // Errors first: nothing to restore yet, and no such target.
    let e = restore(&app, &t.id, TenantState::Active).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = restore(&app, &t.id, TenantState::Failed).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&e), ["target_state"]);

    // ARCHIVE: the export's checksum is the file's, its tables the schema's.
    deprovision(&app, &t.id, DeprovisionMode::Archive, 3600).await;
    let t = app.wait_for(&t.id, TenantState::Deprovisioned).await;
    let archived = t.outputs["archived_schema"].clone();
    // What was archived: the tenant's rows, its pending invitations revoked.
    let kept = checksums(&app, &archived).await;
    for table in ["documents", "users", "roles"] {
        assert_eq!(kept[table], before[table], "{table}");
    }
    let before = kept;
    #[derive(diesel::QueryableByName)]
    struct Export {
        #[diesel(sql_type = diesel::sql_types::Text)]
        path: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        sha256: String,
        #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Text>)]
        tables: Vec<String>,
    }
    let export: Export = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(format!(
            "SELECT path, sha256, tables FROM tenant_exports WHERE tenant_id = '{}'",
            t.id
        )),
        &mut app.db.conn().await,
    )
    .await
    .unwrap();
    let bytes = std::fs::read(&export.path).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), export.sha256);
    assert_eq!(t.outputs["export_sha256"], export.sha256);
    let mut tables = export.tables.clone();
    tables.sort();
    assert_eq!(tables, before.keys().cloned().collect::<Vec<_>>());

    // During the grace period: from the archived schema, access as before.
    let back = restore(&app, &t.id, TenantState::Active).await.unwrap();
    assert_eq!(back.state(), TenantState::Active);
    assert!(back.purge_time.is_none() && !back.outputs.contains_key("archived_schema"));
    assert_eq!(checksums(&app, "tenant_keep").await, before);
    assert_eq!(
        app.db
            .count(&format!("{}'{role}'", owner_of("tenant_keep")))
            .await,
        1
    );
    let events = app.events(&t.id).await;
    assert!(
        events.iter().any(|(kind, _, m)| kind == "STATE_CHANGED"
            && m.contains("restored from its archived schema")),
        "{events:?}"
    );

    // After the purge: from the export, once its checksum matches.
    deprovision(&app, &t.id, DeprovisionMode::Archive, 0).await;
    app.wait_for(&t.id, TenantState::Deprovisioned).await;
    until("the purge", async || {
        app.get(&t.id).await.outputs.contains_key("purged_at")
    })
    .await;
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM pg_namespace WHERE nspname = '{archived}'"
            ))
            .await,
        0
    );
    let export_path: String = {
        let export: Export = diesel_async::RunQueryDsl::get_result(
            diesel::sql_query(format!(
                "SELECT path, sha256, tables FROM tenant_exports WHERE tenant_id = '{}'",
                t.id
            )),
            &mut app.db.conn().await,
        )
        .await
        .unwrap();
        export.path
    };
    let good = std::fs::read(&export_path).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&export_path, &bad).unwrap();
    let e = restore(&app, &t.id, TenantState::Suspended)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("does not match its recorded SHA-256"),
        "{e:?}"
    );
    assert_eq!(app.get(&t.id).await.state(), TenantState::Deprovisioned);

    std::fs::write(&export_path, &good).unwrap();
    let back = restore(&app, &t.id, TenantState::Suspended).await.unwrap();
    assert_eq!(back.state(), TenantState::Suspended);
    assert_eq!(checksums(&app, "tenant_keep").await, before);
    // Suspended: the role has no access until ResumeTenant.
    assert_eq!(
        app.db
            .count(&format!("{}'{role}'", owner_of("tenant_keep")))
            .await,
        0
    );
    let events = app.events(&t.id).await;
    for step in [
        "verified (SHA-256",
        "export restored as schema",
        "restored from its export",
    ] {
        assert!(
            events.iter().any(|(_, _, m)| m.contains(step)),
            "{step}: {events:?}"
        );
    }
    app.stop().await;
}

fn hold(id: &str, on: bool, reason: &str) -> UpdateTenantRequest {
    UpdateTenantRequest {
        tenant_id: id.into(),
        tenant: Some(Tenant {
            legal_hold: on,
            legal_hold_reason: reason.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["legal_hold".into(), "legal_hold_reason".into()],
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legal_hold_stops_every_purge_and_delete_and_grace_periods_only_grow() {
    let app = TestApp::start_with(
        |c| c.schedules.purge = "* * * * * *".into(),
        Registry::new(),
    )
    .await;
    let mut client = app.client().await;
    let held = app.create("held", "").await;
    app.wait_for(&held.id, TenantState::Active).await;

    let e = client
        .update_tenant(hold(&held.id, true, " "))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&e), ["tenant.legal_hold_reason"]);
    let t = client
        .update_tenant(hold(&held.id, true, "litigation 2026-17"))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert!(t.legal_hold);
    assert_eq!(t.legal_hold_reason, "litigation 2026-17");

    let e = client
        .deprovision(DeprovisionRequest {
            tenant_id: held.id.clone(),
            mode: DeprovisionMode::Purge as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("legal hold"), "{e:?}");

    deprovision(&app, &held.id, DeprovisionMode::Archive, 0).await;
    let t = app.wait_for(&held.id, TenantState::Deprovisioned).await;
    let archived = t.outputs["archived_schema"].clone();
    let announced = async || {
        app.events(&held.id)
            .await
            .iter()
            .filter(|(_, _, m)| m.contains("held back by a legal hold"))
            .count()
    };
    until("the purge job saw the hold", async || {
        announced().await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(announced().await, 1, "announced once");
    assert!(!app.get(&held.id).await.outputs.contains_key("purged_at"));
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM pg_namespace WHERE nspname = '{archived}'"
            ))
            .await,
        1
    );
    let e = client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: held.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Lifted (DEPROVISIONED tenants take this one update): the purge runs.
    client
        .update_tenant(hold(&held.id, false, ""))
        .await
        .unwrap();
    until("the purge", async || {
        app.get(&held.id).await.outputs.contains_key("purged_at")
    })
    .await;
    client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: held.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Grace periods grow; they do not shrink.
    let slow = app.create("slow", "").await;
    app.wait_for(&slow.id, TenantState::Active).await;
    deprovision(&app, &slow.id, DeprovisionMode::Archive, 3600).await;
    let first = app.wait_for(&slow.id, TenantState::Deprovisioned).await;
    let later = deprovision(&app, &slow.id, DeprovisionMode::Archive, 7200).await;
    assert_eq!(
        later.purge_time.unwrap().seconds - first.purge_time.unwrap().seconds,
        3600
    );
    let e = client
        .deprovision(DeprovisionRequest {
            tenant_id: slow.id.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not shortened"), "{e:?}");

    // A tenant whose plan made no schema has nothing to export, and is
    // purged all the same.
    app.add_plan("bare", &[("activate", true, 1)]).await;
    let bare = app.create("bare", "bare").await;
    app.wait_for(&bare.id, TenantState::Active).await;
    deprovision(&app, &bare.id, DeprovisionMode::Archive, 0).await;
    let t = app.wait_for(&bare.id, TenantState::Deprovisioned).await;
    assert!(!t.outputs.contains_key("export_sha256"), "{t:?}");
    until("the purge of a tenant without data", async || {
        app.get(&bare.id).await.outputs.contains_key("purged_at")
    })
    .await;
    app.stop().await;
}
