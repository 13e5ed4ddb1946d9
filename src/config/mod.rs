//! The YAML configuration: one file → the typed settings of each crate.
//!
//! Loading happens in two steps: serde reads the file into the `raw` structs (unknown
//! fields are errors, with line and column), then each section is resolved — paths against
//! the config file's directory, secrets from env vars or files, durations, addresses, TLS —
//! with errors that name the offending field (`targets.prod.roles.readonly.password_env:
//! environment variable PROD_RO_PASSWORD is not set`). Secret values never appear in an error
//! or in `Debug` output.
//!
//! The CLI's client commands do not need the whole server configuration: [`load_admin`]
//! resolves only `admin:` (so `jitgate grants` works without the upstream passwords' env
//! vars), and [`load_audit_path`] only `audit.path`. Both still parse the whole file, so a
//! typo anywhere is reported.

mod ctx;
mod limits;
mod proxy;
mod raw;
mod runtime;
mod session_limits;
mod tls;
mod witness;
mod workflow;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jitgate_audit::AuditConfig;
use jitgate_policy::Catalog;
use jitgate_proxy::settings::{ProxySettings, Secret};
use serde::Deserialize;

pub use crate::error::ConfigError;
pub use ctx::validate_name;
use ctx::Ctx;
use raw::{RawAdmin, RawConfig};
pub use runtime::{RuntimeSettings, MAX_WORKER_THREADS};
pub use witness::{WitnessSettings, DEFAULT_WITNESS};
pub use workflow::{Notifications, StoreConfig, StoreSettings, UserSessions};

/// Default for `login_timeout`: generous for a human typing a password into psql, short
/// enough that idle half-open connections do not pile up.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `drain_timeout`: how long shutdown lets sessions finish.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `max_message_len` (bytes): large enough for big COPY rows and bulk INSERTs.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;
/// Smallest accepted `max_message_len`: below this ordinary queries would be refused.
pub const MIN_MAX_MESSAGE_LEN: u64 = 8 * 1024;
/// Largest accepted `max_message_len`: Postgres itself caps a message at 1 GB (MaxAllocSize).
pub const MAX_MAX_MESSAGE_LEN: u64 = 1024 * 1024 * 1024;
/// Shortest accepted admin token: the token is the only thing protecting grant issuance.
pub const MIN_TOKEN_LEN: usize = 16;
/// Smallest accepted `audit.max_sql_bytes`: below this even ordinary statements would be
/// cut, and the head would say too little to be useful.
pub const MIN_MAX_SQL_BYTES: u64 = 64;

/// The whole configuration, resolved and validated; what `jitgate serve` runs from.
#[derive(Debug)]
pub struct Config {
    /// The file it was loaded from (absolute).
    pub path: PathBuf,
    pub proxy: ProxySettings,
    /// The grant store.
    pub store: StoreConfig,
    pub audit: AuditConfig,
    pub admin: AdminSettings,
    /// Identities and targets/roles that grants may name.
    pub catalog: Catalog,
    /// Approval rules (`policy:`); empty: only administrators issue grants.
    pub rules: jitgate_policy::Rules,
    /// Webhooks and the "expiring soon" lead time.
    pub notifications: Notifications,
    /// `jitgate login` tokens.
    pub user_sessions: UserSessions,
    pub log_format: LogFormat,
    /// Worker threads of `jitgate serve`'s runtime.
    pub runtime: RuntimeSettings,
    /// Where the audit checkpoints are copied off the host (`audit.witness`).
    pub witness: Option<WitnessSettings>,
    /// `admin.tls`: the admin API serves HTTPS with this; `None`: plain HTTP.
    pub admin_tls: Option<Arc<rustls::ServerConfig>>,
}

/// Where the admin API listens and the bearer token it requires. Also what the CLI's
/// client commands need to reach it.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub token: Secret,
}

