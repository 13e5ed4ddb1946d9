//! Unit tests of what bounds a session's cost in the tracker: parameters recorded once
//! per Bind (later executions point at them), the limits on named statements and
//! portals, and names and texts copied out of the read buffer when kept.

use bytes::{BufMut, Bytes, BytesMut};
use jitgate_audit::{EventBody, Param};

use super::{Halt, Tracker};
use crate::protocol::tags;
use crate::session::limits::LimitKind;
use crate::settings::SessionLimits;

fn cstr(b: &mut BytesMut, s: &[u8]) {
    b.put_slice(s);
    b.put_u8(0);
}

fn parse(name: &str, sql: &str) -> (u8, Bytes) {
    let mut b = BytesMut::new();
    cstr(&mut b, name.as_bytes());
    cstr(&mut b, sql.as_bytes());
    b.put_i16(0);
    (tags::PARSE, b.freeze())
}

fn bind(portal: &str, statement: &str, values: &[&str]) -> (u8, Bytes) {
    let mut b = BytesMut::new();
    cstr(&mut b, portal.as_bytes());
    cstr(&mut b, statement.as_bytes());
    b.put_i16(0);
    b.put_i16(values.len() as i16);
    for v in values {
        b.put_i32(v.len() as i32);
        b.put_slice(v.as_bytes());
    }
    b.put_i16(0);
    (tags::BIND, b.freeze())
}

fn execute(portal: &str, max_rows: i32) -> (u8, Bytes) {
    let mut b = BytesMut::new();
    cstr(&mut b, portal.as_bytes());
    b.put_i32(max_rows);
    (tags::EXECUTE, b.freeze())
}

fn close(statement: bool, name: &str) -> (u8, Bytes) {
    let mut b = BytesMut::new();
    b.put_u8(if statement {
        tags::KIND_STATEMENT
    } else {
        tags::KIND_PORTAL
    });
    cstr(&mut b, name.as_bytes());
    (tags::CLOSE, b.freeze())
}

fn send(t: &mut Tracker, messages: &[(u8, Bytes)]) -> Result<Vec<EventBody>, Halt> {
    let mut events = Vec::new();
    for (tag, body) in messages {
        t.on_client(*tag, body.clone(), &mut events)?;
    }
    Ok(events)
}

/// (query_id, params, params_from) of each `query` event.
fn queries(events: &[EventBody]) -> Vec<(u64, Vec<Param>, Option<u64>)> {
    events
        .iter()
        .filter_map(|e| match e {
            EventBody::Query {
                query_id,
                params,
                params_from,
                ..
            } => Some((*query_id, params.clone(), *params_from)),
            _ => None,
        })
        .collect()
}

fn limited(statements: usize, portals: usize) -> Tracker {
    Tracker::default().with_limits(SessionLimits {
        max_prepared_statements: statements,
        max_portals: portals,
        ..SessionLimits::default()
    })
}

#[test]
fn a_portal_run_in_steps_records_its_parameters_once() {
    let mut t = Tracker::default();
    let big = "v".repeat(10_000);
    let events = send(
        &mut t,
        &[
            parse("", "select $1"),
            bind("", "", &[&big]),
            execute("", 1),
            execute("", 1),
            execute("", 1),
        ],
    )
    .unwrap();
    let q = queries(&events);
    assert_eq!(q.len(), 3);
    assert_eq!(q[0].1.len(), 1, "the first execution records the value");
    assert!(
        q[0].1[0].truncated,
        "capped at the default audit.max_param_bytes"
    );
    assert_eq!(q[0].2, None);
    for later in &q[1..] {
        assert!(later.1.is_empty(), "later executions do not copy it");
        assert_eq!(later.2, Some(q[0].0), "they point at the first");
    }
    // The server suspends the portal twice and completes it; the next execution of the
    // same portal (still bound) points at the same event.
    let mut out = Vec::new();
    t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
    t.on_server(tags::BIND_COMPLETE, b"", &mut out);
    for _ in 0..3 {
        t.on_server(tags::PORTAL_SUSPENDED, b"", &mut out);
    }
    assert!(!t.in_flight());
    let more = send(&mut t, &[execute("", 1)]).unwrap();
    assert_eq!(queries(&more)[0].2, Some(q[0].0));
    // A new Bind is a new binding: recorded again.
    let rebound = send(&mut t, &[bind("", "", &["x"]), execute("", 0)]).unwrap();
    let r = queries(&rebound);
    assert_eq!((r[0].1.len(), r[0].2), (1, None));
}

