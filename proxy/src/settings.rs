//! Typed settings of the proxy crate. The root package builds these from the YAML config;
//! nothing in this crate reads global configuration.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use jitgate_audit::ContentRules;

use crate::auth::ScramVerifier;
pub use crate::guard::RoleChanges;

/// Everything a running proxy needs to know, resolved and validated.
#[derive(Clone)]
pub struct ProxySettings {
    /// Address the client-facing listener binds.
    pub listen: SocketAddr,
    /// Client-facing TLS. `None`: SSLRequest is answered with 'N'.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Clients that did not negotiate TLS are refused (FATAL 28000) after their startup
    /// packet (`tls.required`; needs `tls`).
    pub tls_required: bool,
    /// Time a client has from TCP accept to a finished authentication.
    pub login_timeout: Duration,
    /// Upper bound on one frontend message (protects memory from a hostile length field).
    pub max_message_len: usize,
    /// How long shutdown waits for sessions to end before it drops them.
    pub drain_timeout: Duration,
    /// Identity name → SCRAM verifier (Postgres's `SCRAM-SHA-256$…` format).
    pub identities: HashMap<String, ScramVerifier>,
    /// Target name (what clients put in `dbname`) → upstream database.
    pub targets: HashMap<String, TargetSettings>,
    /// Whether and how upstream connections are parked between sessions of one grant.
    pub reuse: ReuseSettings,
    /// Sessions run pinned to this many single-threaded runtimes (see
    /// [`crate::session_threads`]); 0: on the runtime that accepted them.
    pub session_threads: usize,
    /// What clients that have not authenticated may cost jitgate (connections, audit
    /// events, `/v1/login` attempts).
    pub client_limits: ClientLimits,
    /// Key of the stand-in SCRAM salts and verifiers of unknown identities: the same on
    /// every replica and across restarts (see `unknown_identity_salt_key` in the README).
    pub unknown_identity_key: [u8; 32],
    /// What one session may make jitgate hold (statements, portals, audit per batch).
    pub session_limits: SessionLimits,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .field("tls_required", &self.tls_required)
            .field("login_timeout", &self.login_timeout)
            .field("max_message_len", &self.max_message_len)
            .field("drain_timeout", &self.drain_timeout)
            .field("identities", &self.identities.keys().collect::<Vec<_>>())
            .field("targets", &self.targets)
            .field("reuse", &self.reuse)
            .field("session_threads", &self.session_threads)
            .field("client_limits", &self.client_limits)
            .field("session_limits", &self.session_limits)
            .finish()
    }
}

/// One upstream database that grants can name.
#[derive(Clone, Debug)]
pub struct TargetSettings {
    /// The target's name (as clients and grants spell it).
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Upstream database name (may differ from the target name).
    pub database: String,
    pub tls: UpstreamTls,
    /// Role name (as grants spell it) → the upstream credentials jitgate brokers for it.
    pub roles: HashMap<String, RoleCredentials>,
    /// What sessions on this target record of their statements (SQL size limit,
    /// parameter redaction), per role.
    pub audit: TargetAuditSettings,
    /// How jitgate may prove the brokered password to this upstream.
    pub auth_methods: UpstreamAuthMethods,
    /// Largest SCRAM iteration count jitgate runs PBKDF2 for when this upstream asks.
    pub max_scram_iterations: u32,
    /// Whether sessions on this target may change roles and the server
    /// (`targets.<t>.guard.role_changes`, see [`crate::guard`]).
    pub role_changes: RoleChanges,
    /// Whether sessions log in as the granted role itself or as a per-grant role.
    pub provisioning: Provisioning,
}

/// Default of `targets.<t>.max_scram_iterations`: 25 times PostgreSQL's default of
/// 4096 (about 25 ms of one core per new salt; keys are cached per salt).
pub const DEFAULT_MAX_SCRAM_ITERATIONS: u32 = 100_000;

/// The upstream authentication methods jitgate answers (`targets.<t>.auth_methods`).
/// A method not allowed here gets nothing from jitgate: the login is refused before
/// anything derived from the password is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamAuthMethods {
    /// `scram-sha-256` (the default, and the only method allowed by default).
    pub scram_sha_256: bool,
    /// `md5`: an MD5 hash of password and user name, replayable by whoever sees it.
    pub md5: bool,
    /// `password`: the password in clear text.
    pub password: bool,
}

impl Default for UpstreamAuthMethods {
    fn default() -> Self {
        UpstreamAuthMethods {
            scram_sha_256: true,
            md5: false,
            password: false,
        }
    }
}

/// Limits on clients that have not authenticated (`client_limits:`); see
/// [`crate::limits`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Open client connections in all (authenticated or not).
    pub max_connections: usize,
    /// Open client connections from one IP address.
    pub max_connections_per_ip: usize,
    /// IPv6 clients count against `max_connections_per_ip` per network of this many
    /// leading bits (32..=128; IPv4 per address). See [`crate::limits::IpGroup`].
    pub ipv6_prefix_len: u8,
    /// Pre-authentication refusal events written per client IP and minute.
    pub refusal_events_per_ip: NonZeroU32,
    /// Pre-authentication refusal events written per minute in all.
    pub refusal_events_total: NonZeroU32,
    /// `POST /v1/login` attempts per client IP and minute.
    pub api_logins_per_ip: NonZeroU32,
    /// `POST /v1/login` attempts per identity name and minute.
    pub api_logins_per_identity: NonZeroU32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        ClientLimits {
            max_connections: 1000,
            max_connections_per_ip: 100,
            ipv6_prefix_len: 64,
            refusal_events_per_ip: n(30),
            refusal_events_total: n(300),
            api_logins_per_ip: n(30),
            api_logins_per_identity: n(10),
        }
    }
}

