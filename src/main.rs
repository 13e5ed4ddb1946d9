//! The `jitgate` binary: parses the command line and runs one subcommand.
//!
//! Exit codes: 0 success, 1 error (printed on stderr as `error: …`), 2 usage error (clap).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use jitgate::config::{self, LogFormat};
use tracing_subscriber::EnvFilter;

use cli::{AuditCmd, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let config_path = cli.config;
    match cli.command {
        Command::Serve => {
            let config = config::load(&config_path)?;
            init_tracing(config.log_format);
            Ok(jitgate::serve::run(config).await?)
        }
        Command::Demo(cmd) => {
            init_tracing(LogFormat::Text);
            Ok(jitgate::demo::run(jitgate::demo::DemoArgs {
                listen: cmd.listen,
                grant_for: cmd.grant_for,
                dir: cmd.dir,
            })
            .await?)
        }
        Command::CheckConfig => cli::check::run(&config_path),
        Command::HashPassword(cmd) => cli::hash::run(cmd),
        Command::Grant(cmd) => cli::admin::grant(&config_path, cmd).await,
        Command::Revoke(cmd) => cli::admin::revoke(&config_path, cmd).await,
        Command::Grants(cmd) => cli::admin::grants(&config_path, cmd).await,
        Command::Sessions(cmd) => cli::admin::sessions(&config_path, cmd).await,
        Command::Audit(AuditCmd::Tail(cmd)) => cli::audit::tail(&config_path, cmd).await,
        Command::Audit(AuditCmd::Replay(cmd)) => cli::audit::replay(&config_path, cmd),
        Command::Audit(AuditCmd::Sessions(cmd)) => cli::audit_query::sessions(&config_path, cmd),
        Command::Audit(AuditCmd::Search(cmd)) => cli::audit_query::search(&config_path, cmd),
        Command::Audit(AuditCmd::Export(cmd)) => cli::audit_query::export(&config_path, cmd),
        Command::Audit(AuditCmd::Verify(cmd)) => cli::audit_verify::verify(&config_path, cmd),
        Command::Audit(AuditCmd::Keygen(cmd)) => cli::audit_verify::keygen(cmd),
    }
}

/// Logs of `serve` and `demo` go to stderr (colored only on a terminal); `RUST_LOG`
/// overrides the default `info` level.
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