/// The admin API's URL as the CLI reaches it through the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminEndpoint {
    /// `http://` or, with `admin.tls`, `https://` and `admin.listen` (a wildcard address
    /// reached over loopback).
    pub url: String,
    /// `admin.tls.ca_file`: the CA certificates an https API is verified with; `None`:
    /// the web PKI roots.
    pub ca_file: Option<PathBuf>,
}

/// Log output format of `jitgate serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Loads and fully resolves the config file (every secret must be available).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let (ctx, raw) = read(path)?;
    resolve(&ctx, raw)
}

/// Resolves only the `admin:` section (the CLI's grant/revoke/grants/sessions commands).
pub fn load_admin(path: &Path) -> Result<AdminSettings, ConfigError> {
    let (ctx, raw) = read(path)?;
    admin(&ctx, &raw.admin)
}

/// [`load_admin`] and [`load_admin_endpoint`] together: what the CLI's admin-token
/// commands connect with.
pub fn load_admin_client(path: &Path) -> Result<(AdminSettings, AdminEndpoint), ConfigError> {
    let (ctx, raw) = read(path)?;
    Ok((admin(&ctx, &raw.admin)?, admin_endpoint(&ctx, &raw.admin)?))
}

/// Resolves only where the admin API is (`admin.listen`, whether `admin.tls` is set and
/// its `ca_file`): where `jitgate login` finds the server when no `--server` is given
/// (needs neither the admin token nor any password).
pub fn load_admin_endpoint(path: &Path) -> Result<AdminEndpoint, ConfigError> {
    let (ctx, raw) = read(path)?;
    admin_endpoint(&ctx, &raw.admin)
}

fn admin_endpoint(ctx: &Ctx, raw: &RawAdmin) -> Result<AdminEndpoint, ConfigError> {
    let mut addr = ctx.socket_addr("admin.listen", &raw.listen)?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if raw.tls.is_some() { "https" } else { "http" };
    let ca_file = match raw.tls.as_ref().and_then(|t| t.ca_file.as_deref()) {
        Some(file) => Some(ctx.path_field("admin.tls.ca_file", file)?),
        None => None,
    };
    Ok(AdminEndpoint {
        url: format!("{scheme}://{addr}"),
        ca_file,
    })
}

/// Resolves only `audit.path` (the CLI's audit commands).
pub fn load_audit_path(path: &Path) -> Result<PathBuf, ConfigError> {
    let (ctx, raw) = read(path)?;
    ctx.path_field("audit.path", &raw.audit.path)
}

/// Resolves the `audit:` settings that do not depend on the rest of the config (path,
/// durability, rotation, retention, compression, checkpoint signing): what `jitgate audit
/// verify` needs. Reads the signing key when one is configured.
pub fn load_audit(path: &Path) -> Result<AuditConfig, ConfigError> {
    let (ctx, raw) = read(path)?;
    let mut audit = AuditConfig::new(ctx.path_field("audit.path", &raw.audit.path)?);
    audit.durability = raw.audit.durability;
    audit_integrity(&ctx, &raw.audit, &mut audit)?;
    Ok(audit)
}

/// Resolves the grant store and the audit witness: what `jitgate audit verify --witness`
/// needs to read the checkpoints kept off the log's host.
pub fn load_witness(path: &Path) -> Result<(StoreSettings, WitnessSettings), ConfigError> {
    let (ctx, raw) = read(path)?;
    let store = workflow::store(&ctx, &raw.store)?;
    let witness = witness::for_verify(&ctx, &raw.audit, &store.backend)?;
    Ok((store.backend, witness))
}

/// Reads and parses the file into the raw structs.
fn read(path: &Path) -> Result<(Ctx, RawConfig), ConfigError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::file(&path, format!("cannot read config file: {e}")))?;
    let raw: RawConfig = serde_yaml::from_str(&text)
        .map_err(|e| ConfigError::file(&path, format!("invalid config: {e}")))?;
    Ok((Ctx::new(&path), raw))
}

