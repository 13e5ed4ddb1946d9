//! `p0-proxy --config FILE`: jitgate with the audit writer disabled (label `P0`).
//!
//! Only the benchmark runs this, to show what auditing costs (`P/P0`); it is never a
//! shipping mode and the `jitgate` binary has no way to turn audit off. Everything else —
//! config, runtime, logging, shutdown — is what `jitgate serve` does.

use std::path::PathBuf;

use anyhow::{bail, Result};
use jitgate::config;
use jitgate::serve;
use jitgate_audit::AuditWriter;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--config" => PathBuf::from(path),
        _ => bail!("usage: p0-proxy --config FILE"),
    };
    let config = config::load(&path)?;
    jitgate::runtime::build(config.runtime)?.block_on(serve(config))
}

async fn serve(config: config::Config) -> Result<()> {
    jitgate::logging::init(config.log_format);
    let server = serve::start_with_audit(config, AuditWriter::disabled(), None).await?;
    serve::shutdown_signal().await;
    tracing::info!("shutting down: no new connections; draining sessions");
    Ok(server.stop().await?)
}
