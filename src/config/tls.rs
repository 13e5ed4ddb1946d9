//! rustls configurations built from the config file: the client-facing server certificate
//! and the verifying client configs for each upstream and the PostgreSQL grant store
//! that use TLS (one builder for both: roots from a CA file or the web PKI).
//!
//! Always the ring provider with rustls's safe default protocol versions. Errors name the
//! field and file, never key material.

use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use jitgate_proxy::settings::UpstreamTls;

use super::ctx::Ctx;
use super::raw::{RawAdminTls, RawServerTls, RawStoreTls, RawUpstreamTls, TlsMode};
use crate::error::ConfigError;

/// ALPN protocol name of PostgreSQL 17+ (`sslnegotiation=direct` clients must send it;
/// older clients send none, which the SSLRequest path still accepts).
/// <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL>
use jitgate_proxy::protocol::startup::POSTGRES_ALPN;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What went wrong in a PEM file, without echoing any of its content.
fn pem_problem(err: &pem::Error, what: &str) -> String {
    match err {
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => format!("no {what} found in it (expected PEM)"),
        _ => "not a valid PEM file".to_owned(),
    }
}

fn load_certs(
    ctx: &Ctx,
    field: &str,
    value: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let path = ctx.path_field(field, value)?;
    let problem = |msg: String| ctx.err(field, format!("{}: {msg}", path.display()));
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(|e| problem(pem_problem(&e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(pem_problem(&e, "certificate")))?;
    if certs.is_empty() {
        return Err(problem(
            "no certificate found in it (expected PEM CERTIFICATE blocks)".to_owned(),
        ));
    }
    Ok(certs)
}

/// `tls:` → the server config the proxy listener hands to each client TLS handshake.
pub(crate) fn server_config(
    ctx: &Ctx,
    raw: &RawServerTls,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    serving("tls", &raw.cert_file, &raw.key_file, POSTGRES_ALPN, ctx)
}

/// `admin.tls:` → the admin API's HTTPS server config (HTTP/1.1).
pub(crate) fn admin_server_config(
    ctx: &Ctx,
    raw: &RawAdminTls,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    serving("admin.tls", &raw.cert_file, &raw.key_file, b"http/1.1", ctx)
}

/// A server config from `{field}.cert_file` and `{field}.key_file`, offering `alpn`.
fn serving(
    field: &str,
    cert_file: &str,
    key_file: &str,
    alpn: &[u8],
    ctx: &Ctx,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let certs = load_certs(ctx, &format!("{field}.cert_file"), cert_file)?;
    let key_field = format!("{field}.key_file");
    let key_path = ctx.path_field(&key_field, key_file)?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        ctx.err(
            &key_field,
            format!(
                "{}: {}",
                key_path.display(),
                pem_problem(&e, "private key (PKCS#8, PKCS#1 or SEC1)")
            ),
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ctx.err(field, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ctx.err(
                field,
                format!("certificate and key do not form a usable pair: {e}"),
            )
        })?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// `targets.<name>.tls:` → how the proxy connects to that upstream.
pub(crate) fn upstream(
    ctx: &Ctx,
    field: &str,
    raw: &RawUpstreamTls,
    host: &str,
) -> Result<UpstreamTls, ConfigError> {
    match raw.mode {
        TlsMode::Disable => {
            for (key, set) in [
                ("ca_file", raw.ca_file.is_some()),
                ("server_name", raw.server_name.is_some()),
            ] {
                if set {
                    return Err(ctx.err(
                        format!("{field}.{key}"),
                        "only meaningful with mode: verify-full",
                    ));
                }
            }
            Ok(UpstreamTls::Disable)
        }
        TlsMode::VerifyFull => {
            let config = verifying_client(ctx, field, raw.ca_file.as_deref())?;
            let server_name = raw.server_name.as_deref().unwrap_or(host).to_owned();
            if ServerName::try_from(server_name.as_str()).is_err() {
                let name_field = match raw.server_name {
                    Some(_) => format!("{field}.server_name"),
                    None => format!("{field}.server_name (defaults to host)"),
                };
                return Err(ctx.err(
                    name_field,
                    format!("{server_name:?} is not a valid DNS name or IP address"),
                ));
            }
            Ok(UpstreamTls::VerifyFull {
                config,
                server_name,
            })
        }
    }
}

/// A client config that verifies servers against `ca_file` (PEM, at `{field}.ca_file`) or,
/// without one, the bundled web PKI roots; it offers ALPN `postgresql` as libpq 17 does.
fn verifying_client(
    ctx: &Ctx,
    field: &str,
    ca_file: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            let ca_field = format!("{field}.ca_file");
            for cert in load_certs(ctx, &ca_field, ca)? {
                roots
                    .add(cert)
                    .map_err(|e| ctx.err(&ca_field, format!("unusable CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ctx.err(field, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![POSTGRES_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// `store.postgres.tls:` → how the PostgreSQL grant store is reached.
pub(crate) fn store(ctx: &Ctx, raw: &RawStoreTls) -> Result<jitgate_policy::StoreTls, ConfigError> {
    const FIELD: &str = "store.postgres.tls";
    match raw.mode {
        TlsMode::Disable if raw.ca_file.is_some() => Err(ctx.err(
            format!("{FIELD}.ca_file"),
            "only meaningful with mode: verify-full",
        )),
        TlsMode::Disable => Ok(jitgate_policy::StoreTls::Disable),
        TlsMode::VerifyFull => Ok(jitgate_policy::StoreTls::VerifyFull(verifying_client(
            ctx,
            FIELD,
            raw.ca_file.as_deref(),
        )?)),
    }
}
