//! The `jitgate` command line: clap definitions, and one module per group of subcommands.

pub mod admin;
pub mod audit;
pub mod audit_query;
pub mod audit_verify;
pub mod check;
pub mod credentials;
pub mod hash;
pub mod table;
pub mod workflow;

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
    /// Log in to the jitgate API as an identity (same password as for psql); stores a
    /// short-lived token for request/approve/deny/extend/cancel/review.
    Login(LoginCmd),
    /// Forget the stored login token.
    Logout,
    /// Show who you are logged in as, your groups, and until when.
    Whoami(JsonFlag),
    /// Ask for access to a target as a role; the policy rules say who must approve.
    Request(RequestCmd),
    /// List requests you made or can decide on.
    Requests(RequestsCmd),
    /// Approve a pending request (counts once per approver).
    Approve(ApproveCmd),
    /// Turn down a pending request, saying why.
    Deny(DenyCmd),
    /// Withdraw a pending request (the requester, or with the admin token).
    Cancel(CancelCmd),
    /// Ask for more time on a grant you hold; live sessions keep running once approved.
    Extend(ExtendCmd),
    /// Mark a break-glass grant reviewed.
    Review(ApproveCmd),
    /// Inspect the approval policy.
    #[command(subcommand)]
    Policy(PolicyCmd),
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
pub struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LoginCmd {
    /// The jitgate API, e.g. https://jitgate.example.com:6433 (default: the config's
    /// admin.listen, https with admin.tls). Plain http:// only on loopback: a password is
    /// never sent in clear text across a network.
    #[arg(long, env = "JITGATE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// CA certificate(s) (PEM) that an https API's certificate must chain to, instead of
    /// the web PKI roots; remembered for the commands that use the login (default with
    /// no --server: the config's admin.tls.ca_file).
    #[arg(long, env = "JITGATE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Your identity (prompted for when omitted).
    #[arg(long)]
    pub identity: Option<String>,
}

