//! Every way a connection fails before it is logged in is recorded, once, through the
//! rate-limited path of pre-authentication refusals, with a reason a DBA understands;
//! where the protocol still allows an answer the client gets a FATAL ErrorResponse with
//! its SQLSTATE, where it does not (a failed TLS handshake, a client that sends nothing)
//! the event alone. Only a connection that closes without sending a byte (a health check,
//! a port probe) is not recorded.
//!
//! Each test connects from a loopback address of its own (127.0.77.N), so the events of
//! its connections are told apart by `client_addr`, and the proxy's count of open
//! connections from that address says when the connection's task has finished.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;
mod rawclient;
mod tlsutil;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use harness::{Env, ALICE};
use jitgate_audit::{Event, EventBody};
use rawclient::{startup_for, Next, Raw, LIMIT};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use tlsutil::{Ca, EnvSpec, TlsEnv};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

/// Protocol 3.0 as a startup packet's version word.
const PROTOCOL_3_0: i32 = 196_608;
/// SSLRequest's code.
const SSL_REQUEST: i32 = 80_877_103;

/// A startup-phase packet: length word, code/version, body.
fn packet(code: i32, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(8 + i32::try_from(body.len()).unwrap());
    b.put_i32(code);
    b.put_slice(body);
    b
}

/// A raw connection to `port` from the loopback address `source`.
async fn raw_from(source: &str, port: u16) -> Raw {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let tcp = tokio::time::timeout(
        LIMIT,
        socket.connect(SocketAddr::from(([127, 0, 0, 1], port))),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    tcp.set_nodelay(true).unwrap();
    Raw {
        tcp,
        buf: BytesMut::new(),
    }
}

/// A refusal as recorded: (kind, reason, identity).
type Recorded = (String, String, Option<String>);

/// The refusal events recorded for connections from `source`.
fn recorded_from(events: &[Event], source: &str) -> Vec<Recorded> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::AccessDenied {
                client_addr,
                reason,
            }
            | EventBody::AuthFailure {
                client_addr,
                reason,
            } if client_addr.parse::<SocketAddr>().unwrap().ip().to_string() == source => Some((
                e.kind().to_owned(),
                reason.clone(),
                e.identity.clone().filter(|i| !i.is_empty()),
            )),
            _ => None,
        })
        .collect()
}

