//! TLS on both hops: psql → jitgate with a certificate made at test time (require and
//! verify-full, plain still allowed), the startup-phase rule against bytes pipelined
//! after SSLRequest (CVE-2021-23214 class), and jitgate → PostgreSQL with `verify-full`
//! against the test binary's cluster, which gets SSL switched on once: the right CA and
//! name are accepted, a wrong CA or a name not in the certificate is refused with 08001.
//! Fake upstreams check there is no plaintext fallback after 'N' and that bytes injected
//! after 'S' are not read as the server's answer (CVE-2021-23222 class). Big transfers to
//! slow readers check that TLS streams deliver their last bytes (two of them
//! guard a fixed bug: the relay must flush its TLS writes).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;
mod tlsutil;

use std::time::{Duration, Instant};

use harness::{ALICE, ROLE};
use jitgate_audit::EventBody;
use tlsutil::{
    describe, error_fields, read_to_close, run_within, split_message, ssl_request, startup_message,
    stdout, upstream_ssl, Ca, EnvSpec, Running, TlsEnv, LIMIT,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;

/// Client-facing TLS only; the hop to the database stays plain.
async fn client_tls_env(prefix: &str, ca: &Ca) -> TlsEnv {
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let env = TlsEnv::start(EnvSpec {
        prefix,
        client_tls: Some(&leaf),
        upstream_tls: "{ mode: disable }",
        files: &[("ca.pem", ca.pem())],
        upstream_port: None,
        tls_required: false,
        admin_tls: None,
        store: None,
    })
    .await;
    env.grant(Duration::from_secs(600)).await;
    env
}

/// `tls` of every session_start in the audit log, in order.
fn session_start_tls(env: &TlsEnv) -> Vec<bool> {
    env.audit_events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::SessionStart { tls, .. } => Some(tls),
            _ => None,
        })
        .collect()
}

