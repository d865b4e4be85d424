//! `tenantctl`: a client for tenantd's TenantService.
//!
//! Exit status: 0 on success, 1 when the server refuses or fails the call
//! (the reason on stderr), 2 for a usage error, 3 when `watch` sees the
//! tenant end FAILED, CANCELLED or NEEDS_ATTENTION.
//!
//! This file holds the command line and the connection; each group of
//! commands lives in its own module (`tenants`, `plans`, `config`, `stats`)
//! behind a `run(connection, format, ...)` entry.

mod config;
mod errors;
mod output;
mod plans;
mod stats;
mod tenants;
mod watch;

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
    /// The server's address; `https://` uses TLS.
    #[arg(
        long,
        env = "TENANTD_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    endpoint: String,
    /// Bearer token (see `tenantd token`); sent as `authorization: Bearer`.
    #[arg(long, env = "TENANTD_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// PEM CA certificate(s) to trust for an `https://` endpoint (else the
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let mut endpoint = Channel::from_shared(cli.endpoint.clone())
        .map_err(|e| Failure::Rpc(format!("bad --endpoint {:?}: {e}", cli.endpoint)))?;
    if cli.endpoint.starts_with("https://") {
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
            "--ca-file and --cert-file need an https:// --endpoint".to_owned(),
        ));
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Failure::Rpc(format!("cannot reach {}: {e}", cli.endpoint)))?;
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
    }
}
