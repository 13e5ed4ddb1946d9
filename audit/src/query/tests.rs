//! Scans over a small log set written by hand: two sessions interleaved across a closed
//! file, a compressed closed file and the live file (with an unterminated tail).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use uuid::Uuid;

use super::*;
use crate::event::{EndReason, EventBody, Protocol, SettingChange};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

struct Log {
    _dir: tempfile::TempDir,
    live: PathBuf,
    a: Uuid,
    b: Uuid,
    grant_a: Uuid,
    events: Vec<Event>,
}

fn query(id: u64, sql: &str) -> EventBody {
    EventBody::Query {
        query_id: id,
        protocol: Protocol::Simple,
        sql: sql.into(),
        truncated: false,
        sql_len: None,
        sql_sha256: None,
        setting_change: crate::setting::setting_change(sql.as_bytes()),
        statement: None,
        portal: None,
        params: vec![],
        function_oid: None,
        params_from: None,
    }
}

fn result(id: u64, tag: Option<&str>, sqlstate: Option<&str>, bytes: u64) -> EventBody {
    EventBody::QueryResult {
        query_id: id,
        tag: tag.map(Into::into),
        rows: tag.map(|_| 1),
        sqlstate: sqlstate.map(Into::into),
        message: sqlstate.map(|_| "relation \"missing\" does not exist".into()),
        duration_us: 10,
        bytes,
        skipped: false,
    }
}

fn start() -> EventBody {
    EventBody::SessionStart {
        client_addr: "127.0.0.1:5555".into(),
        tls: false,
        application_name: None,
        deadline: ts("2026-01-01T12:00:00Z"),
        upstream_pid: None,
        upstream_reused: false,
    }
}

fn write_lines(path: &Path, lines: &[String], compress: bool, terminated: bool) {
    let mut text = lines.join("\n");
    if terminated {
        text.push('\n');
    }
    if compress {
        let packed = zstd::encode_all(text.as_bytes(), 3).unwrap();
        std::fs::write(path, packed).unwrap();
    } else {
        std::fs::write(path, text).unwrap();
    }
}

fn log() -> Log {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("audit.jsonl");
    let (a, b, grant_a) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let events = events(a, b, grant_a, Uuid::now_v7());
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let naming = crate::fileset::Naming::new(&live);
    write_lines(&naming.closed(1, false), &lines[..4], false, true);
    write_lines(&naming.closed(5, true), &lines[4..8], true, true);
    // The live file: the rest, and a torn line jitgate is still writing.
    let mut rest = lines[8..].to_vec();
    rest.push("{\"v\":1,\"seq\":99,\"ts\":\"2026-01-0".into());
    write_lines(&live, &rest, false, false);
    Log {
        _dir: dir,
        live,
        a,
        b,
        grant_a,
        events,
    }
}

/// A grant issued to alice, then alice's session `a` and bob's session `b` interleaved.
fn events(a: Uuid, b: Uuid, grant_a: Uuid, grant_b: Uuid) -> Vec<Event> {
    let at = |body: EventBody, t: &str| Event::new(body).with_ts(ts(t));
    let ctx = |e: Event, s: Uuid, who: &str, g: Uuid| {
        e.with_session(s)
            .with_identity(who)
            .with_target(if who == "alice" { "t1" } else { "t2" })
            .with_role("rw")
            .with_grant(g)
    };
    let alice = |body: EventBody, t: &str| ctx(at(body, t), a, "alice", grant_a);
    let bob = |body: EventBody, t: &str| ctx(at(body, t), b, "bob", grant_b);
    let end = EventBody::SessionEnd {
        reason: EndReason::ClientQuit,
        detail: None,
        late_ms: None,
        queries: 2,
        duration_ms: 8000,
        upstream_parked: false,
        stopped: None,
    };
    let issued = EventBody::GrantIssued {
        not_before: ts("2026-01-01T09:00:00Z"),
        expires_at: ts("2026-01-01T12:00:00Z"),
        reason: "INC-42 payments down".into(),
        issued_by: "admin".into(),
    };
    vec![
        at(issued, "2026-01-01T09:00:00Z")
            .with_identity("alice")
            .with_target("t1")
            .with_grant(grant_a),
        alice(start(), "2026-01-01T10:00:00Z"),
        bob(start(), "2026-01-01T10:00:01Z"),
        alice(query(1, "select 1"), "2026-01-01T10:00:02Z"),
        bob(query(1, "SET ROLE admin"), "2026-01-01T10:00:03Z"),
        alice(
            result(1, Some("SELECT 1"), None, 11),
            "2026-01-01T10:00:04Z",
        ),
        alice(
            query(2, "select \"x\"\nfrom missing"),
            "2026-01-01T10:00:05Z",
        ),
        bob(result(1, Some("SET"), None, 0), "2026-01-01T10:00:06Z"),
        alice(result(2, None, Some("42P01"), 0), "2026-01-01T10:00:07Z"),
        alice(end, "2026-01-01T10:00:08Z"),
        bob(query(2, "select 2"), "2026-01-01T10:00:09Z"),
    ]
}

