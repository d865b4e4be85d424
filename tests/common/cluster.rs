//! Extra PostgreSQL clusters for tests of several database servers,
//! started the way the embedded default starts one, each in its own
//! temporary directory (removed with it).

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tenantd::db::embedded::EmbeddedPostgres;

pub struct Cluster {
    pub pg: EmbeddedPostgres,
    dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tenantd-cluster-")
            .tempdir_in("/tmp")
            .expect("cluster dir");
        let pg = EmbeddedPostgres::start(&dir.path().join("pg"))
            .await
            .expect("start a cluster");
        Cluster { pg, dir }
    }

    pub fn url(&self) -> String {
        self.pg.database_url()
    }

    pub async fn stop(&self) {
        self.pg.stop().await.expect("stop the cluster");
    }

    /// Starts it again on its port, after [`Cluster::stop`].
    pub async fn restart(&mut self) {
        self.pg = EmbeddedPostgres::start(&self.dir.path().join("pg"))
            .await
            .expect("restart the cluster");
    }

    /// Runs SQL that returns a single bigint in its `tenantd` database.
    pub async fn count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = AsyncPgConnection::establish(&self.url())
            .await
            .expect("connect to the cluster");
        let row: Count = diesel::sql_query(format!("SELECT ({sql})::bigint AS n"))
            .get_result(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.n
    }

    /// Runs SQL for its effect in its `tenantd` database.
    pub async fn exec(&self, sql: &str) {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = AsyncPgConnection::establish(&self.url())
            .await
            .expect("connect to the cluster");
        conn.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
