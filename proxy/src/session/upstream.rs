//! Opening a session on the upstream database as the granted role, with brokered
//! credentials: TCP (+ verified TLS), StartupMessage, SCRAM-SHA-256 (MD5 and cleartext
//! only where the target's `auth_methods` allows them) authentication, then
//! ParameterStatus and BackendKeyData up to the first ReadyForQuery.
//!
//! Every upstream login of jitgate goes through [`connect`] — client sessions, the side
//! connections of [`crate::stop`], and the connections later parked for reuse — so the
//! method allow-list and the cap on the SCRAM iteration count hold for all of them. An
//! upstream asking for a method that is not allowed is sent nothing derived from the
//! password. Channel binding (SCRAM-SHA-256-PLUS) is not used: jitgate verifies the
//! server's certificate itself (`tls.mode: verify-full`) and proves the server's
//! knowledge of the role's secret by checking its SCRAM signature.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::error::UpstreamError;
use super::stream::UpstreamStream;
use crate::auth::{ScramClient, ScramKeyCache};
use crate::cancel::CancelTarget;
use crate::connection::{read_message, ReadFailure};
use crate::protocol::backend::{parse_error_fields, server_message, FullMessage};
use crate::settings::{RoleCredentials, TargetSettings, UpstreamTls};

/// How long opening the upstream connection (TCP + TLS + auth) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated upstream session, ready for queries.
pub struct Upstream {
    pub stream: UpstreamStream,
    pub pid: i32,
    pub secret: i32,
    /// Raw ParameterStatus (and NoticeResponse) frames the server sent during startup,
    /// forwarded to the client as they are (again, verbatim, to every later session
    /// that reuses this connection: the reset returns the settings to these values).
    pub greeting: BytesMut,
    /// When the connection was opened (bounds its life when it is reused).
    pub opened_at: Instant,
    /// Taken from the parked connections rather than opened for this session.
    pub reused: bool,
}

/// TCP to `host:port`, then TLS when `tls` requires it (SSLRequest first).
pub(crate) async fn connect_stream(
    host: &str,
    port: u16,
    tls: &UpstreamTls,
) -> Result<UpstreamStream, UpstreamError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(UpstreamError::Connect)?;
    let _ = tcp.set_nodelay(true);
    match tls {
        UpstreamTls::Disable => Ok(Either::Left(tcp)),
        UpstreamTls::VerifyFull {
            config,
            server_name,
        } => {
            let mut tcp = tcp;
            let mut buf = BytesMut::new();
            frontend::ssl_request(&mut buf);
            tcp.write_all(&buf).await.map_err(UpstreamError::Connect)?;
            let answer = tcp.read_u8().await.map_err(UpstreamError::Connect)?;
            if answer != b'S' {
                return Err(UpstreamError::TlsRefused);
            }
            let name = ServerName::try_from(server_name.clone())
                .map_err(|_| UpstreamError::TlsName(server_name.clone()))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(UpstreamError::Tls)?;
            Ok(Either::Right(Box::new(stream)))
        }
    }
}

/// Connects to `target` as `creds`, forwarding the allow-listed startup `params`.
/// SCRAM keys come from `keys` (PBKDF2 runs only on a miss, on a blocking thread).
pub async fn connect(
    target: &TargetSettings,
    creds: &RoleCredentials,
    params: &[(String, String)],
    keys: &ScramKeyCache,
) -> Result<Upstream, UpstreamError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(target, creds, params, keys))
        .await
        .map_err(|_| UpstreamError::Timeout(CONNECT_TIMEOUT))?
}

fn scram_error(e: crate::auth::client::ScramClientError) -> UpstreamError {
    UpstreamError::Protocol(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        e.to_string(),
    ))
}

/// `Ok` when `allowed`; otherwise the error naming the target, the method the server
/// asked for, and the setting that would allow it.
fn allow(target: &TargetSettings, asked: &'static str, allowed: bool) -> Result<(), UpstreamError> {
    if allowed {
        return Ok(());
    }
    let m = target.auth_methods;
    let names = [
        (m.scram_sha_256, "scram-sha-256"),
        (m.md5, "md5"),
        (m.password, "password"),
    ];
    let allowed: Vec<&str> = names
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    Err(UpstreamError::AuthMethodNotAllowed {
        target: target.name.clone(),
        asked,
        allowed: if allowed.is_empty() {
            "none".into()
        } else {
            allowed.join(", ")
        },
    })
}

