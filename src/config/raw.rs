//! The config file exactly as written: serde structs mirroring the YAML, before any value is
//! checked or resolved.
//!
//! Every struct denies unknown fields, so a typo (`passwrod_env`) is an error with its line
//! and column instead of a silently ignored setting. Values whose checks need context (paths,
//! durations, addresses, secrets) stay strings here and are resolved in the sibling modules
//! with field-named errors.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: String,
    #[serde(default)]
    pub tls: Option<RawServerTls>,
    #[serde(default)]
    pub login_timeout: Option<Scalar>,
    #[serde(default)]
    pub max_message_len: Option<u64>,
    #[serde(default)]
    pub drain_timeout: Option<Scalar>,
    #[serde(default)]
    pub identities: BTreeMap<String, RawIdentity>,
    #[serde(default)]
    pub targets: BTreeMap<String, RawTarget>,
    pub store: RawStore,
    pub audit: RawAudit,
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: Option<RawLog>,
    /// Approval rules: who may request what, who approves (validated by the policy crate).
    #[serde(default)]
    pub policy: Option<jitgate_policy::RulesSpec>,
    #[serde(default)]
    pub notifications: Option<RawNotifications>,
    #[serde(default)]
    pub upstream_reuse: Option<RawUpstreamReuse>,
    #[serde(default)]
    pub runtime: Option<RawRuntime>,
    /// What clients that have not authenticated may cost (connections, refusal events,
    /// `/v1/login` attempts).
    #[serde(default)]
    pub client_limits: Option<RawClientLimits>,
    /// Where the key of unknown identities' stand-in SCRAM salts comes from.
    #[serde(default)]
    pub unknown_identities: Option<RawUnknownIdentities>,
    #[serde(default)]
    pub session_limits: Option<RawSessionLimits>,
}

/// `client_limits:` (rates are per minute).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientLimits {
    #[serde(default)]
    pub max_connections: Option<u64>,
    #[serde(default)]
    pub max_connections_per_ip: Option<u64>,
    /// IPv6 clients share `max_connections_per_ip` per network of this many bits.
    #[serde(default)]
    pub ipv6_prefix_len: Option<u64>,
    #[serde(default)]
    pub refusal_events_per_ip: Option<u64>,
    #[serde(default)]
    pub refusal_events_total: Option<u64>,
    #[serde(default)]
    pub api_logins_per_ip: Option<u64>,
    #[serde(default)]
    pub api_logins_per_identity: Option<u64>,
}

/// `unknown_identities:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUnknownIdentities {
    #[serde(default)]
    pub salt_key_env: Option<String>,
    #[serde(default)]
    pub salt_key_file: Option<String>,
}

/// `session_limits:` — what one session may make jitgate hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSessionLimits {
    /// Named prepared statements a session may hold at once.
    #[serde(default)]
    pub max_prepared_statements: Option<u64>,
    /// Named portals a session may hold at once.
    #[serde(default)]
    pub max_portals: Option<u64>,
    /// Bytes of audit events built from one client batch before they are written.
    #[serde(default)]
    pub max_audit_batch_bytes: Option<u64>,
    /// Bytes kept for a session's named prepared statements and portals.
    #[serde(default)]
    pub max_retained_bytes: Option<u64>,
}

/// `runtime:` — the async runtime `jitgate serve` runs on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    /// Threads that run sessions; absent: one per CPU the process may use.
    #[serde(default)]
    pub worker_threads: Option<u64>,
    /// Sessions pinned to this many single-threaded runtimes (absent: one per CPU);
    /// 0: sessions run on the shared runtime.
    #[serde(default)]
    pub session_threads: Option<u64>,
}

/// `upstream_reuse:` — parking upstream connections between sessions of one grant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamReuse {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub idle_timeout: Option<Scalar>,
    #[serde(default)]
    pub max_lifetime: Option<Scalar>,
    #[serde(default)]
    pub max_idle_per_grant: Option<usize>,
}

/// `notifications:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotifications {
    /// How long before a grant ends `grant.expiring_soon` is sent (default 10m).
    #[serde(default)]
    pub expiring_soon: Option<Scalar>,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

/// `notifications.webhooks[i]:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Event names to send; absent = all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub timeout: Option<Scalar>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// `tls:` — the client-facing certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServerTls {
    pub cert_file: String,
    pub key_file: String,
    /// Refuse clients that do not negotiate TLS (default false).
    #[serde(default)]
    pub required: Option<bool>,
}

/// `identities.<name>:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    #[serde(default)]
    pub scram_verifier: Option<String>,
    #[serde(default)]
    pub scram_verifier_file: Option<String>,
}

/// `targets.<name>:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub database: Option<String>,
    /// Required on purpose: whether the hop to the database is encrypted is a decision the
    /// operator makes explicitly, never a default.
    pub tls: RawUpstreamTls,
    pub roles: BTreeMap<String, RawRole>,
    /// What sessions on this target record of their statements.
    #[serde(default)]
    pub audit: Option<RawTargetAudit>,
    /// Upstream authentication methods jitgate answers (default `[scram-sha-256]`).
    #[serde(default)]
    pub auth_methods: Option<Vec<String>>,
    /// Largest SCRAM iteration count the upstream may ask for.
    #[serde(default)]
    pub max_scram_iterations: Option<u64>,
    /// Which statements sessions on this target may not run (issue 17: the statement guard).
    #[serde(default)]
    pub guard: RawTargetGuard,
    /// `shared` (default): sessions log in as the granted role; `ephemeral`: as a role
    /// jitgate creates per grant and drops when the grant ends.
    #[serde(default)]
    pub provisioning: Option<ProvisioningMode>,
    /// The role that creates and drops per-grant roles (`provisioning: ephemeral`).
    #[serde(default)]
    pub admin: Option<RawRole>,
}

