//! The embedded default: a private PostgreSQL cluster from the machine's
//! binaries, started, used, stopped, and reused on the next start.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tenantd::db::embedded::EmbeddedPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_postgres_starts_serves_stops_and_restarts() {
    // Under /tmp so that the postgres user can reach it when tests run as root.
    let dir = tempfile::Builder::new()
        .prefix("tenantd-embedded-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("pg");

    let pg = EmbeddedPostgres::start(&data)
        .await
        .expect("embedded cluster starts");
    let url = pg.database_url();
    tenantd::db::migrate(&url).await.expect("migrations apply");
    let mut conn = AsyncPgConnection::establish(&url).await.expect("connect");
    diesel::sql_query("INSERT INTO plans (name, steps) VALUES ('probe', '[{\"name\":\"activate\",\"critical\":true,\"max_attempts\":1}]')")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    pg.stop().await.expect("stops");
    assert!(
        AsyncPgConnection::establish(&url).await.is_err(),
        "nothing listens after stop"
    );

    // Second start: same data directory, same port, data kept.
    let pg = EmbeddedPostgres::start(&data).await.expect("restarts");
    assert_eq!(pg.database_url(), url);
    let mut conn = AsyncPgConnection::establish(&url)
        .await
        .expect("connect again");
    let n = diesel::sql_query("SELECT name FROM plans WHERE name = 'probe'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1, "data survives a restart");
    drop(conn);
    pg.stop().await.expect("stops again");
}
