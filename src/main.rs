//! The `jitgate` binary: parses the command line and runs one subcommand.
//!
//! Exit codes: 0 success, 1 error (printed on stderr as `error: …`), 2 usage error (clap).

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use jitgate::config::{self, LogFormat};

use cli::{AuditCmd, Cli, Command, PolicyCmd};

/// mimalloc instead of glibc's malloc. Every statement allocates a dozen small, short-lived
/// objects (its audit events, its portal, its parameters); glibc's malloc and free cost
/// about 4,000 instructions per `-M extended` transaction and a share of the instruction
/// cache when 16 sessions share two cores, mimalloc's a fraction of that (BENCHMARKS.md,
/// "Allocator: mimalloc, 2.x line").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` reads its config before the runtime exists: `runtime:` shapes it.
    let (settings, config) = match cli.command {
        Command::Serve => match config::load(&cli.config) {
            Ok(config) => (config.runtime, Some(config)),
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => (config::RuntimeSettings::default(), None),
    };
    let runtime = match jitgate::runtime::build(settings) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the subcommand; `serve` gets the config `main` already loaded.
async fn run(cli: Cli, loaded: Option<config::Config>) -> Result<()> {
    let config_path = cli.config;
    match cli.command {
        Command::Serve => {
            let config = match loaded {
                Some(config) => config,
                None => config::load(&config_path)?,
            };
            jitgate::logging::init(config.log_format);
            Ok(jitgate::serve::run(config).await?)
        }
        Command::Demo(cmd) => {
            jitgate::logging::init(LogFormat::Text);
            Ok(jitgate::demo::run(jitgate::demo::DemoArgs {
                listen: cmd.listen,
                grant_for: cmd.grant_for,
                dir: cmd.dir,
            })
            .await?)
        }
        Command::CheckConfig => cli::check::run(&config_path).await,
        Command::HashPassword(cmd) => cli::hash::run(cmd),
        Command::Grant(cmd) => cli::admin::grant(&config_path, cmd).await,
        Command::Revoke(cmd) => cli::admin::revoke(&config_path, cmd).await,
        Command::Grants(cmd) => cli::admin::grants(&config_path, cmd).await,
        Command::Sessions(cmd) => cli::admin::sessions(&config_path, cmd).await,
        Command::Login(cmd) => cli::workflow::login(&config_path, cmd).await,
        Command::Logout => cli::workflow::logout(),
        Command::Whoami(cmd) => cli::workflow::whoami(cmd).await,
        Command::Request(cmd) => cli::workflow::request(cmd).await,
        Command::Requests(cmd) => cli::workflow::requests(cmd).await,
        Command::Approve(cmd) => cli::workflow::approve(cmd).await,
        Command::Deny(cmd) => cli::workflow::deny(cmd).await,
        Command::Cancel(cmd) => cli::workflow::cancel(&config_path, cmd).await,
        Command::Extend(cmd) => cli::workflow::extend(cmd).await,
        Command::Review(cmd) => cli::workflow::review(cmd).await,
        Command::Policy(PolicyCmd::Explain(cmd)) => cli::workflow::explain(&config_path, cmd).await,
        Command::Audit(AuditCmd::Tail(cmd)) => cli::audit::tail(&config_path, cmd).await,
        Command::Audit(AuditCmd::Replay(cmd)) => cli::audit::replay(&config_path, cmd),
        Command::Audit(AuditCmd::Sessions(cmd)) => cli::audit_query::sessions(&config_path, cmd),
        Command::Audit(AuditCmd::Search(cmd)) => cli::audit_query::search(&config_path, cmd),
        Command::Audit(AuditCmd::Export(cmd)) => cli::audit_query::export(&config_path, cmd),
        Command::Audit(AuditCmd::Verify(cmd)) => cli::audit_verify::verify(&config_path, cmd).await,
        Command::Audit(AuditCmd::Keygen(cmd)) => cli::audit_verify::keygen(cmd),
        Command::Audit(AuditCmd::AcknowledgeTruncation(cmd)) => {
            cli::audit_verify::acknowledge(&config_path, cmd).await
        }
    }
}
