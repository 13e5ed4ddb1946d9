//! TLS to the PostgreSQL grant store: `verify-full` or, when the operator says so,
//! nothing.
//!
//! It is configured beside the connection string ([`StoreTls`], from
//! `store.postgres.tls`), not in it: tokio-postgres knows no `sslmode=verify-full` or
//! `sslrootcert=`, and its `require` checks nothing. With [`StoreTls::VerifyFull`] every
//! connection must complete TLS whose certificate chains to the given roots (a CA file or
//! the web PKI) and names the connection string's `host` — libpq's verify-full rule, so
//! `hostaddr=` may give the address while `host=` names the certificate. The connection
//! string's own `sslmode` may only agree: `sslmode=require` with TLS off and
//! `sslmode=disable` with TLS on are refused, and its default `prefer` never applies
//! (no silent fallback to plain text). Failures name the likely cause (wrong CA, a name
//! not in the certificate, a store without TLS).

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;

use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::PolicyError;

/// How the grant store's connections are protected.
#[derive(Clone, Default)]
pub enum StoreTls {
    /// Plain TCP or a unix socket; only for a socket or a network the operator trusts.
    #[default]
    Disable,
    /// TLS required; the certificate is verified with this client config (its roots)
    /// against the connection string's `host`.
    VerifyFull(Arc<ClientConfig>),
}

impl fmt::Debug for StoreTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreTls::Disable => "Disable",
            StoreTls::VerifyFull(_) => "VerifyFull",
        })
    }
}

/// What connections hand tokio-postgres; with [`StoreTls::Disable`] it is never used
/// (`sslmode=disable`), and would trust nothing if it were.
#[derive(Clone)]
pub(super) struct Connector(MakeRustlsConnect);

impl Connector {
    pub(super) fn make(&self) -> MakeRustlsConnect {
        self.0.clone()
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector")
    }
}

fn refused(message: impl fmt::Display) -> PolicyError {
    PolicyError::Store(format!("grant store connection string: {message}"))
}

/// Makes `config`'s `sslmode` follow `tls` (refusing a contradiction) and returns the
/// connector every connection uses.
pub(super) fn apply(config: &mut Config, tls: &StoreTls) -> Result<Connector, PolicyError> {
    match tls {
        StoreTls::Disable => {
            if config.get_ssl_mode() == SslMode::Require {
                return Err(refused(
                    "sslmode=require is not how jitgate encrypts the grant store connection \
                     (it would not check the certificate): remove it and set \
                     store.postgres.tls: { mode: verify-full, ca_file: <the store's CA> }",
                ));
            }
            config.ssl_mode(SslMode::Disable);
            let nothing_trusted = client_config(RootCertStore::empty())?;
            Ok(Connector(MakeRustlsConnect::new(nothing_trusted)))
        }
        StoreTls::VerifyFull(client) => {
            if config.get_ssl_mode() == SslMode::Disable {
                return Err(refused(
                    "sslmode=disable contradicts store.postgres.tls.mode: verify-full; remove \
                     it from the connection string",
                ));
            }
            if config.get_hosts().is_empty() {
                return Err(refused(
                    "TLS verify-full checks the server's certificate against host=, and the \
                     connection string names none; add host=<name in the certificate> \
                     (hostaddr= may still give the address)",
                ));
            }
            #[cfg(unix)]
            if let Some(Host::Unix(dir)) = config
                .get_hosts()
                .iter()
                .find(|h| matches!(h, Host::Unix(_)))
            {
                return Err(refused(format!(
                    "host={} is a unix socket, where PostgreSQL does not use TLS; connect \
                     over TCP to use store.postgres.tls.mode: verify-full, or set mode: \
                     disable for a local socket",
                    dir.display()
                )));
            }
            config.ssl_mode(SslMode::Require);
            Ok(Connector(MakeRustlsConnect::new(ClientConfig::clone(
                client,
            ))))
        }
    }
}

/// A hint for a connection string tokio-postgres could not parse because it uses libpq's
/// own TLS settings (`sslmode=verify-full`, `sslrootcert=`, …); empty otherwise. Names
/// the settings only, never the string (it holds a password).
pub(super) fn libpq_only_hint(conninfo: &str) -> &'static str {
    let libpq_tls = [
        "sslmode=verify",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
    ];
    if libpq_tls.iter().any(|k| conninfo.contains(k)) {
        "; TLS to the grant store is set in store.postgres.tls (mode: verify-full, \
         ca_file), not in the connection string"
    } else {
        ""
    }
}

fn client_config(roots: RootCertStore) -> Result<ClientConfig, PolicyError> {
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| PolicyError::Store(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// What to tell the operator after a failed connection: the likely cause when TLS
/// failed, else `otherwise`.
pub(super) fn advice(e: &tokio_postgres::Error, otherwise: &'static str) -> &'static str {
    let mut source = e.source();
    while let Some(cause) = source {
        let rustls_error = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| cause.downcast_ref::<rustls::Error>());
        if let Some(tls) = rustls_error {
            return match tls {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => {
                    "the grant store's certificate does not name the host= of the connection \
                     string (verify-full checks it): connect by a name the certificate holds"
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer
                    | CertificateError::BadSignature
                    | CertificateError::UnsupportedSignatureAlgorithmContext { .. },
                ) => {
                    "the grant store's certificate is not signed by a CA jitgate trusts: check \
                     store.postgres.tls.ca_file (without it, the web PKI roots are trusted)"
                }
                rustls::Error::InvalidCertificate(_) => {
                    "the grant store's certificate was not accepted (store.postgres.tls)"
                }
                _ => "the TLS handshake with the grant store failed (store.postgres.tls)",
            };
        }
        if cause.to_string().contains("server does not support TLS") {
            return "the grant store does not offer TLS: turn ssl on in its postgresql.conf, \
                    or set store.postgres.tls.mode: disable if the network is trusted";
        }
        source = cause.source();
    }
    otherwise
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn verify_full() -> StoreTls {
        StoreTls::VerifyFull(Arc::new(client_config(RootCertStore::empty()).unwrap()))
    }

    fn refusal(conninfo: &str, tls: &StoreTls) -> String {
        let mut config: Config = conninfo.parse().unwrap();
        apply(&mut config, tls).err().unwrap().to_string()
    }

    #[test]
    fn the_connection_strings_sslmode_follows_store_tls() {
        // Unset sslmode means libpq's "prefer": never left to apply.
        let mut config: Config = "host=db.internal user=u".parse().unwrap();
        apply(&mut config, &verify_full()).unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        let mut config: Config = "host=db.internal user=u".parse().unwrap();
        apply(&mut config, &StoreTls::Disable).unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);

        let weak = refusal("host=db user=u sslmode=require", &StoreTls::Disable);
        assert!(weak.contains("mode: verify-full"), "{weak}");
        let off = refusal("host=db user=u sslmode=disable", &verify_full());
        assert!(off.contains("contradicts"), "{off}");
        let socket = refusal("host=/run/postgresql user=u", &verify_full());
        assert!(socket.contains("unix socket"), "{socket}");
        let nameless = refusal("hostaddr=127.0.0.1 user=u", &verify_full());
        assert!(nameless.contains("names none"), "{nameless}");
    }

    #[test]
    fn libpq_tls_settings_are_pointed_to_store_tls() {
        assert!(
            libpq_only_hint("host=h sslmode=verify-full password=x").contains("store.postgres.tls")
        );
        assert!(
            libpq_only_hint("postgres://u:p@h/d?sslrootcert=ca.pem").contains("store.postgres.tls")
        );
        assert_eq!(libpq_only_hint("host=h password=verify"), "");
    }
}
