//! Errors of the root package's library side: config loading, the admin API client, and
//! starting/stopping the server and the demo.
//!
//! The admin API *server* answers with HTTP statuses and JSON bodies instead (see
//! `api::error`); the CLI wraps these in `anyhow` and prints them with an `error:` prefix.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything the `jitgate` library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is missing, malformed, or names something that does not check out.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// No HTTP exchange with the admin API happened (server not running, wrong address).
    #[error("cannot reach the admin API at {url} (is `jitgate serve` running?)")]
    AdminUnreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// `jitgate login` would have sent a password in clear text across a network.
    #[error(
        "refusing to send your password over plain HTTP to {url}: it is not a loopback address, \
         so anyone on the network path could read the password. Use the server's https:// \
         address (the server needs admin.tls: {{ cert_file, key_file }}; give --ca-file if its \
         certificate is from a private CA), or log in on the server's own host through \
         http://127.0.0.1:<port>"
    )]
    PlainHttpLogin { url: String },

    /// The admin API's address is not a URL jitgate can use.
    #[error("{url:?} is not a usable jitgate API address ({detail}); expected e.g. https://jitgate.example.com:6433")]
    AdminUrl { url: String, detail: String },

    /// The CA certificates to verify an https admin API with cannot be used.
    #[error("CA file {}: {detail}", path.display())]
    AdminCaFile { path: PathBuf, detail: String },

    /// The admin API refused the request; `message` is its own explanation.
    #[error("{message}")]
    Admin { status: u16, message: String },

    /// The admin API answered with something that is not the documented JSON.
    #[error("unexpected answer from the admin API (HTTP {status}): {detail}")]
    AdminProtocol { status: u16, detail: String },

    /// A listener could not bind its address.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// The grant store could not be opened or used.
    #[error("grant store: {0}")]
    Store(#[from] jitgate_policy::PolicyError),

    /// The audit log could not be opened or flushed.
    #[error("audit log: {0}")]
    Audit(#[from] jitgate_audit::AuditError),

    /// The demo's throwaway PostgreSQL failed.
    #[error("throwaway PostgreSQL: {0}")]
    Postgres(#[from] jitgate_testkit::PgClusterError),

    /// Some other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A config problem, named by file and — where there is one — by the YAML field path
/// (`targets.prod.roles.readonly.password_env`), so the operator knows what to edit.
///
/// Messages never contain secret values (passwords, tokens, file contents): only the names
/// of the variables and files they come from.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    file: PathBuf,
    field: Option<String>,
    message: String,
}

impl ConfigError {
    /// A problem with one field.
    pub fn field(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A problem with the file as a whole (unreadable, not YAML, …).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            field: None,
            message: message.into(),
        }
    }

    /// The config file the problem is in.
    pub fn file_path(&self) -> &Path {
        &self.file
    }

    /// The dotted path of the offending field, when the problem is about one field.
    pub fn field_path(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The explanation without the file and field prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}
