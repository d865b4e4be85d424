//! PlacementService's registry: the PostgreSQL servers that hold tenants'
//! data. A server is registered only after tenantd has connected to it and
//! found the rights it needs; its password is sealed under the secrets key.
//! A periodic check records which servers answer.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::Ops;
use crate::db::fleet::Target;
use crate::db::{self, servers::ServerRow};
use crate::domain::{FieldViolation, check_labels, check_plan_name};
use crate::error::{Error, Result};

/// How long a registration waits for the server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the periodic check waits for a server: a healthy one answers
/// in milliseconds, and a check must not stall behind a blackholed host.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A server as callers see it: its URL without the password.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseServer {
    pub name: String,
    pub url: String,
    pub region: String,
    pub weight: i32,
    pub max_tenants: i32,
    pub draining: bool,
    pub labels: BTreeMap<String, String>,
    pub tenant_count: i64,
    pub schema_bytes: i64,
    pub reachable: bool,
    pub create_time: chrono::DateTime<chrono::Utc>,
    pub revision: i64,
}

impl DatabaseServer {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.revision)
    }
}

/// What RegisterDatabaseServer and UpdateDatabaseServer take.
#[derive(Debug, Clone, Default)]
pub struct ServerInput {
    pub name: String,
    pub url: String,
    pub region: String,
    pub weight: i32,
    pub max_tenants: i32,
    pub draining: bool,
    pub labels: BTreeMap<String, String>,
}

/// Fields UpdateDatabaseServer may change.
pub const SERVER_MUTABLE: [&str; 4] = ["weight", "max_tenants", "draining", "labels"];

fn server(row: ServerRow) -> Result<DatabaseServer> {
    Ok(DatabaseServer {
        labels: db::models::string_map(row.labels)?,
        name: row.name,
        url: row.url,
        region: row.region,
        weight: row.weight,
        max_tenants: row.max_tenants,
        draining: row.draining,
        tenant_count: row.tenant_count,
        schema_bytes: row.schema_bytes,
        reachable: row.reachable,
        create_time: row.create_time,
        revision: row.revision,
    })
}

fn not_found(name: &str) -> Error {
    Error::NotFound {
        resource: "database server",
        id: name.to_owned(),
    }
}

/// Checks the settable fields; fills the weight's default.
fn check(input: &mut ServerInput, out: &mut Vec<FieldViolation>) {
    if input.weight == 0 {
        input.weight = 1;
    }
    if !(1..=1000).contains(&input.weight) {
        out.push(FieldViolation::new(
            "server.weight",
            "must be 1 to 1000 (0: 1)",
        ));
    }
    if input.max_tenants < 0 {
        out.push(FieldViolation::new(
            "server.max_tenants",
            "must not be negative (0: no limit)",
        ));
    }
    if input.region.chars().count() > 63 || input.region.chars().any(char::is_control) {
        out.push(FieldViolation::new(
            "server.region",
            "must be at most 63 characters without control characters",
        ));
    }
    check_labels("server.labels", &input.labels, out);
}

/// The URL split into what is stored in clear and its password: a
/// `postgres://` URL naming at least one host and a database (libpq's
/// multi-host form included).
fn split_url(text: &str) -> std::result::Result<(String, Option<String>), FieldViolation> {
    let invalid = || {
        FieldViolation::new(
            "server.url",
            "must be a postgres://user:password@host:port/database URL",
        )
    };
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        return Err(invalid());
    }
    let (hosts, database) = Target::hosts_and_database(text).ok_or_else(invalid)?;
    if hosts.is_empty() || database.is_empty() {
        return Err(invalid());
    }
    let target = Target::parse(text).map_err(|_| invalid())?;
    let password = target
        .password
        .map(|p| secrecy::ExposeSecret::expose_secret(&p).to_owned());
    Ok((target.url, password))
}

