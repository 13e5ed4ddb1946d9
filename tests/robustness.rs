//! Robustness of the client-facing side over raw TCP: hostile or broken input gets a
//! clear ErrorResponse (SQLSTATE and message) and a closed socket — never a hang, never
//! a dead proxy — and the proxy keeps serving other clients afterwards.
//!
//! Every wait is bounded ([`LIMIT`]), so a hang fails the test instead of blocking CI.
//! Sessions run in-process: a panic in a session task would not fail a test by itself,
//! so each test ends by proving a normal tokio-postgres client still logs in and queries.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;
mod rawclient;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use harness::{Env, ALICE, ALICE_PASSWORD};
use jitgate_audit::{EndReason, EventBody};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use rand::{Rng, SeedableRng};
use rawclient::{be_i32, parse_error, query, startup, Next, Raw, LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Protocol 3.0 as a startup packet's version word.
const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// A startup-phase packet: length word, code/version, body.
fn packet(length_word: i32, code: i32, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(length_word);
    b.put_i32(code);
    b.put_slice(body);
    b
}

/// Sends a simple query on a logged-in raw connection and returns the first column of
/// every DataRow, up to ReadyForQuery.
async fn simple_query(raw: &mut Raw, sql: &str) -> Vec<String> {
    raw.send(&query(sql)).await;
    let mut values = Vec::new();
    loop {
        let (tag, body) = raw.frame().await;
        match tag {
            b'D' => values.push(first_column(&body)),
            b'Z' => return values,
            b'E' => panic!("query failed: {:?}", parse_error(&body)),
            _ => {}
        }
    }
}

fn first_column(data_row: &[u8]) -> String {
    let len = be_i32(&data_row[2..]) as usize;
    String::from_utf8_lossy(&data_row[6..6 + len]).into_owned()
}

/// Panics on tokio worker threads: that is where session tasks run (test bodies run on
/// the test's own thread), so any count above 0 is a session (or proxy) task panicking.
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Installs (once per test binary) a panic hook that counts worker-thread panics and
/// then reports them as usual.
fn watch_worker_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_worker = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("tokio-runtime-worker"));
            if on_worker {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            report(info);
        }));
    });
}

/// A normal client with a grant still logs in and runs a query, and no proxy task has
/// panicked.
async fn assert_still_serving(env: &Env) {
    assert_eq!(
        WORKER_PANICS.load(Ordering::SeqCst),
        0,
        "a proxy task panicked (see its message above)"
    );
    let check = async {
        let (client, conn) = env.connect().await.expect("a normal client still connects");
        let row = client.query_one("SELECT 41 + 1", &[]).await.expect("query");
        assert_eq!(row.get::<_, i32>(0), 42);
        drop(client);
        let _ = conn.await;
    };
    tokio::time::timeout(LIMIT, check)
        .await
        .expect("a normal login and query in time: the proxy no longer serves");
}

async fn assert_registry_empties(env: &Env) {
    env.eventually("no session left in the registry", LIMIT, || {
        env.server().registry.is_empty()
    })
    .await;
}

fn count_kind(env: &Env, kind: &str) -> usize {
    env.audit_events()
        .iter()
        .filter(|e| e.kind() == kind)
        .count()
}

/// The `session_end` (reason, detail) of the latest session whose upstream pid is `pid`
/// (a backend parked after a clean end serves later sessions of the grant too).
fn session_end_of(env: &Env, pid: i32) -> Option<(EndReason, Option<String>)> {
    let events = env.audit_events();
    let session = events.iter().rev().find_map(|e| match &e.body {
        EventBody::SessionStart {
            upstream_pid: Some(p),
            ..
        } if *p == pid => e.session_id,
        _ => None,
    })?;
    events.iter().find_map(|e| match &e.body {
        EventBody::SessionEnd { reason, detail, .. } if e.session_id == Some(session) => {
            Some((*reason, detail.clone()))
        }
        _ => None,
    })
}

async fn wait_session_end(env: &Env, pid: i32) -> (EndReason, Option<String>) {
    env.eventually("session_end written", LIMIT, || {
        session_end_of(env, pid).is_some()
    })
    .await;
    session_end_of(env, pid).unwrap()
}