fn resolve(ctx: &Ctx, raw: RawConfig) -> Result<Config, ConfigError> {
    let listen = ctx.socket_addr("listen", &raw.listen)?;
    let tls = raw
        .tls
        .as_ref()
        .map(|t| tls::server_config(ctx, t))
        .transpose()?;
    let tls_required = raw.tls.as_ref().and_then(|t| t.required).unwrap_or(false);
    let login_timeout = match &raw.login_timeout {
        Some(v) => ctx.duration("login_timeout", &v.0)?,
        None => DEFAULT_LOGIN_TIMEOUT,
    };
    let drain_timeout = match &raw.drain_timeout {
        Some(v) => ctx.duration("drain_timeout", &v.0)?,
        None => DEFAULT_DRAIN_TIMEOUT,
    };
    let max_message_len = match raw.max_message_len {
        None => DEFAULT_MAX_MESSAGE_LEN,
        Some(n) if (MIN_MAX_MESSAGE_LEN..=MAX_MAX_MESSAGE_LEN).contains(&n) => {
            usize::try_from(n).map_err(|_| ctx.err("max_message_len", "too large"))?
        }
        Some(n) => {
            return Err(ctx.err(
                "max_message_len",
                format!(
                    "{n} bytes is out of range ({MIN_MAX_MESSAGE_LEN}..={MAX_MAX_MESSAGE_LEN}; \
                     the default is {DEFAULT_MAX_MESSAGE_LEN}, i.e. 64 MiB)"
                ),
            ))
        }
    };

    if raw.identities.is_empty() {
        return Err(ctx.err(
            "identities",
            "at least one identity is needed (who may connect through jitgate)",
        ));
    }
    if raw.targets.is_empty() {
        return Err(ctx.err(
            "targets",
            "at least one target is needed (a database jitgate may connect to)",
        ));
    }
    let max_sql_bytes = match raw.audit.max_sql_bytes {
        None => jitgate_audit::DEFAULT_MAX_SQL_BYTES,
        Some(n) if (MIN_MAX_SQL_BYTES..=MAX_MAX_MESSAGE_LEN).contains(&n) => {
            usize::try_from(n).map_err(|_| ctx.err("audit.max_sql_bytes", "too large"))?
        }
        Some(n) => {
            return Err(ctx.err(
                "audit.max_sql_bytes",
                format!(
                    "{n} bytes is out of range ({MIN_MAX_SQL_BYTES}..={MAX_MAX_MESSAGE_LEN}; \
                     the default is {}, i.e. 64 KiB)",
                    jitgate_audit::DEFAULT_MAX_SQL_BYTES
                ),
            ))
        }
    };
    let identities = proxy::identities(ctx, &raw.identities)?;
    let max_param_bytes = session_limits::max_param_bytes(ctx, raw.audit.max_param_bytes)?;
    let targets = proxy::targets(ctx, &raw.targets, max_sql_bytes, max_param_bytes)?;
    let catalog = proxy::catalog(&identities, &targets);

    let store = workflow::store(ctx, &raw.store)?;
    let rules = workflow::rules(ctx, raw.policy.as_ref(), &catalog)?;
    let notifications = workflow::notifications(ctx, raw.notifications.as_ref())?;
    let user_sessions = workflow::user_sessions(ctx, &raw.admin)?;
    let mut audit = AuditConfig::new(ctx.path_field("audit.path", &raw.audit.path)?);
    audit.durability = raw.audit.durability;
    audit_integrity(ctx, &raw.audit, &mut audit)?;
    let admin = admin(ctx, &raw.admin)?;
    if admin.listen == listen && listen.port() != 0 {
        return Err(ctx.err(
            "admin.listen",
            format!("{} is also the proxy's listen address", admin.listen),
        ));
    }
    let admin_tls = raw
        .admin
        .tls
        .as_ref()
        .map(|t| tls::admin_server_config(ctx, t))
        .transpose()?;
    let log_format = raw.log.and_then(|l| l.format).unwrap_or_default();
    let runtime = runtime::runtime(ctx, raw.runtime.as_ref())?;
    let witness = witness::witness(ctx, &raw.audit, &store.backend, audit.signing_key.is_some())?;
    let client_limits = limits::client_limits(ctx, raw.client_limits.as_ref())?;
    let unknown_identity_key = limits::unknown_identity_key(
        ctx,
        raw.unknown_identities.as_ref(),
        user_sessions.key.as_ref(),
        &admin.token,
    )?;

    Ok(Config {
        path: ctx.file().to_path_buf(),
        proxy: ProxySettings {
            listen,
            tls,
            tls_required,
            login_timeout,
            max_message_len,
            drain_timeout,
            identities,
            targets,
            reuse: proxy::upstream_reuse(ctx, raw.upstream_reuse.as_ref())?,
            session_threads: runtime.session_threads,
            client_limits,
            unknown_identity_key,
            session_limits: session_limits::session_limits(ctx, raw.session_limits.as_ref())?,
        },
        store,
        audit,
        admin,
        catalog,
        rules,
        notifications,
        user_sessions,
        log_format,
        runtime,
        witness,
        admin_tls,
    })
}

