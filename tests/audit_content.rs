//! What the audit log records of a real session's statements, through the proxy: long SQL
//! cut with its length and hash, exotic text kept exactly, parameters redacted by the
//! target's and the role's rules, role/search_path changes flagged, result bytes counted;
//! and the CLI that reads it (`audit sessions`, `search`, `export`, `replay --format json`).

mod common;
mod harness;

use std::process::Output;
use std::time::Duration;

use harness::{Env, ALICE};
use jitgate_audit::{sha256_hex, Event, EventBody, SettingChange};
use uuid::Uuid;

/// Target rules: hide card numbers; role rules (rw): also hide anything starting "secret".
const REDACT: &str = "audit:\n  redact:\n    params_matching: ['^4[0-9]{15}$']\n  roles:\n    rw:\n      redact:\n        params_matching: ['(?i)^secret']";

/// Waits until the session's `session_end` is in the log (written after every result),
/// then returns the session's events.
async fn session_events(env: &Env) -> (Uuid, Vec<Event>) {
    env.eventually("session_end written", Duration::from_secs(10), || {
        env.audit_events().iter().any(|e| e.kind() == "session_end")
    })
    .await;
    let events = env.audit_events();
    let session = events
        .iter()
        .find(|e| e.kind() == "session_start")
        .and_then(|e| e.session_id)
        .expect("session_start");
    let events = events
        .into_iter()
        .filter(|e| e.session_id == Some(session))
        .collect();
    (session, events)
}

/// The `query` event whose SQL satisfies `pred`.
fn query_where(events: &[Event], pred: impl Fn(&str) -> bool) -> &EventBody {
    events
        .iter()
        .map(|e| &e.body)
        .find(|b| matches!(b, EventBody::Query { sql, .. } if pred(sql)))
        .unwrap_or_else(|| panic!("no such query in {events:#?}"))
}

/// The `query_result` of `query_id`.
fn result_of(events: &[Event], id: u64) -> &EventBody {
    events
        .iter()
        .map(|e| &e.body)
        .find(|b| matches!(b, EventBody::QueryResult { query_id, .. } if *query_id == id))
        .unwrap_or_else(|| panic!("no result for query {id}"))
}

