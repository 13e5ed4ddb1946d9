//! A raw-socket PostgreSQL client for tests that hand-build protocol messages: it logs
//! in with SCRAM-SHA-256 (through jitgate as alice, or directly as any password role),
//! then sends arbitrary bytes and reads whole backend frames, each checked to be a valid
//! backend message. Every wait is bounded ([`LIMIT`]), so a hang fails the test instead
//! of blocking it.
//!
//! Each test binary includes it with `mod rawclient;` (after `mod common; mod harness;`)
//! and uses only some of it.
#![allow(dead_code)]
// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use jitgate_proxy::auth::{ScramClient, ScramKeyCache};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::harness::{Env, ALICE, ALICE_PASSWORD};

/// Generous bound on every wait (busy 2-core box).
pub const LIMIT: Duration = Duration::from_secs(10);

/// What the next read from the proxy brought.
#[derive(Debug)]
pub enum Next {
    Frame(u8, Bytes),
    /// The proxy closed its side cleanly.
    Eof,
    /// The connection was reset (or another read error).
    Reset(std::io::Error),
}

/// Fields of an ErrorResponse.
#[derive(Debug)]
pub struct PgErr {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// The fields of an ErrorResponse body; panics unless SQLSTATE and message are present.
pub fn parse_error(body: &[u8]) -> PgErr {
    let mut fields: HashMap<u8, String> = HashMap::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            assert!(tail.is_empty(), "bytes after the ErrorResponse terminator");
            break;
        }
        let nul = tail
            .iter()
            .position(|&b| b == 0)
            .expect("ErrorResponse field is NUL-terminated");
        fields.insert(kind, String::from_utf8_lossy(&tail[..nul]).into_owned());
        rest = &tail[nul + 1..];
    }
    let err = PgErr {
        severity: fields.get(&b'S').cloned().unwrap_or_default(),
        code: fields.get(&b'C').cloned().unwrap_or_default(),
        message: fields.get(&b'M').cloned().unwrap_or_default(),
    };
    assert_eq!(err.code.len(), 5, "SQLSTATE present: {err:?}");
    assert!(!err.message.trim().is_empty(), "message present: {err:?}");
    err
}

/// The big-endian i32 at the start of `b`.
pub fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[..4].try_into().unwrap())
}

/// A raw client connection (to the proxy, or directly to PostgreSQL).
pub struct Raw {
    pub tcp: TcpStream,
    /// Bytes read but not yet returned as frames.
    pub buf: BytesMut,
}

/// What a raw login learned.
pub struct LoggedIn {
    /// Process id from BackendKeyData: the upstream backend's pid.
    pub pid: i32,
    /// ParameterStatus values of the greeting.
    pub params: HashMap<String, String>,
}

impl Raw {
    /// Connects to the env's proxy.
    pub async fn connect(env: &Env) -> Raw {
        Raw::connect_to(env.proxy_port()).await
    }