async fn assert_backend_gone(env: &Env, pid: i32) {
    env.eventually("upstream backend gone", LIMIT, || !env.backend_alive(pid))
        .await;
}

/// Stops the server and checks it had no session task left: a lingering task would
/// hold `stop` for the whole drain timeout (2 s in the harness).
async fn stop_with_no_task_left(env: Env) {
    let started = Instant::now();
    env.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1900),
        "stop took {took:?}: a session task was still running"
    );
}

async fn ready(prefix: &str) -> Env {
    watch_worker_panics();
    let env = Env::start(prefix).await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    env
}

// 1 ────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_packet_over_10000_bytes_is_refused_with_08p01() {
    let env = ready("bigstart").await;

    // The length word alone is enough to refuse: nothing of the 20 000 bytes is buffered.
    let mut raw = Raw::connect(&env).await;
    raw.send(&packet(20_000, PROTOCOL_3_0, b"")).await;
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "08P01", "{err:?}");
    assert_eq!(err.severity, "FATAL");
    assert!(err.message.contains("startup packet"), "{err:?}");
    assert!(err.message.contains("20000"), "{err:?}");
    assert_still_serving(&env).await;

    // The whole oversized packet in one write: refused and closed too. The proxy closes
    // with unread bytes in its socket, so the kernel may turn the close into a reset; if
    // the ErrorResponse gets through, it must be the right one.
    let mut raw = Raw::connect(&env).await;
    // 8 (length, version) + 11 (user) + 5 (junk) + value + 2 NULs = 20 000 bytes.
    let value = "x".repeat(20_000 - 8 - 11 - 5 - 2);
    let mut body = BytesMut::new();
    body.put_slice(b"user\0alice\0");
    body.put_slice(b"junk\0");
    body.put_slice(value.as_bytes());
    body.put_u8(0);
    body.put_u8(0);
    let big = packet(8 + body.len() as i32, PROTOCOL_3_0, &body);
    assert_eq!(big.len(), 20_000);
    let _ = raw.tcp.write_all(&big).await;
    match raw.next().await {
        Next::Frame(b'E', body) => {
            let err = parse_error(&body);
            assert_eq!(err.code, "08P01", "{err:?}");
            raw.expect_closed().await;
        }
        Next::Frame(tag, _) => panic!("expected ErrorResponse, got {:?}", tag as char),
        Next::Eof => eprintln!("oversized startup packet: closed without ErrorResponse"),
        Next::Reset(e) => eprintln!("oversized startup packet: reset ({e})"),
    }
    assert_still_serving(&env).await;
    assert_eq!(count_kind(&env, "session_start"), 2);
    assert_registry_empties(&env).await;
    stop_with_no_task_left(env).await;
}

