//! A raw protocol client, for tests that must send what a hostile client sends rather
//! than what a driver sends: several statements pipelined in one write, Terminate while
//! a statement runs, a hang-up in the middle of a statement.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Env, ALICE, ALICE_PASSWORD};

/// Bound on every wait for the proxy.
const LIMIT: Duration = Duration::from_secs(10);

/// A logged-in raw session as alice.
pub struct RawSession {
    pub tcp: TcpStream,
    /// The upstream backend's pid (BackendKeyData).
    pub pid: i32,
    buf: BytesMut,
}

/// The fields of an ErrorResponse a test looks at.
#[derive(Debug)]
pub struct RawError {
    pub severity: String,
    pub code: String,
    pub message: String,
}

fn be_i32(b: &[u8]) -> i32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[..4]);
    i32::from_be_bytes(word)
}

/// Parses an ErrorResponse body.
pub fn parse_error(body: &[u8]) -> RawError {
    let mut e = RawError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
    };
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let nul = tail
            .iter()
            .position(|&b| b == 0)
            .expect("NUL-terminated field");
        let value = String::from_utf8_lossy(&tail[..nul]).into_owned();
        match kind {
            b'V' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            _ => {}
        }
        rest = &tail[nul + 1..];
    }
    e
}

impl RawSession {
    /// Connects to the env's proxy and logs in as alice (SCRAM), up to ReadyForQuery.
    pub async fn login(env: &Env) -> RawSession {
        let tcp = tokio::time::timeout(LIMIT, TcpStream::connect(("127.0.0.1", env.proxy_port())))
            .await
            .expect("connect in time")
            .expect("connect to the proxy");
        tcp.set_nodelay(true).expect("nodelay");
        let mut s = RawSession {
            tcp,
            pid: 0,
            buf: BytesMut::new(),
        };
        let mut out = BytesMut::new();
        frontend::startup_message(
            [("user", ALICE), ("database", env.target.as_str())],
            &mut out,
        )
        .expect("startup message");
        s.send(&out).await;
        s.expect_auth(10).await;
        let mut scram = ScramSha256::new(ALICE_PASSWORD.as_bytes(), ChannelBinding::unsupported());
        out.clear();
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out)
            .expect("SASLInitialResponse");
        s.send(&out).await;
        let first = s.expect_auth(11).await;
        scram.update(&first).expect("server-first");
        out.clear();
        frontend::sasl_response(scram.message(), &mut out).expect("SASLResponse");
        s.send(&out).await;
        let last = s.expect_auth(12).await;
        scram.finish(&last).expect("server signature verifies");
        s.expect_auth(0).await;
        loop {
            match s.next().await {
                Some((b'K', body)) => s.pid = be_i32(&body),
                Some((b'Z', _)) => break,
                Some((b'E', body)) => panic!("login failed: {:?}", parse_error(&body)),
                Some(_) => {}
                None => panic!("closed during login"),
            }
        }
        assert_ne!(s.pid, 0, "BackendKeyData before ReadyForQuery");
        s
    }

    async fn expect_auth(&mut self, kind: i32) -> Bytes {
        match self.next().await {
            Some((b'R', body)) => {
                assert_eq!(be_i32(&body), kind, "authentication message kind");
                body.slice(4..)
            }
            Some((b'E', body)) => panic!("authentication failed: {:?}", parse_error(&body)),
            other => panic!("expected an authentication message, got {other:?}"),
        }
    }

    /// Writes `bytes` in one write.
    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(LIMIT, self.tcp.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write to the proxy");
    }

    /// The next message, or `None` when the proxy closed the connection (or reset it).
    pub async fn next(&mut self) -> Option<(u8, Bytes)> {
        tokio::time::timeout(LIMIT, self.next_inner())
            .await
            .expect("a message or the end of the connection in time")
    }

    async fn next_inner(&mut self) -> Option<(u8, Bytes)> {
        loop {
            if self.buf.len() >= 5 {
                let total = usize::try_from(be_i32(&self.buf[1..5])).expect("length") + 1;
                if self.buf.len() >= total {
                    let tag = self.buf[0];
                    let mut frame = self.buf.split_to(total);
                    frame.advance(5);
                    return Some((tag, frame.freeze()));
                }
            }
            match self.tcp.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the proxy closes the connection; returns the ErrorResponses seen.
    pub async fn errors_until_closed(&mut self) -> Vec<RawError> {
        let mut errors = Vec::new();
        while let Some((tag, body)) = self.next().await {
            if tag == b'E' {
                errors.push(parse_error(&body));
            }
        }
        errors
    }
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
