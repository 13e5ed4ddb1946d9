//! The first bytes of a connection: SSLRequest → TLS (or 'N'), GSSENCRequest → 'N',
//! CancelRequest, then the StartupMessage. A TLS ClientHello as the very first bytes is
//! PostgreSQL 17's direct TLS (`sslnegotiation=direct`): accepted only with ALPN
//! `postgresql`, as PostgreSQL does, then the same as after SSLRequest.
//!
//! Bytes a client sends after SSLRequest but before the TLS handshake are refused
//! (the CVE-2021-23214 class of bugs: they would be read as if they came over TLS).
//!
//! Nothing here answers a failure: it is handed back as a [`HandshakeError`], whose
//! [`HandshakeError::into_exit`] says what is recorded and, where the protocol still
//! allows it, what the client is told (see [`super::exit`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::exit::Exit;
use super::stream::ClientStream;
use crate::connection::{read_message, ReadFailure};
use crate::protocol::startup::{parse_startup, StartupMessage};
use crate::protocol::startup::{POSTGRES_ALPN, TLS_HANDSHAKE_RECORD};
use crate::protocol::PgError;
use crate::protocol::ProtocolError;

/// What the client came for.
pub enum ClientRequest {
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

/// Why the handshake failed. Nothing has been sent to the client: see
/// [`HandshakeError::into_exit`].
#[derive(Debug)]
pub enum HandshakeError {
    /// The connection closed or broke between two packets, before the client asked for
    /// anything (a probe, or a client that did not like jitgate's answer to SSLRequest).
    Gone,
    /// The connection closed or broke in the middle of a startup packet.
    Cut {
        /// Bytes of the packet that had arrived.
        got: usize,
        /// The read error, if it was not a clean close.
        error: Option<std::io::Error>,
    },
    /// The TLS handshake failed (rustls's reason).
    Tls(std::io::Error),
    /// A startup packet jitgate refuses; the client can still be told on `stream`.
    Refused {
        error: ProtocolError,
        stream: ClientStream,
    },
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Gone => f.write_str("client left before sending a startup packet"),
            HandshakeError::Cut { got, error: None } => write!(
                f,
                "client closed the connection in the middle of its startup packet ({got} bytes sent)"
            ),
            HandshakeError::Cut {
                got,
                error: Some(e),
            } => write!(
                f,
                "connection error in the middle of the startup packet ({got} bytes sent): {e}"
            ),
            HandshakeError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            HandshakeError::Refused { error, .. } => startup_refusal(error).0.fmt(f),
        }
    }
}

/// Why a startup packet is refused, for the DBA, and what the client should do.
fn startup_refusal(e: &ProtocolError) -> (String, &'static str) {
    match e {
        ProtocolError::UnsupportedVersion { .. } => (
            format!("unsupported protocol version: {e}"),
            "jitgate speaks protocol 3.0, as every PostgreSQL client since 7.4 does; connect with a PostgreSQL client",
        ),
        ProtocolError::MissingUser => (
            format!("startup packet refused: {e}"),
            "give your jitgate identity as the user name (user= or PGUSER)",
        ),
        ProtocolError::DirectTlsWithoutAlpn => (
            format!("startup refused: {e}"),
            "a client that starts with TLS (sslnegotiation=direct) must offer the ALPN protocol \
             \"postgresql\", as PostgreSQL 17 clients do; or connect with sslnegotiation=postgres",
        ),
        ProtocolError::UnencryptedDataAfterSslRequest | ProtocolError::RepeatedEncryptionRequest => (
            format!("startup refused: {e}"),
            "the client broke the encryption negotiation of the PostgreSQL protocol; use a PostgreSQL client (libpq, a JDBC or other PostgreSQL driver)",
        ),
        _ => (
            format!("startup packet refused: {e}"),
            "jitgate expects a PostgreSQL startup packet here: check that a PostgreSQL client is connecting to jitgate's port",
        ),
    }
}

impl HandshakeError {
    /// The connection's [`Exit`], and the stream to tell the client on when the protocol
    /// still allows an answer (a startup packet that arrived whole but is refused).
    pub fn into_exit(self, peer: SocketAddr) -> (Exit, Option<ClientStream>) {
        match self {
            HandshakeError::Gone => (Exit::unrecorded(), None),
            HandshakeError::Refused { error, stream } => {
                let (reason, hint) = startup_refusal(&error);
                let told = PgError::fatal(error.sqlstate(), error.to_string()).with_hint(hint);
                (Exit::at_startup(peer, reason, Some(told)), Some(stream))
            }
            e @ (HandshakeError::Cut { .. } | HandshakeError::Tls(_)) => {
                (Exit::at_startup(peer, e.to_string(), None), None)
            }
        }
    }
}