impl Ops {
    pub async fn register_database_server(&self, mut input: ServerInput) -> Result<DatabaseServer> {
        let mut out = Vec::new();
        check_plan_name("server.name", &input.name, &mut out);
        check(&mut input, &mut out);
        let split = split_url(&input.url).map_err(|v| out.push(v)).ok();
        if !out.is_empty() {
            return Err(Error::InvalidArgument(
                out.into_iter()
                    .map(|mut v| {
                        if v.field == "server.name" {
                            v.description = "must match ^[a-z][a-z0-9-]{1,39}$".into();
                        }
                        v
                    })
                    .collect(),
            ));
        }
        let Some((clear, password)) = split else {
            return Err(Error::Internal("a checked URL did not split".into()));
        };
        let sealed = match (&password, &self.webhooks.secret_key) {
            (None, _) => None,
            (Some(p), Some(key)) => Some(key.seal(
                p.as_bytes(),
                format!("database_servers/{}/password", input.name).as_bytes(),
            )),
            (Some(_), None) => {
                return Err(Error::FailedPrecondition(
                    "a server's password is kept encrypted, and TENANTD_SECRET_KEY is not set"
                        .into(),
                ));
            }
        };
        probe(&input.url, password.as_deref()).await?;
        let mut conn = db::conn(&self.pool).await?;
        let row = db::servers::insert(
            &mut conn,
            &db::servers::NewServer {
                name: &input.name,
                url: &clear,
                password: sealed,
                region: &input.region,
                weight: input.weight,
                max_tenants: input.max_tenants,
                draining: input.draining,
                labels: &input.labels,
            },
        )
        .await?
        .ok_or_else(|| {
            Error::AlreadyExists(format!("a database server is named {}", input.name))
        })?;
        server(row)
    }

    pub async fn get_database_server(&self, name: &str) -> Result<DatabaseServer> {
        let mut conn = db::conn(&self.pool).await?;
        server(
            db::servers::find(&mut conn, name)
                .await?
                .ok_or_else(|| not_found(name))?,
        )
    }

    pub async fn list_database_servers(&self) -> Result<Vec<DatabaseServer>> {
        let mut conn = db::conn(&self.pool).await?;
        db::servers::list(&mut conn)
            .await?
            .into_iter()
            .map(server)
            .collect()
    }

    /// Changes the fields named in `fields`, if `etag` (when set) is still
    /// the server's.
    pub async fn update_database_server(
        &self,
        mut input: ServerInput,
        fields: &[String],
        etag: &str,
    ) -> Result<DatabaseServer> {
        let mut out = Vec::new();
        for f in fields {
            if !SERVER_MUTABLE.contains(&f.as_str()) {
                out.push(FieldViolation::new(
                    "update_mask",
                    format!(
                        "{f:?} cannot be updated; mutable fields are {}",
                        SERVER_MUTABLE.join(", ")
                    ),
                ));
            }
        }
        if fields.is_empty() {
            out.push(FieldViolation::new(
                "update_mask",
                "names no field to change",
            ));
        }
        check(&mut input, &mut out);
        if !out.is_empty() {
            return Err(Error::InvalidArgument(out));
        }
        let name = input.name.clone();
        let mut conn = db::conn(&self.pool).await?;
        let row = conn
            .transaction(async |conn| {
                let current = server(
                    db::servers::lock(conn, &name)
                        .await?
                        .ok_or_else(|| not_found(&name))?,
                )?;
                if !etag.is_empty() && etag != current.etag() {
                    return Err(Error::Aborted(format!(
                        "database server {name} changed: its etag is {}, not {etag}",
                        current.etag()
                    )));
                }
                let has = |f: &str| fields.iter().any(|x| x == f);
                db::servers::update(
                    conn,
                    &name,
                    if has("weight") {
                        input.weight
                    } else {
                        current.weight
                    },
                    if has("max_tenants") {
                        input.max_tenants
                    } else {
                        current.max_tenants
                    },
                    if has("draining") {
                        input.draining
                    } else {
                        current.draining
                    },
                    if has("labels") {
                        &input.labels
                    } else {
                        &current.labels
                    },
                )
                .await?;
                db::servers::find(conn, &name)
                    .await?
                    .ok_or_else(|| not_found(&name))
            })
            .await?;
        server(row)
    }

