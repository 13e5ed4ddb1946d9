//! The audit log holds every query, written before the query ran: a pgbench run is
//! counted query by query, with parameters for extended ones, each `query` before its
//! `query_result`, and a session can be replayed from the log. Outcomes reach the log
//! soon after the reply even when the client says nothing more, and `session_end` comes
//! after all of them.

mod common;
mod harness;

use std::collections::HashMap;
use std::time::Duration;

use harness::{Env, ALICE};
use jitgate_audit::{Event, EventBody, Protocol};

/// Waits until `sessions` sessions ended after the first `before` events of the log: a
/// session's `session_end` follows every outcome of its statements.
async fn wait_sessions_ended(env: &Env, before: usize, sessions: usize) {
    env.eventually("the sessions' session_end", Duration::from_secs(10), || {
        let events = env.audit_events();
        let ends = events
            .get(before..)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.kind() == "session_end")
            .count();
        ends >= sessions
    })
    .await;
}

/// Waits until every session that started has ended (its outcomes are all in the log).
async fn wait_all_ended(env: &Env) {
    env.eventually("every session_end", Duration::from_secs(10), || {
        let events = env.audit_events();
        let count = |kind: &str| events.iter().filter(|e| e.kind() == kind).count();
        count("session_start") == count("session_end")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_of_a_pgbench_run_is_audited_in_order() {
    let env = Env::start("bench").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let init = env.run_client("pgbench", &["-i", "-s", "1", "-q"]).await;
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // pgbench -i's own outcomes may still be on their way: start counting after them.
    wait_all_ended(&env).await;
    let before = env.audit_events().len();
    let transactions = 50;
    let clients = 4;
    let run = env
        .run_client(
            "pgbench",
            &[
                "-n",
                "-S",
                "-M",
                "extended",
                "-c",
                &clients.to_string(),
                "-t",
                &transactions.to_string(),
            ],
        )
        .await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    wait_sessions_ended(&env, before, clients).await;
    let events = env.audit_events();
    let new = &events[before..];
    let queries: Vec<_> = new
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Query {
                sql,
                params,
                protocol,
                ..
            } if sql.starts_with("SELECT abalance FROM pgbench_accounts WHERE aid = $1") => {
                Some((params.clone(), *protocol))
            }
            _ => None,
        })
        .collect();
    // -S runs one SELECT per transaction.
    assert_eq!(queries.len(), transactions * clients);
    for (params, protocol) in &queries {
        assert_eq!(*protocol, Protocol::Extended);
        assert_eq!(params.len(), 1);
        let aid: i64 = params[0].value.as_deref().unwrap().parse().unwrap();
        assert!((1..=100_000).contains(&aid));
    }
    // Each query precedes its result, per session; every query got a result.
    let mut open: HashMap<(uuid::Uuid, u64), u64> = HashMap::new();
    let mut results = 0;
    for e in new {
        let session = e.session_id.unwrap_or_default();
        match &e.body {
            EventBody::Query { query_id, .. } => {
                open.insert((session, *query_id), e.seq);
            }
            EventBody::QueryResult {
                query_id, sqlstate, ..
            } => {
                let q = open
                    .remove(&(session, *query_id))
                    .expect("result after its query");
                assert!(q < e.seq);
                assert_eq!(sqlstate, &None);
                results += 1;
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "queries without result: {open:?}");
    assert!(results >= transactions * clients);
    // seq is strictly increasing over the whole log.
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_replays_as_a_transcript() {
    let env = Env::start("replay").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    client.batch_execute("CREATE TABLE r(x int)").await.unwrap();
    client
        .execute("INSERT INTO r VALUES ($1)", &[&41i32])
        .await
        .unwrap();
    let _ = client.batch_execute("SELECT * FROM missing_table").await;
    drop(client);
    let _ = conn.await;
    env.eventually("session_end written", Duration::from_secs(5), || {
        env.audit_events().iter().any(|e| e.kind() == "session_end")
    })
    .await;
    let events = env.audit_events();
    let session = events
        .iter()
        .find(|e| e.kind() == "session_start")
        .and_then(|e| e.session_id)
        .unwrap();
    let text = jitgate_audit::replay::transcript(events, session).expect("session found");
    let create = text.find("CREATE TABLE r").expect("create in transcript");
    let insert = text.find("INSERT INTO r").expect("insert in transcript");
    let missing = text
        .find("missing_table")
        .expect("failing query in transcript");
    assert!(create < insert && insert < missing, "{text}");
    // tokio-postgres sends int4 in binary: 41 = 0x00000029, base64 AAAAKQ==.
    assert!(text.contains("AAAAKQ=="), "parameter shown: {text}");
    assert!(text.contains("42P01"), "error shown: {text}");
    assert!(
        text.contains("client_quit") || text.contains("client quit"),
        "{text}"
    );

    // The CLI prints the same transcript.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args([
            "audit",
            "replay",
            "--session",
            &session.to_string(),
            "--config",
        ])
        .arg(&env.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("INSERT INTO r"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_are_audited() {
    // psql's \lo_import uses libpq's fastpath FunctionCall messages (lo_open, lowrite…).
    let env = Env::start("fastpath").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let file = env.dir.path().join("blob.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    let import = format!("\\lo_import {}", file.display());
    let before = env.audit_events().len();
    let out = env
        .run_client("psql", &["-X", "-v", "ON_ERROR_STOP=1", "-c", &import])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_sessions_ended(&env, before, 1).await;
    let calls: Vec<_> = env
        .audit_events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Query {
                protocol: Protocol::FunctionCall,
                function_oid,
                params,
                ..
            } => Some((function_oid, params.len())),
            _ => None,
        })
        .collect();
    assert!(
        calls.len() >= 3,
        "lo_creat/lo_open/lowrite/lo_close: {calls:?}"
    );
    assert!(calls.iter().all(|(oid, _)| oid.is_some()));
    // Every function call has its result.
    let results = env
        .audit_events()
        .into_iter()
        .filter(|e| e.kind() == "query_result")
        .count();
    assert!(results >= calls.len());
    env.stop().await;
}

/// The kinds and query ids of one session's events, in `seq` order.
fn session_trail(events: &[Event], session: uuid::Uuid) -> Vec<(&'static str, Option<u64>)> {
    let mut mine: Vec<&Event> = events
        .iter()
        .filter(|e| e.session_id == Some(session))
        .collect();
    mine.sort_by_key(|e| e.seq);
    mine.iter()
        .map(|e| {
            let id = match &e.body {
                EventBody::Query { query_id, .. } | EventBody::QueryResult { query_id, .. } => {
                    Some(*query_id)
                }
                _ => None,
            };
            (e.kind(), id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_reach_the_log_without_further_traffic_and_before_session_end() {
    let env = Env::start("outcomes").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    // The client now stays idle: the outcome is written anyway, soon.
    env.eventually(
        "the idle client's query_result",
        Duration::from_secs(5),
        || {
            env.audit_events()
                .iter()
                .any(|e| e.kind() == "query_result")
        },
    )
    .await;

    for i in 2..=5 {
        client.batch_execute(&format!("SELECT {i}")).await.unwrap();
    }
    let _ = client.batch_execute("SELECT * FROM missing_table").await;
    drop(client);
    let _ = conn.await;
    wait_sessions_ended(&env, 0, 1).await;

    let events = env.audit_events();
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let session = events
        .iter()
        .find(|e| e.kind() == "session_start")
        .and_then(|e| e.session_id)
        .expect("session_start");
    // Each query is followed by its own result before the next query; session_end last.
    let mut expected = vec![("session_start", None)];
    for id in 1..=6 {
        expected.push(("query", Some(id)));
        expected.push(("query_result", Some(id)));
    }
    expected.push(("session_end", None));
    assert_eq!(session_trail(&events, session), expected);
    env.stop().await;
}
