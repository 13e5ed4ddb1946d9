//! `audit.witness` and `audit.witness_log`: where copies of the audit log's signed
//! checkpoints are kept off the log's host (the PostgreSQL grant store), and under which
//! name.

use super::ctx::Ctx;
use super::raw::RawAudit;
use super::workflow::StoreSettings;
use crate::error::ConfigError;

/// The resolved witness: the checkpoints go to the PostgreSQL grant store under `log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessSettings {
    /// The log's name in the witness table (one per log: replicas keep their own).
    pub log: String,
}

/// `audit.witness` without a value: `store` when checkpoints are signed and the store is
/// PostgreSQL, else nothing.
pub const DEFAULT_WITNESS: &str = "store";

/// The default `audit.witness_log`: `<host name>:<absolute audit.path>`, unique per log
/// and stable across restarts.
fn default_log(ctx: &Ctx, raw: &RawAudit) -> Result<String, ConfigError> {
    let path = ctx.path_field("audit.path", &raw.path)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    Ok(format!("{host}:{}", path.display()))
}

/// The log's name, and whether a witness is asked for (`store`) or not (`off`).
fn parse(ctx: &Ctx, raw: &RawAudit) -> Result<(bool, bool, String), ConfigError> {
    let (on, explicit) = match raw.witness.as_deref().map(str::trim) {
        None => (true, false),
        Some("store") => (true, true),
        Some("off") => (false, true),
        Some(other) => {
            return Err(ctx.err(
                "audit.witness",
                format!("{other:?}: expected store (the PostgreSQL grant store) or off"),
            ))
        }
    };
    let log = match raw.witness_log.as_deref().map(str::trim) {
        Some("") => return Err(ctx.err("audit.witness_log", "must not be empty")),
        Some(log) => log.to_owned(),
        None => default_log(ctx, raw)?,
    };
    Ok((on, explicit, log))
}

/// Resolves the witness for `jitgate serve`: only with signed checkpoints and a
/// PostgreSQL grant store; asking for it explicitly without them is an error.
pub(super) fn witness(
    ctx: &Ctx,
    raw: &RawAudit,
    store: &StoreSettings,
    signed: bool,
) -> Result<Option<WitnessSettings>, ConfigError> {
    let (on, explicit, log) = parse(ctx, raw)?;
    if !on {
        return Ok(None);
    }
    let postgres = matches!(store, StoreSettings::Postgres { .. });
    if explicit && !postgres {
        return Err(ctx.err(
            "audit.witness",
            "store needs the PostgreSQL grant store (store.postgres); with store.sqlite the \
             checkpoints would stay on the log's host — set audit.witness: off",
        ));
    }
    if explicit && !signed {
        return Err(ctx.err(
            "audit.witness",
            "there are no checkpoints to copy without audit.signing_key_file",
        ));
    }
    Ok((postgres && signed).then_some(WitnessSettings { log }))
}

/// Resolves the witness for `jitgate audit verify --witness` (which may run without the
/// private key): an error when there is none to check against.
pub(super) fn for_verify(
    ctx: &Ctx,
    raw: &RawAudit,
    store: &StoreSettings,
) -> Result<WitnessSettings, ConfigError> {
    let (on, _, log) = parse(ctx, raw)?;
    if !on {
        return Err(ctx.err(
            "audit.witness",
            "is off: there is no witness to check against",
        ));
    }
    if !matches!(store, StoreSettings::Postgres { .. }) {
        return Err(ctx.err(
            "store",
            "--witness checks against the PostgreSQL grant store (store.postgres), and this \
             config has none",
        ));
    }
    Ok(WitnessSettings { log })
}
