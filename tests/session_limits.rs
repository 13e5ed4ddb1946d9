//! One session cannot make jitgate hold unbounded memory or write unbounded audit, through
//! real PostgreSQL with hand-built protocol messages: a large bound value executed many
//! times is recorded once (head, length, SHA-256), named statements and portals beyond the
//! limits end the session with FATAL 53400 (audited, other sessions unaffected), and a
//! huge pipelined batch is audited and forwarded in slices and works end to end.

mod common;
mod harness;
mod rawclient;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use harness::{Env, EnvConfig, ALICE};
use jitgate_audit::{sha256_hex, EndReason, Event, EventBody};
use postgres_protocol::message::frontend;
use rawclient::{parse_error, Next, Raw, LIMIT};
use uuid::Uuid;

/// Parse of `sql` under `name`, no parameter types.
fn parse(b: &mut BytesMut, name: &str, sql: &str) {
    frontend::parse(name, sql, std::iter::empty(), b).expect("Parse");
}

/// Bind of `portal` from `statement` with text values.
fn bind(b: &mut BytesMut, portal: &str, statement: &str, values: &[&[u8]]) {
    frontend::bind(
        portal,
        statement,
        std::iter::empty::<i16>(),
        values.iter().copied(),
        |v, buf| {
            buf.put_slice(v);
            Ok(postgres_protocol::IsNull::No)
        },
        std::iter::empty::<i16>(),
        b,
    )
    .map_err(|_| "Bind")
    .expect("Bind");
}

fn execute(b: &mut BytesMut, portal: &str, max_rows: i32) {
    frontend::execute(portal, max_rows, b).expect("Execute");
}

fn sync(b: &mut BytesMut) {
    frontend::sync(b);
}

/// Reads frames up to and including ReadyForQuery; the tags seen, and the errors.
async fn until_ready(raw: &mut Raw) -> (Vec<u8>, Vec<rawclient::PgErr>) {
    let mut tags = Vec::new();
    let mut errors = Vec::new();
    loop {
        let (tag, body) = raw.frame().await;
        tags.push(tag);
        if tag == b'E' {
            errors.push(parse_error(&body));
        }
        if tag == b'Z' {
            return (tags, errors);
        }
    }
}

/// The events of the session whose upstream pid is `pid`, once its `session_end` is in.
async fn session_of(env: &Env, pid: i32) -> (Uuid, Vec<Event>) {
    let find = || {
        let events = env.audit_events();
        let session = events.iter().find_map(|e| match e.body {
            EventBody::SessionStart {
                upstream_pid: Some(p),
                ..
            } if p == pid => e.session_id,
            _ => None,
        })?;
        let mine: Vec<Event> = events
            .into_iter()
            .filter(|e| e.session_id == Some(session))
            .collect();
        mine.iter()
            .any(|e| e.kind() == "session_end")
            .then_some((session, mine))
    };
    env.eventually("the session's session_end in the log", LIMIT, || {
        find().is_some()
    })
    .await;
    find().expect("session found")
}

/// The session was ended by a limit: FATAL 53400 whose message holds every one of
/// `words`, and `session_end` with reason `limit_exceeded`. Returns the session's events.
async fn ended_by_limit(env: &Env, raw: &mut Raw, pid: i32, words: &[&str]) -> Vec<Event> {
    let err = raw.expect_error_then_close().await;
    assert_eq!(
        (err.severity.as_str(), err.code.as_str()),
        ("FATAL", "53400")
    );
    assert!(
        words.iter().all(|w| err.message.contains(w)),
        "{} lacks one of {words:?}",
        err.message
    );
    let (_, events) = session_of(env, pid).await;
    assert_eq!(session_end(&events).0, EndReason::LimitExceeded);
    events
}

fn session_end(events: &[Event]) -> (EndReason, Option<String>) {
    events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::SessionEnd { reason, detail, .. } => Some((*reason, detail.clone())),
            _ => None,
        })
        .expect("session_end")
}

