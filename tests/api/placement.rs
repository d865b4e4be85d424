//! PlacementService: registering the PostgreSQL servers of tenants' data,
//! against a real second cluster started as the embedded default starts
//! one.

use std::collections::HashMap;
use std::sync::Arc;

use tenantd::db::embedded::EmbeddedPostgres;
use tenantd::proto::placement_service_client::PlacementServiceClient;
use tenantd::proto::{
    DatabaseServer, DeregisterDatabaseServerRequest, GetDatabaseServerRequest,
    ListDatabaseServersRequest, RegisterDatabaseServerRequest, TenantState,
    UpdateDatabaseServerRequest,
};
use tenantd::secrets::SecretKey;
use tenantd::steps::Registry;
use tonic::Code;

use crate::common::{TestApp, violated_fields};

fn server(name: &str, url: &str) -> DatabaseServer {
    DatabaseServer {
        name: name.into(),
        url: url.into(),
        region: "eu-west".into(),
        labels: HashMap::from([("region".to_owned(), "eu".to_owned())]),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_registered_after_a_connection_and_kept_without_their_password() {
    let app = TestApp::start_with(
        |c| {
            c.webhooks.secret_key = Some(Arc::new(
                SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            ))
        },
        Registry::new(),
    )
    .await;
    let mut placement = PlacementServiceClient::new(app.channel().await);
    let created = app.create("placed", "").await;
    let t = app.wait_for(&created.id, TenantState::Active).await;
    assert_eq!(t.database_server, "default");
    let servers = placement
        .list_database_servers(ListDatabaseServersRequest {})
        .await
        .unwrap()
        .into_inner()
        .servers;
    assert_eq!(servers.len(), 1);
    assert_eq!(
        (
            servers[0].name.as_str(),
            servers[0].tenant_count,
            servers[0].url.as_str()
        ),
        ("default", 1, "")
    );

    let dir = tempfile::Builder::new()
        .prefix("tenantd-server-")
        .tempdir_in("/tmp")
        .unwrap();
    let pg = EmbeddedPostgres::start(&dir.path().join("pg"))
        .await
        .unwrap();
    // Trust authentication lets the password through; it is kept sealed.
    let url = pg
        .database_url()
        .replace("postgres@", "postgres:s3cret-word@");
    let registered = placement
        .register_database_server(RegisterDatabaseServerRequest {
            server: Some(server("eu-1", &url)),
        })
        .await
        .unwrap()
        .into_inner()
        .server
        .unwrap();
    assert_eq!(
        registered.url,
        pg.database_url(),
        "returned without its password"
    );
    assert!(registered.reachable);
    assert_eq!((registered.weight, registered.tenant_count), (1, 0));
    assert_eq!(registered.labels["region"], "eu");
    let sealed = app
        .db
        .count(
            "SELECT count(*) FROM database_servers WHERE name = 'eu-1'
               AND password IS NOT NULL AND position('s3cret-word'::bytea IN password) = 0
               AND url NOT LIKE '%s3cret%'",
        )
        .await;
    assert_eq!(sealed, 1);

    // Refused, and nothing stored: a taken name, no answer, no rights,
    // malformed fields.
    let weak = pg.database_url().replace("postgres@", "weak@");
    {
        use diesel_async::{AsyncConnection, RunQueryDsl};
        let mut conn = diesel_async::AsyncPgConnection::establish(&pg.database_url())
            .await
            .unwrap();
        diesel::sql_query("CREATE ROLE weak LOGIN")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    for (candidate, code, says) in [
        (server("eu-1", &url), Code::AlreadyExists, "eu-1"),
        (
            server("gone", "postgres://postgres@127.0.0.1:1/tenantd"),
            Code::FailedPrecondition,
            "cannot connect",
        ),
        (
            server("weak", &weak),
            Code::FailedPrecondition,
            "may not create roles",
        ),
        (server("Bad Name", &url), Code::InvalidArgument, ""),
        (
            server("badurl", "mysql://x@h/db"),
            Code::InvalidArgument,
            "",
        ),
    ] {
        let e = placement
            .register_database_server(RegisterDatabaseServerRequest {
                server: Some(candidate.clone()),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{candidate:?}: {e:?}");
        assert!(e.message().contains(says), "{e:?}");
        assert!(!e.message().contains("s3cret"), "{e:?}");
    }
    let e = placement
        .register_database_server(RegisterDatabaseServerRequest {
            server: Some(server("Bad Name", "mysql://x@h/db")),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&e), ["server.name", "server.url"]);
    assert_eq!(
        app.db.count("SELECT count(*) FROM database_servers").await,
        2,
        "nothing else was stored"
    );

    // Updates by mask and etag.
    let update = |etag: &str, paths: &[&str]| UpdateDatabaseServerRequest {
        server: Some(DatabaseServer {
            name: "eu-1".into(),
            weight: 2,
            draining: true,
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    };
    let updated = placement
        .update_database_server(update(&registered.etag, &["weight", "draining"]))
        .await
        .unwrap()
        .into_inner()
        .server
        .unwrap();
    assert_eq!((updated.weight, updated.draining), (2, true));
    assert_eq!(
        updated.labels["region"], "eu",
        "labels were not in the mask"
    );
    let e = placement
        .update_database_server(update(&registered.etag, &["weight"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let e = placement
        .update_database_server(update("", &["url"]))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&e), ["update_mask"]);

    // From the command line.
    let (code, out, err) =
        crate::tenantctl::run(&app, &["server", "drain", "eu-1", "--undo"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("eu-1") && out.contains("  no  "), "{out}");
    let (_, out, _) = crate::tenantctl::run(&app, &["server", "list"]).await;
    assert!(
        out.contains("(the configured tenant database)") && !out.contains("s3cret"),
        "{out}"
    );

    // Deregistration: never `default`, which holds tenants; eu-1 goes.
    let e = placement
        .deregister_database_server(DeregisterDatabaseServerRequest {
            name: "default".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    placement
        .deregister_database_server(DeregisterDatabaseServerRequest {
            name: "eu-1".into(),
        })
        .await
        .unwrap();
    let e = placement
        .get_database_server(GetDatabaseServerRequest {
            name: "eu-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    app.stop().await;
    pg.stop().await.unwrap();
}