fn admin(ctx: &Ctx, raw: &RawAdmin) -> Result<AdminSettings, ConfigError> {
    let listen = ctx.socket_addr("admin.listen", &raw.listen)?;
    let token = ctx.one_secret(
        "admin",
        "token",
        raw.token_env.as_deref(),
        raw.token_file.as_deref(),
    )?;
    if token.expose().chars().count() < MIN_TOKEN_LEN {
        let (field, source) = match (&raw.token_env, &raw.token_file) {
            (Some(var), _) => ("admin.token_env", format!("environment variable {var}")),
            (_, Some(file)) => ("admin.token_file", ctx.path(file).display().to_string()),
            (None, None) => ("admin", "the token".to_owned()),
        };
        return Err(ctx.err(
            field,
            format!(
                "the admin token in {source} is shorter than {MIN_TOKEN_LEN} characters; \
                 make one with e.g. `openssl rand -hex 32`"
            ),
        ));
    }
    Ok(AdminSettings { listen, token })
}

/// Smallest accepted `audit.rotate_size`: smaller files would make a directory of crumbs.
pub const MIN_ROTATE_SIZE: u64 = 4096;
/// Shortest accepted `audit.rotate_age` and age form of `audit.retain`.
pub const MIN_AUDIT_AGE: Duration = Duration::from_secs(60);
/// Largest accepted `audit.checkpoint_every`.
pub const MAX_CHECKPOINT_EVERY: u64 = 10_000_000;