// 2 ────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_length_below_8_or_an_unknown_version_is_refused() {
    let env = ready("badstart").await;
    for length in [0, 4, 7, -1, i32::MIN] {
        let mut raw = Raw::connect(&env).await;
        // 8 bytes in all: the length word and 4 more.
        raw.send(&packet(length, PROTOCOL_3_0, b"")).await;
        let err = raw.expect_error_then_close().await;
        assert_eq!(err.code, "08P01", "length {length}: {err:?}");
        assert_eq!(err.severity, "FATAL");
        assert!(err.message.contains("length"), "{err:?}");
    }
    assert_still_serving(&env).await;

    let params = b"user\0alice\0\0";
    for (major, minor) in [(2u16, 0u16), (4, 0), (1, 0), (0, 0)] {
        let version = (i32::from(major) << 16) | i32::from(minor);
        let mut raw = Raw::connect(&env).await;
        raw.send(&packet(8 + params.len() as i32, version, params))
            .await;
        let err = raw.expect_error_then_close().await;
        assert_eq!(err.code, "0A000", "version {major}.{minor}: {err:?}");
        assert_eq!(err.severity, "FATAL");
        assert!(
            err.message.contains(&format!("{major}.{minor}")),
            "names the version: {err:?}"
        );
    }
    // A special request code nobody defined (1234.9999) is a protocol violation.
    let mut raw = Raw::connect(&env).await;
    raw.send(&packet(8, (1234 << 16) | 9999, b"")).await;
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "08P01", "{err:?}");

    assert_still_serving(&env).await;
    assert_registry_empties(&env).await;
    stop_with_no_task_left(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minor_version_above_0_gets_negotiate_protocol_version_then_logs_in() {
    let env = ready("minor").await;
    let mut raw = Raw::connect(&env).await;
    let mut body = BytesMut::new();
    body.put_slice(b"user\0alice\0database\0");
    body.put_slice(env.target.as_bytes());
    body.put_slice(b"\0_pq_.frobnicate\0on\0\0");
    raw.send(&packet(8 + body.len() as i32, PROTOCOL_3_0 | 7, &body))
        .await;
    let (tag, body) = raw.frame().await;
    assert_eq!(tag, b'v', "NegotiateProtocolVersion first");
    assert_eq!(be_i32(&body), 0, "newest minor version we support");
    assert_eq!(be_i32(&body[4..]), 1, "one unsupported option");
    assert_eq!(&body[8..], b"_pq_.frobnicate\0");
    let session = raw.authenticate(&[]).await;
    assert!(session.pid > 0);
    assert_eq!(simple_query(&mut raw, "SELECT 7").await, ["7"]);
    drop(raw);
    assert_registry_empties(&env).await;
    assert_still_serving(&env).await;
    env.stop().await;
}

// 3 ────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_with_a_pipelined_startup_is_answered_n_without_tls() {
    let env = ready("sslpipe").await;
    let mut raw = Raw::connect(&env).await;
    let mut out = packet(8, SSL_REQUEST, b"");
    out.extend_from_slice(&startup(&env));
    raw.send(&out).await;
    assert_eq!(raw.byte().await, b'N');
    let session = raw.authenticate(&[]).await;
    assert_eq!(
        session.params.get("session_authorization"),
        Some(&env.upstream_user)
    );
    assert_eq!(simple_query(&mut raw, "SELECT 'plain'").await, ["plain"]);
    drop(raw);
    assert_registry_empties(&env).await;
    assert_still_serving(&env).await;
    env.stop().await;
    // With TLS configured the pipelined bytes must be refused instead: covered by the
    // TLS tests, which need a certificate.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ssl_request_after_n_is_refused() {
    let env = ready("ssltwice").await;
    let mut raw = Raw::connect(&env).await;
    raw.send(&packet(8, SSL_REQUEST, b"")).await;
    assert_eq!(raw.byte().await, b'N');
    raw.send(&packet(8, SSL_REQUEST, b"")).await;
    // Postgres answers a repeated SSLRequest with FATAL 08P01 ("unsupported frontend
    // protocol 1234.5679"), like the proxy does for a repeated GSSENCRequest.
    let first = raw.byte().await;
    assert_ne!(first, b'N', "a second SSLRequest was answered 'N' again");
    raw.buf = {
        let mut b = BytesMut::from(&[first][..]);
        b.extend_from_slice(&raw.buf);
        b
    };
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "08P01", "{err:?}");
    assert_still_serving(&env).await;
    env.stop().await;
}

// 4 ────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_is_answered_n_and_the_same_socket_logs_in() {
    let env = ready("gssenc").await;
    let mut raw = Raw::connect(&env).await;
    raw.send(&packet(8, GSSENC_REQUEST, b"")).await;
    assert_eq!(raw.byte().await, b'N');
    raw.send(&startup(&env)).await;
    let session = raw.authenticate(&[]).await;
    assert!(session.pid > 0);
    assert_eq!(simple_query(&mut raw, "SELECT 'gss-n'").await, ["gss-n"]);
    drop(raw);

    // libpq's order with gssencmode=prefer and sslmode=prefer: GSSENC, then SSL.
    let mut raw = Raw::connect(&env).await;
    raw.send(&packet(8, GSSENC_REQUEST, b"")).await;
    assert_eq!(raw.byte().await, b'N');
    raw.send(&packet(8, SSL_REQUEST, b"")).await;
    assert_eq!(raw.byte().await, b'N');
    raw.send(&startup(&env)).await;
    raw.authenticate(&[]).await;
    assert_eq!(simple_query(&mut raw, "SELECT 2").await, ["2"]);
    drop(raw);

    // A second GSSENCRequest after 'N' is a protocol violation.
    let mut raw = Raw::connect(&env).await;
    raw.send(&packet(8, GSSENC_REQUEST, b"")).await;
    assert_eq!(raw.byte().await, b'N');
    raw.send(&packet(8, GSSENC_REQUEST, b"")).await;
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "08P01", "{err:?}");

    assert_registry_empties(&env).await;
    assert_still_serving(&env).await;
    assert_eq!(count_kind(&env, "session_start"), 3);
    env.stop().await;
}