/// Which upstream role a session logs in as (see [`crate::provision`]).
#[derive(Clone, Debug, Default)]
pub enum Provisioning {
    /// As the granted role, with its configured password.
    #[default]
    Shared,
    /// As a role created for the grant (member of the granted role), dropped when the
    /// grant ends.
    Ephemeral(EphemeralSettings),
}

/// How jitgate manages per-grant roles on a target.
#[derive(Clone, Debug)]
pub struct EphemeralSettings {
    /// A role with CREATEROLE (and, on PostgreSQL 16+, ADMIN on the granted roles) that
    /// creates and drops the per-grant roles; its password also keys their passwords.
    pub admin: RoleCredentials,
}

/// Audit content rules of one target: the rules for any role, and the rules of roles
/// that add their own redaction (already merged with the target's, so a role's rules
/// can only hide more).
#[derive(Clone, Debug, Default)]
pub struct TargetAuditSettings {
    /// Rules of sessions whose role has no rules of its own.
    pub default: Arc<ContentRules>,
    /// Role name → rules (the target's plus the role's).
    pub roles: HashMap<String, Arc<ContentRules>>,
}

impl TargetAuditSettings {
    /// The rules a session under `role` records its statements with.
    pub fn rules_for(&self, role: &str) -> Arc<ContentRules> {
        Arc::clone(self.roles.get(role).unwrap_or(&self.default))
    }
}

/// How jitgate talks TLS to an upstream.
#[derive(Clone)]
pub enum UpstreamTls {
    /// Plain TCP.
    Disable,
    /// TLS required; the server certificate is verified with this client config
    /// (roots from a CA file or the bundled web PKI roots) against `server_name`.
    VerifyFull {
        config: Arc<rustls::ClientConfig>,
        server_name: String,
    },
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamTls::Disable => f.write_str("Disable"),
            UpstreamTls::VerifyFull { server_name, .. } => f
                .debug_struct("VerifyFull")
                .field("server_name", server_name)
                .finish(),
        }
    }
}

/// Upstream credentials for one role. The password never leaves the proxy.
#[derive(Clone, Debug)]
pub struct RoleCredentials {
    /// Upstream database user.
    pub user: String,
    pub password: Secret,
}

/// A secret string whose `Debug`/`Display` never print it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is sent to the upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How parked connections are kept (the `upstream_reuse` config section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReuseSettings {
    /// Park connections at all.
    pub enabled: bool,
    /// Close a parked connection nobody took for this long.
    pub idle_timeout: Duration,
    /// Close a connection this long after it was opened, parked or not taken again.
    pub max_lifetime: Duration,
    /// Parked connections kept per grant (and login shape); more are closed.
    pub max_idle_per_grant: usize,
}

impl Default for ReuseSettings {
    fn default() -> Self {
        ReuseSettings {
            enabled: true,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(10 * 60),
            max_idle_per_grant: 32,
        }
    }
}

/// Default for `session_limits.max_prepared_statements`: well above what drivers'
/// statement caches hold (pgjdbc 256, pgx 512, Rails 1000).
pub const DEFAULT_MAX_PREPARED_STATEMENTS: usize = 10_000;
/// Default for `session_limits.max_portals`: named portals are cursors opened through the
/// protocol; applications hold a handful at a time.
pub const DEFAULT_MAX_PORTALS: usize = 1_000;
/// Default for `session_limits.max_audit_batch_bytes`.
pub const DEFAULT_MAX_AUDIT_BATCH_BYTES: usize = 1024 * 1024;
/// Default for `session_limits.max_retained_bytes`: far above what drivers' statement
/// caches hold (256 statements of a few KiB), far below what would strain jitgate.
pub const DEFAULT_MAX_RETAINED_BYTES: usize = 64 * 1024 * 1024;

/// The limits of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Named prepared statements the server may hold for the session at once (the unnamed
    /// statement is not counted).
    pub max_prepared_statements: usize,
    /// Named portals the server may hold for the session at once (the unnamed portal is not
    /// counted).
    pub max_portals: usize,
    /// Bytes of audit events (approximate, as written) built from one client batch before
    /// they are written and that part of the batch forwarded.
    pub max_audit_batch_bytes: usize,
    /// Bytes jitgate keeps for the session's named prepared statements (their text) and
    /// named portals (their recorded parameters, and the text they were bound from),
    /// approximately: the counts alone would let 10 000 statements of a megabyte each
    /// through.
    pub max_retained_bytes: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_prepared_statements: DEFAULT_MAX_PREPARED_STATEMENTS,
            max_portals: DEFAULT_MAX_PORTALS,
            max_audit_batch_bytes: DEFAULT_MAX_AUDIT_BATCH_BYTES,
            max_retained_bytes: DEFAULT_MAX_RETAINED_BYTES,
        }
    }
}