#[derive(Debug, Args)]
pub struct RequestCmd {
    /// Which target database.
    #[arg(long)]
    pub target: String,
    /// As which of the target's roles.
    #[arg(long)]
    pub role: String,
    /// How long access lasts once it starts, e.g. 30m, 1h.
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Why access is needed.
    #[arg(long)]
    pub reason: Option<String>,
    /// A ticket (incident, change), e.g. INC-1234.
    #[arg(long)]
    pub ticket: Option<String>,
    /// Start later, at this RFC 3339 time.
    #[arg(long, value_parser = parse_timestamp, value_name = "RFC3339")]
    pub start_at: Option<Timestamp>,
    /// Break-glass: immediate access without approvers, flagged and reviewed afterwards.
    #[arg(long)]
    pub break_glass: bool,
    /// Makes retries safe: the same key returns the first request instead of a second.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RequestsCmd {
    /// Only requests waiting for a decision.
    #[arg(long)]
    pub pending: bool,
    /// Only your own requests.
    #[arg(long)]
    pub mine: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ApproveCmd {
    /// The request's (or grant's) id.
    pub id: Uuid,
    /// A note recorded with your decision.
    #[arg(long)]
    pub comment: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DenyCmd {
    /// The request's id.
    pub id: Uuid,
    /// Why (required; the requester sees it).
    #[arg(long)]
    pub comment: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CancelCmd {
    /// The request's id.
    pub id: Uuid,
    /// Why.
    #[arg(long)]
    pub comment: Option<String>,
    /// Cancel with the admin token from the config instead of your login.
    #[arg(long)]
    pub admin: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExtendCmd {
    /// The grant's id.
    pub grant_id: Uuid,
    /// Time to add to the grant's end, e.g. 30m.
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Why more time is needed.
    #[arg(long)]
    pub reason: Option<String>,
    /// A ticket the rule may require.
    #[arg(long)]
    pub ticket: Option<String>,
    /// Makes retries safe (see `request --idempotency-key`).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Which rule applies to an identity, target and role; who can approve; how long at
    /// most — or why not.
    Explain(ExplainCmd),
}

#[derive(Debug, Args)]
pub struct ExplainCmd {
    #[arg(long)]
    pub identity: String,
    #[arg(long)]
    pub target: String,
    #[arg(long)]
    pub role: String,
    /// Print JSON.
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
    /// List sessions: who, where, under which grant, when, how they ended, queries and
    /// errors.
    Sessions(AuditSessionsCmd),
    /// Find query events (by SQL regex, errors, identity, …) with their outcomes.
    Search(AuditSearchCmd),
    /// Write matching events as JSON Lines or CSV.
    Export(AuditExportCmd),
    /// Check the log's hash chain and signed checkpoints; exits 1 on any tampering.
    Verify(AuditVerifyCmd),
    /// Make an Ed25519 key pair for signing checkpoints (audit.signing_key_file).
    Keygen(AuditKeygenCmd),
    /// Accept that the log lost events while jitgate was stopped (it ends before its last
    /// signed checkpoint), so jitgate starts on it again. The acknowledgement is written
    /// into the log as a `log_cut_acknowledged` event; run it while jitgate is stopped.
    AcknowledgeTruncation(AuditAcknowledgeCmd),
}

#[derive(Debug, Args)]
pub struct AuditAcknowledgeCmd {
    /// Why the loss is accepted (recorded in the event), e.g. "disk restored from backup".
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct AuditVerifyCmd {
    /// Public key (PEM) to check checkpoint signatures with (default: derived from the
    /// config's audit.signing_key_file).
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also check against the checkpoints copied to the witness (the PostgreSQL grant
    /// store of the config's store.postgres): catches a tail cut together with the local
    /// checkpoints file.
    #[arg(long)]
    pub witness: bool,
    #[command(flatten)]
    pub file: AuditFile,
}

#[derive(Debug, Args)]
pub struct AuditKeygenCmd {
    /// Directory for audit-signing.key (0600) and audit-signing.pub; never overwrites.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Filters shared by `audit sessions`, `search` and `export`.
#[derive(Debug, Args)]
pub struct AuditFilterArgs {
    /// Only this identity.
    #[arg(long)]
    pub identity: Option<String>,
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Only this grant.
    #[arg(long, value_name = "GRANT_ID")]
    pub grant: Option<Uuid>,
    /// Only this session.
    #[arg(long, value_name = "SESSION_ID")]
    pub session: Option<Uuid>,
    /// From this time: RFC 3339, a date (UTC midnight), or a duration ago (`2h`, `7d`).
    #[arg(long, value_parser = parse_since, value_name = "TIME")]
    pub since: Option<Timestamp>,
    /// Before this time (same forms as --since).
    #[arg(long, value_parser = parse_since, value_name = "TIME")]
    pub until: Option<Timestamp>,
}

#[derive(Debug, Args)]
pub struct AuditSessionsCmd {
    #[command(flatten)]
    pub filter: AuditFilterArgs,
    /// Only sessions with at least one failed query.
    #[arg(long)]
    pub errors: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub file: AuditFile,
}

#[derive(Debug, Args)]
pub struct AuditSearchCmd {
    /// Regular expression the SQL must match (Rust regex syntax; `(?i)` ignores case).
    #[arg(long, value_name = "REGEX")]
    pub text: Option<String>,
    /// Only queries that failed.
    #[arg(long)]
    pub errors: bool,
    #[command(flatten)]
    pub filter: AuditFilterArgs,
    /// Stop after this many matches.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Print JSON Lines (`{"query": …, "result": …}`) instead of one summary per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub file: AuditFile,
}

#[derive(Debug, Args)]
pub struct AuditExportCmd {
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Jsonl)]
    pub format: ExportFormatArg,
    /// Only query events whose SQL matches (each followed by its result).
    #[arg(long, value_name = "REGEX")]
    pub text: Option<String>,
    /// Only failed query events (each followed by its result).
    #[arg(long)]
    pub errors: bool,
    #[command(flatten)]
    pub filter: AuditFilterArgs,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub file: AuditFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    /// The log's own JSON lines.
    Jsonl,
    /// A header row, then one row per event (RFC 4180).
    Csv,
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

/// A duration (`30s`, `10m`, `2h`, `1h 30m`; [`jitgate_policy::parse_duration`]).
fn parse_duration(text: &str) -> Result<Duration, String> {
    jitgate_policy::parse_std_duration(text)
}

/// `--since`/`--until`: an RFC 3339 time, a date (`2026-01-31`, UTC midnight), or a
/// duration before now (`90m`, `2h`, `7d`).
fn parse_since(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        return date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| format!("{text:?}: {e}"));
    }
    if let Ok(ago) = jitgate_policy::parse_duration(text) {
        return Timestamp::now()
            .checked_sub(ago)
            .map_err(|e| format!("{text:?}: {e}"));
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2026-01-31T14:00:00Z), a date (2026-01-31) \
         or a duration ago (2h, 7d)"
    ))
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
    fn since_accepts_times_dates_and_durations() {
        assert_eq!(
            parse_since("2026-01-31T14:00:00Z").unwrap().to_string(),
            "2026-01-31T14:00:00Z"
        );
        assert_eq!(
            parse_since("2026-01-31").unwrap().to_string(),
            "2026-01-31T00:00:00Z"
        );
        let ago = parse_since("2h").unwrap();
        let d = Timestamp::now().duration_since(ago);
        assert!(
            d >= jiff::SignedDuration::from_secs(7199) && d < jiff::SignedDuration::from_secs(7300)
        );
        assert!(parse_since("yesterday-ish")
            .unwrap_err()
            .contains("not a time"));
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