/// `targets.<name>.guard:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTargetGuard {
    /// Statements that change roles, role membership, or server/database settings.
    #[serde(default)]
    pub role_changes: RawRoleChanges,
}

/// `targets.<name>.guard.role_changes:` — `refuse` (default) or `allow`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawRoleChanges {
    #[default]
    Refuse,
    Allow,
}

/// `targets.<name>.provisioning:`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ProvisioningMode {
    Shared,
    Ephemeral,
}

/// `targets.<name>.audit:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTargetAudit {
    /// Redaction for every session on the target.
    #[serde(default)]
    pub redact: Option<RawRedact>,
    /// Extra redaction for sessions under one role (added to the target's).
    #[serde(default)]
    pub roles: BTreeMap<String, RawRoleAudit>,
}

/// `targets.<name>.audit.roles.<role>:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoleAudit {
    pub redact: RawRedact,
}

/// `…redact:` — which parameter values the audit log withholds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedact {
    /// Withhold every parameter value.
    #[serde(default)]
    pub all_params: bool,
    /// Withhold values matching any of these regular expressions.
    #[serde(default)]
    pub params_matching: Vec<String>,
}

/// `targets.<name>.tls:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub mode: TlsMode,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Upstream TLS modes. There is deliberately no "require without verification" mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TlsMode {
    Disable,
    VerifyFull,
}

/// `targets.<name>.roles.<role>:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    pub user: String,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
}

/// `store:` — exactly one backend: `sqlite:` (one process) or `postgres:` (replicas).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    #[serde(default)]
    pub sqlite: Option<String>,
    #[serde(default)]
    pub postgres: Option<RawPostgresStore>,
    /// How often live sessions' grants are re-read as a safety net (default 10s).
    #[serde(default)]
    pub reconcile_interval: Option<Scalar>,
}

/// `store.postgres:` — a shared grant store for several jitgate replicas.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgresStore {
    /// Environment variable holding the libpq connection string (it contains a password).
    #[serde(default)]
    pub url_env: Option<String>,
    /// File holding the connection string.
    #[serde(default)]
    pub url_file: Option<String>,
    #[serde(default)]
    pub connect_timeout: Option<Scalar>,
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// Required on purpose, like a target's: `{ mode: verify-full, ca_file: … }` or
    /// `{ mode: disable }`. Not taken from the connection string's `sslmode`.
    pub tls: RawStoreTls,
}

/// `store.postgres.tls:` — the certificate's name is checked against the connection
/// string's `host`, as libpq's verify-full does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStoreTls {
    pub mode: TlsMode,
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// `audit:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub path: String,
    /// SQL longer than this many bytes is recorded as its head, length and SHA-256.
    #[serde(default)]
    pub max_sql_bytes: Option<u64>,
    /// Parameter values longer than this many bytes are recorded as head, length, SHA-256.
    #[serde(default)]
    pub max_param_bytes: Option<u64>,
    /// `write` (default) or `fsync`.
    #[serde(default)]
    pub durability: jitgate_audit::Durability,
    /// Close the live file at this size (`256MiB`, `1GB`, bytes, or `off`).
    #[serde(default)]
    pub rotate_size: Option<Scalar>,
    /// Close the live file at this age (`24h`).
    #[serde(default)]
    pub rotate_age: Option<Scalar>,
    /// Closed files to keep: a count (`30`) or an age (`90d`); default all.
    #[serde(default)]
    pub retain: Option<Scalar>,
    /// zstd-compress closed files.
    #[serde(default)]
    pub compress: bool,
    /// Ed25519 private key (PEM) that signs checkpoints; none: no checkpoints.
    #[serde(default)]
    pub signing_key_file: Option<String>,
    /// A checkpoint after this many events.
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// A checkpoint after this long with events not yet covered.
    #[serde(default)]
    pub checkpoint_interval: Option<Scalar>,
    /// Where checkpoints are copied off the host: `store` (default) or `off`.
    #[serde(default)]
    pub witness: Option<String>,
    /// The log's name at the witness (default `<host>:<absolute audit.path>`).
    #[serde(default)]
    pub witness_log: Option<String>,
}

/// `admin:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: String,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<String>,
    /// Key that signs `jitgate login` tokens; share it between replicas. Absent: a random
    /// key per process (tokens end at restart and work on this replica only).
    #[serde(default)]
    pub session_key_env: Option<String>,
    #[serde(default)]
    pub session_key_file: Option<String>,
    /// How long a `jitgate login` token lasts (default 8h).
    #[serde(default)]
    pub session_ttl: Option<Scalar>,
    /// Serve HTTPS instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<RawAdminTls>,
}

/// `admin.tls:` — the API's certificate, and the CA the CLI trusts for it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdminTls {
    pub cert_file: String,
    pub key_file: String,
    /// CA certificates (PEM) the CLI verifies the API with when it reaches it through this
    /// config file; absent: the web PKI roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// `log:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    #[serde(default)]
    pub format: Option<super::LogFormat>,
}

/// A scalar kept as text, whatever YAML type it was written as, so `login_timeout: 10`
/// reaches the duration parser (which then asks for a unit) instead of failing as a type
/// mismatch.
#[derive(Debug, Clone)]
pub(crate) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 10s, 5m or 1h")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}