fn id_of(body: &EventBody) -> u64 {
    match body {
        EventBody::Query { query_id, .. } => *query_id,
        _ => panic!("not a query"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_truncated_with_hash_and_exotic_text_kept() {
    // 101 bytes: the cut would split a 4-byte character, so 100 bytes are kept.
    let env = Env::start_with("content_sql", "", "max_sql_bytes: 101").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    let long = format!("select '{}'", "𝔘".repeat(40));
    client.simple_query(&long).await.unwrap();
    let exotic = "select 'e\u{301} ☃ \u{202e}rtl\u{202c} \u{1F600} \u{FEFF}z' as \"Ω\"";
    let rows = client.simple_query(exotic).await.unwrap();
    assert!(!rows.is_empty());
    drop(client);
    let _ = conn.await;

    let (_, events) = session_events(&env).await;
    match query_where(&events, |s| s.starts_with("select '𝔘")) {
        EventBody::Query {
            sql,
            truncated,
            sql_len,
            sql_sha256,
            ..
        } => {
            assert!(*truncated);
            assert_eq!(sql.len(), 100, "{sql}");
            assert_eq!(sql, &long[..100]);
            assert_eq!(*sql_len, Some(long.len() as u64));
            assert_eq!(
                sql_sha256.as_deref(),
                Some(sha256_hex(long.as_bytes()).as_str())
            );
        }
        _ => unreachable!(),
    }
    match query_where(&events, |s| s.contains('☃')) {
        EventBody::Query {
            sql,
            truncated,
            sql_len,
            ..
        } => {
            assert_eq!(sql, exotic, "recorded exactly as sent");
            assert!(!truncated);
            assert_eq!(*sql_len, None);
        }
        _ => unreachable!(),
    }
    // The raw line carries the exotic characters as UTF-8 (no lossy replacement).
    let raw = std::fs::read_to_string(env.audit_path()).unwrap();
    assert!(raw.contains("\u{202e}rtl") && !raw.contains('\u{FFFD}'));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_redacted_by_target_and_role_rules() {
    let env = Env::start_with("content_redact", REDACT, "").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    let card = "4111111111111111";
    let secret = "Secret-token-123";
    let row = client
        .query_one(
            "select $1::text || $2::text || $3::text",
            &[&card, &secret, &"plain value"],
        )
        .await
        .unwrap();
    let echoed: String = row.get(0);
    assert!(
        echoed.contains(card),
        "the query itself sees the real values"
    );
    drop(client);
    let _ = conn.await;

    let (_, events) = session_events(&env).await;
    let EventBody::Query { params, .. } = query_where(&events, |s| s.contains("$3::text")) else {
        unreachable!()
    };
    assert_eq!(params.len(), 3);
    assert!(
        params[0].redacted && params[0].value.is_none(),
        "card: {params:?}"
    );
    assert!(
        params[1].redacted && params[1].value.is_none(),
        "secret: {params:?}"
    );
    assert!(!params[2].redacted);
    // tokio-postgres sends text in binary format: its bytes, as base64.
    assert_eq!(
        params[2].wire_bytes().unwrap().as_deref(),
        Some(&b"plain value"[..])
    );
    let raw = std::fs::read_to_string(env.audit_path()).unwrap();
    assert!(!raw.contains(card) && !raw.to_lowercase().contains("secret-token"));
    assert!(raw.contains("\"redacted\":true"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_changes_and_result_bytes_are_recorded() {
    let env = Env::start("content_outcome").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    client.batch_execute("SET ROLE NONE").await.unwrap();
    client
        .batch_execute("/* app */ set search_path to public")
        .await
        .unwrap();
    client
        .query("select set_config('search_path', $1, false)", &[&"public"])
        .await
        .unwrap();
    // 10 DataRows of one 1000-byte text column: 2 (column count) + 4 (length) + 1000 each.
    client
        .simple_query("select repeat('x', 1000) from generate_series(1, 10)")
        .await
        .unwrap();
    client
        .batch_execute("create table c(t text); insert into c values ('abc'), ('de')")
        .await
        .unwrap();
    let copy = client.copy_out("copy c to stdout").await.unwrap();
    futures_util::pin_mut!(copy);
    let mut copied = 0;
    while let Some(chunk) = futures_util::StreamExt::next(&mut copy).await {
        copied += chunk.unwrap().len();
    }
    assert_eq!(copied, 7); // "abc\n" + "de\n"
    let _ = client.simple_query("select * from missing_table").await;
    drop(client);
    let _ = conn.await;

    let (_, events) = session_events(&env).await;
    let flag = |pred: &dyn Fn(&str) -> bool| match query_where(&events, pred) {
        EventBody::Query { setting_change, .. } => *setting_change,
        _ => unreachable!(),
    };
    assert_eq!(flag(&|s| s == "SET ROLE NONE"), Some(SettingChange::Role));
    assert_eq!(
        flag(&|s| s.contains("set search_path")),
        Some(SettingChange::SearchPath)
    );
    assert_eq!(
        flag(&|s| s.contains("set_config")),
        Some(SettingChange::SearchPath)
    );
    assert_eq!(flag(&|s| s.contains("repeat")), None);

    let bytes = |id: u64| match result_of(&events, id) {
        EventBody::QueryResult { bytes, .. } => *bytes,
        _ => unreachable!(),
    };
    let repeat = id_of(query_where(&events, |s| s.contains("repeat")));
    assert_eq!(bytes(repeat), 10 * 1006);
    let copy_id = id_of(query_where(&events, |s| s == "copy c to stdout"));
    assert_eq!(bytes(copy_id), 7);
    assert!(events.iter().any(|e| matches!(
        e.body,
        EventBody::Copy { query_id, bytes: 7, .. } if query_id == copy_id
    )));
    let set_role = id_of(query_where(&events, |s| s == "SET ROLE NONE"));
    assert_eq!(bytes(set_role), 0);
    env.stop().await;
}

fn jitgate(env: &Env, args: &[&str]) -> Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["--config"])
        .arg(&env.config_path)
        .args(args)
        .output()
        .expect("run jitgate");
    assert!(
        out.status.success(),
        "jitgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_answers_questions_about_a_real_session() {
    let env = Env::start_with("content_cli", REDACT, "").await;
    let grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    client
        .batch_execute("create table accounts(id int, note text)")
        .await
        .unwrap();
    client
        .execute(
            "insert into accounts values ($1, $2)",
            &[&1i32, &"needs, \"quotes\"\nand lines"],
        )
        .await
        .unwrap();
    client
        .execute("insert into accounts values (2, $1)", &[&"secret stuff"])
        .await
        .unwrap();
    let _ = client.simple_query("select * from no_such_table").await;
    client.simple_query("SET ROLE NONE").await.unwrap();
    drop(client);
    let _ = conn.await;
    let (session, events) = session_events(&env).await;
    let sid = session.to_string();

    // sessions --json: one row with the counts.
    let rows: serde_json::Value =
        serde_json::from_str(&stdout(&jitgate(&env, &["audit", "sessions", "--json"]))).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["session_id"], sid.as_str());
    assert_eq!(rows[0]["identity"], ALICE);
    assert_eq!(rows[0]["queries"], 5);
    assert_eq!(rows[0]["errors"], 1);
    assert_eq!(rows[0]["end_reason"], "client_quit");
    assert_eq!(rows[0]["grant_id"], grant.id.to_string().as_str());
    assert_eq!(rows[0]["role"], harness::ROLE);
    let table = stdout(&jitgate(&env, &["audit", "sessions", "--identity", ALICE]));
    assert!(
        table.starts_with("SESSION") && table.contains(&sid),
        "{table}"
    );
    let none = stdout(&jitgate(
        &env,
        &["audit", "sessions", "--identity", "bob", "--json"],
    ));
    assert_eq!(none.trim(), "[]");

    // search: the failed query with its error; by text; the role change.
    let errors = stdout(&jitgate(&env, &["audit", "search", "--errors", "--json"]));
    let lines: Vec<serde_json::Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{errors}");
    assert_eq!(lines[0]["query"]["sql"], "select * from no_such_table");
    assert_eq!(lines[0]["result"]["sqlstate"], "42P01");
    let text = stdout(&jitgate(
        &env,
        &["audit", "search", "--text", "(?i)INSERT INTO accounts"],
    ));
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("INSERT rows=1") && text.contains(&sid),
        "{text}"
    );
    let role = stdout(&jitgate(&env, &["audit", "search", "--text", "^SET ROLE"]));
    assert!(role.contains("[changes role]"), "{role}");

    // export csv: every event of the session, a header, quoted cells, redaction kept.
    let csv = stdout(&jitgate(
        &env,
        &["audit", "export", "--format", "csv", "--session", &sid],
    ));
    assert!(csv.starts_with("seq,ts,kind,session_id,"), "{csv}");
    assert!(
        !csv.contains("secret stuff"),
        "redacted values stay redacted: {csv}"
    );
    assert!(csv.contains("\"\"redacted\"\":true"), "{csv}");
    let records = csv.matches("\r\n").count();
    assert_eq!(records, events.len() + 1, "{csv}");
    // export jsonl: the log's own lines for the session.
    let jsonl = stdout(&jitgate(&env, &["audit", "export", "--session", &sid]));
    let exported: Vec<Event> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, events);

    // replay --format json: the same events, in order.
    let replay = stdout(&jitgate(
        &env,
        &["audit", "replay", "--session", &sid, "--format", "json"],
    ));
    let replayed: Vec<Event> = replay
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed, events);
    let transcript = stdout(&jitgate(&env, &["audit", "replay", "--session", &sid]));
    assert!(
        transcript.contains("<redacted>") && transcript.contains("changes the session's role"),
        "{transcript}"
    );
    env.stop().await;
}