    /// Connects to `127.0.0.1:port` (the proxy, or a PostgreSQL server).
    pub async fn connect_to(port: u16) -> Raw {
        let tcp = tokio::time::timeout(LIMIT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("connect in time")
            .expect("connect to the server");
        tcp.set_nodelay(true).unwrap();
        Raw {
            tcp,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(LIMIT, self.tcp.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write to the proxy");
    }

    /// Next frame, clean close or reset; panics if nothing happens within [`LIMIT`].
    /// Every frame is also checked to be a valid backend message.
    pub async fn next(&mut self) -> Next {
        match tokio::time::timeout(LIMIT, read_frame(&mut self.tcp, &mut self.buf)).await {
            Ok(next) => next,
            Err(_) => panic!("no message and no close within {LIMIT:?}: the proxy hangs"),
        }
    }

    /// Like [`Raw::next`] without the time bound (the caller sets its own).
    pub async fn next_inner(&mut self) -> Next {
        read_frame(&mut self.tcp, &mut self.buf).await
    }

    pub async fn frame(&mut self) -> (u8, Bytes) {
        match self.next().await {
            Next::Frame(tag, body) => (tag, body),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The one-byte answer to SSLRequest/GSSENCRequest.
    pub async fn byte(&mut self) -> u8 {
        if self.buf.is_empty() {
            let n = tokio::time::timeout(LIMIT, self.tcp.read_buf(&mut self.buf))
                .await
                .expect("answer in time")
                .expect("read the answer");
            assert!(n > 0, "closed instead of answering");
        }
        self.buf.split_to(1)[0]
    }

    /// The proxy closes (clean close or reset) without sending anything more.
    pub async fn expect_closed(&mut self) {
        match self.next().await {
            Next::Eof | Next::Reset(_) => {}
            Next::Frame(tag, _) => panic!("expected a close, got message {:?}", tag as char),
        }
    }

    /// An ErrorResponse, then the close.
    pub async fn expect_error_then_close(&mut self) -> PgErr {
        let err = match self.next().await {
            Next::Frame(b'E', body) => parse_error(&body),
            Next::Frame(tag, _) => panic!("expected ErrorResponse, got {:?}", tag as char),
            other => panic!("expected ErrorResponse, got {other:?}"),
        };
        self.expect_closed().await;
        err
    }

    /// Reads until the proxy closes the connection (or resets it); the ErrorResponses
    /// seen on the way.
    pub async fn errors_until_closed(&mut self) -> Vec<PgErr> {
        let mut errors = Vec::new();
        loop {
            match self.next().await {
                Next::Frame(b'E', body) => errors.push(parse_error(&body)),
                Next::Frame(..) => {}
                Next::Eof | Next::Reset(_) => return errors,
            }
        }
    }

    /// An authentication request of `kind`; returns its data.
    pub async fn expect_auth(&mut self, kind: i32) -> Bytes {
        let (tag, body) = self.frame().await;
        if tag == b'E' {
            panic!("authentication failed: {:?}", parse_error(&body));
        }
        assert_eq!(tag, b'R', "expected an authentication message");
        assert_eq!(be_i32(&body), kind, "authentication message kind");
        body.slice(4..)
    }

    /// Runs SCRAM as alice after the startup packet was sent, then reads up to
    /// ReadyForQuery. `pipelined` is written in the same write as the final SCRAM message.
    pub async fn authenticate(&mut self, pipelined: &[u8]) -> LoggedIn {
        self.authenticate_with(ALICE_PASSWORD, pipelined).await
    }

    /// [`Raw::authenticate`] with any password (e.g. a role's, directly to PostgreSQL).
    pub async fn authenticate_with(&mut self, password: &str, pipelined: &[u8]) -> LoggedIn {
        let mechanisms = self.expect_auth(10).await;
        assert!(
            mechanisms.windows(13).any(|w| w == b"SCRAM-SHA-256"),
            "SCRAM offered"
        );
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut out = BytesMut::new();
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap();
        self.send(&out).await;
        let server_first = self.expect_auth(11).await;
        scram.update(&server_first).unwrap();
        out.clear();
        frontend::sasl_response(scram.message(), &mut out).unwrap();
        out.put_slice(pipelined);
        self.send(&out).await;
        let server_final = self.expect_auth(12).await;
        scram
            .finish(&server_final)
            .expect("server signature verifies");
        self.greeting().await
    }

    /// Like [`Raw::authenticate_with`], but with jitgate's SCRAM client and its
    /// password-derived keys cached for the whole test binary: PBKDF2 (about 120 ms in a
    /// debug build) runs once per password and salt instead of on every login. For tests
    /// that log in hundreds of times and are not about the login itself.
    pub async fn authenticate_cached(&mut self, password: &str) -> LoggedIn {
        static KEYS: OnceLock<ScramKeyCache> = OnceLock::new();
        let mechanisms = self.expect_auth(10).await;
        assert!(
            mechanisms.windows(13).any(|w| w == b"SCRAM-SHA-256"),
            "SCRAM offered"
        );
        let mut scram = ScramClient::new();
        let mut out = BytesMut::new();
        frontend::sasl_initial_response("SCRAM-SHA-256", &scram.client_first(), &mut out).unwrap();
        self.send(&out).await;
        let server_first = self.expect_auth(11).await;
        let first = scram.handle_server_first(&server_first).unwrap();
        let keys = KEYS
            .get_or_init(ScramKeyCache::default)
            .keys(password.as_bytes(), &first.salt, first.iterations)
            .await
            .unwrap();
        out.clear();
        frontend::sasl_response(&scram.client_final(&keys).unwrap(), &mut out).unwrap();
        self.send(&out).await;
        let server_final = self.expect_auth(12).await;
        scram
            .verify_server_final(&server_final)
            .expect("server signature verifies");
        self.greeting().await
    }

    /// After the SASL messages: AuthenticationOk, then up to ReadyForQuery.
    async fn greeting(&mut self) -> LoggedIn {
        self.expect_auth(0).await;
        let mut pid = None;
        let mut params = HashMap::new();
        loop {
            let (tag, body) = self.frame().await;
            match tag {
                b'S' => {
                    let mut parts = body.split(|&b| b == 0);
                    let name = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
                    let value = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
                    params.insert(name, value);
                }
                b'K' => pid = Some(be_i32(&body)),
                b'Z' => break,
                b'E' => panic!("login failed: {:?}", parse_error(&body)),
                other => panic!("unexpected message during login: {:?}", other as char),
            }
        }
        LoggedIn {
            pid: pid.expect("BackendKeyData before ReadyForQuery"),
            params,
        }
    }

    /// Connects, sends alice's startup packet for the env's target and logs in.
    pub async fn login(env: &Env) -> (Raw, LoggedIn) {
        Raw::login_to(env.proxy_port(), ALICE, ALICE_PASSWORD, &env.target).await
    }

    /// Connects to `127.0.0.1:port` and logs in as `user` to `database` with SCRAM.
    pub async fn login_to(
        port: u16,
        user: &str,
        password: &str,
        database: &str,
    ) -> (Raw, LoggedIn) {
        let mut raw = Raw::connect_to(port).await;
        raw.send(&startup_for(user, database)).await;
        let session = raw.authenticate_with(password, &[]).await;
        (raw, session)
    }

    /// [`Raw::login_to`] with [`Raw::authenticate_cached`].
    pub async fn login_cached(
        port: u16,
        user: &str,
        password: &str,
        database: &str,
    ) -> (Raw, LoggedIn) {
        let mut raw = Raw::connect_to(port).await;
        raw.send(&startup_for(user, database)).await;
        let session = raw.authenticate_cached(password).await;
        (raw, session)
    }
}

/// Reads from `reader` into `buf` until a whole backend frame is there (returned without
/// its 5-byte header, after checking it parses as a backend message), or the peer
/// closes. Not bounded in time: callers add the timeout.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> Next {
    loop {
        if buf.len() >= 5 {
            let len = be_i32(&buf[1..5]);
            assert!(len >= 4, "server sent a frame with length {len}");
            let total = len as usize + 1;
            if buf.len() >= total {
                let tag = buf[0];
                // NegotiateProtocolVersion and FunctionCallResponse are not known to
                // postgres-protocol 0.6.
                if tag != b'v' && tag != b'V' {
                    let mut copy = BytesMut::from(&buf[..total]);
                    match Message::parse(&mut copy) {
                        Ok(Some(_)) => assert!(copy.is_empty()),
                        Ok(None) => panic!("whole frame {:?} did not parse", tag as char),
                        Err(e) => panic!("invalid backend message {:?}: {e}", tag as char),
                    }
                }
                let mut frame = buf.split_to(total);
                frame.advance(5);
                return Next::Frame(tag, frame.freeze());
            }
        }
        match reader.read_buf(buf).await {
            Ok(0) => {
                assert!(
                    buf.is_empty(),
                    "closed in the middle of a frame: {:?}",
                    &buf[..]
                );
                return Next::Eof;
            }
            Ok(_) => {}
            Err(e) => return Next::Reset(e),
        }
    }
}

/// alice's StartupMessage for the env's target.
pub fn startup(env: &Env) -> BytesMut {
    startup_for(ALICE, &env.target)
}

/// A StartupMessage (protocol 3.0) for `user` and `database`.
pub fn startup_for(user: &str, database: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::startup_message([("user", user), ("database", database)], &mut b).unwrap();
    b
}

/// A simple-protocol Query message.
pub fn query(sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::query(sql, &mut b).expect("query message");
    b
}

/// An extended-protocol group running `sql` once: Parse, Bind, Execute, Sync (unnamed
/// statement and portal, no parameters).
pub fn extended(sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::parse("", sql, std::iter::empty(), &mut b).expect("Parse");
    frontend::bind(
        "",
        "",
        std::iter::empty::<i16>(),
        std::iter::empty::<Option<&[u8]>>(),
        |_, _| Ok(postgres_protocol::IsNull::No),
        std::iter::empty::<i16>(),
        &mut b,
    )
    .map_err(|_| "Bind")
    .expect("Bind");
    frontend::execute("", 0, &mut b).expect("Execute");
    frontend::sync(&mut b);
    b
}

/// The Terminate message.
pub fn terminate() -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(b'X');
    b.put_i32(4);
    b
}