fn found(log: &Log, filter: &Filter) -> Vec<Found> {
    let mut out = Vec::new();
    let stats = search(&log.live, filter, |f| {
        out.push(f);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(stats.bad_lines, 0, "{:?}", stats.problems);
    assert_eq!(stats.files, 3);
    out
}

fn sql_of(f: &Found) -> &str {
    match &f.query.body {
        EventBody::Query { sql, .. } => sql,
        _ => panic!("not a query"),
    }
}

#[test]
fn search_pairs_queries_with_their_results_across_files() {
    let log = log();
    let all = found(&log, &Filter::default());
    let sqls: Vec<&str> = all.iter().map(sql_of).collect();
    assert_eq!(
        sqls,
        [
            "select 1",
            "SET ROLE admin",
            "select \"x\"\nfrom missing",
            "select 2"
        ]
    );
    assert_eq!(
        all[0].result.as_ref().unwrap().ts,
        ts("2026-01-01T10:00:04Z")
    );
    assert!(all[2].is_error());
    // bob's second query has no result in the log (still running).
    assert_eq!(all[3].result, None);
    let summary = all[1].summary();
    assert!(
        summary.contains("bob@t2") && summary.contains("[changes role]"),
        "{summary}"
    );
}

#[test]
fn search_filters() {
    let log = log();
    let errors = found(
        &log,
        &Filter {
            errors: true,
            ..Filter::default()
        },
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].summary().contains("ERROR 42P01"));
    // The regex sees the decoded SQL: quotes and the newline, not their JSON escapes.
    let text = found(
        &log,
        &Filter {
            text: Some(r#"(?i)"X"\nFROM"#.into()),
            ..Filter::default()
        },
    );
    assert_eq!(text.len(), 1);
    assert_eq!(sql_of(&text[0]), "select \"x\"\nfrom missing");
    let bob = found(
        &log,
        &Filter {
            identity: Some("bob".into()),
            ..Filter::default()
        },
    );
    assert_eq!(bob.len(), 2);
    let window = found(
        &log,
        &Filter {
            since: Some(ts("2026-01-01T10:00:03Z")),
            until: Some(ts("2026-01-01T10:00:09Z")),
            ..Filter::default()
        },
    );
    assert_eq!(
        window.iter().map(sql_of).collect::<Vec<_>>(),
        ["SET ROLE admin", "select \"x\"\nfrom missing"]
    );
    assert!(found(
        &log,
        &Filter {
            session: Some(log.a),
            identity: Some("bob".into()),
            ..Filter::default()
        }
    )
    .is_empty());
    let bad = search(
        &log.live,
        &Filter {
            text: Some("(".into()),
            ..Filter::default()
        },
        |_| ControlFlow::Continue(()),
    );
    assert!(matches!(bad, Err(AuditError::InvalidPattern { .. })));
}

#[test]
fn sessions_summarise_each_session() {
    let log = log();
    let (rows, stats) = sessions(&log.live, &Filter::default()).unwrap();
    assert_eq!(stats.bad_lines, 0);
    assert_eq!(rows.len(), 2);
    let a = &rows[0];
    assert_eq!(a.session_id, log.a);
    assert_eq!(a.identity.as_deref(), Some("alice"));
    assert_eq!(a.grant_id, Some(log.grant_a));
    assert_eq!(a.grant_reason.as_deref(), Some("INC-42 payments down"));
    assert_eq!(a.client_addr.as_deref(), Some("127.0.0.1:5555"));
    assert_eq!((a.queries, a.errors), (2, 1));
    assert_eq!(a.end_reason, Some(EndReason::ClientQuit));
    let b = &rows[1];
    assert_eq!(b.session_id, log.b);
    assert_eq!((b.queries, b.errors, b.end), (2, 0, None));

    let only = |f: Filter| {
        sessions(&log.live, &f)
            .unwrap()
            .0
            .iter()
            .map(|r| r.session_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        only(Filter {
            identity: Some("bob".into()),
            ..Filter::default()
        }),
        [log.b]
    );
    assert_eq!(
        only(Filter {
            errors: true,
            ..Filter::default()
        }),
        [log.a]
    );
    // After alice's session ended only bob's (still open) overlaps the window.
    assert_eq!(
        only(Filter {
            since: Some(ts("2026-01-01T11:00:00Z")),
            ..Filter::default()
        }),
        [log.b]
    );
    assert!(only(Filter {
        until: Some(ts("2026-01-01T09:59:00Z")),
        ..Filter::default()
    })
    .is_empty());
}

#[test]
fn session_events_and_jsonl_export_are_the_log_lines() {
    let log = log();
    let (events, _) = session_events(&log.live, log.a).unwrap();
    let expected: Vec<Event> = log
        .events
        .iter()
        .filter(|e| e.session_id == Some(log.a))
        .cloned()
        .collect();
    assert_eq!(events, expected);

    let mut out = Vec::new();
    let filter = Filter {
        identity: Some("alice".into()),
        ..Filter::default()
    };
    export(&log.live, &filter, ExportFormat::Jsonl, &mut out).unwrap();
    let expected: String = log
        .events
        .iter()
        .filter(|e| e.identity.as_deref() == Some("alice"))
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    assert_eq!(String::from_utf8(out).unwrap(), expected);

    // With --errors: the failed query and its result only.
    let mut out = Vec::new();
    let filter = Filter {
        errors: true,
        ..Filter::default()
    };
    export(&log.live, &filter, ExportFormat::Csv, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.split("\r\n").filter(|r| !r.is_empty()).collect();
    assert_eq!(rows[0], CSV_COLUMNS.join(","));
    // The query's SQL holds a newline inside a quoted cell, so split on the record end.
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[1].contains(",query,") && rows[1].contains("\"select \"\"x\"\"\nfrom missing\""));
    assert!(rows[2].contains(",query_result,") && rows[2].contains("42P01"));
}

#[test]
fn hand_formatted_and_damaged_lines() {
    let log = log();
    // Append a pretty-printed (non-compact) event and a garbage line to the live file.
    let mut pretty = Event::new(query(3, "select 'pretty'"))
        .with_ts(ts("2026-01-01T10:00:10Z"))
        .with_session(log.b)
        .with_identity("bob");
    pretty.seq = 50;
    let mut text = std::fs::read_to_string(&log.live).unwrap();
    text.truncate(text.rfind('\n').unwrap() + 1); // drop the torn tail
    text.push_str(
        &serde_json::to_string_pretty(&pretty)
            .unwrap()
            .replace('\n', " "),
    );
    text.push_str("\nnot json at all\n");
    std::fs::write(&log.live, text).unwrap();
    let mut sqls = Vec::new();
    let stats = search(
        &log.live,
        &Filter {
            identity: Some("bob".into()),
            ..Filter::default()
        },
        |f| {
            sqls.push(sql_of(&f).to_owned());
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(sqls, ["SET ROLE admin", "select 2", "select 'pretty'"]);
    assert_eq!(stats.bad_lines, 1, "{:?}", stats.problems);
    assert!(
        stats.problems[0].to_string().contains("line"),
        "{}",
        stats.problems[0]
    );
    assert_eq!(
        match &pretty.body {
            EventBody::Query { setting_change, .. } => *setting_change,
            _ => None,
        },
        None::<SettingChange>
    );
}
