//! Unit tests of the tracker's model of the server: each rule of the extended protocol
//! and of COPY, driven with hand-built client messages and the replies PostgreSQL sends
//! for them. (The differential test, `tests/differential.rs`, holds the same model
//! against a real server's own log.)

use bytes::{BufMut, Bytes, BytesMut};
use jitgate_audit::EventBody;

use super::{Step, Tracker};
use crate::protocol::tags;

pub(super) fn cstr(b: &mut BytesMut, s: &[u8]) {
    b.put_slice(s);
    b.put_u8(0);
}

pub(super) fn parse(name: &[u8], sql: &str) -> (u8, Bytes) {
    let mut b = BytesMut::new();
    cstr(&mut b, name);
    cstr(&mut b, sql.as_bytes());
    b.put_i16(0);
    (tags::PARSE, b.freeze())
}

pub(super) fn bind(portal: &[u8], statement: &[u8], values: &[&str]) -> (u8, Bytes) {
    let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    bind_with(portal, statement, &[], &values)
}

/// A Bind with parameter format codes (0 text, 1 binary) and raw values.
pub(super) fn bind_with(
    portal: &[u8],
    statement: &[u8],
    formats: &[i16],
    values: &[&[u8]],
) -> (u8, Bytes) {
    let mut b = BytesMut::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.put_i16(formats.len() as i16);
    for f in formats {
        b.put_i16(*f);
    }
    b.put_i16(values.len() as i16);
    for v in values {
        b.put_i32(v.len() as i32);
        b.put_slice(v);
    }
    b.put_i16(0);
    (tags::BIND, b.freeze())
}

pub(super) fn execute(portal: &[u8]) -> (u8, Bytes) {
    let mut b = BytesMut::new();
    cstr(&mut b, portal);
    b.put_i32(0);
    (tags::EXECUTE, b.freeze())
}

pub(super) fn close_portal(name: &[u8]) -> (u8, Bytes) {
    let mut b = BytesMut::new();
    b.put_u8(tags::KIND_PORTAL);
    cstr(&mut b, name);
    (tags::CLOSE, b.freeze())
}

pub(super) fn query(sql: &str) -> (u8, Bytes) {
    let mut b = BytesMut::new();
    cstr(&mut b, sql.as_bytes());
    (tags::QUERY, b.freeze())
}

pub(super) fn sync() -> (u8, Bytes) {
    (tags::SYNC, Bytes::new())
}

pub(super) fn flush() -> (u8, Bytes) {
    (tags::FLUSH, Bytes::new())
}

fn copy_data(data: &[u8]) -> (u8, Bytes) {
    (tags::COPY_DATA, Bytes::copy_from_slice(data))
}

fn copy_done() -> (u8, Bytes) {
    (tags::COPY_DONE, Bytes::new())
}

pub(super) fn error(code: &str, routine: &str) -> Vec<u8> {
    format!("SERROR\0VERROR\0C{code}\0Mfailed\0R{routine}\0\0").into_bytes()
}

/// An error with a context ('W'), as the server sends for a Bind parameter it could not
/// convert.
fn error_in(code: &str, routine: &str, context: &str) -> Vec<u8> {
    format!("SERROR\0VERROR\0C{code}\0Mfailed\0W{context}\0R{routine}\0\0").into_bytes()
}

/// A session under test: what the client sent was recorded as, and the events the
/// server's replies completed.
pub(super) struct Session {
    pub(super) t: Tracker,
    /// `query` events (and results written with them), in order.
    pub(super) recorded: Vec<EventBody>,
    pub(super) out: Vec<EventBody>,
}