/// Reads one startup-phase packet; a refused one is handed back with nothing sent.
async fn read_startup<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<StartupMessage, Failed> {
    match read_message(stream, buf, parse_startup).await {
        Ok(Some(message)) => Ok(message),
        Err(ReadFailure::Decode(e)) => Err(Failed::Refused(e)),
        Ok(None) | Err(ReadFailure::Io(_)) if buf.is_empty() => {
            Err(Failed::Other(HandshakeError::Gone))
        }
        Ok(None) => Err(Failed::Other(HandshakeError::Cut {
            got: buf.len(),
            error: None,
        })),
        Err(ReadFailure::Io(e)) => Err(Failed::Other(HandshakeError::Cut {
            got: buf.len(),
            error: Some(e),
        })),
    }
}

/// A failure of one step, before the stream is attached to a refusal.
enum Failed {
    Refused(ProtocolError),
    Other(HandshakeError),
}

impl Failed {
    fn on(self, stream: ClientStream) -> HandshakeError {
        match self {
            Failed::Refused(error) => HandshakeError::Refused { error, stream },
            Failed::Other(e) => e,
        }
    }
}

fn refuse(tcp: TcpStream, error: ProtocolError) -> HandshakeError {
    HandshakeError::Refused {
        error,
        stream: Either::Left(tcp),
    }
}

/// Runs the startup phase up to a StartupMessage (or a CancelRequest).
pub async fn handshake(
    mut tcp: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<ClientRequest, HandshakeError> {
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
        let message = match read_startup(&mut tcp, &mut buf).await {
            Ok(message) => message,
            Err(failed) => return Err(failed.on(Either::Left(tcp))),
        };
        match message {
            StartupMessage::GssEncRequest if !gss_refused && !ssl_refused => {
                gss_refused = true;
                answer(&mut tcp, b"N").await?;
            }
            StartupMessage::SslRequest if ssl_refused => {
                return Err(refuse(tcp, ProtocolError::RepeatedEncryptionRequest));
            }
            StartupMessage::SslRequest => {
                let Some(config) = tls else {
                    ssl_refused = true;
                    answer(&mut tcp, b"N").await?;
                    continue;
                };
                if !buf.is_empty() {
                    return Err(refuse(tcp, ProtocolError::UnencryptedDataAfterSslRequest));
                }
                answer(&mut tcp, b"S").await?;
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
                let tls_stream = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
                return after_tls(tls_stream, buf).await;
            }
            StartupMessage::GssEncRequest => {
                return Err(refuse(tcp, ProtocolError::RepeatedEncryptionRequest));
            }
            StartupMessage::Cancel { pid, secret } => {
                return Ok(ClientRequest::Cancel { pid, secret })
            }
            StartupMessage::Startup { minor, params, .. } => {
                return Ok(ClientRequest::Startup {
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

/// The one-byte answer to SSLRequest/GSSENCRequest; a client that cannot take it is gone.
async fn answer(tcp: &mut TcpStream, byte: &[u8]) -> Result<(), HandshakeError> {
    tcp.write_all(byte).await.map_err(|_| HandshakeError::Gone)
}

/// Whether the client's first byte opens a TLS record (direct TLS), without consuming it.
async fn starts_with_tls_record(tcp: &TcpStream) -> Result<bool, HandshakeError> {
    let mut first = [0u8; 1];
    let n = tcp
        .peek(&mut first)
        .await
        .map_err(|_| HandshakeError::Gone)?;
    Ok(n == 1 && first[0] == TLS_HANDSHAKE_RECORD)
}

/// PostgreSQL 17's direct TLS: the handshake first, no SSLRequest. Without ALPN
/// `postgresql` the client may be something else entirely that was pointed at this port
/// (the reason PostgreSQL insists on it): it is refused (told why, over TLS).
async fn direct_tls(
    tcp: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    buf: BytesMut,
) -> Result<ClientRequest, HandshakeError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
    let tls_stream = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
    if tls_stream.get_ref().1.alpn_protocol() != Some(POSTGRES_ALPN) {
        return Err(HandshakeError::Refused {
            error: ProtocolError::DirectTlsWithoutAlpn,
            stream: Either::Right(Box::new(tls_stream)),
        });
    }
    after_tls(tls_stream, buf).await
}

/// The startup packet (or a cancel request) over an established TLS connection.
async fn after_tls(
    mut tls_stream: tokio_rustls::server::TlsStream<TcpStream>,
    mut buf: BytesMut,
) -> Result<ClientRequest, HandshakeError> {
    let message = match read_startup(&mut tls_stream, &mut buf).await {
        Ok(message) => message,
        Err(failed) => return Err(failed.on(Either::Right(Box::new(tls_stream)))),
    };
    match message {
        StartupMessage::Startup { minor, params, .. } => Ok(ClientRequest::Startup {
            stream: Either::Right(Box::new(tls_stream)),
            buf,
            minor,
            params,
            tls: true,
        }),
        StartupMessage::Cancel { pid, secret } => Ok(ClientRequest::Cancel { pid, secret }),
        _ => Err(HandshakeError::Refused {
            error: ProtocolError::RepeatedEncryptionRequest,
            stream: Either::Right(Box::new(tls_stream)),
        }),
    }
}