// 5 ────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_half_startup_does_not_block_other_clients() {
    let env = ready("stall").await;
    // Several clients stall at different points of the startup packet.
    let mut stalled = Vec::new();
    for cut in [0usize, 2, 4, 10, 20] {
        let mut raw = Raw::connect(&env).await;
        let full = startup(&env);
        if cut > 0 {
            raw.send(&full[..cut.min(full.len() - 1)]).await;
        }
        stalled.push(raw);
    }
    // Meanwhile others log in and work, without waiting for the login timeout.
    let started = Instant::now();
    assert_still_serving(&env).await;
    let (mut raw, _) = Raw::login(&env).await;
    assert_eq!(simple_query(&mut raw, "SELECT 5").await, ["5"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "other logins took {:?}",
        started.elapsed()
    );
    assert_eq!(env.server().registry.len(), 1, "only the logged-in session");
    // The stalled ones are still waited on (not answered, not closed yet).
    for s in &mut stalled {
        let mut probe = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(50), s.tcp.read(&mut probe)).await;
        assert!(
            r.is_err(),
            "a stalled client got {r:?} before its login timeout"
        );
    }
    drop(raw);
    drop(stalled);
    assert_registry_empties(&env).await;
    assert_eq!(count_kind(&env, "session_start"), 2);
    assert_eq!(count_kind(&env, "auth_failure"), 0);
    // Their tasks ended when the clients closed: stop does not wait for them.
    stop_with_no_task_left(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_a_client_stalled_in_its_startup_packet() {
    let env = ready("stallstop").await;
    let mut stalled = Raw::connect(&env).await;
    stalled.send(&startup(&env)[..10]).await;
    let (mut live, _) = Raw::login(&env).await;
    let started = Instant::now();
    let stop = tokio::spawn(env.stop());
    // The live session is told at the drain deadline (2 s).
    let err = live.expect_error_then_close().await;
    assert_eq!(err.code, "57P01", "{err:?}");
    // The stalled one must be closed by then too, and stop must not wait for it.
    stalled.expect_closed().await;
    let closed_after = started.elapsed();
    tokio::time::timeout(LIMIT, stop)
        .await
        .expect("stop returns")
        .unwrap();
    let stopped_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(5) && stopped_after < Duration::from_secs(5),
        "stalled client closed after {closed_after:?}, stop returned after {stopped_after:?} \
         (drain_timeout is 2 s; the login timeout is 10 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_in_the_middle_of_scram_registers_no_session() {
    let env = ready("midscram").await;

    // Leaves right after AuthenticationSASL.
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&env)).await;
    raw.expect_auth(10).await;
    drop(raw);

    // Leaves after the server-first-message.
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&env)).await;
    raw.expect_auth(10).await;
    let scram = ScramSha256::new(ALICE_PASSWORD.as_bytes(), ChannelBinding::unsupported());
    let mut out = BytesMut::new();
    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap();
    raw.send(&out).await;
    raw.expect_auth(11).await;
    drop(raw);

    // Leaves with half a SASLResponse sent.
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&env)).await;
    raw.expect_auth(10).await;
    let mut scram = ScramSha256::new(ALICE_PASSWORD.as_bytes(), ChannelBinding::unsupported());
    out.clear();
    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap();
    raw.send(&out).await;
    scram.update(&raw.expect_auth(11).await).unwrap();
    out.clear();
    frontend::sasl_response(scram.message(), &mut out).unwrap();
    raw.send(&out[..out.len() / 2]).await;
    drop(raw);

    // A Query where the SASL response belongs: refused as a protocol violation.
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&env)).await;
    raw.expect_auth(10).await;
    raw.send(&query("SELECT 1")).await;
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "08P01", "{err:?}");
    assert_eq!(err.severity, "FATAL");

    assert_still_serving(&env).await;
    assert_registry_empties(&env).await;
    assert_eq!(
        count_kind(&env, "session_start"),
        1,
        "only the normal client"
    );
    stop_with_no_task_left(env).await;
}

