//! The request/approval sections: `store:` (which grant store), `policy:` (approval
//! rules), `notifications:` (webhooks), and the `admin:` keys for `jitgate login` tokens.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use jitgate_policy::{Catalog, PolicyError, Rules};
use jitgate_proxy::settings::Secret;

use super::ctx::Ctx;
use super::raw::{RawAdmin, RawNotifications, RawStore};
use crate::error::ConfigError;
use crate::notify::WebhookConfig;

/// Default `store.reconcile_interval`.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(10);
/// Default `store.postgres.connect_timeout`.
pub const DEFAULT_STORE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `store.postgres.pool_size`.
pub const DEFAULT_STORE_POOL_SIZE: u32 = 4;
/// Default `notifications.expiring_soon`.
pub const DEFAULT_EXPIRING_SOON: Duration = Duration::from_secs(10 * 60);
/// Default per-attempt webhook timeout.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default webhook attempts (1 + retries).
pub const DEFAULT_WEBHOOK_ATTEMPTS: u32 = 6;
/// Default lifetime of a `jitgate login` token.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Shortest accepted webhook secret and session key.
pub const MIN_KEY_LEN: usize = 16;

/// Which grant store serves this process.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// One SQLite file: a single jitgate process.
    Sqlite(PathBuf),
    /// A shared PostgreSQL database: several replicas, changes pushed with LISTEN/NOTIFY.
    Postgres {
        /// libpq connection string (holds a password: never logged).
        conninfo: Secret,
        connect_timeout: Duration,
        pool_size: u32,
        /// `store.postgres.tls`.
        tls: jitgate_policy::StoreTls,
    },
}

/// `store:` resolved.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreSettings,
    /// How often live sessions' grants are re-read as a safety net.
    pub reconcile_interval: Duration,
}

/// `notifications:` resolved.
#[derive(Debug, Clone)]
pub struct Notifications {
    /// How long before `expires_at` the `grant.expiring_soon` step happens.
    pub expiring_soon: Duration,
    pub webhooks: Vec<WebhookConfig>,
}

/// How `jitgate login` tokens are signed and how long they last.
#[derive(Debug, Clone)]
pub struct UserSessions {
    /// `None`: a random key per process.
    pub key: Option<Secret>,
    pub ttl: Duration,
}

pub(super) fn store(ctx: &Ctx, raw: &RawStore) -> Result<StoreConfig, ConfigError> {
    let backend =
        match (&raw.sqlite, &raw.postgres) {
            (Some(path), None) => StoreSettings::Sqlite(ctx.path_field("store.sqlite", path)?),
            (None, Some(pg)) => {
                let conninfo = ctx.one_secret(
                    "store.postgres",
                    "url",
                    pg.url_env.as_deref(),
                    pg.url_file.as_deref(),
                )?;
                let connect_timeout = match &pg.connect_timeout {
                    Some(t) => ctx.duration("store.postgres.connect_timeout", &t.0)?,
                    None => DEFAULT_STORE_CONNECT_TIMEOUT,
                };
                let pool_size = match pg.pool_size {
                    None => DEFAULT_STORE_POOL_SIZE,
                    Some(n @ 1..=64) => n,
                    Some(n) => {
                        return Err(ctx.err(
                            "store.postgres.pool_size",
                            format!("{n} is out of range (1..=64)"),
                        ))
                    }
                };
                StoreSettings::Postgres {
                    conninfo,
                    connect_timeout,
                    pool_size,
                    tls: super::tls::store(ctx, &pg.tls)?,
                }
            }
            (Some(_), Some(_)) => return Err(ctx.err(
                "store",
                "set either sqlite (one jitgate process) or postgres (several replicas), not both",
            )),
            (None, None) => {
                return Err(ctx.err(
                    "store",
                    "missing grant store: set sqlite: <file> (one jitgate process) or \
                 postgres: {url_env: …} (several replicas sharing grants)",
                ))
            }
        };
    let reconcile_interval = match &raw.reconcile_interval {
        Some(t) => ctx.duration("store.reconcile_interval", &t.0)?,
        None => DEFAULT_RECONCILE_INTERVAL,
    };
    Ok(StoreConfig {
        backend,
        reconcile_interval,
    })
}

