//! `client_limits:`, `unknown_identities:` and each target's `auth_methods` and
//! `max_scram_iterations` → what unauthenticated clients and upstream servers may cost
//! or get from jitgate.

use std::num::NonZeroU32;

use hmac::{Hmac, Mac};
use jitgate_proxy::settings::{
    ClientLimits, Secret, UpstreamAuthMethods, DEFAULT_MAX_SCRAM_ITERATIONS,
};
use sha2::Sha256;

use super::ctx::Ctx;
use super::raw::{RawClientLimits, RawTarget, RawUnknownIdentities};
use super::workflow::MIN_KEY_LEN;
use crate::error::ConfigError;

/// Largest accepted connection limit.
const MAX_CONNECTIONS: u64 = 1_000_000;
/// Shortest accepted `client_limits.ipv6_prefix_len`: a shorter one would put whole
/// providers' customers behind one limit.
const MIN_IPV6_PREFIX_LEN: u8 = 32;
/// Largest accepted rate (per minute).
const MAX_RATE: u64 = 1_000_000;

/// `client_limits:` with its defaults ([`ClientLimits::default`]).
pub(crate) fn client_limits(
    ctx: &Ctx,
    raw: Option<&RawClientLimits>,
) -> Result<ClientLimits, ConfigError> {
    let mut limits = ClientLimits::default();
    let Some(raw) = raw else {
        return Ok(limits);
    };
    let count = |name: &str, v: Option<u64>, default: usize| -> Result<usize, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) if (1..=MAX_CONNECTIONS).contains(&n) => usize::try_from(n)
                .map_err(|_| ctx.err(format!("client_limits.{name}"), "too large")),
            Some(n) => Err(ctx.err(
                format!("client_limits.{name}"),
                format!("{n} is out of range (1..={MAX_CONNECTIONS}; the default is {default})"),
            )),
        }
    };
    let rate =
        |name: &str, v: Option<u64>, default: NonZeroU32| -> Result<NonZeroU32, ConfigError> {
            match v {
                None => Ok(default),
                Some(n) if (1..=MAX_RATE).contains(&n) => u32::try_from(n)
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| ctx.err(format!("client_limits.{name}"), "too large")),
                Some(n) => Err(ctx.err(
                    format!("client_limits.{name}"),
                    format!(
                        "{n} per minute is out of range (1..={MAX_RATE}; the default is {default})"
                    ),
                )),
            }
        };
    limits.max_connections = count(
        "max_connections",
        raw.max_connections,
        limits.max_connections,
    )?;
    limits.max_connections_per_ip = count(
        "max_connections_per_ip",
        raw.max_connections_per_ip,
        limits.max_connections_per_ip.min(limits.max_connections),
    )?;
    if limits.max_connections_per_ip > limits.max_connections {
        return Err(ctx.err(
            "client_limits.max_connections_per_ip",
            format!(
                "{} is more than client_limits.max_connections ({})",
                limits.max_connections_per_ip, limits.max_connections
            ),
        ));
    }
    if let Some(len) = raw.ipv6_prefix_len {
        limits.ipv6_prefix_len = u8::try_from(len)
            .ok()
            .filter(|l| (MIN_IPV6_PREFIX_LEN..=128).contains(l))
            .ok_or_else(|| {
                ctx.err(
                    "client_limits.ipv6_prefix_len",
                    format!(
                        "{len} is out of range ({MIN_IPV6_PREFIX_LEN}..=128 bits; the default \
                         is 64, the network one IPv6 client is usually given)"
                    ),
                )
            })?;
    }
    limits.refusal_events_per_ip = rate(
        "refusal_events_per_ip",
        raw.refusal_events_per_ip,
        limits.refusal_events_per_ip,
    )?;
    limits.refusal_events_total = rate(
        "refusal_events_total",
        raw.refusal_events_total,
        limits.refusal_events_total,
    )?;
    limits.api_logins_per_ip = rate(
        "api_logins_per_ip",
        raw.api_logins_per_ip,
        limits.api_logins_per_ip,
    )?;
    limits.api_logins_per_identity = rate(
        "api_logins_per_identity",
        raw.api_logins_per_identity,
        limits.api_logins_per_identity,
    )?;
    Ok(limits)
}