/// Starts psql in `sslmode`, waits for its session to appear in the registry, then runs
/// `\conninfo` and `SELECT 1`. Returns the registry entry and psql's output.
async fn psql_session(
    env: &TlsEnv,
    sslmode: &str,
) -> (jitgate_proxy::registry::SessionInfo, std::process::Output) {
    // Earlier sessions must be gone, so the one we find is this psql's.
    env.no_sessions().await;
    let mut cmd = env.psql();
    cmd.env("PGSSLMODE", sslmode);
    // psql connects first, then waits on stdin: the session is live while we look.
    let psql = tokio::task::spawn_blocking(move || Running::spawn(cmd))
        .await
        .unwrap();
    let info = env.new_session(&[]).await;
    let out = tokio::task::spawn_blocking(move || psql.finish("\\conninfo\nSELECT 1;\n", LIMIT))
        .await
        .unwrap();
    (info, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_tls_require_and_verify_full_and_plain_still_works() {
    let ca = Ca::new("jitgate client-facing test CA");
    let env = client_tls_env("tls_client", &ca).await;

    // sslmode=require: the session is registered as TLS, and psql says it is on SSL.
    let (info, out) = psql_session(&env, "require").await;
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("SSL connection"), "psql not on TLS: {text}");
    assert!(text.ends_with("\n1"), "SELECT 1 result: {text}");
    assert!(info.tls, "registry: {info:?}");
    assert_eq!(info.identity, ALICE);
    assert_eq!(info.target, env.target);

    // sslmode=verify-full against our CA, by DNS name and by IP address SAN.
    for host in ["localhost", "127.0.0.1"] {
        let mut cmd = env.psql();
        cmd.env("PGHOST", host)
            .env("PGHOSTADDR", "127.0.0.1")
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", env.path("ca.pem"))
            .args(["-c", "SELECT 1"]);
        let out = run_within(cmd, LIMIT).await;
        assert!(
            out.status.success(),
            "verify-full as {host}: {}",
            describe(&out)
        );
        assert_eq!(stdout(&out), "1");
    }

    // The check is real: verify-full against another CA is refused by psql itself.
    let other = Ca::new("some other CA");
    std::fs::write(env.path("other-ca.pem"), other.pem()).unwrap();
    let mut cmd = env.psql();
    cmd.env("PGHOST", "localhost")
        .env("PGHOSTADDR", "127.0.0.1")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", env.path("other-ca.pem"))
        .args(["-c", "SELECT 1"]);
    let out = run_within(cmd, LIMIT).await;
    assert!(
        !out.status.success(),
        "wrong CA accepted: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate verify failed"),
        "{}",
        describe(&out)
    );

    // Without tls.required, plain clients are still served (tests/transit.rs has it on).
    let (info, out) = psql_session(&env, "disable").await;
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(!text.contains("SSL connection"), "{text}");
    assert!(text.ends_with("\n1"), "{text}");
    assert!(!info.tls, "registry: {info:?}");

    // Audit: require, verify-full ×2 over TLS, then the plain one (the refused
    // handshake never started a session).
    assert_eq!(session_start_tls(&env), vec![true, true, true, false]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pipelined_after_ssl_request_are_refused_not_read_as_tls() {
    let ca = Ca::new("jitgate pipelining test CA");
    let env = client_tls_env("tls_pipe", &ca).await;
    let addr = ("127.0.0.1", env.proxy_port());

    // SSLRequest and a plaintext StartupMessage in ONE write.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = ssl_request();
    bytes.extend_from_slice(&startup_message(ALICE, &env.target));
    tcp.write_all(&bytes).await.unwrap();
    let reply = read_to_close(&mut tcp, LIMIT).await;
    // No 'S' (TLS never starts), no authentication request: one FATAL 08P01, then close.
    let (tag, body, rest) =
        split_message(&reply).unwrap_or_else(|| panic!("expected an ErrorResponse, got {reply:?}"));
    assert_eq!(tag, b'E', "reply: {reply:?}");
    assert!(rest.is_empty(), "more after the error: {rest:?}");
    let fields = error_fields(body);
    let field = |k: u8| {
        fields
            .iter()
            .find(|(t, _)| *t == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field(b'S'), Some("FATAL"), "{fields:?}");
    assert_eq!(field(b'C'), Some("08P01"), "{fields:?}");
    assert_eq!(
        field(b'M'),
        Some("received unencrypted data after SSL request")
    );

    // Control: SSLRequest alone is accepted ('S') ...
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&ssl_request()).await.unwrap();
    let mut answer = [0u8; 1];
    tokio::time::timeout(
        LIMIT,
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut answer),
    )
    .await
    .expect("answer to SSLRequest")
    .unwrap();
    assert_eq!(&answer, b"S");
    // ... and plaintext sent after the 'S' is fed to the TLS handshake, which fails: no
    // Postgres message comes back, at most a TLS alert record (content type 21).
    tcp.write_all(&startup_message(ALICE, &env.target))
        .await
        .unwrap();
    let reply = read_to_close(&mut tcp, LIMIT).await;
    assert!(
        reply.is_empty() || reply[0] == 21,
        "plaintext after 'S' got a non-TLS answer: {reply:?}"
    );

    assert!(env.server().registry.list().is_empty());
    assert!(session_start_tls(&env).is_empty());
    env.stop().await;
}

/// A target with `tls: <upstream_tls>` whose CA file holds `ca_pem`.
async fn upstream_tls_env(prefix: &str, upstream_tls: &str, ca_pem: &str) -> TlsEnv {
    upstream_tls_env_at(prefix, upstream_tls, ca_pem, None).await
}

/// Like [`upstream_tls_env`], with the target pointing at `port` (a fake server).
async fn upstream_tls_env_at(
    prefix: &str,
    upstream_tls: &str,
    ca_pem: &str,
    port: Option<u16>,
) -> TlsEnv {
    let env = TlsEnv::start(EnvSpec {
        prefix,
        client_tls: None,
        upstream_tls,
        files: &[("upstream-ca.pem", ca_pem)],
        upstream_port: port,
        tls_required: false,
        admin_tls: None,
        store: None,
    })
    .await;
    env.grant(Duration::from_secs(600)).await;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_verify_full_with_the_right_ca_and_name_encrypts_the_hop() {
    let ssl = upstream_ssl().await;
    let env = upstream_tls_env(
        "tls_up_ok",
        "{ mode: verify-full, ca_file: upstream-ca.pem, server_name: localhost }",
        &ssl.ca_pem,
    )
    .await;
    let client = env.connect().await.expect("admitted over a TLS upstream");
    let row = client
        .query_one(
            "SELECT ssl, current_user::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the upstream hop is not encrypted");
    assert_eq!(row.get::<_, String>(1), env.upstream_user);
    // The client side stayed plain.
    let sessions = env.server().registry.list();
    assert_eq!(sessions.len(), 1);
    assert!(!sessions[0].tls);
    drop(client);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_server_name_defaults_to_the_host_ip_and_cancel_goes_over_tls() {
    let ssl = upstream_ssl().await;
    // No server_name: the certificate must name the host, 127.0.0.1 (an IP SAN).
    let env = upstream_tls_env(
        "tls_up_ip",
        "{ mode: verify-full, ca_file: upstream-ca.pem }",
        &ssl.ca_pem,
    )
    .await;
    let client = env.connect().await.expect("admitted over a TLS upstream");
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));

    // The cancel is forwarded on a fresh upstream connection, which must use TLS too.
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let started = Instant::now();
        let result = client.simple_query("SELECT pg_sleep(60)").await;
        (result.map(|_| ()), started.elapsed())
    });
    env.new_session(&[]).await;
    // Wait until the query is running upstream before cancelling it.
    let start = Instant::now();
    loop {
        let user = env.upstream_user.clone();
        let running = tokio::task::spawn_blocking(move || {
            common::cluster()
                .psql(
                    "postgres",
                    &format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}' \
                         AND query = 'SELECT pg_sleep(60)' AND state = 'active'"
                    ),
                )
                .unwrap()
        })
        .await
        .unwrap();
        if running == "1" {
            break;
        }
        assert!(start.elapsed() < LIMIT, "the query never started upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let (result, took) = tokio::time::timeout(LIMIT, sleeper)
        .await
        .expect("cancelled query returns")
        .unwrap();
    let err = result.expect_err("the query was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    assert!(took < Duration::from_secs(50), "took {took:?}");
    env.stop().await;
}

/// Asserts a refused upstream TLS connection reached the client as FATAL 08001 naming
/// the target and role, without the upstream password or TLS details, and quickly, with
/// the reason in the audit log.
async fn assert_upstream_refused(env: &TlsEnv, expect_in_detail: &str) -> tokio_postgres::Error {
    let started = Instant::now();
    let err = harness::refused(env.connect().await, "upstream TLS must fail");
    let took = started.elapsed();
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got {err}"));
    assert_eq!(db.severity(), "FATAL");
    assert_eq!(
        db.code(),
        &SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION
    );
    assert!(
        db.message().contains(&format!("\"{}\"", env.target))
            && db.message().contains(&format!("\"{ROLE}\"")),
        "message names target and role: {}",
        db.message()
    );
    let everything = format!(
        "{} {} {:?} {:?} {err:?}",
        db.message(),
        err,
        db.detail(),
        db.hint()
    );
    assert!(
        !everything.contains(&env.upstream_password),
        "the upstream password leaked: {everything}"
    );
    // Network and TLS details (certificate names, verifier errors) stay with the
    // operator: the client gets no detail, the audit log and server log say why.
    assert_eq!(db.detail(), None, "no TLS details reach the client");
    let reasons: Vec<String> = env
        .audit_events()
        .into_iter()
        .filter_map(|e| match e.body {
            jitgate_audit::EventBody::AccessDenied { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains(expect_in_detail)),
        "the audit log says why ({expect_in_detail}): {reasons:?}"
    );
    // Refused by verification, not by the proxy's 10 s upstream connect timeout.
    assert!(
        reasons.iter().all(|r| !r.contains("timed out")),
        "{reasons:?}"
    );
    assert!(took < Duration::from_secs(10), "refusal took {took:?}");
    assert!(env.server().registry.list().is_empty());
    assert!(session_start_tls(env).is_empty());
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_verify_full_with_the_wrong_ca_is_refused_with_08001() {
    upstream_ssl().await;
    // An unrelated CA, and an impostor CA with the very subject name of the real one
    // (a different key): rustls reports UnknownIssuer and BadSignature respectively.
    for (name, why) in [
        ("some unrelated CA", "UnknownIssuer"),
        ("jitgate upstream test CA", "BadSignature"),
    ] {
        let wrong = Ca::new(name);
        let env = upstream_tls_env(
            "tls_up_ca",
            "{ mode: verify-full, ca_file: upstream-ca.pem, server_name: localhost }",
            wrong.pem(),
        )
        .await;
        assert_upstream_refused(&env, why).await;
        env.stop().await;
    }
}

/// A fake database server on loopback: answers the SSLRequest with `answer` (one write),
/// then records whatever it is sent until jitgate closes the connection.
async fn fake_upstream(answer: Vec<u8>) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 8];
        sock.read_exact(&mut request).await.unwrap();
        assert_eq!(
            request.to_vec(),
            ssl_request(),
            "jitgate must ask for TLS first"
        );
        sock.write_all(&answer).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(LIMIT, sock.read_to_end(&mut rest)).await;
        rest
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_tls_gets_no_plaintext_fallback() {
    let (port, server) = fake_upstream(b"N".to_vec()).await;
    let env = upstream_tls_env_at(
        "tls_up_n",
        "{ mode: verify-full, ca_file: upstream-ca.pem, server_name: localhost }",
        Ca::new("unused CA").pem(),
        Some(port),
    )
    .await;
    assert_upstream_refused(&env, "refused TLS").await;
    let after = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(
        after.is_empty(),
        "jitgate sent {} bytes in plaintext after 'N' (startup/password?)",
        after.len()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_an_upstream_injects_after_s_are_not_taken_as_its_answer() {
    // CVE-2021-23222 class: 'S' followed, in the same write, by a plaintext message that
    // a buffering client would later read as if it had come over TLS.
    let mut answer = b"S".to_vec();
    let body = b"SFATAL\0C28000\0Minjected by a man in the middle\0\0";
    answer.push(b'E');
    answer.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
    answer.extend_from_slice(body);
    let (port, server) = fake_upstream(answer).await;
    let ssl = upstream_ssl().await;
    let env = upstream_tls_env_at(
        "tls_up_inject",
        "{ mode: verify-full, ca_file: upstream-ca.pem, server_name: localhost }",
        &ssl.ca_pem,
        Some(port),
    )
    .await;
    // The injected bytes are fed to the TLS handshake, which fails on them.
    let err = assert_upstream_refused(&env, "TLS handshake failed").await;
    assert!(!format!("{err:?}").contains("injected"), "{err:?}");
    // What jitgate sent after the 'S' was a TLS record (a ClientHello), nothing else.
    let after = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(
        after.first(),
        Some(&22),
        "not a TLS handshake record: {after:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_verify_full_with_a_name_not_in_the_certificate_is_refused() {
    let ssl = upstream_ssl().await;
    let env = upstream_tls_env(
        "tls_up_name",
        "{ mode: verify-full, ca_file: upstream-ca.pem, server_name: db.internal }",
        &ssl.ca_pem,
    )
    .await;
    assert_upstream_refused(&env, "certificate").await;
    env.stop().await;
}

/// One big `COPY … TO STDOUT`: rows of 1000 'x' plus a newline, ~5 MB, more than the
/// kernel buffers between jitgate and psql hold, so a slow reader backs them up.
const COPY_ROWS: usize = 5_000;
const COPY_LINE: usize = 1001;
const COPY_BYTES: usize = COPY_ROWS * COPY_LINE;
/// No output for this long while psql still runs means nothing is coming: the slow
/// reader drains ~5 MB in well under a second.
const STALL: Duration = Duration::from_secs(10);

/// psql runs `copies` big COPYs through the proxy while we read its output slowly, so
/// the proxy's writes to the client keep meeting a full socket.
async fn big_copies_to_slow_psql(env: &TlsEnv, sslmode: &str, copies: usize) -> tlsutil::SlowRun {
    let mut cmd = env.psql();
    cmd.env("PGSSLMODE", sslmode);
    let copy =
        format!("COPY (SELECT repeat('x', 1000) FROM generate_series(1, {COPY_ROWS})) TO STDOUT");
    for _ in 0..copies {
        cmd.args(["-c", &copy]);
    }
    tokio::task::spawn_blocking(move || {
        tlsutil::slow_consumer(cmd, 32 * 1024, Duration::from_millis(1), STALL, LIMIT * 10)
    })
    .await
    .unwrap()
}

fn assert_all_copies_arrived(run: &tlsutil::SlowRun, copies: usize) {
    let whole = run.received / COPY_BYTES;
    let missing = COPY_BYTES - run.received % COPY_BYTES;
    assert!(
        run.status.is_some_and(|s| s.success()) && run.received == copies * COPY_BYTES,
        "psql stopped receiving: {whole} of {copies} COPYs arrived whole, the next one is \
         missing its last {missing} bytes; {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_results_reach_a_slow_plain_client_whole() {
    // Control for the TLS case below: the same traffic without client-side TLS.
    let ca = Ca::new("jitgate big result control CA");
    let env = client_tls_env("tls_big_plain", &ca).await;
    let run = big_copies_to_slow_psql(&env, "disable", 20).await;
    assert_all_copies_arrived(&run, 20);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_results_reach_a_slow_tls_client_whole() {
    // Each COPY that ends while the socket is full strands its tail (observed: 20-45 KB,
    // always under rustls's 64 KB buffer) in rustls. Observed: 0.5-5 % of COPYs do, so
    // 200 of them (~35 s when nothing stalls) catch it in most runs, not every run.
    let ca = Ca::new("jitgate big result CA");
    let env = client_tls_env("tls_big", &ca).await;
    let run = big_copies_to_slow_psql(&env, "require", 200).await;
    assert_all_copies_arrived(&run, 200);
    env.stop().await;
}

/// Runs `rounds` COPY FROM STDIN of ~5 MB each into a table whose CHECK makes the
/// server read slower than jitgate writes, so jitgate's writes upstream keep meeting a
/// full socket. Err names the round that stalled and what the backend was waiting for.
async fn copy_in_rounds(env: &TlsEnv, rounds: usize) -> Result<(), String> {
    use futures_util::SinkExt;
    let client = env.connect().await.expect("connect");
    client
        .batch_execute(
            "CREATE UNLOGGED TABLE sink(x text CHECK (length(md5(x || random()::text)) = 32))",
        )
        .await
        .unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let block = bytes::Bytes::from(format!("{}\n", "y".repeat(1000)).repeat(64));
    for round in 0..rounds {
        let copy = async {
            let sink = client
                .copy_in::<_, bytes::Bytes>("COPY sink FROM STDIN")
                .await?;
            futures_util::pin_mut!(sink);
            for _ in 0..80 {
                sink.send(block.clone()).await?;
            }
            sink.finish().await
        };
        match tokio::time::timeout(STALL, copy).await {
            Ok(Ok(rows)) => assert_eq!(rows, 80 * 64),
            Ok(Err(e)) => panic!("COPY failed: {e}"),
            Err(_) => {
                let state = tokio::task::spawn_blocking(move || {
                    common::cluster().psql(
                        "postgres",
                        &format!(
                            "SELECT state || ' ' || coalesce(wait_event, '-') \
                             FROM pg_stat_activity WHERE pid = {pid}"
                        ),
                    )
                })
                .await
                .unwrap();
                return Err(format!(
                    "COPY round {round} of {rounds} got no CommandComplete within {STALL:?}; \
                     the upstream backend is: {state:?}"
                ));
            }
        }
        if round % 10 == 9 {
            client.batch_execute("TRUNCATE sink").await.unwrap();
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_copy_in_reaches_a_slow_plain_upstream_whole() {
    // Control for the TLS case below.
    let env = upstream_tls_env("tls_copy_plain", "{ mode: disable }", "unused").await;
    copy_in_rounds(&env, 30).await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_copy_in_reaches_a_slow_tls_upstream_whole() {
    let ssl = upstream_ssl().await;
    let env = upstream_tls_env(
        "tls_copy",
        "{ mode: verify-full, ca_file: upstream-ca.pem, server_name: localhost }",
        &ssl.ca_pem,
    )
    .await;
    // Observed: 1-6 % of rounds stall, so 300 rounds catch it nearly every run.
    copy_in_rounds(&env, 300).await.unwrap();
    env.stop().await;
}
