//! A bare PostgreSQL login over TCP (startup, SCRAM-SHA-256, wait for ReadyForQuery),
//! keeping the raw socket: the idle-session and enforcement measurements need to hold
//! hundreds of sessions cheaply and to see the exact moment a socket is closed; the
//! first-login measurement times a login without the client's own PBKDF2.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use jitgate_proxy::connection::{self, ReadFailure};
use jitgate_proxy::protocol::backend::{self, FullMessage};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A logged-in session: the socket, and the backend pid the server announced (for jitgate
/// and the relay, the upstream backend's real pid).
pub struct Session {
    pub stream: TcpStream,
    pub pid: i32,
}

/// Who logs in where.
#[derive(Debug, Clone)]
pub struct Login {
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
    pub database: String,
    pub application_name: String,
}

/// The next server message (jitgate's own read loop and decoder).
async fn next(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<FullMessage> {
    match connection::read_message(stream, buf, backend::server_message).await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => bail!("server closed the connection"),
        Err(ReadFailure::Decode(e) | ReadFailure::Io(e)) => Err(e.into()),
    }
}

async fn send(stream: &mut TcpStream, out: &mut BytesMut) -> Result<()> {
    stream.write_all(out).await?;
    out.clear();
    Ok(())
}

/// Logs in and returns once the server said ReadyForQuery.
pub async fn login(login: &Login) -> Result<Session> {
    Ok(login_timed(login).await?.0)
}

/// [`login`], also returning how long this client spent on its own side of SCRAM (the
/// PBKDF2 of the password), so a connect latency can leave the client's work out.
pub async fn login_timed(login: &Login) -> Result<(Session, Duration)> {
    let mut client_work = Duration::ZERO;
    let mut stream = TcpStream::connect(login.addr)
        .await
        .with_context(|| format!("connecting to {}", login.addr))?;
    stream.set_nodelay(true)?;
    let mut out = BytesMut::new();
    let mut buf = BytesMut::with_capacity(4096);
    frontend::startup_message(
        [
            ("user", login.user.as_str()),
            ("database", login.database.as_str()),
            ("application_name", login.application_name.as_str()),
        ],
        &mut out,
    )?;
    send(&mut stream, &mut out).await?;
    let mut scram: Option<ScramSha256> = None;
    let mut pid = 0;
    loop {
        let next = next(&mut stream, &mut buf).await?;
        match &next.message {
            Message::AuthenticationSasl(_) => {
                let s = ScramSha256::new(login.password.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                send(&mut stream, &mut out).await?;
                scram = Some(s);
            }
            Message::AuthenticationSaslContinue(body) => {
                let mut s = scram
                    .take()
                    .ok_or_else(|| anyhow!("SASL continue out of order"))?;
                let data = body.data().to_vec();
                // PBKDF2 (4096 rounds) is CPU work: keep it off the async workers.
                let started = Instant::now();
                let s = tokio::task::spawn_blocking(move || s.update(&data).map(|()| s)).await??;
                client_work += started.elapsed();
                frontend::sasl_response(s.message(), &mut out)?;
                send(&mut stream, &mut out).await?;
                scram = Some(s);
            }
            Message::AuthenticationSaslFinal(body) => {
                let mut s = scram
                    .take()
                    .ok_or_else(|| anyhow!("SASL final out of order"))?;
                s.finish(body.data())?;
            }
            Message::AuthenticationOk | Message::ParameterStatus(_) => {}
            Message::BackendKeyData(key) => pid = key.process_id(),
            Message::ReadyForQuery(_) => return Ok((Session { stream, pid }, client_work)),
            Message::ErrorResponse(_) => bail!("login refused: {}", error_text(&next)),
            Message::NoticeResponse(_) => {}
            _ => bail!("unexpected message during login"),
        }
    }
}

/// The primary message of an ErrorResponse.
fn error_text(message: &FullMessage) -> String {
    backend::parse_error_fields(message.body())
        .message
        .unwrap_or_default()
}

impl Session {
    /// Runs `sql` as a simple Query and waits for ReadyForQuery; fails on an ErrorResponse.
    pub async fn simple_query(&mut self, sql: &str) -> Result<()> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        send(&mut self.stream, &mut out).await?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut failed = None;
        loop {
            let next = next(&mut self.stream, &mut buf).await?;
            match &next.message {
                Message::ErrorResponse(_) => failed = Some(error_text(&next)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match failed {
            Some(text) => bail!("{sql}: {text}"),
            None => Ok(()),
        }
    }

    /// Sends Terminate and closes the socket.
    pub async fn terminate(mut self) -> Result<()> {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        send(&mut self.stream, &mut out).await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}

/// Reads (and discards) until the peer closes the socket; resolves at that moment.
pub async fn wait_closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