    /// Connects to every server and records whether it answered; the
    /// servers that did not. A change is logged, and the gauge
    /// `tenantd_database_server_reachable` follows it.
    pub async fn check_database_servers(&self) -> Result<usize> {
        let servers = {
            let mut conn = db::conn(&self.pool).await?;
            db::servers::candidates(&mut conn).await?
        };
        let mut unreachable = 0;
        for server in servers {
            let answer = tokio::time::timeout(CHECK_TIMEOUT, self.ping(&server.name))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Unavailable(format!(
                        "no answer within {} s",
                        CHECK_TIMEOUT.as_secs()
                    )))
                });
            let error = match &answer {
                Ok(()) => String::new(),
                Err(e) => e.to_string(),
            };
            metrics::gauge!("tenantd_database_server_reachable", "server" => server.name.clone())
                .set(if answer.is_ok() { 1.0 } else { 0.0 });
            let mut conn = db::conn(&self.pool).await?;
            let changed =
                db::servers::record_check(&mut conn, &server.name, answer.is_ok(), &error).await?;
            match (&answer, changed) {
                (Ok(()), true) => {
                    tracing::info!(server = %server.name, "database server answers again")
                }
                (Err(e), true) => {
                    tracing::warn!(server = %server.name, error = %e, "database server does not answer; no new tenants go there")
                }
                _ => {}
            }
            unreachable += usize::from(answer.is_err());
        }
        Ok(unreachable)
    }

    /// A new connection, not one of the server's pool: a check neither
    /// keeps a quiet server's pool open nor trusts a connection from
    /// before a restart.
    async fn ping(&self, server: &str) -> Result<()> {
        let target = self.tenant_db.fleet.target(server).await?;
        let password = target
            .password
            .as_ref()
            .map(|p| secrecy::ExposeSecret::expose_secret(p).to_owned());
        let scrub = |text: String| match &password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "***"),
            _ => text,
        };
        let mut conn = AsyncPgConnection::establish(&target.full_url()?)
            .await
            .map_err(|e| Error::Unavailable(scrub(e.to_string())))?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(|e| Error::Unavailable(scrub(e.to_string())))?;
        Ok(())
    }

    /// Removes a server no tenant lives on.
    pub async fn deregister_database_server(&self, name: &str) -> Result<()> {
        if name == "default" {
            return Err(Error::FailedPrecondition(
                "the server default is the configured tenant database; it cannot be deregistered"
                    .into(),
            ));
        }
        let mut conn = db::conn(&self.pool).await?;
        conn.transaction(async |conn| {
            let row = db::servers::lock(conn, name)
                .await?
                .ok_or_else(|| not_found(name))?;
            if row.tenant_count > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "database server {name} holds {} tenant(s); move or deprovision them first",
                    row.tenant_count
                )));
            }
            let archived = db::servers::unpurged_deleted(conn, name).await?;
            if archived > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "database server {name} holds the archives of {archived} deleted tenant(s) until they are purged"
                )));
            }
            let moving = db::moves::touching(conn, name).await?;
            if moving > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "{moving} tenant move(s) from or to database server {name} are in flight"
                )));
            }
            db::servers::delete(conn, name).await
        })
        .await?;
        self.tenant_db.fleet.forget(name);
        Ok(())
    }
}

/// Connects to a server and checks that its user may create roles and
/// schemas; the reason if not. The password never appears in it.
async fn probe(url: &str, password: Option<&str>) -> Result<()> {
    let scrub = |text: String| match password {
        Some(p) if !p.is_empty() => text.replace(p, "***"),
        _ => text,
    };
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, AsyncPgConnection::establish(url))
        .await
        .map_err(|_| {
            Error::FailedPrecondition(format!(
                "the server did not answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| Error::FailedPrecondition(scrub(format!("cannot connect: {e}"))))?;
    #[derive(diesel::QueryableByName)]
    struct Rights {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        roles: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        schemas: bool,
    }
    let rights: Rights = diesel::sql_query(
        "SELECT (r.rolcreaterole OR r.rolsuper) AS roles,
                has_database_privilege(current_database(), 'CREATE') AS schemas
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .get_result(&mut conn)
    .await
    .map_err(|e| Error::FailedPrecondition(scrub(format!("checking rights: {e}"))))?;
    match (rights.roles, rights.schemas) {
        (true, true) => Ok(()),
        (false, _) => Err(Error::FailedPrecondition(
            "the server's user may not create roles (CREATEROLE)".into(),
        )),
        (_, false) => Err(Error::FailedPrecondition(
            "the server's user may not create schemas in its database (CREATE)".into(),
        )),
    }
}