// 6 ────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_len_after_login_is_fatal_and_ends_the_backend() {
    let env = ready("hugemsg").await;
    let (mut raw, session) = Raw::login(&env).await;
    assert_eq!(
        simple_query(&mut raw, "SELECT pg_backend_pid()").await,
        [session.pid.to_string()],
        "BackendKeyData carries the upstream pid"
    );
    assert!(env.backend_alive(session.pid));

    // A Query header claiming 1 GiB, over the 64 MiB limit.
    let mut out = BytesMut::new();
    out.put_u8(b'Q');
    out.put_i32(1 << 30);
    out.put_slice(b"SELECT ");
    raw.send(&out).await;
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "08P01", "{err:?}");
    assert_eq!(err.severity, "FATAL");
    assert!(err.message.contains("limit"), "{err:?}");

    let (reason, detail) = wait_session_end(&env, session.pid).await;
    assert_eq!(reason, EndReason::ProtocolError);
    assert!(detail.is_some_and(|d| !d.is_empty()));
    assert_backend_gone(&env, session.pid).await;
    assert_registry_empties(&env).await;
    assert_still_serving(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_len_during_scram_is_refused_at_once() {
    let env = ready("hugeauth").await;
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&env)).await;
    raw.expect_auth(10).await;
    let mut out = BytesMut::new();
    out.put_u8(b'p');
    out.put_i32(1 << 30);
    raw.send(&out).await;
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "08P01", "{err:?}");
    assert_eq!(err.severity, "FATAL");
    assert_registry_empties(&env).await;
    assert_eq!(count_kind(&env, "session_start"), 0);
    assert_still_serving(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_auth_message_longer_than_an_auth_token_is_refused_at_once() {
    let env = ready("authtoken").await;
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&env)).await;
    raw.expect_auth(10).await;
    // SASLInitialResponse header claiming 32 MiB: under max_message_len, far over any
    // SCRAM message.
    let mut out = BytesMut::new();
    out.put_u8(b'p');
    out.put_i32(32 << 20);
    out.put_slice(b"SCRAM-SHA-256\0");
    raw.send(&out).await;
    let started = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(5), raw.next_inner()).await;
    let err = match next {
        Ok(Next::Frame(b'E', body)) => parse_error(&body),
        Ok(other) => panic!("expected ErrorResponse, got {other:?}"),
        Err(_) => panic!(
            "no answer within {:?}: the proxy waits for a 32 MiB SASL message from an unauthenticated client",
            started.elapsed()
        ),
    };
    assert_eq!(err.code, "08P01", "{err:?}");
    raw.expect_closed().await;
    assert_still_serving(&env).await;
    env.stop().await;
}

// 7 ────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_bind_is_fatal_08p01() {
    let env = ready("badbind").await;
    let (mut raw, session) = Raw::login(&env).await;
    assert_eq!(simple_query(&mut raw, "SELECT 1").await, ["1"]);

    let mut out = BytesMut::new();
    frontend::parse("", "SELECT $1::int", std::iter::empty(), &mut out).unwrap();
    // Bind: portal "", statement "", no format codes, 5 parameters … but only one here.
    out.put_u8(b'B');
    let start = out.len();
    out.put_i32(0);
    out.put_slice(b"\0\0");
    out.put_i16(0);
    out.put_i16(5);
    out.put_i32(1);
    out.put_slice(b"7");
    out.put_i16(0);
    let len = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    raw.send(&out).await;

    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "08P01", "{err:?}");
    assert_eq!(err.severity, "FATAL");
    assert!(err.message.contains("Bind"), "names the message: {err:?}");

    let (reason, detail) = wait_session_end(&env, session.pid).await;
    assert_eq!(reason, EndReason::ProtocolError);
    assert!(detail.is_some_and(|d| d.contains("Bind")));
    // Nothing of the broken batch was audited as a query (it never ran).
    let queries = env
        .audit_events()
        .iter()
        .filter(|e| matches!(&e.body, EventBody::Query { sql, .. } if sql.contains("$1")))
        .count();
    assert_eq!(queries, 0);
    assert_backend_gone(&env, session.pid).await;
    assert_registry_empties(&env).await;
    assert_still_serving(&env).await;
    env.stop().await;
}