/// Waits until no connection from `source` is open any more (its task, and so its
/// report, has finished), then returns what was recorded for it.
async fn settled(
    connections: &jitgate_proxy::limits::ConnectionLimits,
    events: impl Fn() -> Vec<Event>,
    source: &str,
) -> Vec<Recorded> {
    let ip = source.parse().unwrap();
    let start = std::time::Instant::now();
    while connections.open(ip).1 > 0 {
        assert!(
            start.elapsed() < LIMIT,
            "connections from {source} still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    recorded_from(&events(), source)
}

/// Waits until the proxy has accepted a connection from `source` (the kernel completes a
/// connect before the proxy accepts it).
async fn accepted(env: &Env, source: &str) {
    let ip = source.parse().unwrap();
    env.eventually("the connection accepted", LIMIT, || {
        env.server().connections.open(ip).1 > 0
    })
    .await;
}

async fn env_settled(env: &Env, source: &str) -> Vec<Recorded> {
    settled(&env.server().connections, || env.audit_events(), source).await
}

fn access_denied(reason: &str) -> Recorded {
    ("access_denied".to_owned(), reason.to_owned(), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_startup_packet_is_told_08p01_and_audited() {
    let env = Env::start("end_malformed").await;
    let source = "127.0.77.1";
    // Protocol 3.0, a parameter list that never ends (no terminating NUL).
    let mut raw = raw_from(source, env.proxy_port()).await;
    raw.send(&packet(PROTOCOL_3_0, b"user\0alice\0database\0x"))
        .await;
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "08P01", "{err:?}");
    assert_eq!(err.severity, "FATAL");
    assert!(err.message.contains("startup packet"), "{err:?}");
    let recorded = env_settled(&env, source).await;
    assert_eq!(
        recorded,
        vec![access_denied(&format!(
            "startup packet refused: {}",
            err.message
        ))]
    );

    // A connection that closes without sending a byte (a probe) is not recorded.
    let probe_source = "127.0.77.9";
    let probe = raw_from(probe_source, env.proxy_port()).await;
    accepted(&env, probe_source).await;
    drop(probe);
    assert_eq!(env_settled(&env, probe_source).await, vec![]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_protocol_version_is_told_0a000_and_audited() {
    let env = Env::start("end_version").await;
    let source = "127.0.77.2";
    let mut raw = raw_from(source, env.proxy_port()).await;
    raw.send(&packet(2 << 16, b"user\0alice\0\0")).await;
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "0A000", "{err:?}");
    assert_eq!(err.severity, "FATAL");
    assert!(err.message.contains("2.0"), "names the version: {err:?}");
    let recorded = env_settled(&env, source).await;
    assert_eq!(
        recorded,
        vec![access_denied(&format!(
            "unsupported protocol version: {}",
            err.message
        ))]
    );
    env.stop().await;
}

/// A rustls client that trusts only `ca`.
fn client_config(ca: &Ca) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_aborts_its_handshake_is_audited() {
    let ca = Ca::new("jitgate endings test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let files = [("ca.pem", ca.pem())];
    let env = TlsEnv::start(EnvSpec {
        prefix: "end_tls",
        client_tls: Some(&leaf),
        upstream_tls: "{ mode: disable }",
        files: &files,
        upstream_port: None,
        tls_required: false,
        admin_tls: None,
        store: None,
    })
    .await;
    let source = "127.0.77.3";
    // SSLRequest, 'S', then a client that does not trust jitgate's certificate: it
    // aborts the handshake with an alert.
    let mut raw = raw_from(source, env.proxy_port()).await;
    raw.send(&packet(SSL_REQUEST, b"")).await;
    assert_eq!(raw.byte().await, b'S');
    let stranger = Ca::new("a CA jitgate's certificate is not from");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&stranger)));
    let handshake = tokio::time::timeout(
        LIMIT,
        connector.connect(ServerName::try_from("localhost").unwrap(), raw.tcp),
    )
    .await
    .expect("handshake must not hang");
    assert!(handshake.is_err(), "the client trusted an unknown CA");
    let recorded = settled(&env.server().connections, || env.audit_events(), source).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (kind, reason, identity) = &recorded[0];
    assert_eq!(kind, "access_denied");
    assert!(reason.starts_with("TLS handshake failed: "), "{reason}");
    assert!(reason.contains("alert"), "rustls's reason: {reason}");
    assert_eq!(identity, &None);

    // Plaintext where the ClientHello belongs (garbage after 'S'): the event alone.
    let source = "127.0.77.4";
    let mut raw = raw_from(source, env.proxy_port()).await;
    raw.send(&packet(SSL_REQUEST, b"")).await;
    assert_eq!(raw.byte().await, b'S');
    raw.send(&startup_for(ALICE, &env.target)).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIMIT, raw.tcp.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(
        !rest.starts_with(b"E"),
        "no plaintext ErrorResponse inside a TLS handshake: {rest:?}"
    );
    let recorded = settled(&env.server().connections, || env.audit_events(), source).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(
        recorded[0].1.starts_with("TLS handshake failed: "),
        "{recorded:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_is_audited_at_the_login_timeout() {
    let mut env = Env::start("end_silent").await;
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    assert!(yaml.contains("login_timeout: 10s"));
    std::fs::write(
        &env.config_path,
        yaml.replace("login_timeout: 10s", "login_timeout: 1s"),
    )
    .unwrap();
    env.restart().await;
    let source = "127.0.77.5";
    let mut silent = raw_from(source, env.proxy_port()).await;
    // Closed at the login timeout without an answer: the client asked nothing yet.
    match silent.next().await {
        Next::Eof | Next::Reset(_) => {}
        Next::Frame(tag, _) => panic!("expected a close, got {:?}", tag as char),
    }
    let recorded = env_settled(&env, source).await;
    assert_eq!(
        recorded,
        vec![access_denied("no startup packet within login_timeout (1s)")]
    );

    // Half a startup packet, then the client closes: recorded as such.
    let source = "127.0.77.6";
    let mut half = raw_from(source, env.proxy_port()).await;
    half.send(&startup_for(ALICE, &env.target)[..10]).await;
    accepted(&env, source).await;
    drop(half);
    let recorded = env_settled(&env, source).await;
    assert_eq!(
        recorded,
        vec![access_denied(
            "client closed the connection in the middle of its startup packet (10 bytes sent)"
        )]
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_authentication_is_audited() {
    let env = Env::start("end_left").await;
    let source = "127.0.77.7";
    let mut raw = raw_from(source, env.proxy_port()).await;
    raw.send(&startup_for(ALICE, &env.target)).await;
    raw.expect_auth(10).await; // AuthenticationSASL
    drop(raw);
    let recorded = env_settled(&env, source).await;
    assert_eq!(
        recorded,
        vec![(
            "auth_failure".to_owned(),
            "the client closed the connection before it finished authenticating".to_owned(),
            Some(ALICE.to_owned())
        )]
    );
    env.stop().await;
}

/// A client whose startup packet arrives once shutdown has begun is told so (57P03),
/// not dropped without a word, and the refusal is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_during_shutdown_is_told_57p03_and_audited() {
    let mut env = Env::start("end_drain").await;
    // Accepted and in its handshake: answered 'N' to SSLRequest (no TLS configured).
    let source = "127.0.77.8";
    let mut late = raw_from(source, env.proxy_port()).await;
    late.send(&packet(SSL_REQUEST, b"")).await;
    assert_eq!(late.byte().await, b'N');
    // A login under way, whose 57P03 says the drain has begun.
    let mut witness = raw_from("127.0.77.10", env.proxy_port()).await;
    witness.send(&startup_for(ALICE, &env.target)).await;
    witness.expect_auth(10).await;
    let audit = env.audit_path();
    let server = env.server.take().expect("server running");
    let connections = Arc::clone(&server.connections);
    let stop = tokio::spawn(server.stop());
    let err = witness.expect_error_then_close().await;
    assert_eq!(err.code, "57P03", "{err:?}");

    late.send(&startup_for(ALICE, &env.target)).await;
    let err = late.expect_error_then_close().await;
    assert_eq!(err.code, "57P03", "{err:?}");
    assert_eq!(err.severity, "FATAL");
    assert!(err.message.contains("shutting down"), "{err:?}");
    let read = || {
        jitgate_audit::read_events(&audit)
            .unwrap()
            .map(|e| e.unwrap())
            .collect::<Vec<_>>()
    };
    let recorded = settled(&connections, read, source).await;
    assert_eq!(
        recorded,
        vec![(
            "access_denied".to_owned(),
            "jitgate is shutting down".to_owned(),
            Some(ALICE.to_owned())
        )]
    );
    tokio::time::timeout(LIMIT, stop)
        .await
        .expect("stop returns")
        .unwrap()
        .unwrap();
}
