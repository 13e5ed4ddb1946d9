//! `p0-proxy --config FILE`: jitgate with the audit writer disabled (label `P0`).
//!
//! Only the benchmark runs this, to show what auditing costs (`P/P0`); it is never a
//! shipping mode and the `jitgate` binary has no way to turn audit off. Everything else —
//! config, runtime, logging, shutdown — is what `jitgate serve` does.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use jitgate::config::{self, LogFormat};
use jitgate::serve;
use jitgate_audit::AuditWriter;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--config" => PathBuf::from(path),
        _ => bail!("usage: p0-proxy --config FILE"),
    };
    let config = config::load(&path)?;
    init_tracing(config.log_format);
    let server = serve::start_with_audit(config, AuditWriter::disabled(), None).await?;
    serve::shutdown_signal().await;
    tracing::info!("shutting down: no new connections; draining sessions");
    Ok(server.stop().await?)
}

/// The same subscriber as `jitgate serve`, so logging costs the same in P and P0.
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
