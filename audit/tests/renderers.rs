//! The three ways an event is shown to a person — the `replay` transcript, the one-line
//! summary of `audit tail`, and the `audit search` line — pinned byte for byte for every
//! kind of event and every optional field, against `renderers.golden.txt`.
//!
//! After an intended change of the output, regenerate the file with
//! `JITGATE_BLESS=1 cargo test -p jitgate-audit --test renderers` and review the diff.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{ctx, session_id, ts};
use jitgate_audit::query::Found;
use jitgate_audit::*;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/renderers.golden.txt");

fn start(tls: bool, app: Option<&str>, pid: Option<i32>, reused: bool) -> EventBody {
    EventBody::SessionStart {
        client_addr: "10.0.0.5:51234\u{7}".into(),
        tls,
        application_name: app.map(Into::into),
        deadline: ts("2026-11-28T00:38:17Z"),
        upstream_pid: pid,
        upstream_reused: reused,
    }
}

/// A query with every optional field as given.
struct Q {
    id: u64,
    protocol: Protocol,
    sql: String,
    statement: Option<&'static str>,
    portal: Option<&'static str>,
    params: Vec<Param>,
    function_oid: Option<u32>,
    params_from: Option<u64>,
    truncated: Option<(Option<u64>, Option<&'static str>)>,
    setting_change: Option<SettingChange>,
}

impl Q {
    fn new(id: u64, sql: &str) -> Q {
        Q {
            id,
            protocol: Protocol::Simple,
            sql: sql.into(),
            statement: None,
            portal: None,
            params: Vec::new(),
            function_oid: None,
            params_from: None,
            truncated: None,
            setting_change: None,
        }
    }