// 8 ────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_as_first_bytes_is_closed_and_the_proxy_survives() {
    let env = ready("garbage").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x006a_6974_6761_7465);
    let mut errors = 0;
    let mut closes = 0;
    for i in 0..50 {
        let len = rng.gen_range(1..=2000usize);
        let mut blob: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // A third of the blobs get a plausible length word, another third that and a
        // 3.0 version too, so the garbage also reaches the parameter parser.
        if i % 3 != 0 && len >= 8 {
            blob[..4].copy_from_slice(&(len as i32).to_be_bytes());
            if i % 3 == 2 {
                blob[4..8].copy_from_slice(&PROTOCOL_3_0.to_be_bytes());
            }
        }
        let mut raw = Raw::connect(&env).await;
        // The proxy may already have refused and closed: write errors are fine.
        let _ = raw.tcp.write_all(&blob).await;
        let _ = raw.tcp.shutdown().await;
        // Whatever it answers, it ends with a close; no hang (bounded by `next`).
        loop {
            match raw.next().await {
                Next::Frame(b'E', body) => {
                    let err = parse_error(&body);
                    assert!(
                        ["08P01", "0A000", "28000", "42501"].contains(&err.code.as_str()),
                        "blob {i}: {err:?}"
                    );
                    errors += 1;
                }
                // A blob that happens to be a valid startup is asked to authenticate.
                Next::Frame(b'R', _) | Next::Frame(b'v', _) => {}
                Next::Frame(tag, _) => panic!("blob {i}: unexpected {:?}", tag as char),
                Next::Eof | Next::Reset(_) => {
                    closes += 1;
                    break;
                }
            }
        }
    }
    eprintln!("garbage: {errors} of 50 connections got an ErrorResponse before the close");
    assert_eq!(closes, 50);
    assert!(errors > 0, "at least some blobs got an ErrorResponse");
    assert_still_serving(&env).await;
    assert_registry_empties(&env).await;
    assert_eq!(
        count_kind(&env, "session_start"),
        1,
        "only the normal client"
    );
    stop_with_no_task_left(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_after_login_ends_the_session_and_its_backend() {
    let env = ready("garbage2").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0bad_f00d);
    for i in 0..10 {
        let (mut raw, session) = Raw::login(&env).await;
        let len = rng.gen_range(1..=2000usize);
        let blob: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let _ = raw.tcp.write_all(&blob).await;
        let _ = raw.tcp.shutdown().await;
        // Whatever comes back (the proxy's or the database's error), it ends in a close.
        loop {
            match raw.next().await {
                Next::Frame(b'E', body) => {
                    parse_error(&body);
                }
                Next::Frame(_, _) => {}
                Next::Eof | Next::Reset(_) => break,
            }
        }
        let (reason, _) = wait_session_end(&env, session.pid).await;
        assert!(
            [
                EndReason::ProtocolError,
                EndReason::ClientQuit,
                EndReason::UpstreamClosed
            ]
            .contains(&reason),
            "blob {i}: {reason:?}"
        );
        assert_backend_gone(&env, session.pid).await;
    }
    assert_registry_empties(&env).await;
    assert_still_serving(&env).await;
    stop_with_no_task_left(env).await;
}