/// The key of unknown identities' stand-in salts: from `unknown_identities.salt_key_*`
/// when set, else derived from `admin.session_key` when set, else from the admin token.
/// All three are shared by every replica of one deployment and survive restarts, so an
/// unknown identity gets the same salt everywhere and always (like a real one). The
/// derivation is one-way: the salts reveal nothing about the secret they come from.
pub(crate) fn unknown_identity_key(
    ctx: &Ctx,
    raw: Option<&RawUnknownIdentities>,
    session_key: Option<&Secret>,
    admin_token: &Secret,
) -> Result<[u8; 32], ConfigError> {
    let configured = match raw {
        Some(r) if r.salt_key_env.is_some() || r.salt_key_file.is_some() => {
            let key = ctx.one_secret(
                "unknown_identities",
                "salt_key",
                r.salt_key_env.as_deref(),
                r.salt_key_file.as_deref(),
            )?;
            if key.expose().chars().count() < MIN_KEY_LEN {
                return Err(ctx.err(
                    "unknown_identities.salt_key",
                    format!(
                        "the salt key is shorter than {MIN_KEY_LEN} characters; make one with \
                         e.g. `openssl rand -hex 32`"
                    ),
                ));
            }
            Some(key)
        }
        _ => None,
    };
    let (label, secret): (&[u8], &Secret) = match (&configured, session_key) {
        (Some(key), _) => (b"jitgate unknown-identity salts: salt_key", key),
        (None, Some(key)) => (b"jitgate unknown-identity salts: admin.session_key", key),
        (None, None) => (b"jitgate unknown-identity salts: admin.token", admin_token),
    };
    // HMAC-SHA-256(secret, label); HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| ctx.err("unknown_identities", "cannot derive the salt key"))?;
    mac.update(label);
    Ok(mac.finalize().into_bytes().into())
}

/// `targets.<t>.auth_methods` (default `[scram-sha-256]`).
pub(crate) fn auth_methods(
    ctx: &Ctx,
    field: &str,
    target: &RawTarget,
) -> Result<UpstreamAuthMethods, ConfigError> {
    let Some(names) = &target.auth_methods else {
        return Ok(UpstreamAuthMethods::default());
    };
    let field = format!("{field}.auth_methods");
    let mut methods = UpstreamAuthMethods {
        scram_sha_256: false,
        md5: false,
        password: false,
    };
    for (i, name) in names.iter().enumerate() {
        match name.as_str() {
            "scram-sha-256" => methods.scram_sha_256 = true,
            "md5" => methods.md5 = true,
            "password" => methods.password = true,
            other => {
                return Err(ctx.err(
                    format!("{field}[{i}]"),
                    format!("unknown method {other:?} (one of scram-sha-256, md5, password)"),
                ))
            }
        }
    }
    if names.is_empty() {
        return Err(ctx.err(
            field,
            "allow at least one method (the default is [scram-sha-256])",
        ));
    }
    Ok(methods)
}