pub(super) fn rules(
    ctx: &Ctx,
    raw: Option<&jitgate_policy::RulesSpec>,
    catalog: &Catalog,
) -> Result<Rules, ConfigError> {
    let Some(spec) = raw else {
        return Ok(Rules::default());
    };
    Rules::from_spec(spec, catalog).map_err(|e| match e {
        PolicyError::InvalidPolicy { field, message } => {
            ctx.err(format!("policy.{field}"), message)
        }
        other => ctx.err("policy", other.to_string()),
    })
}

pub(super) fn notifications(
    ctx: &Ctx,
    raw: Option<&RawNotifications>,
) -> Result<Notifications, ConfigError> {
    let empty = RawNotifications::default();
    let raw = raw.unwrap_or(&empty);
    let expiring_soon = match &raw.expiring_soon {
        Some(t) => ctx.duration("notifications.expiring_soon", &t.0)?,
        None => DEFAULT_EXPIRING_SOON,
    };
    let mut names = BTreeSet::new();
    let mut webhooks = Vec::new();
    for (i, hook) in raw.webhooks.iter().enumerate() {
        let field = format!("notifications.webhooks[{i}]");
        ctx.name(&format!("{field}.name"), "webhook name", &hook.name)?;
        if !names.insert(hook.name.clone()) {
            return Err(ctx.err(
                format!("{field}.name"),
                format!("webhook name {:?} is used twice", hook.name),
            ));
        }
        let url = hook.url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ctx.err(format!("{field}.url"), "must be an http:// or https:// URL"));
        }
        let secret = ctx.one_secret(
            &field,
            "secret",
            hook.secret_env.as_deref(),
            hook.secret_file.as_deref(),
        )?;
        if secret.expose().chars().count() < MIN_KEY_LEN {
            return Err(ctx.err(
                format!("{field}.secret"),
                format!(
                    "the signing secret is shorter than {MIN_KEY_LEN} characters; make one \
                     with e.g. `openssl rand -hex 32`"
                ),
            ));
        }
        let events = match &hook.events {
            None => None,
            Some(list) => {
                let mut set = BTreeSet::new();
                for (j, name) in list.iter().enumerate() {
                    if !crate::notify::EVENTS.contains(&name.as_str()) {
                        return Err(ctx.err(
                            format!("{field}.events[{j}]"),
                            format!(
                                "unknown event {name:?}; known events: {}",
                                crate::notify::EVENTS.join(", ")
                            ),
                        ));
                    }
                    set.insert(name.clone());
                }
                Some(set)
            }
        };
        let timeout = match &hook.timeout {
            Some(t) => ctx.duration(&format!("{field}.timeout"), &t.0)?,
            None => DEFAULT_WEBHOOK_TIMEOUT,
        };
        let max_attempts = match hook.max_attempts {
            None => DEFAULT_WEBHOOK_ATTEMPTS,
            Some(n @ 1..=20) => n,
            Some(n) => {
                return Err(ctx.err(
                    format!("{field}.max_attempts"),
                    format!("{n} is out of range (1..=20)"),
                ))
            }
        };
        webhooks.push(WebhookConfig {
            name: hook.name.clone(),
            url: url.to_owned(),
            secret,
            events,
            timeout,
            max_attempts,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        });
    }
    Ok(Notifications {
        expiring_soon,
        webhooks,
    })
}

pub(super) fn user_sessions(ctx: &Ctx, raw: &RawAdmin) -> Result<UserSessions, ConfigError> {
    let key = match (&raw.session_key_env, &raw.session_key_file) {
        (None, None) => None,
        (env, file) => {
            let key = ctx.one_secret("admin", "session_key", env.as_deref(), file.as_deref())?;
            if key.expose().chars().count() < MIN_KEY_LEN {
                return Err(ctx.err(
                    "admin.session_key",
                    format!(
                        "the session key is shorter than {MIN_KEY_LEN} characters; make one \
                         with e.g. `openssl rand -hex 32`"
                    ),
                ));
            }
            Some(key)
        }
    };
    let ttl = match &raw.session_ttl {
        Some(t) => ctx.duration("admin.session_ttl", &t.0)?,
        None => DEFAULT_SESSION_TTL,
    };
    Ok(UserSessions { key, ttl })
}