// 9 ────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_queries_in_one_write_come_back_in_order() {
    let env = ready("pipeline").await;
    let (mut raw, _) = Raw::login(&env).await;
    let mut out = query("SELECT 1");
    out.extend_from_slice(&query("SELECT 'two'"));
    out.extend_from_slice(&query("SELECT 3"));
    raw.send(&out).await;
    // Each result complete, in order: RowDescription, DataRow, CommandComplete,
    // ReadyForQuery, three times.
    let mut seen = Vec::new();
    let mut ready_count = 0;
    while ready_count < 3 {
        let (tag, body) = raw.frame().await;
        match tag {
            b'T' => seen.push("T".to_owned()),
            b'D' => seen.push(format!("D:{}", first_column(&body))),
            b'C' => seen.push(format!(
                "C:{}",
                String::from_utf8_lossy(&body[..body.len() - 1])
            )),
            b'Z' => {
                ready_count += 1;
                seen.push("Z".to_owned());
            }
            b'E' => panic!("query failed: {:?}", parse_error(&body)),
            other => panic!("unexpected {:?}", other as char),
        }
    }
    let expected: Vec<String> = ["1", "two", "3"]
        .iter()
        .flat_map(|v| {
            [
                "T".to_owned(),
                format!("D:{v}"),
                "C:SELECT 1".to_owned(),
                "Z".to_owned(),
            ]
        })
        .collect();
    assert_eq!(seen, expected);
    let sqls: Vec<String> = env
        .audit_events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Query { sql, .. } => Some(sql),
            _ => None,
        })
        .collect();
    assert_eq!(sqls, ["SELECT 1", "SELECT 'two'", "SELECT 3"]);
    drop(raw);
    assert_registry_empties(&env).await;
    assert_still_serving(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_pipelined_behind_the_last_scram_message_runs_after_login() {
    let env = ready("authpipe").await;
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&env)).await;
    // The Query travels in the same write as the client-final-message: it must stay
    // buffered through authentication and upstream connect, then run.
    raw.authenticate(&query("SELECT 'early'")).await;
    let mut rows = Vec::new();
    loop {
        let (tag, body) = raw.frame().await;
        match tag {
            b'D' => rows.push(first_column(&body)),
            b'Z' => break,
            b'E' => panic!("query failed: {:?}", parse_error(&body)),
            _ => {}
        }
    }
    assert_eq!(rows, ["early"]);
    assert_eq!(simple_query(&mut raw, "SELECT 'later'").await, ["later"]);
    drop(raw);
    assert_registry_empties(&env).await;
    assert_still_serving(&env).await;
    env.stop().await;
}

// 10 ───────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_is_a_clean_client_quit_and_a_dropped_socket_has_a_detail() {
    let env = ready("quit").await;

    let (mut clean, clean_session) = Raw::login(&env).await;
    assert_eq!(simple_query(&mut clean, "SELECT 1").await, ["1"]);
    let mut out = BytesMut::new();
    frontend::terminate(&mut out);
    clean.send(&out).await;
    match clean.next().await {
        Next::Eof => {}
        other => panic!("expected a clean close after Terminate, got {other:?}"),
    }

    let (reason, detail) = wait_session_end(&env, clean_session.pid).await;
    assert_eq!(reason, EndReason::ClientQuit);
    assert_eq!(detail, None, "Terminate is a clean quit");

    // The clean end parked the backend; the next session of the grant reuses it.
    let (mut dropped, dropped_session) = Raw::login(&env).await;
    assert_eq!(
        dropped_session.pid, clean_session.pid,
        "reused after a clean end"
    );
    assert_eq!(simple_query(&mut dropped, "SELECT 2").await, ["2"]);
    drop(dropped);
    let (reason, detail) = wait_session_end(&env, dropped_session.pid).await;
    assert_eq!(reason, EndReason::ClientQuit);
    assert!(
        detail.as_deref().is_some_and(|d| !d.is_empty()),
        "a dropped socket says so: {detail:?}"
    );
    // A dropped socket is not a clean end: that backend is closed, not parked.
    assert_backend_gone(&env, dropped_session.pid).await;
    assert_registry_empties(&env).await;
    assert_still_serving(&env).await;
    env.stop().await;
}

// A client that stops reading ─────────────────────────────────────────────────────────