async fn connect_inner(
    target: &TargetSettings,
    creds: &RoleCredentials,
    params: &[(String, String)],
    keys: &ScramKeyCache,
) -> Result<Upstream, UpstreamError> {
    let mut stream = connect_stream(&target.host, target.port, &target.tls).await?;
    let mut out = BytesMut::with_capacity(256);
    let startup = [
        ("user", creds.user.as_str()),
        ("database", target.database.as_str()),
    ];
    let all = startup
        .into_iter()
        .chain(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    frontend::startup_message(all, &mut out).map_err(UpstreamError::Encode)?;
    stream.write_all(&out).await.map_err(UpstreamError::Io)?;
    out.clear();

    let mut inbuf = BytesMut::with_capacity(4096);
    let mut greeting = BytesMut::new();
    let mut scram: Option<ScramClient> = None;
    let mut key: Option<(i32, i32)> = None;
    loop {
        let read = read_message(&mut stream, &mut inbuf, server_message).await;
        let frame: FullMessage = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(UpstreamError::Closed),
            Err(ReadFailure::Decode(e)) => return Err(UpstreamError::Protocol(e)),
            Err(ReadFailure::Io(e)) => return Err(UpstreamError::Io(e)),
        };
        match &frame.message {
            backend::Message::AuthenticationOk => {
                // Once SCRAM has started, the server must have proved itself first.
                if scram.as_ref().is_some_and(|c| !c.is_done()) {
                    return Err(UpstreamError::ServerSignature);
                }
            }
            backend::Message::AuthenticationCleartextPassword => {
                allow(target, "password (cleartext)", target.auth_methods.password)?;
                frontend::password_message(creds.password.expose().as_bytes(), &mut out)
                    .map_err(UpstreamError::Encode)?;
            }
            backend::Message::AuthenticationMd5Password(body) => {
                allow(target, "md5", target.auth_methods.md5)?;
                let hash = md5_hash(
                    creds.user.as_bytes(),
                    creds.password.expose().as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut out)
                    .map_err(UpstreamError::Encode)?;
            }
            backend::Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut has_scram = false;
                while let Some(m) = mechanisms.next().map_err(UpstreamError::Protocol)? {
                    has_scram |= m == sasl::SCRAM_SHA_256;
                }
                if !has_scram {
                    return Err(UpstreamError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                }
                allow(target, "scram-sha-256", target.auth_methods.scram_sha_256)?;
                // No channel binding, as with postgres-protocol's `unsupported()` before.
                let client = ScramClient::new();
                frontend::sasl_initial_response(
                    sasl::SCRAM_SHA_256,
                    &client.client_first(),
                    &mut out,
                )
                .map_err(UpstreamError::Encode)?;
                scram = Some(client);
            }
            backend::Message::AuthenticationSaslContinue(body) => {
                let client = scram
                    .as_mut()
                    .ok_or(UpstreamError::Unexpected("SASLContinue"))?;
                let first = client
                    .handle_server_first(body.data())
                    .map_err(scram_error)?;
                if first.iterations > target.max_scram_iterations {
                    return Err(UpstreamError::ScramIterations {
                        target: target.name.clone(),
                        asked: first.iterations,
                        max: target.max_scram_iterations,
                    });
                }
                // PBKDF2 only on a cache miss, and then on a blocking thread.
                let derived = keys
                    .keys(
                        creds.password.expose().as_bytes(),
                        &first.salt,
                        first.iterations,
                    )
                    .await
                    .map_err(UpstreamError::Io)?;
                let message = client.client_final(&derived).map_err(scram_error)?;
                frontend::sasl_response(&message, &mut out).map_err(UpstreamError::Encode)?;
            }
            backend::Message::AuthenticationSaslFinal(body) => {
                let client = scram
                    .as_mut()
                    .ok_or(UpstreamError::Unexpected("SASLFinal"))?;
                client
                    .verify_server_final(body.data())
                    .map_err(|_| UpstreamError::ServerSignature)?;
            }
            backend::Message::AuthenticationKerberosV5
            | backend::Message::AuthenticationScmCredential
            | backend::Message::AuthenticationGss
            | backend::Message::AuthenticationSspi
            | backend::Message::AuthenticationGssContinue(_) => {
                return Err(UpstreamError::UnsupportedAuth("GSS/SSPI/Kerberos"));
            }
            backend::Message::ParameterStatus(_) | backend::Message::NoticeResponse(_) => {
                greeting.extend_from_slice(&frame.frame);
            }
            backend::Message::BackendKeyData(body) => {
                key = Some((body.process_id(), body.secret_key()));
            }
            backend::Message::ErrorResponse(_) => {
                let fields = parse_error_fields(frame.body());
                return Err(UpstreamError::Refused {
                    code: fields.code.unwrap_or_default(),
                    message: fields.message.unwrap_or_default(),
                });
            }
            backend::Message::ReadyForQuery(_) => {
                let (pid, secret) = key.ok_or(UpstreamError::Unexpected(
                    "ReadyForQuery before BackendKeyData",
                ))?;
                if inbuf.has_remaining() {
                    return Err(UpstreamError::Unexpected("data after ReadyForQuery"));
                }
                return Ok(Upstream {
                    stream,
                    pid,
                    secret,
                    greeting,
                    opened_at: Instant::now(),
                    reused: false,
                });
            }
            _ => return Err(UpstreamError::Unexpected("message during startup")),
        }
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(UpstreamError::Io)?;
            out.clear();
        }
    }
}

/// Delivers a CancelRequest for `target` on a fresh connection, as Postgres expects.
pub async fn send_cancel(target: &CancelTarget) -> Result<(), UpstreamError> {
    let fut = async {
        let mut stream = connect_stream(&target.host, target.port, &target.tls).await?;
        let mut buf = BytesMut::with_capacity(16);
        frontend::cancel_request(target.upstream_pid, target.upstream_secret, &mut buf);
        stream.write_all(&buf).await.map_err(UpstreamError::Io)?;
        stream.flush().await.map_err(UpstreamError::Io)?;
        // The server closes the connection once it has taken the request.
        let mut sink = [0u8; 1];
        let _ = stream.read(&mut sink).await;
        Ok(())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| UpstreamError::Timeout(CONNECT_TIMEOUT))?
}