    fn body(self) -> EventBody {
        EventBody::Query {
            query_id: self.id,
            protocol: self.protocol,
            sql: self.sql,
            truncated: self.truncated.is_some(),
            sql_len: self.truncated.and_then(|t| t.0),
            sql_sha256: self.truncated.and_then(|t| t.1).map(Into::into),
            setting_change: self.setting_change,
            statement: self.statement.map(Into::into),
            portal: self.portal.map(Into::into),
            params: self.params,
            function_oid: self.function_oid,
            params_from: self.params_from,
        }
    }
}

fn queries() -> Vec<EventBody> {
    let text = |v: &[u8]| Param::from_wire(ParamFormat::Text, Some(25), Some(v));
    let long = "x".repeat(300);
    vec![
        Q::new(1, "SELECT 1").body(),
        Q {
            protocol: Protocol::Extended,
            statement: Some("s\u{1b}1"),
            portal: Some(""),
            params: vec![text(b"it's")],
            ..Q::new(2, "SELECT $1\n  FROM t\t-- \u{1b}[2J")
        }
        .body(),
        Q {
            protocol: Protocol::Extended,
            portal: Some("c"),
            params: vec![
                text(b"a"),
                Param::from_wire(ParamFormat::Text, None, Some(b"\xff\x00'\\")),
                Param::from_wire(ParamFormat::Binary, Some(17), Some(&[0, 1, 255])),
                Param::from_wire(ParamFormat::Text, Some(25), None),
                Param::redacted(ParamFormat::Text, Some(25)),
                Param::redacted(ParamFormat::Binary, None),
                Param::from_wire_capped(ParamFormat::Text, Some(25), Some(&[b'z'; 40]), 8),
                Param::from_wire_capped(ParamFormat::Binary, None, Some(&[7; 40]), 8),
            ],
            truncated: Some((Some(123_456), Some("ab\u{1}cd"))),
            ..Q::new(3, &format!("SELECT {long}"))
        }
        .body(),
        Q {
            protocol: Protocol::Extended,
            portal: Some("c"),
            params_from: Some(3),
            truncated: Some((None, None)),
            ..Q::new(4, "SELECT more")
        }
        .body(),
        Q {
            protocol: Protocol::Extended,
            params_from: Some(99),
            ..Q::new(5, "FETCH")
        }
        .body(),
        Q {
            protocol: Protocol::FunctionCall,
            function_oid: Some(1598),
            params: vec![Param::from_wire(
                ParamFormat::Binary,
                None,
                Some(b"\0\0\0\x01"),
            )],
            ..Q::new(6, "function 1598 (1 args)")
        }
        .body(),
        Q {
            setting_change: Some(SettingChange::Role),
            ..Q::new(7, "SET ROLE admin")
        }
        .body(),
        Q {
            setting_change: Some(SettingChange::SessionAuthorization),
            params: vec![text(b"1"), text(b"2")],
            ..Q::new(8, "SELECT set_config('session_authorization', $1, $2)")
        }
        .body(),
        Q {
            setting_change: Some(SettingChange::SearchPath),
            ..Q::new(9, "SET search_path = x")
        }
        .body(),
        Q {
            setting_change: Some(SettingChange::All),
            ..Q::new(10, "DISCARD ALL")
        }
        .body(),
        Q {
            setting_change: Some(SettingChange::Unknown),
            ..Q::new(11, "")
        }
        .body(),
    ]
}

fn result(
    id: u64,
    tag: Option<&str>,
    rows: Option<u64>,
    error: Option<(&str, Option<&str>)>,
    duration_us: u64,
    bytes: u64,
    skipped: bool,
) -> EventBody {
    EventBody::QueryResult {
        query_id: id,
        tag: tag.map(Into::into),
        rows,
        sqlstate: error.map(|e| e.0.into()),
        message: error.and_then(|e| e.1).map(Into::into),
        duration_us,
        bytes,
        skipped,
    }
}

fn results() -> Vec<EventBody> {
    let long = format!("relation \"t\"\ndoes not exist {}", "y".repeat(300));
    vec![
        result(1, Some("SELECT 1"), Some(1), None, 412, 11, false),
        result(2, Some("SELECT 3"), Some(3), None, 1_234_567, 0, false),
        result(3, None, None, Some(("42P01", Some(&long))), 300, 0, false),
        result(4, None, None, Some(("42\u{1b}01", None)), 0, 5, false),
        result(
            5,
            Some("UPDATE 0"),
            Some(0),
            Some(("25P02", Some("in\tfailed"))),
            7,
            0,
            false,
        ),
        result(6, None, None, None, 3, 0, false),
        result(7, Some("SET\u{1}"), None, None, 3, 99, false),
        result(
            8,
            None,
            None,
            Some(("25P02", Some("not executed"))),
            0,
            0,
            true,
        ),
        result(9, Some("SELECT 0"), Some(0), None, 1, 0, true),
        result(10, Some("DISCARD ALL"), None, None, 2, 0, false),
        result(11, None, Some(4), None, 1, 0, false),
    ]
}

fn stopped(
    work: StoppedWork,
    how: StopMethod,
    backend_gone: bool,
    detail: Option<&str>,
) -> Option<Stopped> {
    Some(Stopped {
        work,
        how,
        backend_gone,
        ms: 6.25,
        detail: detail.map(Into::into),
    })
}

fn end(
    reason: EndReason,
    detail: Option<&str>,
    late_ms: Option<f64>,
    parked: bool,
    stopped: Option<Stopped>,
) -> EventBody {
    EventBody::SessionEnd {
        reason,
        detail: detail.map(Into::into),
        late_ms,
        queries: 11,
        duration_ms: 950,
        upstream_parked: parked,
        stopped,
    }
}

fn ends() -> Vec<EventBody> {
    use StopMethod::{Cancel, Terminate};
    use StoppedWork::{Backend, Statements};
    vec![
        end(EndReason::ClientQuit, None, None, true, None),
        end(
            EndReason::GrantExpired,
            Some("grant expired\nat 00:38:17"),
            Some(12.5),
            false,
            stopped(Statements, Terminate, true, None),
        ),
        end(
            EndReason::GrantRevoked,
            Some("by carol"),
            Some(0.0),
            false,
            stopped(Backend, Cancel, false, Some("no answer\u{1b}")),
        ),
        end(
            EndReason::UpstreamClosed,
            None,
            None,
            false,
            stopped(Statements, Cancel, true, None),
        ),
        end(EndReason::Shutdown, None, None, false, None),
        end(
            EndReason::ProtocolError,
            Some("bad frame"),
            None,
            false,
            None,
        ),
        end(EndReason::AuditUnavailable, None, None, false, None),
        end(
            EndReason::LimitExceeded,
            Some("x".repeat(250).as_str()),
            None,
            false,
            None,
        ),
    ]
}

/// Every kind that is not part of a session's own statements.
fn others() -> Vec<EventBody> {
    let expires_at = ts("2026-11-28T00:38:17Z");
    let not_before = ts("2026-11-27T23:30:00Z");
    let transition = |from: Option<&str>, rule: Option<&str>, comment: Option<&str>| {
        EventBody::GrantTransition {
            action: "approved".into(),
            actor: "policy:\u{1}auto".into(),
            rule: rule.map(Into::into),
            comment: comment.map(Into::into),
            from: from.map(Into::into),
            to: "approved".into(),
            not_before,
            expires_at,
            previous_expires_at: None,
            ticket: Some("INC-1".into()),
            extends: None,
            break_glass: true,
        }
    };
    let webhook = |status: Option<u16>, error: Option<&str>| EventBody::WebhookDelivery {
        webhook: "ops".into(),
        event: "grant.revoked".into(),
        delivery_id: common::grant_id(),
        attempt: 2,
        outcome: "retrying".into(),
        status,
        error: error.map(Into::into),
    };
    let ack = |lost: Option<(u64, u64)>| EventBody::LogCutAcknowledged {
        lost_from: lost.map(|l| l.0),
        lost_to: lost.map(|l| l.1),
        checkpoint_ts: None,
        reason: "restored\nfrom backup".into(),
        acknowledged_by: "root".into(),
    };
    vec![
        EventBody::AuthFailure {
            client_addr: "10.0.0.9:1111".into(),
            reason: "wrong\npassword".into(),
        },
        EventBody::AccessDenied {
            client_addr: "10.0.0.9:1112\u{7f}".into(),
            reason: "no active grant".into(),
        },
        EventBody::RefusalsSuppressed {
            count: 12,
            since: not_before,
            by_client: BTreeMap::from([("10.0.0.1".into(), 7), ("10.0.0.2".into(), 3)]),
            other_clients: 2,
        },
        EventBody::RefusalsSuppressed {
            count: 0,
            since: not_before,
            by_client: BTreeMap::new(),
            other_clients: 0,
        },
        EventBody::GrantIssued {
            not_before,
            expires_at,
            reason: "INC-1234".into(),
            issued_by: "carol".into(),
        },
        EventBody::GrantRevoked {
            revoked_by: "carol".into(),
            reason: Some("done".into()),
            from: None,
            rule: None,
        },
        EventBody::GrantRevoked {
            revoked_by: "carol".into(),
            reason: None,
            from: Some("approved".into()),
            rule: Some("r".into()),
        },
        transition(None, None, None),
        transition(Some("pending"), Some("oncall"), Some("looks fine")),
        webhook(Some(503), Some("server\nerror")),
        webhook(None, None),
        ack(Some((5, 9))),
        ack(None),
    ]
}

/// Every body above, in a session's order, at increasing times.
fn session() -> Vec<Event> {
    let mut bodies = vec![start(true, Some("psql\u{1b}"), Some(4242), false)];
    for (q, r) in queries().into_iter().zip(results()) {
        bodies.push(q);
        bodies.push(r);
    }
    bodies.push(EventBody::Copy {
        query_id: 2,
        direction: CopyDirection::In,
        bytes: 1234,
        rows: Some(1),
    });
    bodies.push(EventBody::Copy {
        query_id: 3,
        direction: CopyDirection::Out,
        bytes: 0,
        rows: None,
    });
    bodies.extend(others());
    bodies.extend(ends());
    let base = ts("2026-11-27T23:38:17.123456Z");
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let mut e = ctx(body, "2026-11-27T23:38:17Z");
            e.ts = base + jiff::SignedDuration::from_micros(i as i64 * 1_000_001);
            e.seq = i as u64 + 1;
            e
        })
        .collect()
}