/// `audit.rotate_*`, `retain`, `compress`, `signing_key_file`, `checkpoint_*`.
fn audit_integrity(
    ctx: &Ctx,
    raw: &raw::RawAudit,
    audit: &mut AuditConfig,
) -> Result<(), ConfigError> {
    if let Some(size) = &raw.rotate_size {
        audit.rotate_size = match size.0.trim() {
            "off" => None,
            text => {
                let n = parse_size(text).map_err(|e| ctx.err("audit.rotate_size", e))?;
                if n < MIN_ROTATE_SIZE {
                    return Err(ctx.err(
                        "audit.rotate_size",
                        format!("{n} bytes is too small (at least {MIN_ROTATE_SIZE} bytes; e.g. 256MiB, or off)"),
                    ));
                }
                Some(n)
            }
        };
    }
    if let Some(age) = &raw.rotate_age {
        audit.rotate_age = match age.0.trim() {
            "off" => None,
            text => Some(audit_age(ctx, "audit.rotate_age", text)?),
        };
    }
    if let Some(retain) = &raw.retain {
        let text = retain.0.trim();
        audit.retain = if text == "all" {
            jitgate_audit::Retain::All
        } else if text.bytes().all(|b| b.is_ascii_digit()) {
            match text.parse::<usize>() {
                Ok(n) if n >= 1 => jitgate_audit::Retain::Files(n),
                _ => {
                    return Err(ctx.err(
                        "audit.retain",
                        format!("{text:?}: keep at least 1 closed file (or give an age such as 90d, or all)"),
                    ))
                }
            }
        } else {
            jitgate_audit::Retain::Age(audit_age(ctx, "audit.retain", text)?)
        };
    }
    audit.compress = raw.compress;
    if let Some(file) = &raw.signing_key_file {
        let path = ctx.path_field("audit.signing_key_file", file)?;
        check_key_permissions(ctx, &path)?;
        let key = jitgate_audit::SigningKey::load(&path)
            .map_err(|e| ctx.err("audit.signing_key_file", e.to_string()))?;
        audit.signing_key = Some(key);
    } else if raw.checkpoint_every.is_some() || raw.checkpoint_interval.is_some() {
        let field = if raw.checkpoint_every.is_some() {
            "audit.checkpoint_every"
        } else {
            "audit.checkpoint_interval"
        };
        return Err(ctx.err(
            field,
            "checkpoints need audit.signing_key_file (make a key pair with `jitgate audit keygen --out DIR`)",
        ));
    }
    if let Some(n) = raw.checkpoint_every {
        if !(1..=MAX_CHECKPOINT_EVERY).contains(&n) {
            return Err(ctx.err(
                "audit.checkpoint_every",
                format!("{n} is out of range (1..={MAX_CHECKPOINT_EVERY} events)"),
            ));
        }
        audit.checkpoint_every = n;
    }
    if let Some(interval) = &raw.checkpoint_interval {
        audit.checkpoint_interval = ctx.duration("audit.checkpoint_interval", &interval.0)?;
    }
    Ok(())
}

fn audit_age(ctx: &Ctx, field: &str, text: &str) -> Result<Duration, ConfigError> {
    let age = ctx.duration(field, text)?;
    if age < MIN_AUDIT_AGE {
        return Err(ctx.err(field, format!("{text:?} is shorter than 1 minute")));
    }
    Ok(age)
}

/// A signing key anyone else can read lets them forge checkpoints.
fn check_key_permissions(ctx: &Ctx, path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(ctx.err(
                    "audit.signing_key_file",
                    format!(
                        "{} is accessible by group/others (mode {mode:o}); anyone who can read it \
                         can forge checkpoints: chmod 600 it",
                        path.display()
                    ),
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (ctx, path);
    Ok(())
}

/// A byte size: a plain number of bytes, or a number with a unit — `KiB`, `MiB`, `GiB`
/// (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000); case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?} (examples: 256MiB, 1GiB, 500MB, 1048576)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (use KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod audit_tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500mb"), Ok(500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn max_sql_bytes_is_range_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jitgate.yaml");
        let yaml = |n: u64| {
            format!(
                "listen: 127.0.0.1:0\nidentities:\n  a: {{ scram_verifier: x }}\n\
                 targets:\n  t: {{ host: h, tls: {{ mode: disable }}, roles: {{ r: {{ user: u, password_env: P }} }} }}\n\
                 store: {{ sqlite: g.db }}\naudit: {{ path: a.jsonl, max_sql_bytes: {n} }}\n\
                 admin: {{ listen: 127.0.0.1:0, token_env: T }}\n"
            )
        };
        std::fs::write(&path, yaml(10)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("audit.max_sql_bytes") && err.contains("out of range"),
            "{err}"
        );
        // In range: loading goes on (and fails later, on the fake verifier).
        std::fs::write(&path, yaml(100)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(!err.contains("max_sql_bytes"), "{err}");
    }
}