impl Session {
    pub(super) fn new() -> Session {
        Session {
            t: Tracker::default(),
            recorded: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Sends messages as the relay does, up to one that must wait; returns what the
    /// tracker said of each it looked at.
    pub(super) fn send(&mut self, messages: &[(u8, Bytes)]) -> Vec<Step> {
        let mut steps = Vec::new();
        for (tag, body) in messages {
            let step = self
                .t
                .on_client(*tag, body.clone(), &mut self.recorded)
                .unwrap();
            let wait = step == Step::Wait;
            steps.push(step);
            if wait {
                // The relay forwards a Flush of its own with what came before.
                self.t.flush_sent();
                break;
            }
        }
        steps
    }

    pub(super) fn reply(&mut self, tag: u8, body: &[u8]) {
        self.t.on_server(tag, body, &mut self.out);
    }

    pub(super) fn replies(&mut self, tags_: &[u8]) {
        for &tag in tags_ {
            match tag {
                tags::READY_FOR_QUERY => self.reply(tag, b"I"),
                tags::COMMAND_COMPLETE => self.reply(tag, b"SELECT 1\0"),
                _ => self.reply(tag, b""),
            }
        }
    }

    /// SQL of each `query` event recorded so far.
    pub(super) fn sqls(&self) -> Vec<String> {
        self.recorded
            .iter()
            .filter_map(|e| match e {
                EventBody::Query { sql, .. } => Some(sql.clone()),
                _ => None,
            })
            .collect()
    }

    /// The message of the result of `query_id`.
    pub(super) fn message(&self, query_id: u64) -> Option<String> {
        self.recorded.iter().chain(&self.out).find_map(|e| match e {
            EventBody::QueryResult {
                query_id: id,
                message,
                ..
            } if *id == query_id => message.clone(),
            _ => None,
        })
    }

    /// (query_id, skipped) of every result, recorded with the query or completed later.
    pub(super) fn results(&self) -> Vec<(u64, bool)> {
        self.recorded
            .iter()
            .chain(&self.out)
            .filter_map(|e| match e {
                EventBody::QueryResult {
                    query_id, skipped, ..
                } => Some((*query_id, *skipped)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_definition_takes_effect_when_the_server_confirms_it() {
    let mut s = Session::new();
    s.send(&[parse(b"s1", "SELECT 1"), sync()]);
    s.replies(b"1Z");
    // The client redefines s1 (the server refuses: the name is in use) and, across a
    // Sync, binds and executes it: which text runs depends on the first group's answer.
    let steps = s.send(&[
        parse(b"s1", "DELETE FROM t"),
        sync(),
        bind(b"", b"s1", &[]),
        execute(b""),
        sync(),
    ]);
    assert_eq!(steps[3], Step::Wait, "the Execute must wait for the answer");
    // 42P05: prepared statement "s1" already exists; the server skips to the Sync.
    s.reply(
        tags::ERROR_RESPONSE,
        &error("42P05", "StorePreparedStatement"),
    );
    s.replies(b"Z");
    // Retried after the answer: the server holds s1 = SELECT 1.
    assert_eq!(s.send(&[execute(b""), sync()]), vec![Step::Forward; 2]);
    assert_eq!(s.sqls(), vec!["SELECT 1"]);
    s.replies(b"2CZ");
    assert_eq!(s.results(), vec![(1, false)]);
    assert!(!s.t.in_flight());
}

#[test]
fn after_an_error_everything_up_to_sync_is_skipped_including_a_simple_query() {
    let mut s = Session::new();
    s.send(&[
        parse(b"", "SELEC oops"),
        bind(b"", b"", &[]),
        execute(b""),
        query("DELETE FROM t"),
        sync(),
        parse(b"", "SELECT 2"),
        bind(b"", b"", &[]),
        execute(b""),
        sync(),
    ]);
    s.reply(tags::ERROR_RESPONSE, &error("42601", "scanner_yyerror"));
    s.replies(b"Z12CZ");
    // The Execute and the Query of the failed group never ran; the next group did.
    assert_eq!(s.sqls(), vec!["SELEC oops", "DELETE FROM t", "SELECT 2"]);
    assert_eq!(s.results(), vec![(1, true), (2, true), (3, false)]);
    assert!(!s.t.in_flight());
}

#[test]
fn statements_sent_while_the_server_skips_are_recorded_as_skipped_at_once() {
    let mut s = Session::new();
    s.send(&[parse(b"", "SELEC oops"), flush()]);
    s.reply(tags::ERROR_RESPONSE, &error("42601", "scanner_yyerror"));
    // No Sync yet: the server skips whatever comes next.
    s.send(&[bind(b"", b"", &[]), execute(b""), query("DELETE FROM t")]);
    assert_eq!(s.results(), vec![(1, true), (2, true)]);
    s.send(&[sync(), query("SELECT 3")]);
    s.replies(b"ZCZ");
    assert_eq!(s.results(), vec![(1, true), (2, true), (3, false)]);
}

#[test]
fn a_failed_parse_of_the_unnamed_statement_drops_the_old_one() {
    let mut s = Session::new();
    s.send(&[parse(b"", "SELECT 1"), sync()]);
    s.replies(b"1Z");
    let steps = s.send(&[
        parse(b"", "SELEC oops"),
        sync(),
        bind(b"", b"", &[]),
        execute(b""),
        sync(),
    ]);
    assert_eq!(steps[3], Step::Wait);
    s.reply(tags::ERROR_RESPONSE, &error("42601", "scanner_yyerror"));
    s.replies(b"Z");
    // The unnamed statement is gone: the Execute (recorded without text) will fail
    // with its Bind.
    s.send(&[execute(b""), sync()]);
    assert_eq!(s.sqls(), vec![""]);
    s.reply(tags::ERROR_RESPONSE, &error("26000", "exec_bind_message"));
    s.replies(b"Z");
    assert_eq!(s.results(), vec![(1, true)]);
}

#[test]
fn names_are_bytes_not_lossy_text() {
    let mut s = Session::new();
    // "\xff" and "\u{fffd}" decode to the same lossy string; the server holds two names.
    s.send(&[
        parse(b"\xff", "SELECT 'raw'"),
        parse("\u{fffd}".as_bytes(), "SELECT 'replacement'"),
        bind(b"", b"\xff", &[]),
        execute(b""),
        sync(),
    ]);
    s.replies(b"112CZ");
    assert_eq!(s.sqls(), vec!["SELECT 'raw'"]);
    match &s.recorded[0] {
        EventBody::Query { statement, .. } => {
            assert_eq!(statement.as_deref(), Some("\u{0}ff"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_execute_of_a_portal_that_does_not_exist_never_ran() {
    let mut s = Session::new();
    s.send(&[execute(b"nope"), sync()]);
    s.reply(
        tags::ERROR_RESPONSE,
        &error("34000", "exec_execute_message"),
    );
    s.replies(b"Z");
    assert_eq!(s.results(), vec![(1, true)]);
    // The same SQLSTATE raised while a statement runs (FETCH of a missing cursor) ran.
    s.send(&[
        parse(b"", "FETCH c"),
        bind(b"", b"", &[]),
        execute(b""),
        sync(),
    ]);
    s.replies(b"12");
    s.reply(tags::ERROR_RESPONSE, &error("34000", "PerformPortalFetch"));
    s.replies(b"Z");
    assert_eq!(s.results(), vec![(1, true), (2, false)]);
}

#[test]
fn extended_copy_consumes_the_sync_pipelined_behind_it() {
    // libpq's COPY FROM STDIN in extended mode: P/B/E/S, data, CopyDone, S.
    let mut s = Session::new();
    s.send(&[
        parse(b"", "COPY t FROM STDIN"),
        bind(b"", b"", &[]),
        execute(b""),
        sync(),
    ]);
    s.replies(b"12G");
    assert_eq!(
        s.send(&[copy_data(b"1\n"), copy_data(b"2\n"), copy_done(), sync()]),
        vec![Step::Forward; 4]
    );
    s.reply(tags::COMMAND_COMPLETE, b"COPY 2\0");
    s.replies(b"Z");
    assert_eq!(s.results(), vec![(1, false)]);
    assert!(s.out.iter().any(|e| matches!(
        e,
        EventBody::Copy {
            bytes: 4,
            rows: Some(2),
            ..
        }
    )));
    // The next statement's results are its own.
    s.send(&[query("SELECT 2")]);
    s.replies(b"CZ");
    assert_eq!(s.results(), vec![(1, false), (2, false)]);
    assert!(!s.t.in_flight());
}

#[test]
fn sync_and_flush_during_copy_data_are_dropped_and_a_query_there_never_runs() {
    let mut s = Session::new();
    s.send(&[query("COPY t FROM STDIN")]);
    s.replies(b"G");
    assert_eq!(
        s.send(&[copy_data(b"1\n"), sync(), flush()]),
        vec![Step::Forward, Step::Drop, Step::Drop]
    );
    // A Query during COPY data: the server would end the session at it (or run it,
    // had the COPY failed meanwhile): it is not forwarded, the session ends.
    let (tag, body) = query("DELETE FROM t");
    let err = s.t.on_client(tag, body, &mut s.recorded).unwrap_err();
    assert!(
        matches!(
            err,
            super::Halt::Protocol(crate::protocol::ProtocolError::UnexpectedDuringCopy {
                tag: b'Q'
            })
        ),
        "{err:?}"
    );
    assert_eq!(s.sqls(), vec!["COPY t FROM STDIN"]);
}

#[test]
fn copy_data_sent_before_the_copy_started_waits_for_it() {
    let mut s = Session::new();
    let steps = s.send(&[
        query("COPY t FROM STDIN"),
        copy_data(b"1\n"),
        sync(),
        query("SELECT 2"),
    ]);
    assert_eq!(steps, vec![Step::Forward, Step::Wait]);
    s.replies(b"G");
    // Now the COPY takes it, and the Sync behind it is not forwarded.
    assert_eq!(
        s.send(&[copy_data(b"1\n"), sync(), copy_done(), query("SELECT 2")]),
        vec![Step::Forward, Step::Drop, Step::Forward, Step::Forward]
    );
    s.reply(tags::COMMAND_COMPLETE, b"COPY 1\0");
    s.replies(b"ZCZ");
    assert_eq!(s.results(), vec![(1, false), (2, false)]);
}

#[test]
fn what_follows_a_copy_that_failed_on_its_data_runs() {
    let mut s = Session::new();
    s.send(&[
        parse(b"", "COPY t FROM STDIN"),
        bind(b"", b"", &[]),
        execute(b""),
        sync(),
    ]);
    s.replies(b"12G");
    s.send(&[copy_data(b"two\tcolumns\n")]);
    // 22P04: bad COPY data; the server leaves the COPY and skips to the next Sync.
    s.reply(
        tags::ERROR_RESPONSE,
        &error("22P04", "CopyReadAttributesText"),
    );
    s.send(&[copy_done(), sync(), query("ROLLBACK")]);
    s.replies(b"ZCZ");
    assert_eq!(s.results(), vec![(1, false), (2, false)]);
    assert!(!s.t.in_flight());
}

#[test]
fn a_query_that_runs_nothing_leaves_the_unnamed_portal() {
    let mut s = Session::new();
    s.send(&[query("BEGIN")]);
    s.reply(tags::COMMAND_COMPLETE, b"BEGIN\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.send(&[parse(b"", "SELECT 1"), bind(b"", b"", &[]), sync()]);
    s.replies(b"12");
    s.reply(tags::READY_FOR_QUERY, b"T");
    // An empty Query runs nothing: the unnamed portal stays, and runs.
    s.send(&[query("")]);
    s.replies(b"I");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.send(&[execute(b""), sync()]);
    assert_eq!(s.sqls(), vec!["BEGIN", "", "SELECT 1"]);
    s.replies(b"C");
    s.reply(tags::READY_FOR_QUERY, b"T");
    assert_eq!(s.t.disagreements(), 0);
}

#[test]
fn a_query_pipelined_behind_a_copy_never_runs() {
    let mut s = Session::new();
    s.send(&[query("COPY t FROM STDIN"), query("DELETE FROM t")]);
    s.replies(b"G");
    assert_eq!(s.results(), vec![(2, true)]);
}

#[test]
fn a_failed_copy_ends_and_what_follows_is_matched_again() {
    let mut s = Session::new();
    s.send(&[query("COPY t FROM STDIN")]);
    s.replies(b"G");
    s.send(&[copy_data(b"not a number\n")]);
    s.reply(tags::ERROR_RESPONSE, &error("22P02", "pg_strtoint32"));
    s.replies(b"Z");
    // The client finishes its COPY the server already left, then goes on.
    s.send(&[copy_done(), query("SELECT 2")]);
    s.replies(b"CZ");
    assert_eq!(s.results(), vec![(1, false), (2, false)]);
    assert!(!s.t.in_flight());
}

#[test]
fn a_simple_query_drops_the_unnamed_statement() {
    let mut s = Session::new();
    s.send(&[parse(b"", "SELECT 1"), sync()]);
    s.replies(b"1Z");
    s.send(&[query("SELECT 2")]);
    s.replies(b"CZ");
    s.send(&[bind(b"", b"", &[]), execute(b""), sync()]);
    assert_eq!(s.sqls(), vec!["SELECT 2", ""]);
}

#[test]
fn a_bind_confirmed_after_the_statement_changed_records_the_server_definition() {
    // Portals in an explicit transaction survive Syncs.
    let mut s = Session::new();
    s.send(&[query("BEGIN")]);
    s.reply(tags::COMMAND_COMPLETE, b"BEGIN\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.send(&[parse(b"a", "SELECT 'a'"), bind(b"p", b"a", &[]), sync()]);
    s.replies(b"12");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.send(&[execute(b"p"), sync()]);
    assert_eq!(s.sqls(), vec!["BEGIN", "SELECT 'a'"]);
    s.replies(b"C");
    s.reply(tags::READY_FOR_QUERY, b"T");
    assert_eq!(s.t.disagreements(), 0);
}

#[test]
fn an_unknown_message_type_ends_the_session_on_the_server() {
    let mut s = Session::new();
    s.send(&[(b'z', Bytes::new()), query("DELETE FROM t")]);
    assert_eq!(s.results(), vec![(1, true)]);
}

#[test]
fn answers_to_a_flush_settle_the_prediction() {
    let mut s = Session::new();
    // Two definitions of the unnamed statement across Syncs, the last answer coming
    // through a Flush: once everything is answered nothing is ambiguous.
    s.send(&[
        parse(b"", "SELECT 1"),
        sync(),
        parse(b"", "SELECT 2"),
        sync(),
        parse(b"x", "SELECT 3"),
        flush(),
    ]);
    s.replies(b"1Z1Z1");
    assert!(!s.t.in_flight());
    assert_eq!(
        s.send(&[bind(b"", b"", &[]), execute(b""), sync()]),
        vec![Step::Forward; 3]
    );
    assert_eq!(s.sqls(), vec!["SELECT 2"]);
}

#[test]
fn a_query_that_fails_in_a_block_leaves_the_bound_portal() {
    let mut s = Session::new();
    let steps = s.send(&[
        query("BEGIN"),
        parse(b"", "SELECT generate_series(1, 4)"),
        bind(b"", b"", &[]),
        query("SELECT * FROM no_such_table"),
        execute(b""),
    ]);
    // The Execute waits for the Query's answer (`shield.rs`): had the Query failed
    // after making its own portal, that portal would be the unnamed one.
    assert_eq!(steps[4], Step::Wait);
    s.reply(tags::COMMAND_COMPLETE, b"BEGIN\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.replies(b"12");
    s.reply(tags::ERROR_RESPONSE, &error("42P01", "parserOpenTable"));
    s.reply(tags::READY_FOR_QUERY, b"E");
    // The transaction is aborted: the server would refuse the Execute (25P02), and
    // jitgate sends it a Parse it refuses the same way instead.
    let steps = s.send(&[execute(b""), sync()]);
    assert!(matches!(steps[0], Step::Replace(_)), "{steps:?}");
    assert_eq!(
        s.sqls(),
        vec![
            "BEGIN",
            "SELECT * FROM no_such_table",
            "SELECT generate_series(1, 4)"
        ]
    );
}

#[test]
fn copy_data_behind_a_second_copy_waits_for_it_too() {
    let mut s = Session::new();
    s.send(&[query("COPY t FROM STDIN")]);
    s.replies(b"G");
    let steps = s.send(&[copy_done(), query("COPY t FROM STDIN"), copy_data(b"x\n")]);
    assert_eq!(steps, vec![Step::Forward, Step::Forward, Step::Wait]);
}

#[test]
fn an_execute_pipelined_behind_an_extended_copy_never_runs() {
    let mut s = Session::new();
    s.send(&[
        parse(b"", "SELECT 1"),
        bind(b"", b"", &[]),
        execute(b""),
        execute(b""),
        sync(),
        parse(b"s1", "COPY t FROM STDIN"),
        bind(b"", b"s1", &[]),
        execute(b""),
        execute(b""),
        sync(),
        parse(b"", "INSERT INTO t VALUES ($1)"),
        bind(b"p2", b"", &["x"]),
        execute(b"p2"),
    ]);
    s.replies(b"12CCZ12G");
    s.reply(tags::ERROR_RESPONSE, &error("08P01", "CopyGetData"));
    s.reply(tags::ERROR_RESPONSE, b"SFATAL\0VFATAL\0C08P01\0Mlost\0\0");
    assert_eq!(
        s.results(),
        vec![(1, false), (2, false), (4, true), (5, true), (3, false)]
    );
}

// A Bind the server refuses after it created its portal (PostgreSQL 15
// `exec_bind_message`: a parameter it cannot convert, a plan-time error, a failure to
// start the portal) leaves that portal. In an implicit transaction the error's abort
// drops it at once; in a transaction block it stays, empty, until the block ends: an
// Execute of it after the Sync answers EmptyQueryResponse (and logs nothing). The
// replies below are PostgreSQL 15.18's (the differential test's seed 1, sequence 851).
#[test]
fn a_bind_that_fails_as_it_plans_leaves_its_empty_portal_until_the_block_ends() {
    let mut s = Session::new();
    // (BEGIN answered first: an Execute of the unnamed portal without a Bind waits for
    // the answers to a simple Query in front of it, see `shield.rs`.)
    s.send(&[query("BEGIN"), sync()]);
    s.reply(tags::COMMAND_COMPLETE, b"BEGIN\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.reply(tags::READY_FOR_QUERY, b"T");
    let steps = s.send(&[
        parse(b"s1", "SELECT 1 / 0"),
        bind(b"", b"s1", &[]),
        execute(b""),
        sync(),
        execute(b""),
        query("SELECT 2"),
    ]);
    assert_eq!(steps, vec![Step::Forward; 6]);
    s.replies(b"1");
    // 22012 while planning: the constant 1 / 0 is folded in Bind.
    s.reply(tags::ERROR_RESPONSE, &error("22012", "int4div"));
    s.reply(tags::READY_FOR_QUERY, b"E");
    // The Execute after the Sync finds the empty portal the Bind left.
    s.reply(tags::EMPTY_QUERY, b"");
    s.reply(tags::ERROR_RESPONSE, &error("25P02", "exec_simple_query"));
    s.reply(tags::READY_FOR_QUERY, b"E");
    assert_eq!(s.t.disagreements(), 0);
    assert_eq!(
        s.sqls(),
        vec!["BEGIN", "SELECT 1 / 0", "SELECT 1 / 0", "SELECT 2"]
    );
    // The first Execute was skipped with its group; the second ran nothing.
    assert_eq!(
        s.results(),
        vec![(1, false), (2, true), (3, true), (4, false)]
    );
    assert!(s.message(3).unwrap().contains("holds no statement"));
    // ROLLBACK ends the block and drops the portal. The Execute behind it waits for
    // its answer (`shield.rs`: the Query could have failed and left its portal).
    let steps = s.send(&[query("ROLLBACK"), execute(b""), sync()]);
    assert_eq!(steps[1], Step::Wait);
    s.reply(tags::COMMAND_COMPLETE, b"ROLLBACK\0");
    s.reply(tags::READY_FOR_QUERY, b"I");
    assert_eq!(s.send(&[execute(b""), sync()]), vec![Step::Forward; 2]);
    s.reply(
        tags::ERROR_RESPONSE,
        &error("34000", "exec_execute_message"),
    );
    s.reply(tags::READY_FOR_QUERY, b"I");
    assert_eq!(s.results()[4..], [(5, false), (6, true)]);
    assert!(!s.t.in_flight());
}

// The same with a named portal and a parameter the server cannot convert (a 3-byte
// binary int4: 08P01 from `pq_copymsgbytes`, its context naming the parameter): seed
// 1, sequence 3676.
#[test]
fn a_bind_that_fails_on_a_parameter_leaves_its_named_portal_in_a_block() {
    let mut s = Session::new();
    s.send(&[
        query("BEGIN"),
        parse(b"s1", "SELECT $1::text, $2::int4"),
        bind_with(b"p2", b"s1", &[0, 1], &[b"''", b"\0\0\x07"]),
        execute(b"p2"),
        sync(),
        execute(b"p2"),
        sync(),
    ]);
    s.reply(tags::COMMAND_COMPLETE, b"BEGIN\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.replies(b"1");
    s.reply(
        tags::ERROR_RESPONSE,
        &error_in("08P01", "pq_copymsgbytes", "portal \"p2\" parameter $2"),
    );
    s.reply(tags::READY_FOR_QUERY, b"E");
    s.reply(tags::EMPTY_QUERY, b"");
    s.reply(tags::READY_FOR_QUERY, b"E");
    assert_eq!(s.t.disagreements(), 0);
    assert_eq!(s.results(), vec![(1, false), (2, true), (3, true)]);
    // A Close of it is answered like any other.
    s.send(&[close_portal(b"p2"), sync(), execute(b"p2"), sync()]);
    s.replies(b"3");
    s.reply(tags::READY_FOR_QUERY, b"E");
    s.reply(
        tags::ERROR_RESPONSE,
        &error("34000", "exec_execute_message"),
    );
    s.reply(tags::READY_FOR_QUERY, b"E");
    assert_eq!(s.results()[3..], [(4, true)]);
}

// Which Bind errors leave the portal (PostgreSQL 15.18's answers): one raised before the
// portal is created — here a statement name not valid UTF-8, 22021 without context —
// leaves the old unnamed portal, and an Execute of it is logged with its text and
// refused (25P02); the same SQLSTATE for a parameter value (with context) comes after,
// and the portal is the Bind's, empty.
#[test]
fn a_bind_refused_before_it_creates_its_portal_leaves_the_old_one() {
    let mut s = Session::new();
    s.send(&[
        query("BEGIN"),
        parse(b"s1", "SELECT 'old'"),
        bind(b"", b"s1", &[]),
        sync(),
        bind(b"", b"s\xff", &[]),
        sync(),
    ]);
    s.reply(tags::COMMAND_COMPLETE, b"BEGIN\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.replies(b"12");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.reply(
        tags::ERROR_RESPONSE,
        &error("22021", "report_invalid_encoding_int"),
    );
    s.reply(tags::READY_FOR_QUERY, b"E");
    s.send(&[execute(b""), sync()]);
    s.reply(
        tags::ERROR_RESPONSE,
        &error("25P02", "exec_execute_message"),
    );
    s.reply(tags::READY_FOR_QUERY, b"E");
    assert_eq!(s.sqls(), vec!["BEGIN", "SELECT 'old'"]);
    assert_eq!(s.results(), vec![(1, false), (2, false)]);
    s.send(&[query("ROLLBACK")]);
    s.reply(tags::COMMAND_COMPLETE, b"ROLLBACK\0");
    s.reply(tags::READY_FOR_QUERY, b"I");

    s.send(&[
        query("BEGIN"),
        parse(b"s1", "SELECT 'old'"),
        bind(b"", b"s1", &[]),
        sync(),
        parse(b"s2", "SELECT $1::text"),
        bind_with(b"", b"s2", &[], &[b"a\xffb"]),
        sync(),
    ]);
    s.reply(tags::COMMAND_COMPLETE, b"BEGIN\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.replies(b"12");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.replies(b"1");
    s.reply(
        tags::ERROR_RESPONSE,
        &error_in(
            "22021",
            "report_invalid_encoding_int",
            "unnamed portal parameter $1",
        ),
    );
    s.reply(tags::READY_FOR_QUERY, b"E");
    s.send(&[execute(b""), sync()]);
    s.reply(tags::EMPTY_QUERY, b"");
    s.reply(tags::READY_FOR_QUERY, b"E");
    assert_eq!(s.t.disagreements(), 0);
    assert_eq!(s.sqls()[3..], ["BEGIN", "SELECT $1::text"]);
    assert_eq!(s.results()[3..], [(4, false), (5, true)]);
}

// The text recorded for an Execute across Syncs: the portal a failed Bind left decides
// it, not the Bind of a later group the server skipped (seed 4, sequence 10809, where
// the tracker recorded the later group's statement for an Execute of the empty portal).
#[test]
fn the_portal_a_failed_bind_left_outlives_a_skipped_rebind() {
    let mut s = Session::new();
    let steps = s.send(&[
        query("BEGIN"),
        parse(b"s1", "SELECT $1::text, $2::int4"),
        bind_with(b"", b"s1", &[0, 1], &[b"x", b"\0\0\x07"]),
        execute(b""),
        sync(),
        bind(b"p2", b"s1", &["x", "1"]),
        parse(b"s1", "SELECT generate_series(1, 2)"),
        bind(b"", b"s1", &[]),
        execute(b""),
        sync(),
        execute(b""),
        sync(),
    ]);
    // Two Binds of "" in two unanswered groups: the last Execute waits.
    assert_eq!(steps.last(), Some(&Step::Wait));
    s.reply(tags::COMMAND_COMPLETE, b"BEGIN\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.replies(b"1");
    s.reply(
        tags::ERROR_RESPONSE,
        &error_in("08P01", "pq_copymsgbytes", "unnamed portal parameter $2"),
    );
    s.reply(tags::READY_FOR_QUERY, b"E");
    // In the aborted block the Bind with parameters is refused before anything (25P02):
    // the rest of its group is skipped.
    s.reply(tags::ERROR_RESPONSE, &error("25P02", "exec_bind_message"));
    s.reply(tags::READY_FOR_QUERY, b"E");
    assert_eq!(s.send(&[execute(b""), sync()]), vec![Step::Forward; 2]);
    s.reply(tags::EMPTY_QUERY, b"");
    s.reply(tags::READY_FOR_QUERY, b"E");
    assert_eq!(s.t.disagreements(), 0);
    assert_eq!(
        s.sqls(),
        vec![
            "BEGIN",
            "SELECT $1::text, $2::int4",
            "SELECT generate_series(1, 2)",
            "SELECT $1::text, $2::int4"
        ]
    );
    assert_eq!(
        s.results(),
        vec![(1, false), (2, true), (3, true), (4, true)]
    );
}

#[test]
fn rollback_to_savepoint_keeps_the_portals_made_before_it() {
    let mut s = Session::new();
    s.send(&[query("BEGIN")]);
    s.reply(tags::COMMAND_COMPLETE, b"BEGIN\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.send(&[parse(b"", "SELECT 'kept'"), bind(b"p1", b"", &[]), sync()]);
    s.replies(b"12");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.send(&[query("SAVEPOINT a")]);
    s.reply(tags::COMMAND_COMPLETE, b"SAVEPOINT\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    // Run by Execute, ROLLBACK TO has the tag of a whole ROLLBACK.
    s.send(&[
        parse(b"", "ROLLBACK TO a"),
        bind(b"", b"", &[]),
        execute(b""),
        sync(),
    ]);
    s.replies(b"12");
    s.reply(tags::COMMAND_COMPLETE, b"ROLLBACK\0");
    s.reply(tags::READY_FOR_QUERY, b"T");
    s.send(&[execute(b"p1"), sync()]);
    assert_eq!(
        s.sqls(),
        vec!["BEGIN", "SAVEPOINT a", "ROLLBACK TO a", "SELECT 'kept'"]
    );
    s.replies(b"C");
    s.reply(tags::READY_FOR_QUERY, b"T");
    assert_eq!(s.t.disagreements(), 0);
}

/// The guard (issue 17): a refused Query or Parse is replaced by a substitute the server
/// fails with 42501; the audit keeps the client's text (passwords masked) and records
/// the result as skipped.
#[test]
fn a_refused_statement_is_replaced_and_recorded_as_skipped() {
    let mut s = Session::new();
    let steps = s.send(&[query(
        "SELECT 1; ALTER ROLE CURRENT_USER PASSWORD 'hunter2'",
    )]);
    let Step::Replace(frame) = &steps[0] else {
        panic!("not replaced: {steps:?}");
    };
    assert_eq!(frame[0], tags::QUERY);
    let text = String::from_utf8_lossy(frame);
    assert!(
        text.contains("DO $jitgate$") && !text.contains("hunter2"),
        "{text}"
    );
    assert_eq!(
        s.sqls(),
        ["SELECT 1; ALTER ROLE CURRENT_USER PASSWORD '<redacted>'"]
    );
    s.reply(tags::ERROR_RESPONSE, &error("42501", "exec_stmt_raise"));
    s.replies(b"Z");
    assert_eq!(s.results(), [(1, true)]);

    // Extended: the Parse is replaced under the same name; the Execute records the
    // client's text and is skipped once the server fails the substitute.
    let steps = s.send(&[
        parse(b"p", "SELECT set_config('role', $1, false)"),
        bind(b"", b"p", &["postgres"]),
        execute(b""),
        sync(),
    ]);
    let Step::Replace(frame) = &steps[0] else {
        panic!("not replaced: {steps:?}");
    };
    assert_eq!(frame[0], tags::PARSE);
    assert_eq!(&frame[5..7], b"p\0");
    // One parameter, declared `text` (the client left it to the server).
    assert_eq!(&frame[frame.len() - 6..], &[0, 1, 0, 0, 0, 25]);
    assert_eq!(steps[1..], [Step::Forward, Step::Forward, Step::Forward]);
    assert_eq!(s.sqls()[1], "SELECT set_config('role', $1, false)");
    s.replies(b"12");
    s.reply(tags::ERROR_RESPONSE, &error("42501", "exec_stmt_raise"));
    s.replies(b"Z");
    assert_eq!(s.results(), [(1, true), (2, true)]);

    // Harmless statements that merely contain the keywords are forwarded as they are.
    let steps = s.send(&[query("SELECT 'role', 1 AS user_id")]);
    assert_eq!(steps, [Step::Forward]);

    // Allowed by the target: forwarded.
    let mut allowed = Session::new();
    allowed.t = Tracker::default().with_role_changes(crate::guard::RoleChanges::Allow);
    let steps = allowed.send(&[query("ALTER ROLE CURRENT_USER PASSWORD 'x'")]);
    assert_eq!(steps, [Step::Forward]);
}
