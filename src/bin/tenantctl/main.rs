//! `tenantctl`: a client for tenantd's gRPC services (tenants, plans,
//! configuration, statistics and webhooks).
//!
//! The server's address is `--server` (`TENANTD_ENDPOINT`). Its older
//! spelling `--endpoint` still works everywhere except after `deliveries`,
//! where `--endpoint` names a webhook endpoint to filter by (see
//! `legacy_endpoint_flag`).
//!
//! Exit status: 0 on success, 1 when the server refuses or fails the call
//! (the reason on stderr), 2 for a usage error, 3 when `watch` sees the
//! tenant end FAILED, CANCELLED or NEEDS_ATTENTION.
//!
//! This file holds the command line and the connection; each group of
//! commands lives in its own module (`tenants`, `plans`, `config`, `stats`,
//! `webhooks`, `deliveries`, `certificates`, ...) behind a `run(connection, format, ...)` entry.

mod apikeys;
mod certificates;
mod config;
mod deliveries;
mod doctor;
mod errors;
mod moves;
mod output;
mod plans;
mod servers;
mod stats;
mod tenants;
mod usage;
mod watch;
mod webhooks;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use errors::Failure;
use output::Format;

/// Talk to a tenantd server.
#[derive(Debug, Parser)]
#[command(name = "tenantctl", version, about)]
struct Cli {
    /// The server's address; `https://` uses TLS. `--endpoint` is read as
    /// `--server` too, except after `deliveries` (where it names a webhook
    /// endpoint).
    #[arg(
        long,
        env = "TENANTD_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// Bearer token (see `tenantd token`); sent as `authorization: Bearer`.
    #[arg(long, env = "TENANTD_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// PEM CA certificate(s) to trust for an `https://` server (else the
    /// system's roots).
    #[arg(long, env = "TENANTD_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS.
    #[arg(long, env = "TENANTD_CERT_FILE", requires = "key_file", global = true)]
    cert_file: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long, env = "TENANTD_KEY_FILE", requires = "cert_file", global = true)]
    key_file: Option<PathBuf>,
    /// How results are printed.
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Tenant(tenants::Cmd),
    /// Manage plans: the templates tenants are provisioned from.
    Plan {
        #[command(subcommand)]
        cmd: plans::Cmd,
    },
    /// Provisioning statistics: tenants by state, pipeline outcomes, time
    /// to ACTIVE per plan, step failures and the oldest running pipeline.
    Stats(stats::Args),
    /// Show or change a tenant's configuration: typed settings seeded
    /// from its plan.
    Config {
        #[command(subcommand)]
        cmd: config::Cmd,
    },
    #[command(flatten)]
    Webhook(webhooks::Cmd),
    /// Record and read what tenants use: `record`, `query` (a line and a
    /// bar per window), `summary` (against the plan's limits).
    Usage {
        #[command(subcommand)]
        cmd: usage::UsageCmd,
    },
    /// Manage meters: what usage is measured by.
    Meter {
        #[command(subcommand)]
        cmd: usage::MeterCmd,
    },
    /// Manage the PostgreSQL servers of tenants' data.
    Server {
        #[command(subcommand)]
        cmd: servers::Cmd,
    },
    /// A tenant's TLS certificate for its DNS name; `--key-out FILE` takes
    /// its private key, which the server hands out once.
    Certificate(certificates::Args),
    /// Tenants' API keys: `create`, `list`, `revoke`, `rotate`, and
    /// `verify` as a gateway does.
    Apikey {
        #[command(subcommand)]
        cmd: apikeys::Cmd,
    },
    /// One screen of what needs an operator: NEEDS_ATTENTION and drifted
    /// tenants, slow pipelines, the outbox backlog, failed deliveries,
    /// legal holds, archives not purged. Exits 1 when anything needs one.
    Doctor(doctor::Args),
}

/// Global flags whose value may be the next argument (`--flag value`).
const VALUE_FLAGS: &[&str] = &[
    "--server",
    "--endpoint",
    "--token",
    "--ca-file",
    "--cert-file",
    "--key-file",
    "--output",
    "-o",
];