#[test]
fn a_portal_without_parameters_points_at_nothing() {
    let mut t = Tracker::default();
    let events = send(
        &mut t,
        &[
            parse("", "select 1"),
            bind("", "", &[]),
            execute("", 1),
            execute("", 1),
        ],
    )
    .unwrap();
    assert!(queries(&events)
        .iter()
        .all(|q| q.1.is_empty() && q.2.is_none()));
}

#[test]
fn after_a_rollback_the_parameters_are_recorded_again() {
    let mut t = Tracker::default();
    send(&mut t, &[parse("", "select $1"), bind("", "", &["7"])]).unwrap();
    let mark = t.mark();
    // This batch's events are never written (the audit log refused them).
    let lost = send(&mut t, &[execute("", 1)]).unwrap();
    assert_eq!(queries(&lost)[0].1.len(), 1);
    t.rollback(mark);
    let again = send(&mut t, &[execute("", 1)]).unwrap();
    let q = queries(&again);
    assert_eq!(
        (q[0].1.len(), q[0].2),
        (1, None),
        "not a pointer into the lost batch"
    );
}

fn limit_of(e: Halt) -> (LimitKind, usize) {
    match e {
        Halt::Limit(l) => (l.kind, l.limit),
        other => panic!("expected a session limit, got {other:?}"),
    }
}

#[test]
fn named_statements_beyond_the_limit_are_refused_before_forwarding() {
    let mut t = limited(2, 10);
    send(&mut t, &[parse("a", "select 1"), parse("b", "select 2")]).unwrap();
    // The unnamed statement does not count, nor does a name already held.
    send(&mut t, &[parse("", "select 3"), parse("a", "select 1")]).unwrap();
    let err = send(&mut t, &[parse("c", "select 4")]).unwrap_err();
    assert!(
        matches!(&err, Halt::Limit(l) if l.pg_error().code == "53400"),
        "{err:?}"
    );
    assert_eq!(limit_of(err), (LimitKind::PreparedStatements, 2));
}

#[test]
fn closing_a_statement_makes_room_once_confirmed_or_predicted() {
    let mut t = limited(2, 10);
    send(&mut t, &[parse("a", "select 1"), parse("b", "select 2")]).unwrap();
    let mut out = Vec::new();
    t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
    t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
    // Closed in the same pipeline: the new name fits.
    send(&mut t, &[close(true, "a"), parse("c", "select 3")]).unwrap();
    t.on_server(tags::CLOSE_COMPLETE, b"", &mut out);
    t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
    assert_eq!(t.confirmed.statements.len(), 2);
    let err = send(&mut t, &[parse("d", "select 4")]).unwrap_err();
    assert_eq!(limit_of(err).0, LimitKind::PreparedStatements);
}

#[test]
fn named_portals_beyond_the_limit_are_refused() {
    let mut t = limited(10, 1);
    send(
        &mut t,
        &[
            parse("", "select 1"),
            bind("p1", "", &[]),
            bind("", "", &[]),
        ],
    )
    .unwrap();
    let err = send(&mut t, &[bind("p2", "", &[])]).unwrap_err();
    assert_eq!(limit_of(err), (LimitKind::Portals, 1));
}

/// Whether `kept` lies inside `buffer`'s bytes.
fn inside(kept: &Bytes, buffer: &Bytes) -> bool {
    let (start, end) = (
        buffer.as_ptr() as usize,
        buffer.as_ptr() as usize + buffer.len(),
    );
    let at = kept.as_ptr() as usize;
    !kept.is_empty() && (start..end).contains(&at)
}