fn render_all() -> String {
    let mut out = String::new();
    let events = session();

    out.push_str("== transcript: a session with every kind ==\n");
    out.push_str(&transcript(events.clone(), session_id()).unwrap());

    out.push_str("\n== transcript: other session starts, no context, no end ==\n");
    let mut bare = Vec::new();
    for (tls, app, pid, reused) in [
        (false, None, None, false),
        (true, None, Some(7), true),
        (false, Some("app"), None, true),
    ] {
        let mut e = Event::new(start(tls, app, pid, reused))
            .with_ts(ts("2026-11-27T23:00:00Z"))
            .with_session(session_id());
        e.seq = 1;
        bare.push(e);
    }
    out.push_str(&transcript(bare.clone(), session_id()).unwrap());
    let mut no_start = events[1].clone();
    no_start.identity = None;
    no_start.target = None;
    no_start.role = None;
    no_start.grant_id = None;
    out.push_str(&transcript([no_start], session_id()).unwrap());

    out.push_str("\n== one-line summaries ==\n");
    for e in events.iter().chain(&bare) {
        out.push_str(&format_event_line(e));
        out.push('\n');
    }
    let mut bare_context = events.last().unwrap().clone();
    bare_context.session_id = None;
    bare_context.identity = None;
    bare_context.target = None;
    bare_context.role = None;
    bare_context.grant_id = None;
    out.push_str(&format_event_line(&bare_context));
    out.push('\n');

    out.push_str("\n== search lines ==\n");
    let queries: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Query { .. }))
        .collect();
    let results: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.body, EventBody::QueryResult { .. }))
        .collect();
    let mut found = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        found.push(Found {
            query: (*q).clone(),
            result: results.get(i).map(|r| (*r).clone()),
        });
        found.push(Found {
            query: (*q).clone(),
            result: None,
        });
    }
    for r in &results {
        found.push(Found {
            query: queries[0].clone(),
            result: Some((*r).clone()),
        });
    }
    let mut anonymous = queries[1].clone();
    anonymous.session_id = None;
    anonymous.identity = None;
    anonymous.target = Some("t\u{1b}".into());
    found.push(Found {
        query: anonymous,
        result: Some(events[0].clone()),
    });
    found.push(Found {
        query: events[0].clone(),
        result: None,
    });
    for f in &found {
        out.push_str(&f.summary());
        out.push('\n');
    }
    out
}

#[test]
fn every_kind_renders_as_pinned() {
    let rendered = render_all();
    if std::env::var_os("JITGATE_BLESS").is_some() {
        std::fs::write(GOLDEN, &rendered).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    if rendered != golden {
        let line = rendered
            .lines()
            .zip(golden.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(rendered.lines().count().min(golden.lines().count()));
        panic!(
            "rendered output differs from {GOLDEN} at line {}:\n  now:    {:?}\n  pinned: {:?}",
            line + 1,
            rendered.lines().nth(line),
            golden.lines().nth(line)
        );
    }
}
