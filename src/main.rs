//! `tenantd`: parse the command line, set up logging, call into the library.

use std::process::ExitCode;

use clap::Parser;
use tenantd::config::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The benchmark prints figures; per-request logs would drown them.
    let level = if matches!(cli.command, Some(Command::Bench(_))) {
        "warn"
    } else {
        "info"
    };
    let telemetry =
        match tenantd::telemetry::init(cli.log_format, level, cli.otlp_endpoint.as_deref()) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("tenantd: {e}");
                return ExitCode::FAILURE;
            }
        };
    let command = match cli.command {
        Some(command) => command,
        // Plain `tenantd` is `tenantd serve`, with flags from the environment.
        None => Cli::parse_from(["tenantd", "serve"])
            .command
            .unwrap_or_else(|| unreachable!()),
    };
    let result = match command {
        Command::Serve(args) => tenantd::server::serve(args).await,
        Command::Migrate(args) => tenantd::server::migrate(args).await,
        Command::Bench(args) => tenantd::bench::run(args).await,
        Command::Token(args) => tenantd::server::token(args),
        Command::ContractId(args) => tenantd::soroban::print_contract_id(&args).map_err(Into::into),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tenantd: {e}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