#[test]
fn kept_names_and_texts_do_not_pin_the_read_buffer() {
    // A batch of several messages in one buffer, as the relay hands them over.
    let mut batch = BytesMut::new();
    let mut frames = Vec::new();
    for (tag, body) in [
        parse("named", "select 'named'"),
        parse("", "select 'unnamed'"),
    ] {
        let start = batch.len();
        batch.put_slice(&body);
        frames.push((tag, start, batch.len()));
    }
    let batch = batch.freeze();
    let run = |copy: bool| {
        let mut t = Tracker::default();
        t.set_copy_retained(copy);
        let mut events = Vec::new();
        for &(tag, start, end) in &frames {
            t.on_client(tag, batch.slice(start..end), &mut events)
                .unwrap();
        }
        let mut out = Vec::new();
        t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
        t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
        t
    };
    // Small buffer: the named statement is copied, the unnamed one stays a slice (no
    // allocation per unnamed statement).
    let t = run(false);
    let (name, named) = t.confirmed.statements.named().next().unwrap();
    assert!(!inside(name, &batch) && !inside(&named.sql, &batch));
    assert_eq!(&named.sql[..], b"select 'named'");
    let unnamed = t.confirmed.statements.get(b"").unwrap();
    assert!(inside(&unnamed.sql, &batch));
    // Large buffer: everything kept is copied.
    let t = run(true);
    let statements = &t.confirmed.statements;
    assert!(statements.named().all(|(_, d)| !inside(&d.sql, &batch)));
    assert!(statements.get(b"").is_some_and(|d| !inside(&d.sql, &batch)));
}

fn limited_bytes(bytes: usize) -> Tracker {
    Tracker::default().with_limits(SessionLimits {
        max_retained_bytes: bytes,
        ..SessionLimits::default()
    })
}

#[test]
fn statement_text_beyond_the_retained_bytes_is_refused_before_forwarding() {
    let mut t = limited_bytes(300_000);
    let big = format!("select '{}'", "x".repeat(100_000));
    // In flight, all count (as if they succeed).
    send(&mut t, &[parse("a", &big), parse("b", &big)]).unwrap();
    let err = send(&mut t, &[parse("c", &big)]).unwrap_err();
    assert!(
        matches!(&err, Halt::Limit(l) if l.pg_error().code == "53400"),
        "{err:?}"
    );
    assert_eq!(limit_of(err), (LimitKind::RetainedBytes, 300_000));
    // The unnamed statement is not counted (it is replaced as it goes).
    let mut t = limited_bytes(300_000);
    for _ in 0..5 {
        send(&mut t, &[parse("", &big)]).unwrap();
    }
}

#[test]
fn closing_statements_gives_the_bytes_back_once_answered() {
    let mut t = limited_bytes(300_000);
    let big = format!("select '{}'", "x".repeat(100_000));
    let mut out = Vec::new();
    send(&mut t, &[parse("a", &big), parse("b", &big)]).unwrap();
    t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
    t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
    send(&mut t, &[close(true, "a"), close(true, "b")]).unwrap();
    t.on_server(tags::CLOSE_COMPLETE, b"", &mut out);
    t.on_server(tags::CLOSE_COMPLETE, b"", &mut out);
    assert_eq!(t.confirmed.retained_bytes(), 0);
    send(&mut t, &[parse("c", &big), parse("d", &big)]).unwrap();
}

#[test]
fn portals_count_their_parameters_and_the_text_they_keep_alive() {
    let mut t = limited_bytes(300_000);
    let value = "v".repeat(4_000);
    let values: Vec<&str> = vec![value.as_str(); 30];
    let sql = (1..=30)
        .map(|i| format!("${i}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    send(&mut t, &[parse("s", &format!("select {sql}"))]).unwrap();
    // 30 values of 4 000 bytes (the audit keeps their heads, 4 096 bytes each at most):
    // two portals fit, a third does not.
    send(
        &mut t,
        &[bind("p1", "s", &values), bind("p2", "s", &values)],
    )
    .unwrap();
    let err = send(&mut t, &[bind("p3", "s", &values)]).unwrap_err();
    assert_eq!(limit_of(err).0, LimitKind::RetainedBytes);
}
