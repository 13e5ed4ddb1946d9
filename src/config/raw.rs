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
}

/// `tls:` — the client-facing certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServerTls {
    pub cert_file: String,
    pub key_file: String,
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

/// `store:` — one backend key (room for `postgres:` later).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub sqlite: String,
}

/// `audit:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub path: String,
    /// `write` (default) or `fsync`.
    #[serde(default)]
    pub durability: jitgate_audit::Durability,
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
