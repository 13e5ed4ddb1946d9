//! Shared fixtures: one event of every kind with fixed times and ids.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use jiff::Timestamp;
use jitgate_audit::*;
use uuid::Uuid;

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn session_id() -> Uuid {
    Uuid::parse_str("0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b").unwrap()
}

pub fn grant_id() -> Uuid {
    Uuid::parse_str("0193a2b4-0000-7000-8000-000000000001").unwrap()
}

pub fn ctx(body: EventBody, at: &str) -> Event {
    Event::new(body)
        .with_ts(ts(at))
        .with_session(session_id())
        .with_identity("alice")
        .with_target("prod")
        .with_role("readonly")
        .with_grant(grant_id())
}

/// One event of every kind, in a plausible session order.
pub fn every_kind() -> Vec<Event> {
    vec![
        ctx(
            EventBody::SessionStart {
                client_addr: "10.0.0.5:51234".into(),
                tls: true,
                application_name: Some("psql".into()),
                deadline: ts("2026-11-28T00:38:17Z"),
                upstream_pid: Some(4242),
                upstream_reused: false,
            },
            "2026-11-27T23:38:17.123456Z",
        ),
        ctx(
            EventBody::Query {
                query_id: 1,
                protocol: Protocol::Simple,
                sql: "SELECT 1;".into(),
                statement: None,
                portal: None,
                params: vec![],
                function_oid: None,
                params_from: None,
                truncated: false,
                sql_len: None,
                sql_sha256: None,
                setting_change: None,
            },
            "2026-11-27T23:38:18.000100Z",
        ),
        ctx(
            EventBody::QueryResult {
                query_id: 1,
                tag: Some("SELECT 1".into()),
                rows: Some(1),
                sqlstate: None,
                message: None,
                duration_us: 412,
                bytes: 0,
                skipped: false,
            },
            "2026-11-27T23:38:18.000512Z",
        ),
        ctx(
            EventBody::Query {
                query_id: 2,
                protocol: Protocol::Extended,
                sql: "SELECT * FROM t WHERE id = $1 AND name = $2 AND blob = $3".into(),
                statement: Some("s1".into()),
                portal: Some("".into()),
                params: vec![
                    Param::from_wire(ParamFormat::Text, Some(23), Some(b"42")),
                    Param::from_wire(ParamFormat::Text, Some(25), None),
                    Param::from_wire(ParamFormat::Binary, Some(17), Some(&[0, 1, 2, 255])),
                ],
                function_oid: None,
                params_from: None,
                truncated: false,
                sql_len: None,
                sql_sha256: None,
                setting_change: None,
            },
            "2026-11-27T23:38:19Z",
        ),
        ctx(
            EventBody::QueryResult {
                query_id: 2,
                tag: None,
                rows: None,
                sqlstate: Some("42P01".into()),
                message: Some("relation \"t\" does not exist".into()),
                duration_us: 300,
                bytes: 0,
                skipped: false,
            },
            "2026-11-27T23:38:19.000300Z",
        ),
        ctx(
            EventBody::Query {
                query_id: 3,
                protocol: Protocol::Simple,
                sql: "COPY items FROM STDIN".into(),
                statement: None,
                portal: None,
                params: vec![],
                function_oid: None,
                params_from: None,
                truncated: false,
                sql_len: None,
                sql_sha256: None,
                setting_change: None,
            },
            "2026-11-27T23:38:20Z",
        ),
        ctx(
            EventBody::Copy {
                query_id: 3,
                direction: CopyDirection::In,
                bytes: 1234,
                rows: Some(10),
            },
            "2026-11-27T23:38:20.5Z",
        ),
        ctx(
            EventBody::QueryResult {
                query_id: 3,
                tag: Some("COPY 10".into()),
                rows: Some(10),
                sqlstate: None,
                message: None,
                duration_us: 500_001,
                bytes: 0,
                skipped: false,
            },
            "2026-11-27T23:38:20.500001Z",
        ),
        ctx(
            EventBody::Query {
                query_id: 4,
                protocol: Protocol::FunctionCall,
                sql: "function 1598 (2 args)".into(),
                statement: None,
                portal: None,
                params: vec![Param::from_wire(
                    ParamFormat::Binary,
                    None,
                    Some(b"\x00\x00\x00\x01"),
                )],
                function_oid: Some(1598),
                params_from: None,
                truncated: false,
                sql_len: None,
                sql_sha256: None,
                setting_change: None,
            },
            "2026-11-27T23:38:21Z",
        ),
        ctx(
            EventBody::SessionEnd {
                reason: EndReason::GrantExpired,
                detail: Some("grant expired at 00:38:17".into()),
                late_ms: Some(12.5),
                queries: 4,
                duration_ms: 3_600_000,
                upstream_parked: false,
                stopped: Some(Stopped {
                    work: StoppedWork::Statements,
                    how: StopMethod::Terminate,
                    backend_gone: true,
                    ms: 6.25,
                    detail: None,
                }),
            },
            "2026-11-28T00:38:17.012500Z",
        ),
        Event::new(EventBody::AuthFailure {
            client_addr: "10.0.0.9:1111".into(),
            reason: "wrong password".into(),
        })
        .with_identity("mallory")
        .with_ts(ts("2026-11-27T23:00:00Z")),
        Event::new(EventBody::AccessDenied {
            client_addr: "10.0.0.9:1112".into(),
            reason: "no active grant for target prod".into(),
        })
        .with_identity("bob")
        .with_target("prod")
        .with_ts(ts("2026-11-27T23:00:01Z")),
        Event::new(EventBody::GrantIssued {
            not_before: ts("2026-11-27T23:30:00Z"),
            expires_at: ts("2026-11-28T00:38:17Z"),
            reason: "INC-1234".into(),
            issued_by: "carol".into(),
        })
        .with_grant(grant_id())
        .with_identity("alice")
        .with_ts(ts("2026-11-27T23:29:59.999999Z")),
        Event::new(EventBody::GrantRevoked {
            revoked_by: "carol".into(),
            reason: None,
            from: Some("approved".into()),
            rule: None,
        })
        .with_grant(grant_id())
        .with_ts(ts("2026-11-28T00:00:00Z")),
    ]
}
