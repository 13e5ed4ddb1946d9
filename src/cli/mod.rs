//! The `jitgate` command line: clap definitions, and one module per group of subcommands.

pub mod admin;
pub mod audit;
pub mod check;
pub mod hash;
pub mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use uuid::Uuid;

/// Just-in-time access proxy for PostgreSQL.
///
/// Identities get time-limited grants to target databases; every query is audited and
/// sessions end the moment their grant expires or is revoked.
#[derive(Debug, Parser)]
#[command(name = "jitgate", version, propagate_version = true)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "JITGATE_CONFIG",
        default_value = "jitgate.yaml",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy and the admin API.
    Serve,
    /// Start a throwaway PostgreSQL and a jitgate in front of it, with a grant to try.
    Demo(DemoCmd),
    /// Check the config file and print what it configures.
    CheckConfig,
    /// Make a SCRAM-SHA-256 verifier for an identity's password.
    ///
    /// Reads the password from stdin when it is not a terminal (first line), else prompts
    /// twice.
    HashPassword(HashPasswordCmd),
    /// Issue a grant (through the running server's admin API).
    Grant(GrantCmd),
    /// Revoke a grant and drop its live sessions.
    Revoke(RevokeCmd),
    /// List grants (by default the current ones: pending and approved, not yet ended).
    Grants(GrantsCmd),
    /// List live sessions.
    Sessions(SessionsCmd),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Debug, Args)]
pub struct DemoCmd {
    /// Where the demo proxy listens.
    #[arg(long, default_value = "127.0.0.1:6432", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// How long the demo grant lasts.
    #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
    pub grant_for: Duration,
    /// Directory for the demo's cluster, config and logs (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HashPasswordCmd {
    /// Also print a YAML snippet for this identity.
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
}

#[derive(Debug, Args)]
pub struct GrantCmd {
    /// Who gets access.
    #[arg(long)]
    pub identity: String,
    /// Which target database.
    #[arg(long)]
    pub target: String,
    /// As which of the target's roles.
    #[arg(long)]
    pub role: String,
    /// How long, e.g. 30m, 2h.
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Why access is needed (ticket, incident); recorded in the audit log.
    #[arg(long)]
    pub reason: String,
    /// Start later, at this RFC 3339 time (e.g. 2026-01-31T14:00:00Z).
    #[arg(long, value_parser = parse_timestamp, value_name = "RFC3339")]
    pub not_before: Option<Timestamp>,
    /// Who issues the grant (default: admin).
    #[arg(long, value_name = "NAME")]
    pub issued_by: Option<String>,
}

#[derive(Debug, Args)]
pub struct RevokeCmd {
    /// The grant's id.
    pub grant_id: Uuid,
    /// Why it is revoked.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who revokes it (default: admin).
    #[arg(long, value_name = "NAME")]
    pub revoked_by: Option<String>,
}

#[derive(Debug, Args)]
pub struct GrantsCmd {
    /// Include grants that have ended (expired, revoked, denied).
    #[arg(long)]
    pub all: bool,
    /// Only this identity's grants.
    #[arg(long)]
    pub identity: Option<String>,
    /// Only grants on this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SessionsCmd {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print the audit log's events; with --follow keep printing new ones.
    Tail(AuditTailCmd),
    /// Replay one session: its statements in order, with their results.
    Replay(AuditReplayCmd),
}

#[derive(Debug, Args)]
pub struct AuditFile {
    /// Read this audit log instead of the config's audit.path.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditTailCmd {
    /// Keep waiting for new events.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Skip the events already in the log; print only those appended from now on.
    #[arg(long)]
    pub new: bool,
    /// Print the raw JSON lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub file: AuditFile,
}

#[derive(Debug, Args)]
pub struct AuditReplayCmd {
    /// The session id (from `jitgate sessions` or the audit log).
    #[arg(long)]
    pub session: Uuid,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
    pub format: ReplayFormat,
    #[command(flatten)]
    pub file: AuditFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    /// A readable transcript.
    Text,
    /// The session's events as JSON lines.
    Json,
}

/// humantime durations (`30s`, `10m`, `2h`, `1h 30m`); zero is refused.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?}: {e} (examples: 30s, 10m, 2h)"))?;
    if d.is_zero() {
        return Err("the duration must be longer than zero".to_owned());
    }
    Ok(d)
}

fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    text.trim().parse().map_err(|e| {
        format!("{text:?} is not an RFC 3339 time ({e}); example: 2026-01-31T14:00:00Z")
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_duration("30")
            .unwrap_err()
            .contains("invalid duration"));
        assert!(parse_duration("0s").is_err());
    }
}
