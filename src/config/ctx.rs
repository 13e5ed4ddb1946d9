//! Resolution helpers that turn raw YAML values into typed ones, naming the field on error.
//!
//! Every helper takes the dotted field path (`targets.prod.port`) it is resolving, so each
//! error tells the operator exactly what to edit. Secret values (env vars, file contents)
//! are never copied into an error message; only the variable's or file's name is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jitgate_proxy::settings::Secret;

use crate::error::ConfigError;

/// Where the config came from: errors name this file, relative paths resolve against its
/// directory.
pub(crate) struct Ctx {
    file: PathBuf,
    base: PathBuf,
}

impl Ctx {
    pub(crate) fn new(file: &Path) -> Self {
        let base = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ctx {
            file: file.to_path_buf(),
            base,
        }
    }

    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// An error about one field.
    pub(crate) fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::field(&self.file, field, message)
    }

    /// `rel` resolved against the config file's directory (absolute paths stay as they are).
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }

    /// A non-empty path field, resolved against the config file's directory.
    pub(crate) fn path_field(&self, field: &str, value: &str) -> Result<PathBuf, ConfigError> {
        if value.trim().is_empty() {
            return Err(self.err(field, "must not be empty"));
        }
        Ok(self.path(value))
    }

    /// Reads a text file named by `field`; the message names the resolved path, never the
    /// contents.
    pub(crate) fn read_file(&self, field: &str, value: &str) -> Result<String, ConfigError> {
        let path = self.path_field(field, value)?;
        std::fs::read_to_string(&path)
            .map_err(|e| self.err(field, format!("cannot read {}: {e}", path.display())))
    }

    /// A secret from an environment variable (must be set and non-empty).
    pub(crate) fn env_secret(&self, field: &str, var: &str) -> Result<Secret, ConfigError> {
        if var.is_empty() {
            return Err(self.err(field, "must name an environment variable"));
        }
        match std::env::var(var) {
            Ok(value) if value.is_empty() => {
                Err(self.err(field, format!("environment variable {var} is empty")))
            }
            Ok(value) => Ok(Secret::new(value)),
            Err(std::env::VarError::NotPresent) => {
                Err(self.err(field, format!("environment variable {var} is not set")))
            }
            Err(std::env::VarError::NotUnicode(_)) => Err(self.err(
                field,
                format!("environment variable {var} is not valid UTF-8"),
            )),
        }
    }

    /// A secret from a file; trailing line breaks are dropped (editors and `echo` add them).
    pub(crate) fn file_secret(&self, field: &str, value: &str) -> Result<Secret, ConfigError> {
        let text = self.read_file(field, value)?;
        let secret = text.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(self.err(field, format!("{} is empty", self.path(value).display())));
        }
        Ok(Secret::new(secret))
    }

    /// Exactly one of `<key>_env` / `<key>_file` set → the secret it names.
    pub(crate) fn one_secret(
        &self,
        field: &str,
        key: &str,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Result<Secret, ConfigError> {
        match (env, file) {
            (Some(var), None) => self.env_secret(&format!("{field}.{key}_env"), var),
            (None, Some(path)) => self.file_secret(&format!("{field}.{key}_file"), path),
            (Some(_), Some(_)) => Err(self.err(
                field,
                format!("set either {key}_env or {key}_file, not both"),
            )),
            (None, None) => Err(self.err(
                field,
                format!(
                    "missing {key}: set {key}_env (an environment variable) or {key}_file \
                     (a file holding it)"
                ),
            )),
        }
    }

    /// A duration such as `10s`, `5m` or `1h 30m` ([`jitgate_policy::parse_duration`]).
    pub(crate) fn duration(&self, field: &str, value: &str) -> Result<Duration, ConfigError> {
        jitgate_policy::parse_std_duration(value).map_err(|why| self.err(field, why))
    }

    /// An `IP:PORT` socket address.
    pub(crate) fn socket_addr(&self, field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value.trim().parse().map_err(|_| {
            self.err(
                field,
                format!(
                    "{value:?} is not a socket address (expected IP:PORT, e.g. 127.0.0.1:6432 \
                     or [::1]:6432)"
                ),
            )
        })
    }

    /// A name of an identity, target or role (see [`validate_name`]).
    pub(crate) fn name(&self, field: &str, what: &str, value: &str) -> Result<(), ConfigError> {
        validate_name(what, value).map_err(|msg| self.err(field, msg))
    }
}

/// Checks a name of an identity, target or role: what clients type as `user`/`dbname` and
/// what grants refer to, so kept to a safe, unambiguous alphabet (`[A-Za-z0-9_.-]`) and
/// Postgres's 63-byte identifier limit (NAMEDATALEN - 1), beyond which the server would
/// truncate it. `what` names the kind in the message.
pub fn validate_name(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} name must not be empty"));
    }
    if value.len() > 63 {
        return Err(format!("{what} name {value:?} is longer than 63 bytes"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{what} name {value:?} contains {bad:?}; use only letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}