/// Rewrites the older spelling of the server flag, `--endpoint`, to
/// `--server` (`--endpoint X` and `--endpoint=X` alike), so command lines
/// written before the rename keep working.
///
/// `deliveries` has a `--endpoint` of its own (a webhook endpoint's name),
/// so when the subcommand is `deliveries`, only the arguments before it are
/// rewritten. The subcommand is the first argument that is neither a flag
/// nor the value of one of [`VALUE_FLAGS`]. Nothing after `--` is rewritten,
/// nor is an argument that is not UTF-8. `args` starts with the program name.
fn legacy_endpoint_flag(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    out.extend(args.next());
    let mut subcommand_seen = false;
    let mut value_next = false;
    let mut done = false;
    for arg in args {
        if done || value_next {
            value_next = false;
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            done = true;
        } else if text == "--endpoint" {
            value_next = !subcommand_seen;
            out.push("--server".into());
            continue;
        } else if let Some(value) = text.strip_prefix("--endpoint=") {
            out.push(format!("--server={value}").into());
            continue;
        } else if !subcommand_seen {
            if VALUE_FLAGS.contains(&text) {
                value_next = true;
            } else if !text.starts_with('-') {
                subcommand_seen = true;
                done = text == "deliveries";
            }
        }
        out.push(arg);
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_from(legacy_endpoint_flag(std::env::args_os().collect()));
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Rpc(message)) => {
            eprintln!("tenantctl: {message}");
            ExitCode::from(errors::RPC_FAILED)
        }
        Err(Failure::Settled(message)) => {
            eprintln!("tenantctl: {message}");
            ExitCode::from(3)
        }
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// The connection every service's client is built on.
pub type Connection = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

async fn connect(cli: &Cli) -> Result<Connection, Failure> {
    let mut endpoint = Channel::from_shared(cli.server.clone())
        .map_err(|e| Failure::Rpc(format!("bad --server {:?}: {e}", cli.server)))?;
    if cli.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match &cli.ca_file {
            Some(path) => tls = tls.ca_certificate(Certificate::from_pem(read(path)?)),
            None => tls = tls.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&cli.cert_file, &cli.key_file) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Failure::Rpc(format!("TLS settings: {e}")))?;
    } else if cli.ca_file.is_some() || cli.cert_file.is_some() {
        return Err(Failure::Rpc(
            "--ca-file and --cert-file need an https:// --server".to_owned(),
        ));
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Failure::Rpc(format!("cannot reach {}: {e}", cli.server)))?;
    let bearer: Option<MetadataValue<Ascii>> = match &cli.token {
        Some(token) => Some(
            format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| Failure::Rpc("the token is not valid header text".to_owned()))?,
        ),
        None => None,
    };
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer(bearer),
    ))
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Rpc(format!("reading {}: {e}", path.display())))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let connection = connect(&cli).await?;
    let format = cli.output;
    match cli.command {
        Cmd::Tenant(cmd) => tenants::run(connection, format, cmd).await,
        Cmd::Plan { cmd } => plans::run(connection, format, cmd).await,
        Cmd::Config { cmd } => config::run(connection, format, cmd).await,
        Cmd::Stats(args) => stats::run(connection, format, args).await,
        Cmd::Usage { cmd } => usage::run_usage(connection, format, cmd).await,
        Cmd::Meter { cmd } => usage::run_meter(connection, format, cmd).await,
        Cmd::Webhook(cmd) => webhooks::run(connection, format, cmd).await,
        Cmd::Doctor(args) => doctor::run(connection, format, args).await,
        Cmd::Certificate(args) => certificates::run(connection, format, args).await,
        Cmd::Apikey { cmd } => apikeys::run(connection, format, cmd).await,
        Cmd::Server { cmd } => servers::run(connection, format, cmd).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        let mut argv = vec![OsString::from("tenantctl")];
        argv.extend(args.iter().map(OsString::from));
        let out = legacy_endpoint_flag(argv);
        assert_eq!(out[0], "tenantctl", "the program name stays first");
        out[1..]
            .iter()
            .map(|a| a.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn endpoint_before_or_after_a_subcommand_is_the_server() {
        assert_eq!(
            rewrite(&["--endpoint", "http://h:1", "get", "acme"]),
            ["--server", "http://h:1", "get", "acme"]
        );
        assert_eq!(
            rewrite(&["get", "acme", "--endpoint", "http://h:1"]),
            ["get", "acme", "--server", "http://h:1"]
        );
        assert_eq!(
            rewrite(&["--endpoint=http://h:1", "plan", "list"]),
            ["--server=http://h:1", "plan", "list"]
        );
        assert_eq!(
            rewrite(&["endpoint", "get", "billing", "--endpoint=http://h:1"]),
            ["endpoint", "get", "billing", "--server=http://h:1"]
        );
    }

    #[test]
    fn after_deliveries_endpoint_is_the_webhook_endpoint() {
        assert_eq!(
            rewrite(&[
                "--endpoint",
                "http://h:1",
                "deliveries",
                "--endpoint",
                "billing"
            ]),
            [
                "--server",
                "http://h:1",
                "deliveries",
                "--endpoint",
                "billing"
            ]
        );
        assert_eq!(
            rewrite(&["deliveries", "--endpoint=billing", "--status", "failed"]),
            ["deliveries", "--endpoint=billing", "--status", "failed"]
        );
    }

    #[test]
    fn values_of_global_flags_are_not_the_subcommand() {
        // `deliveries` as the value of a flag does not stop the rewrite;
        // the subcommand after it decides.
        assert_eq!(
            rewrite(&[
                "--token",
                "deliveries",
                "-o",
                "json",
                "--ca-file",
                "ca.pem",
                "--endpoint",
                "https://h:1",
                "get",
                "acme",
                "--endpoint",
                "https://h:2",
            ]),
            [
                "--token",
                "deliveries",
                "-o",
                "json",
                "--ca-file",
                "ca.pem",
                "--server",
                "https://h:1",
                "get",
                "acme",
                "--server",
                "https://h:2",
            ]
        );
        assert_eq!(
            rewrite(&[
                "--output",
                "json",
                "--cert-file",
                "c.pem",
                "--key-file",
                "k.pem",
                "--endpoint",
                "deliveries",
                "deliveries",
                "--endpoint",
                "billing",
            ]),
            [
                "--output",
                "json",
                "--cert-file",
                "c.pem",
                "--key-file",
                "k.pem",
                "--server",
                "deliveries",
                "deliveries",
                "--endpoint",
                "billing",
            ]
        );
        assert_eq!(
            rewrite(&["-ojson", "--token=t", "deliveries", "--endpoint", "b"]),
            ["-ojson", "--token=t", "deliveries", "--endpoint", "b"]
        );
    }

    #[test]
    fn other_arguments_are_left_alone() {
        assert_eq!(
            rewrite(&["--server", "http://h:1", "list", "--endpoints", "x"]),
            ["--server", "http://h:1", "list", "--endpoints", "x"]
        );
        assert_eq!(
            rewrite(&["config", "set", "id", "--", "--endpoint"]),
            ["config", "set", "id", "--", "--endpoint"]
        );
        assert!(rewrite(&[]).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_is_still_a_value() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![0xff, b'x']);
        let argv: Vec<OsString> = ["tenantctl", "--token"]
            .into_iter()
            .map(OsString::from)
            .chain([odd.clone()])
            .chain(["deliveries", "--endpoint", "b"].map(OsString::from))
            .collect();
        let expected: Vec<OsString> = ["tenantctl", "--token"]
            .into_iter()
            .map(OsString::from)
            .chain([odd])
            .chain(["deliveries", "--endpoint", "b"].map(OsString::from))
            .collect();
        assert_eq!(legacy_endpoint_flag(argv), expected);
    }

    #[test]
    fn the_rewritten_command_line_parses() {
        let parse = |args: &[&str]| {
            let mut argv = vec![OsString::from("tenantctl")];
            argv.extend(args.iter().map(OsString::from));
            Cli::try_parse_from(legacy_endpoint_flag(argv))
        };
        let cli = parse(&["--endpoint", "http://h:1", "get", "acme"]).unwrap();
        assert_eq!(cli.server, "http://h:1");
        let cli = parse(&["get", "acme", "--endpoint", "http://h:2"]).unwrap();
        assert_eq!(cli.server, "http://h:2");
        let cli = parse(&[
            "--endpoint",
            "http://h:3",
            "deliveries",
            "--endpoint",
            "billing",
        ])
        .unwrap();
        assert_eq!(cli.server, "http://h:3");
        match cli.command {
            Cmd::Webhook(webhooks::Cmd::Deliveries(args)) => {
                assert_eq!(args.endpoint.as_deref(), Some("billing"))
            }
            other => panic!("not deliveries: {other:?}"),
        }
        Cli::command().debug_assert();
    }
}
