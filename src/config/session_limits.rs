//! `session_limits:` and `audit.max_param_bytes` — what one session may make jitgate
//! hold: named prepared statements and portals, audit bytes built per client batch, and
//! the size of a parameter value in the log. Absent settings take the defaults of
//! `jitgate_proxy::settings` and `jitgate_audit::DEFAULT_MAX_PARAM_BYTES`.

use jitgate_proxy::settings::{
    SessionLimits, DEFAULT_MAX_AUDIT_BATCH_BYTES, DEFAULT_MAX_PORTALS,
    DEFAULT_MAX_PREPARED_STATEMENTS, DEFAULT_MAX_RETAINED_BYTES,
};

use super::ctx::Ctx;
use super::raw::RawSessionLimits;
use crate::error::ConfigError;

/// Largest accepted count limit (a million names is far past any application).
pub const MAX_COUNT_LIMIT: u64 = 1_000_000;
/// Smallest accepted `session_limits.max_audit_batch_bytes`: a few events.
pub const MIN_AUDIT_BATCH_BYTES: u64 = 4 * 1024;
/// Largest accepted `session_limits.max_audit_batch_bytes`.
pub const MAX_AUDIT_BATCH_BYTES: u64 = 256 * 1024 * 1024;
/// Smallest accepted `session_limits.max_retained_bytes`: a few statements.
pub const MIN_RETAINED_BYTES: u64 = 64 * 1024;
/// Largest accepted `session_limits.max_retained_bytes`.
pub const MAX_RETAINED_BYTES: u64 = 16 * 1024 * 1024 * 1024;
/// Smallest accepted `audit.max_param_bytes`: enough to recognise a value.
pub const MIN_MAX_PARAM_BYTES: u64 = 16;
/// Largest accepted `audit.max_param_bytes` (PostgreSQL caps a value at 1 GB).
pub const MAX_MAX_PARAM_BYTES: u64 = 1024 * 1024 * 1024;

/// `value` of `field` within `min..=max`, or `default` when absent.
fn in_range(
    ctx: &Ctx,
    field: &str,
    value: Option<u64>,
    (min, max): (u64, u64),
    default: usize,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if (min..=max).contains(&n) => {
            usize::try_from(n).map_err(|_| ctx.err(field, "too large"))
        }
        Some(n) => Err(ctx.err(
            field,
            format!("{n} is out of range ({min}..={max}; the default is {default})"),
        )),
    }
}

/// `session_limits:` (absent: the defaults).
pub(crate) fn session_limits(
    ctx: &Ctx,
    raw: Option<&RawSessionLimits>,
) -> Result<SessionLimits, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SessionLimits::default());
    };
    Ok(SessionLimits {
        max_prepared_statements: in_range(
            ctx,
            "session_limits.max_prepared_statements",
            raw.max_prepared_statements,
            (1, MAX_COUNT_LIMIT),
            DEFAULT_MAX_PREPARED_STATEMENTS,
        )?,
        max_portals: in_range(
            ctx,
            "session_limits.max_portals",
            raw.max_portals,
            (1, MAX_COUNT_LIMIT),
            DEFAULT_MAX_PORTALS,
        )?,
        max_audit_batch_bytes: in_range(
            ctx,
            "session_limits.max_audit_batch_bytes",
            raw.max_audit_batch_bytes,
            (MIN_AUDIT_BATCH_BYTES, MAX_AUDIT_BATCH_BYTES),
            DEFAULT_MAX_AUDIT_BATCH_BYTES,
        )?,
        max_retained_bytes: in_range(
            ctx,
            "session_limits.max_retained_bytes",
            raw.max_retained_bytes,
            (MIN_RETAINED_BYTES, MAX_RETAINED_BYTES),
            DEFAULT_MAX_RETAINED_BYTES,
        )?,
    })
}

/// `audit.max_param_bytes` (absent: the default).
pub(crate) fn max_param_bytes(ctx: &Ctx, raw: Option<u64>) -> Result<usize, ConfigError> {
    in_range(
        ctx,
        "audit.max_param_bytes",
        raw,
        (MIN_MAX_PARAM_BYTES, MAX_MAX_PARAM_BYTES),
        jitgate_audit::DEFAULT_MAX_PARAM_BYTES,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn absent_means_defaults_and_values_are_range_checked() {
        let ctx = Ctx::new(Path::new("/etc/jitgate.yaml"));
        assert_eq!(
            session_limits(&ctx, None).unwrap(),
            SessionLimits::default()
        );
        let raw = RawSessionLimits {
            max_prepared_statements: Some(5),
            max_portals: None,
            max_audit_batch_bytes: Some(65536),
            max_retained_bytes: None,
        };
        let l = session_limits(&ctx, Some(&raw)).unwrap();
        assert_eq!(l.max_prepared_statements, 5);
        assert_eq!(l.max_portals, DEFAULT_MAX_PORTALS);
        assert_eq!(l.max_audit_batch_bytes, 65536);
        assert_eq!(l.max_retained_bytes, DEFAULT_MAX_RETAINED_BYTES);
        let tiny = RawSessionLimits {
            max_retained_bytes: Some(1024),
            ..RawSessionLimits::default()
        };
        assert!(session_limits(&ctx, Some(&tiny)).is_err());
        let zero = RawSessionLimits {
            max_portals: Some(0),
            ..RawSessionLimits::default()
        };
        let err = session_limits(&ctx, Some(&zero)).unwrap_err().to_string();
        assert!(
            err.contains("session_limits.max_portals") && err.contains("out of range"),
            "{err}"
        );
        assert_eq!(
            max_param_bytes(&ctx, None).unwrap(),
            jitgate_audit::DEFAULT_MAX_PARAM_BYTES
        );
        assert!(max_param_bytes(&ctx, Some(8)).is_err());
        assert_eq!(max_param_bytes(&ctx, Some(100)).unwrap(), 100);
    }
}
