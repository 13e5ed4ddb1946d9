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
mod proxy;
mod raw;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jitgate_audit::AuditConfig;
use jitgate_policy::Catalog;
use jitgate_proxy::settings::{ProxySettings, Secret};
use serde::Deserialize;

pub use crate::error::ConfigError;
pub use ctx::validate_name;
use ctx::Ctx;
use raw::{RawAdmin, RawConfig};

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

/// The whole configuration, resolved and validated; what `jitgate serve` runs from.
#[derive(Debug)]
pub struct Config {
    /// The file it was loaded from (absolute).
    pub path: PathBuf,
    pub proxy: ProxySettings,
    /// The SQLite grant store.
    pub store_path: PathBuf,
    pub audit: AuditConfig,
    pub admin: AdminSettings,
    /// Identities and targets/roles that grants may name.
    pub catalog: Catalog,
    pub log_format: LogFormat,
}

/// Where the admin API listens and the bearer token it requires. Also what the CLI's
/// client commands need to reach it.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub token: Secret,
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

/// Resolves only `audit.path` (the CLI's audit commands).
pub fn load_audit_path(path: &Path) -> Result<PathBuf, ConfigError> {
    let (ctx, raw) = read(path)?;
    ctx.path_field("audit.path", &raw.audit.path)
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
    let identities = proxy::identities(ctx, &raw.identities)?;
    let targets = proxy::targets(ctx, &raw.targets)?;
    let catalog = proxy::catalog(&identities, &targets);

    let store_path = ctx.path_field("store.sqlite", &raw.store.sqlite)?;
    let mut audit = AuditConfig::new(ctx.path_field("audit.path", &raw.audit.path)?);
    audit.durability = raw.audit.durability;
    let admin = admin(ctx, &raw.admin)?;
    if admin.listen == listen && listen.port() != 0 {
        return Err(ctx.err(
            "admin.listen",
            format!("{} is also the proxy's listen address", admin.listen),
        ));
    }
    let log_format = raw.log.and_then(|l| l.format).unwrap_or_default();

    Ok(Config {
        path: ctx.file().to_path_buf(),
        proxy: ProxySettings {
            listen,
            tls,
            login_timeout,
            max_message_len,
            drain_timeout,
            identities,
            targets,
        },
        store_path,
        audit,
        admin,
        catalog,
        log_format,
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
