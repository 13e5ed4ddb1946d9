//! rustls configurations built from the config file: the client-facing server certificate
//! and the verifying client config for each upstream that uses TLS.
//!
//! Always the ring provider with rustls's safe default protocol versions. Errors name the
//! field and file, never key material.

use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use jitgate_proxy::settings::UpstreamTls;

use super::ctx::Ctx;
use super::raw::{RawServerTls, RawUpstreamTls, TlsMode};
use crate::error::ConfigError;

/// ALPN protocol name of PostgreSQL 17+ (`sslnegotiation=direct` clients send it; older
/// clients send none, which rustls still accepts).
/// <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL>
const POSTGRES_ALPN: &[u8] = b"postgresql";

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
    let certs = load_certs(ctx, "tls.cert_file", &raw.cert_file)?;
    let key_path = ctx.path_field("tls.key_file", &raw.key_file)?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        ctx.err(
            "tls.key_file",
            format!(
                "{}: {}",
                key_path.display(),
                pem_problem(&e, "private key (PKCS#8, PKCS#1 or SEC1)")
            ),
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ctx.err("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ctx.err(
                "tls",
                format!("certificate and key do not form a usable pair: {e}"),
            )
        })?;
    config.alpn_protocols = vec![POSTGRES_ALPN.to_vec()];
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
            let mut roots = rustls::RootCertStore::empty();
            match &raw.ca_file {
                Some(ca) => {
                    let ca_field = format!("{field}.ca_file");
                    for cert in load_certs(ctx, &ca_field, ca)? {
                        roots.add(cert).map_err(|e| {
                            ctx.err(&ca_field, format!("unusable CA certificate: {e}"))
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
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
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| ctx.err(field, e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(UpstreamTls::VerifyFull {
                config: Arc::new(config),
                server_name,
            })
        }
    }
}
