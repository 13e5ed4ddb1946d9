//! Transcripts and one-line summaries.
#![allow(clippy::unwrap_used)]

mod common;

use jitgate_audit::*;

#[test]
fn transcript_shows_the_whole_session_in_order() {
    let mut events = common::every_kind();
    // Events of other sessions in between are ignored.
    let mut other = events[1].clone();
    other.session_id = Some(uuid::Uuid::now_v7());
    if let EventBody::Query { sql, .. } = &mut other.body {
        *sql = "SELECT 'other session'".into();
    }
    events.insert(2, other);
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
    }
    let text = transcript(events, common::session_id()).unwrap();
    let expected = r#"-- jitgate session 0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b
-- identity: alice
-- target:   prod
-- role:     readonly
-- grant:    0193a2b4-0000-7000-8000-000000000001
-- client:   10.0.0.5:51234 (TLS, application "psql")
-- started:  2026-11-27T23:38:17.123456Z (upstream pid 4242)
-- deadline: 2026-11-28T00:38:17.000000Z

2026-11-27T23:38:18.000100Z  query #1 (simple)
    SELECT 1;
2026-11-27T23:38:18.000512Z  result #1: SELECT 1 (1 row) in 0.412 ms

2026-11-27T23:38:19.000000Z  query #2 (extended, statement "s1", portal "")
    SELECT * FROM t WHERE id = $1 AND name = $2 AND blob = $3
    $1 = '42' (text, oid 23)
    $2 = NULL (text, oid 25)
    $3 = 'AAEC/w==' (binary base64, oid 17)
2026-11-27T23:38:19.000300Z  result #2: ERROR 42P01: relation "t" does not exist in 0.300 ms

2026-11-27T23:38:20.000000Z  query #3 (simple)
    COPY items FROM STDIN
2026-11-27T23:38:20.500000Z  copy #3 in: 1234 bytes, 10 rows
2026-11-27T23:38:20.500001Z  result #3: COPY 10 (10 rows) in 500.001 ms

2026-11-27T23:38:21.000000Z  query #4 (function_call, function oid 1598)
    function 1598 (2 args)
    $1 = 'AAAAAQ==' (binary base64)

2026-11-28T00:38:17.012500Z  session ended: grant_expired (12.500 ms after the deadline/revocation) — grant expired at 00:38:17
-- 4 queries in 3600.000 s
-- stopped: statements still running or queued upstream; backend terminated (pg_terminate_backend); backend gone after 6.250 ms
"#;
    assert_eq!(text, expected);
    assert!(!text.contains("other session"));
}

#[test]
fn transcript_of_unknown_session_is_none_and_incomplete_sessions_say_so() {
    assert_eq!(transcript(common::every_kind(), uuid::Uuid::now_v7()), None);
    let events: Vec<Event> = common::every_kind().into_iter().skip(1).take(2).collect();
    let text = transcript(events, common::session_id()).unwrap();
    assert!(
        text.contains("-- (no session_start event in this log)"),
        "{text}"
    );
    assert!(text.contains("no session_end event"), "{text}");
    assert!(text.contains("-- identity: alice"), "{text}");
}

