//! The first bytes of a connection: SSLRequest → TLS (or 'N'), GSSENCRequest → 'N',
//! CancelRequest, then the StartupMessage. A TLS ClientHello as the very first bytes is
//! PostgreSQL 17's direct TLS (`sslnegotiation=direct`): accepted only with ALPN
//! `postgresql`, as PostgreSQL does, then the same as after SSLRequest.
//!
//! Bytes a client sends after SSLRequest but before the TLS handshake are refused
//! (the CVE-2021-23214 class of bugs: they would be read as if they came over TLS).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::stream::ClientStream;
use crate::error::ProtocolError;
use crate::protocol::startup::{parse_startup, StartupMessage};
use crate::protocol::startup::{POSTGRES_ALPN, TLS_HANDSHAKE_RECORD};
use crate::protocol::{backend, sqlstate, PgError};

/// What the client came for.
pub enum Hello {
    Startup {
        stream: ClientStream,
        /// Bytes after the startup packet (a pipelining client may send them early).
        buf: BytesMut,
        minor: u16,
        params: Vec<(String, String)>,
        tls: bool,
    },
    Cancel {
        pid: i32,
        secret: i32,
    },
}

/// Why the handshake failed; the client has been told when it could be.
#[derive(Debug)]
pub enum HandshakeError {
    Closed,
    Io(std::io::Error),
    Protocol(ProtocolError),
    Tls(std::io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Closed => f.write_str("client closed the connection during startup"),
            HandshakeError::Io(e) => write!(f, "I/O error during startup: {e}"),
            HandshakeError::Protocol(e) => write!(f, "protocol violation during startup: {e}"),
            HandshakeError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

async fn read_startup<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<StartupMessage, HandshakeError> {
    loop {
        match parse_startup(buf) {
            Ok(Some(message)) => return Ok(message),
            Ok(None) => {}
            Err(e) => {
                let mut out = BytesMut::new();
                backend::error_response(&mut out, &PgError::fatal(e.sqlstate(), e.to_string()));
                let _ = stream.write_all(&out).await;
                let _ = stream.shutdown().await;
                return Err(HandshakeError::Protocol(e));
            }
        }
        let n = stream.read_buf(buf).await.map_err(HandshakeError::Io)?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
    }
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, e: ProtocolError) -> HandshakeError {
    let mut out = BytesMut::new();
    backend::error_response(
        &mut out,
        &PgError::fatal(sqlstate::PROTOCOL_VIOLATION, e.to_string()),
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
    HandshakeError::Protocol(e)
}

/// Runs the startup phase up to a StartupMessage (or a CancelRequest).
pub async fn handshake(
    mut tcp: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<Hello, HandshakeError> {
    let mut buf = BytesMut::with_capacity(1024);
    if let Some(config) = tls {
        if starts_with_tls_record(&tcp).await? {
            return direct_tls(tcp, config, buf).await;
        }
    }
    // libpq asks for GSS encryption first, then SSL; each may be asked once.
    let mut gss_refused = false;
    let mut ssl_refused = false;
    loop {
        match read_startup(&mut tcp, &mut buf).await? {
            StartupMessage::GssEncRequest if !gss_refused && !ssl_refused => {
                gss_refused = true;
                tcp.write_all(b"N").await.map_err(HandshakeError::Io)?;
            }
            StartupMessage::SslRequest if ssl_refused => {
                return Err(refuse(&mut tcp, ProtocolError::RepeatedEncryptionRequest).await);
            }
            StartupMessage::SslRequest => {
                let Some(config) = tls else {
                    ssl_refused = true;
                    tcp.write_all(b"N").await.map_err(HandshakeError::Io)?;
                    continue;
                };
                if !buf.is_empty() {
                    return Err(
                        refuse(&mut tcp, ProtocolError::UnencryptedDataAfterSslRequest).await,
                    );
                }
                tcp.write_all(b"S").await.map_err(HandshakeError::Io)?;
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
                let tls_stream = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
                return after_tls(tls_stream, buf).await;
            }
            StartupMessage::GssEncRequest => {
                return Err(refuse(&mut tcp, ProtocolError::RepeatedEncryptionRequest).await);
            }
            StartupMessage::Cancel { pid, secret } => return Ok(Hello::Cancel { pid, secret }),
            StartupMessage::Startup { minor, params, .. } => {
                return Ok(Hello::Startup {
                    stream: Either::Left(tcp),
                    buf,
                    minor,
                    params,
                    tls: false,
                })
            }
        }
    }
}

/// Whether the client's first byte opens a TLS record (direct TLS), without consuming it.
async fn starts_with_tls_record(tcp: &TcpStream) -> Result<bool, HandshakeError> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await.map_err(HandshakeError::Io)?;
    Ok(n == 1 && first[0] == TLS_HANDSHAKE_RECORD)
}

/// PostgreSQL 17's direct TLS: the handshake first, no SSLRequest. Without ALPN
/// `postgresql` the client may be something else entirely that was pointed at this port
/// (the reason PostgreSQL insists on it): it is told why and closed.
async fn direct_tls(
    tcp: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    buf: BytesMut,
) -> Result<Hello, HandshakeError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
    let mut tls_stream = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
    if tls_stream.get_ref().1.alpn_protocol() != Some(POSTGRES_ALPN) {
        let e = ProtocolError::DirectTlsWithoutAlpn;
        let mut out = BytesMut::new();
        let error = PgError::fatal(sqlstate::PROTOCOL_VIOLATION, e.to_string()).with_hint(
            "a client that starts with TLS (sslnegotiation=direct) must offer the ALPN protocol \
             \"postgresql\", as PostgreSQL 17 clients do; or connect with sslnegotiation=postgres",
        );
        backend::error_response(&mut out, &error);
        let _ = tls_stream.write_all(&out).await;
        let _ = tls_stream.shutdown().await;
        return Err(HandshakeError::Protocol(e));
    }
    after_tls(tls_stream, buf).await
}

/// The startup packet (or a cancel request) over an established TLS connection.
async fn after_tls(
    mut tls_stream: tokio_rustls::server::TlsStream<TcpStream>,
    mut buf: BytesMut,
) -> Result<Hello, HandshakeError> {
    match read_startup(&mut tls_stream, &mut buf).await? {
        StartupMessage::Startup { minor, params, .. } => Ok(Hello::Startup {
            stream: Either::Right(Box::new(tls_stream)),
            buf,
            minor,
            params,
            tls: true,
        }),
        StartupMessage::Cancel { pid, secret } => Ok(Hello::Cancel { pid, secret }),
        _ => Err(refuse(&mut tls_stream, ProtocolError::RepeatedEncryptionRequest).await),
    }
}