/// A client that stops reading in the middle of a large result cannot keep its session
/// past the grant: the proxy's write to it is blocked, and so is the backend behind it,
/// yet at expiry the session ends — `session_end` says the grant expired, the backend
/// goes, the client's socket is closed — and everything the client finds when it reads
/// again is whole backend messages, up to at most one cut short by the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_large_result_is_still_dropped_at_expiry() {
    watch_worker_panics();
    let env = Env::start("stopsreading").await;
    let grant_for = Duration::from_secs(3);
    let granted = Instant::now();
    env.grant(ALICE, grant_for).await;
    let (mut raw, session) = Raw::login(&env).await;
    // ~1 kB rows, streamed (the series is in the select list), far more than fit in
    // the socket buffers or in the grant's 3 s.
    raw.send(&query(
        "SELECT repeat('x', 1001), generate_series(1, 100000000)",
    ))
    .await;
    let mut rows = 0;
    while rows < 100 {
        match raw.next().await {
            Next::Frame(b'D', _) => rows += 1,
            Next::Frame(b'E', body) => panic!("query failed: {:?}", parse_error(&body)),
            Next::Frame(..) => {}
            other => panic!("the result stopped after {rows} rows: {other:?}"),
        }
    }
    // Stop reading until well past the deadline: the buffers fill and the relay's
    // write to this client blocks.
    tokio::time::sleep(
        (granted + grant_for + Duration::from_secs(2)).saturating_duration_since(Instant::now()),
    )
    .await;
    let (reason, _) = wait_session_end(&env, session.pid).await;
    assert_eq!(reason, EndReason::GrantExpired);
    assert_backend_gone(&env, session.pid).await;

    // Reading again: the rows that were in flight, each whole, then the end of the
    // stream. Only the last message may be cut short (a write the expiry interrupted);
    // a FATAL after it would have garbled the stream, so none may follow it.
    let read_all = async {
        loop {
            match raw.tcp.read_buf(&mut raw.buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(LIMIT, read_all)
        .await
        .expect("the proxy closed the client's connection");
    let mut frames = 0u64;
    let mut rest = &raw.buf[..];
    while rest.len() >= 5 {
        let total = be_i32(&rest[1..5]) as usize + 1;
        if rest.len() < total {
            break;
        }
        let mut frame = BytesMut::from(&rest[..total]);
        match Message::parse(&mut frame) {
            Ok(Some(Message::DataRow(_))) => {}
            Ok(Some(Message::ErrorResponse(_))) => {
                let error = parse_error(&rest[5..total]);
                assert_eq!(error.code, "57P01", "{error:?}");
                assert_eq!(total, rest.len(), "nothing follows the final error");
            }
            Ok(Some(_)) => panic!("frame {frames} after the pause: {:?}", rest[0] as char),
            Ok(None) => panic!("frame {frames} after the pause did not parse whole"),
            Err(e) => panic!("frame {frames} after the pause is not a backend message: {e}"),
        }
        rest = &rest[total..];
        frames += 1;
    }
    assert!(
        rest.len() < 5 + 1001 + 64,
        "at most one message cut short: {} bytes left",
        rest.len()
    );
    env.stop().await;
}

/// A login still in progress when shutdown begins is refused with 57P03 — and, like every
/// refusal, recorded (it used to be told without being audited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_in_progress_at_shutdown_is_refused_57p03_and_audited() {
    let mut env = ready("drainlogin").await;
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&env)).await;
    raw.expect_auth(10).await; // AuthenticationSASL: the login is under way
    let audit = env.audit_path();
    let server = env.server.take().expect("server running");
    let stop = tokio::spawn(server.stop());
    let err = raw.expect_error_then_close().await;
    assert_eq!(err.code, "57P03", "{}", err.message);
    stop.await.expect("stop task").expect("clean stop");
    let refusals: Vec<String> = jitgate_audit::read_events(&audit)
        .expect("audit log")
        .filter_map(|e| match e.expect("event").body {
            EventBody::AccessDenied { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    let kinds: Vec<String> = jitgate_audit::read_events(&audit)
        .expect("audit log")
        .map(|e| e.expect("event").body.kind().to_owned())
        .collect();
    assert_eq!(
        refusals,
        vec!["jitgate is shutting down".to_owned()],
        "{kinds:?} {}",
        err.message
    );
}