#[test]
fn transcript_multiline_sql_and_hostile_text() {
    let body = EventBody::Query {
        query_id: 7,
        protocol: Protocol::Extended,
        sql: "SELECT 1\nFROM x -- \u{1b}[2J".into(),
        statement: None,
        portal: None,
        params: vec![Param::from_wire(
            ParamFormat::Text,
            Some(25),
            Some(b"o'k\xff"),
        )],
        function_oid: None,
        params_from: None,
        truncated: false,
        sql_len: None,
        sql_sha256: None,
        setting_change: None,
    };
    let text = transcript(
        [common::ctx(body, "2026-11-27T23:38:18Z")],
        common::session_id(),
    )
    .unwrap();
    assert!(
        text.contains("    SELECT 1\n    FROM x -- \\u{1b}[2J\n"),
        "{text}"
    );
    assert!(
        text.contains("    $1 = E'o''k\\xff' (text, not valid UTF-8, oid 25)\n"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'));
}

#[test]
fn one_line_summaries() {
    let mut events = common::every_kind();
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
    }
    let lines: Vec<String> = events.iter().map(format_event_line).collect();
    for l in &lines {
        assert!(!l.contains('\n'));
    }
    let ctx = "[session=0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b identity=alice target=prod role=readonly grant=0193a2b4-0000-7000-8000-000000000001]";
    assert_eq!(
        lines[0],
        format!("2026-11-27T23:38:17.123456Z #1 session_start {ctx} from 10.0.0.5:51234 tls deadline=2026-11-28T00:38:17.000000Z application=psql upstream_pid=4242")
    );
    assert_eq!(
        lines[3],
        format!("2026-11-27T23:38:19.000000Z #4 query {ctx} q2 extended: SELECT * FROM t WHERE id = $1 AND name = $2 AND blob = $3 (3 params)")
    );
    assert_eq!(
        lines[4],
        format!("2026-11-27T23:38:19.000300Z #5 query_result {ctx} q2 ERROR 42P01: relation \"t\" does not exist 0.300 ms")
    );
    assert_eq!(
        lines[6],
        format!("2026-11-27T23:38:20.500000Z #7 copy {ctx} q3 in 1234 bytes rows=10")
    );
    assert_eq!(
        lines[9],
        format!("2026-11-28T00:38:17.012500Z #10 session_end {ctx} grant_expired queries=4 duration=3600.000 s late=12.500 ms stopped=statements how=terminate backend=gone stop=6.250 ms: grant expired at 00:38:17")
    );
    assert_eq!(
        lines[10],
        "2026-11-27T23:00:00.000000Z #11 auth_failure [identity=mallory] from 10.0.0.9:1111: wrong password"
    );
    assert_eq!(
        lines[13],
        "2026-11-28T00:00:00.000000Z #14 grant_revoked [grant=0193a2b4-0000-7000-8000-000000000001] by carol"
    );

    let mut long = events[1].clone();
    if let EventBody::Query { sql, .. } = &mut long.body {
        *sql = format!("SELECT\n\n{}", "x".repeat(500));
    }
    let line = format_event_line(&long);
    assert!(line.ends_with('…'), "{line}");
    let excerpt = line.split_once("simple: ").unwrap().1;
    assert!(excerpt.starts_with("SELECT xxx"), "{line}");
    assert_eq!(excerpt.chars().count(), 201, "{line}");
}

#[test]
fn a_portal_run_in_steps_shows_its_parameters_under_every_step() {
    let query = |query_id, params, params_from| EventBody::Query {
        query_id,
        protocol: Protocol::Extended,
        sql: "SELECT * FROM big WHERE k = $1".into(),
        statement: Some(String::new()),
        portal: Some("c".into()),
        params,
        function_oid: None,
        params_from,
        truncated: false,
        sql_len: None,
        sql_sha256: None,
        setting_change: None,
    };
    let value = vec![b'z'; 100];
    let long = Param::from_wire_capped(ParamFormat::Text, Some(25), Some(&value), 8);
    let events = vec![
        common::ctx(query(7, vec![long], None), "2026-11-27T23:38:18Z"),
        common::ctx(query(8, vec![], Some(7)), "2026-11-27T23:38:19Z"),
        common::ctx(query(9, vec![], Some(3)), "2026-11-27T23:38:20Z"),
    ];
    let text = transcript(events.clone(), common::session_id()).unwrap();
    let value_line = "    $1 = 'zzzzzzzz' (text, head only, oid 25)\n";
    let hash_line = format!(
        "    -- [$1 truncated: 100 bytes in all, sha256 {}]\n",
        sha256_hex(&value)
    );
    assert_eq!(text.matches(value_line).count(), 2, "{text}");
    assert_eq!(text.matches(&hash_line).count(), 2, "{text}");
    assert!(
        text.contains("query #8 (extended, statement \"\", portal \"c\")\n    SELECT * FROM big WHERE k = $1\n    -- [same portal: parameters as bound for query #7]\n"),
        "{text}"
    );
    // An event it points at that is not in this log (e.g. a log cut to a time range).
    assert!(
        text.contains(
            "    -- [same portal: parameters recorded with (not in this log) query #3]\n"
        ),
        "{text}"
    );
    assert!(format_event_line(&events[1]).contains("(params of q7)"));
}