/// `targets.<t>.max_scram_iterations` (default [`DEFAULT_MAX_SCRAM_ITERATIONS`]).
pub(crate) fn max_scram_iterations(
    ctx: &Ctx,
    field: &str,
    target: &RawTarget,
) -> Result<u32, ConfigError> {
    match target.max_scram_iterations {
        None => Ok(DEFAULT_MAX_SCRAM_ITERATIONS),
        Some(n) if (4096..=10_000_000).contains(&n) => u32::try_from(n)
            .map_err(|_| ctx.err(format!("{field}.max_scram_iterations"), "too large")),
        Some(n) => Err(ctx.err(
            format!("{field}.max_scram_iterations"),
            format!(
                "{n} is out of range (4096..=10000000; the default is \
                 {DEFAULT_MAX_SCRAM_ITERATIONS})"
            ),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;

    fn ctx() -> Ctx {
        Ctx::new(Path::new("/etc/jitgate.yaml"))
    }

    #[test]
    fn client_limits_defaults_overrides_and_mistakes() {
        assert_eq!(
            client_limits(&ctx(), None).unwrap(),
            ClientLimits::default()
        );
        let raw: RawClientLimits = serde_yaml::from_str(
            "max_connections: 10\nmax_connections_per_ip: 2\napi_logins_per_ip: 5\n",
        )
        .unwrap();
        let l = client_limits(&ctx(), Some(&raw)).unwrap();
        assert_eq!(
            (
                l.max_connections,
                l.max_connections_per_ip,
                l.api_logins_per_ip.get()
            ),
            (10, 2, 5)
        );
        let raw: RawClientLimits =
            serde_yaml::from_str("max_connections: 10\nmax_connections_per_ip: 20\n").unwrap();
        let err = client_limits(&ctx(), Some(&raw)).unwrap_err().to_string();
        assert!(
            err.contains("client_limits.max_connections_per_ip"),
            "{err}"
        );
        let raw: RawClientLimits = serde_yaml::from_str("refusal_events_total: 0\n").unwrap();
        let err = client_limits(&ctx(), Some(&raw)).unwrap_err().to_string();
        assert!(err.contains("client_limits.refusal_events_total"), "{err}");
        assert!(serde_yaml::from_str::<RawClientLimits>("max_conections: 1\n").is_err());
    }

    #[test]
    fn ipv6_prefix_len_defaults_to_64_and_is_range_checked() {
        assert_eq!(client_limits(&ctx(), None).unwrap().ipv6_prefix_len, 64);
        for (yaml, want) in [("32", 32), ("56", 56), ("128", 128)] {
            let raw: RawClientLimits =
                serde_yaml::from_str(&format!("ipv6_prefix_len: {yaml}\n")).unwrap();
            assert_eq!(
                client_limits(&ctx(), Some(&raw)).unwrap().ipv6_prefix_len,
                want
            );
        }
        for bad in ["0", "31", "129", "300"] {
            let raw: RawClientLimits =
                serde_yaml::from_str(&format!("ipv6_prefix_len: {bad}\n")).unwrap();
            let err = client_limits(&ctx(), Some(&raw)).unwrap_err().to_string();
            assert!(
                err.contains("client_limits.ipv6_prefix_len") && err.contains("32..=128"),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_identity_key_prefers_its_own_setting_and_is_stable() {
        let token = Secret::new("admin-token-0123456789");
        let session = Secret::new("session-key-0123456789");
        let from_token = unknown_identity_key(&ctx(), None, None, &token).unwrap();
        assert_eq!(
            from_token,
            unknown_identity_key(&ctx(), None, None, &token).unwrap()
        );
        let from_session = unknown_identity_key(&ctx(), None, Some(&session), &token).unwrap();
        assert_ne!(from_token, from_session);
        std::env::set_var("JITGATE_TEST_SALT_KEY", "salt-key-0123456789abcdef");
        let raw = RawUnknownIdentities {
            salt_key_env: Some("JITGATE_TEST_SALT_KEY".into()),
            salt_key_file: None,
        };
        let own = unknown_identity_key(&ctx(), Some(&raw), Some(&session), &token).unwrap();
        assert_ne!(own, from_session);
        std::env::set_var("JITGATE_TEST_SALT_KEY_SHORT", "short");
        let raw = RawUnknownIdentities {
            salt_key_env: Some("JITGATE_TEST_SALT_KEY_SHORT".into()),
            salt_key_file: None,
        };
        assert!(unknown_identity_key(&ctx(), Some(&raw), None, &token).is_err());
    }

    #[test]
    fn auth_methods_and_iterations() {
        let t = |extra: &str| -> RawTarget {
            serde_yaml::from_str(&format!(
                "host: db\ntls: {{ mode: disable }}\nroles: {{}}\n{extra}"
            ))
            .unwrap()
        };
        assert_eq!(
            auth_methods(&ctx(), "targets.p", &t("")).unwrap(),
            UpstreamAuthMethods::default()
        );
        let m = auth_methods(&ctx(), "targets.p", &t("auth_methods: [md5, password]\n")).unwrap();
        assert!(!m.scram_sha_256 && m.md5 && m.password);
        let err = auth_methods(&ctx(), "targets.p", &t("auth_methods: [scram, md5]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("targets.p.auth_methods[0]"), "{err}");
        assert!(auth_methods(&ctx(), "targets.p", &t("auth_methods: []\n")).is_err());
        assert_eq!(
            max_scram_iterations(&ctx(), "targets.p", &t("")).unwrap(),
            100_000
        );
        assert_eq!(
            max_scram_iterations(&ctx(), "targets.p", &t("max_scram_iterations: 600000\n"))
                .unwrap(),
            600_000
        );
        assert!(
            max_scram_iterations(&ctx(), "targets.p", &t("max_scram_iterations: 100\n")).is_err()
        );
    }
}