fn config(extra_audit: &str, extra_top: &str) -> (String, String) {
    (extra_audit.to_owned(), extra_top.to_owned())
}

async fn start(prefix: &str, (extra_audit, extra_top): (String, String)) -> Env {
    Env::start_config(
        prefix,
        EnvConfig {
            extra_audit: &extra_audit,
            extra_top: &extra_top,
            ..EnvConfig::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_value_executed_many_times_is_recorded_once_with_its_hash() {
    let env = start("lim_param", config("max_param_bytes: 1024\n", "")).await;
    let _grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let (mut raw, login) = Raw::login(&env).await;
    let audit_before = std::fs::metadata(env.audit_path()).map_or(0, |m| m.len());

    // 1 MiB value; a portal over 200 rows, fetched one row per Execute.
    let value: Vec<u8> = (0..1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    const STEPS: usize = 200;
    let mut b = BytesMut::new();
    frontend::query("BEGIN", &mut b).unwrap();
    parse(
        &mut b,
        "",
        "select length($1::text), md5($1::text) from generate_series(1, 200)",
    );
    bind(&mut b, "", "", &[&value]);
    for _ in 0..STEPS {
        execute(&mut b, "", 1);
    }
    sync(&mut b);
    frontend::query("COMMIT", &mut b).unwrap();
    raw.send(&b).await;
    let (begin, _) = until_ready(&mut raw).await;
    assert_eq!(begin.last(), Some(&b'Z'));
    let (tags, errors) = until_ready(&mut raw).await;
    assert!(errors.is_empty(), "{errors:?}");
    let suspended = tags.iter().filter(|t| **t == b's').count();
    let rows = tags.iter().filter(|t| **t == b'D').count();
    assert_eq!(
        (rows, suspended),
        (STEPS, STEPS),
        "each step returned one row"
    );
    until_ready(&mut raw).await;
    raw.send(&rawclient::terminate()).await;
    raw.expect_closed().await;

    let (_, events) = session_of(&env, login.pid).await;
    let audit_growth = std::fs::metadata(env.audit_path()).unwrap().len() - audit_before;
    // Copied into every event this would be 200 MiB; recorded once it is the events.
    assert!(
        audit_growth < 512 * 1024,
        "the audit log grew by {audit_growth} bytes for {STEPS} steps of one 1 MiB value"
    );
    let executes: Vec<&EventBody> = events
        .iter()
        .map(|e| &e.body)
        .filter(|b| matches!(b, EventBody::Query { sql, .. } if sql.starts_with("select length")))
        .collect();
    assert_eq!(executes.len(), STEPS);
    let EventBody::Query {
        query_id: first,
        params,
        params_from: None,
        ..
    } = executes[0]
    else {
        panic!(
            "the first execution records the parameters: {:?}",
            executes[0]
        );
    };
    assert_eq!(params.len(), 1);
    let p = &params[0];
    assert!(p.truncated);
    assert_eq!(p.value_len, Some(value.len() as u64));
    assert_eq!(p.value_sha256.as_deref(), Some(sha256_hex(&value).as_str()));
    assert_eq!(p.head_bytes().unwrap().unwrap(), &value[..1024]);
    for later in &executes[1..] {
        match later {
            EventBody::Query {
                params,
                params_from: Some(from),
                ..
            } => {
                assert!(params.is_empty());
                assert_eq!(from, first);
            }
            other => panic!("a later step points at the first: {other:?}"),
        }
    }
    // The transcript shows the value (head, length, hash) under every step.
    let sid = events[0].session_id.unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .arg("--config")
        .arg(&env.config_path)
        .args(["audit", "replay", "--session", &sid])
        .output()
        .expect("run jitgate audit replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transcript = String::from_utf8(out.stdout).unwrap();
    let hash_note = format!("1048576 bytes in all, sha256 {}", sha256_hex(&value));
    let hash_lines = transcript
        .lines()
        .filter(|l| l.contains(&hash_note))
        .count();
    assert_eq!(
        hash_lines,
        STEPS,
        "{}",
        &transcript[..transcript.len().min(3000)]
    );
    assert_eq!(
        transcript
            .matches(&format!("parameters as bound for query #{first}"))
            .count(),
        STEPS - 1
    );
    env.stop().await;
}

/// Logs in a second session (tokio-postgres) before the limit is hit; it must still work
/// after the first session was ended.
async fn bystander(env: &Env) -> tokio_postgres::Client {
    let (client, _conn) = env.connect().await.expect("second session");
    client
}

/// A jitgate with `limits` (the YAML of `session_limits:`), a grant for alice, a
/// bystander session, and alice's raw session under test.
async fn limited(
    prefix: &str,
    limits: &str,
) -> (Env, tokio_postgres::Client, Raw, rawclient::LoggedIn) {
    let env = start(prefix, config("", &format!("session_limits:\n{limits}"))).await;
    // The grant lasts longer than any test; it is kept by the store, not this handle.
    let _grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let other = bystander(&env).await;
    let (raw, login) = Raw::login(&env).await;
    (env, other, raw, login)
}

/// After a session ended by a limit: the server's backend is gone, and the bystander
/// session still works.
async fn only_that_session_ended(env: Env, pid: i32, other: tokio_postgres::Client) {
    env.eventually("the ended session's backend gone", LIMIT, || {
        !env.backend_alive(pid)
    })
    .await;
    let n: i32 = other
        .query_one("select 41 + 1", &[])
        .await
        .expect("the other session still works")
        .get(0);
    assert_eq!(n, 42);
    drop(other);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_named_statements_end_the_session_with_53400() {
    let (env, other, mut raw, login) = limited("lim_stmt", "  max_prepared_statements: 3\n").await;

    let mut b = BytesMut::new();
    for name in ["s1", "s2", "s3"] {
        parse(&mut b, name, "select 1");
    }
    // The unnamed statement does not count.
    parse(&mut b, "", "select 2");
    sync(&mut b);
    raw.send(&b).await;
    let (_, errors) = until_ready(&mut raw).await;
    assert!(errors.is_empty(), "{errors:?}");

    let mut b = BytesMut::new();
    parse(&mut b, "s4", "select 4");
    sync(&mut b);
    raw.send(&b).await;
    let events = ended_by_limit(
        &env,
        &mut raw,
        login.pid,
        &[
            "prepared statements",
            "3",
            "session_limits.max_prepared_statements",
        ],
    )
    .await;
    let (_, detail) = session_end(&events);
    assert!(
        detail
            .as_deref()
            .unwrap_or("")
            .contains("session_limits.max_prepared_statements"),
        "{detail:?}"
    );
    // The server's view: the backend is gone (it never saw s4); the other session is
    // unaffected.
    only_that_session_ended(env, login.pid, other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_named_portals_end_the_session_with_53400() {
    let (env, other, mut raw, login) = limited("lim_portal", "  max_portals: 2\n").await;

    let mut b = BytesMut::new();
    frontend::query("BEGIN", &mut b).unwrap();
    parse(&mut b, "", "select 1");
    bind(&mut b, "p1", "", &[]);
    bind(&mut b, "p2", "", &[]);
    sync(&mut b);
    raw.send(&b).await;
    until_ready(&mut raw).await;
    let (_, errors) = until_ready(&mut raw).await;
    assert!(errors.is_empty(), "{errors:?}");

    let mut b = BytesMut::new();
    bind(&mut b, "p3", "", &[]);
    execute(&mut b, "p3", 0);
    sync(&mut b);
    raw.send(&b).await;
    let events = ended_by_limit(
        &env,
        &mut raw,
        login.pid,
        &["portals", "session_limits.max_portals"],
    )
    .await;
    // Nothing of the refused batch was recorded as run.
    assert!(!events.iter().any(|e| matches!(&e.body,
        EventBody::Query { portal: Some(p), .. } if p == "p3")));
    only_that_session_ended(env, login.pid, other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_pipelined_batch_is_audited_in_slices_and_works() {
    // A small slice, so the batch is cut into many.
    let env = start(
        "lim_batch",
        config("", "session_limits:\n  max_audit_batch_bytes: 65536\n"),
    )
    .await;
    let _grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let (raw, login) = Raw::login(&env).await;
    const N: usize = 100_000;
    let mut b = BytesMut::new();
    parse(&mut b, "", "select $1::int");
    for i in 0..N {
        let v = i.to_string();
        bind(&mut b, "", "", &[v.as_bytes()]);
        execute(&mut b, "", 0);
    }
    sync(&mut b);

    // One write of the whole batch, while the answers are read (else both sides block).
    let Raw { tcp, mut buf } = raw;
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        wr.write_all(&b).await.expect("write the batch");
        wr
    });
    let read = async {
        let (mut rows, mut complete) = (0usize, 0usize);
        loop {
            match rawclient::read_frame(&mut rd, &mut buf).await {
                Next::Frame(b'D', _) => rows += 1,
                Next::Frame(b'C', _) => complete += 1,
                Next::Frame(b'E', body) => panic!("error: {:?}", parse_error(&body)),
                Next::Frame(b'Z', _) => return (rows, complete),
                Next::Frame(..) => {}
                other => panic!("closed before ReadyForQuery: {other:?}"),
            }
        }
    };
    let (rows, complete) = tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .expect("the batch is answered in time");
    assert_eq!((rows, complete), (N, N));
    let mut wr = writer.await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        wr.write_all(&rawclient::terminate()).await.unwrap();
    }

    let (_, events) = session_of(&env, login.pid).await;
    let queries: Vec<(u64, String)> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Query {
                query_id, params, ..
            } => Some((*query_id, params[0].value.clone().unwrap_or_default())),
            _ => None,
        })
        .collect();
    assert_eq!(queries.len(), N, "every Execute is in the log");
    for (i, (id, value)) in queries.iter().enumerate() {
        assert_eq!(
            (*id, value.as_str()),
            (i as u64 + 1, i.to_string().as_str())
        );
    }
    let results = events
        .iter()
        .filter(|e| matches!(&e.body, EventBody::QueryResult { rows: Some(1), .. }))
        .count();
    assert_eq!(results, N);
    assert_eq!(session_end(&events).0, EndReason::ClientQuit);
    env.stop().await;
}

/// Statements prepared with SQL count too, and by their bytes: a few large `PREPARE`s
/// end the session with 53400 naming `max_retained_bytes`, and the server's backend goes
/// with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_bytes_of_statements_end_the_session_with_53400() {
    let (env, other, mut raw, login) = limited("lim_bytes", "  max_retained_bytes: 131072\n").await;
    let text = format!("select '{}'", "x".repeat(50_000));

    // Two statements of 50 kB fit under 128 KiB, one by Parse and one by SQL PREPARE.
    let mut b = BytesMut::new();
    parse(&mut b, "s1", &text);
    sync(&mut b);
    frontend::query(&format!("PREPARE s2 AS {text}"), &mut b).expect("Query");
    raw.send(&b).await;
    let (_, errors) = until_ready(&mut raw).await;
    assert!(errors.is_empty(), "{errors:?}");
    let (_, errors) = until_ready(&mut raw).await;
    assert!(errors.is_empty(), "{errors:?}");

    // A third is one too many, however it is made.
    let mut b = BytesMut::new();
    frontend::query(&format!("PREPARE s3 AS {text}"), &mut b).expect("Query");
    raw.send(&b).await;
    let _ = until_ready(&mut raw).await;
    let mut b = BytesMut::new();
    frontend::query("select 1", &mut b).expect("Query");
    raw.send(&b).await;
    let events = ended_by_limit(
        &env,
        &mut raw,
        login.pid,
        &["bytes", "131072", "session_limits.max_retained_bytes"],
    )
    .await;
    assert_eq!(session_end(&events).0, EndReason::LimitExceeded);
    only_that_session_ended(env, login.pid, other).await;
}
