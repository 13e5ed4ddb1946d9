//! Unit tests of names defined and dropped by SQL (`PREPARE`, `DECLARE`, `DEALLOCATE`,
//! `CLOSE`, `DISCARD ALL`) and run through the protocol, with the replies PostgreSQL
//! sends. (`tests/differential.rs` holds the same against a real server's log.)

use bytes::BytesMut;
use jitgate_audit::EventBody;

use super::protocol_tests::{bind, cstr, execute, parse, query, sync, Session};
use super::{Halt, Step};
use crate::protocol::tags;

fn complete(s: &mut Session, tag: &str) {
    s.reply(tags::COMMAND_COMPLETE, format!("{tag}\0").as_bytes());
}

fn ready(s: &mut Session, status: u8) {
    s.reply(tags::READY_FOR_QUERY, &[status]);
}

/// (statement, portal, sql) of each extended `query` event.
fn executes(s: &Session) -> Vec<(String, String, String)> {
    s.recorded
        .iter()
        .filter_map(|e| match e {
            EventBody::Query {
                statement,
                portal: Some(p),
                sql,
                ..
            } => Some((
                statement.clone().unwrap_or_default(),
                p.clone(),
                sql.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn ran(st: &str, portal: &str, sql: &str) -> (String, String, String) {
    (st.into(), portal.into(), sql.into())
}

#[test]
fn a_statement_prepared_by_sql_is_recorded_with_its_source_text_when_bound() {
    let mut s = Session::new();
    let text = "SELECT 1; PREPARE s AS DELETE FROM t";
    s.send(&[query(text)]);
    complete(&mut s, "SELECT 1");
    complete(&mut s, "PREPARE");
    ready(&mut s, b'I');
    s.send(&[bind(b"p", b"s", &[]), execute(b"p"), sync()]);
    // The server logs `execute s/p: <the text that ran PREPARE>`.
    assert_eq!(executes(&s), vec![ran("s", "p", text)]);
}

#[test]
fn a_prepare_not_answered_yet_is_predicted_for_what_is_pipelined_behind_it() {
    let mut s = Session::new();
    let steps = s.send(&[
        query("PREPARE s AS DELETE FROM t"),
        bind(b"", b"s", &[]),
        execute(b""),
        sync(),
    ]);
    // Nothing else was under `s`: it holds the new statement or nothing.
    assert_eq!(steps, vec![Step::Forward; 4]);
    assert_eq!(
        executes(&s),
        vec![ran("s", "", "PREPARE s AS DELETE FROM t")]
    );
}

#[test]
fn redefining_a_protocol_statement_with_sql_makes_a_pipelined_execute_wait() {
    let mut s = Session::new();
    s.send(&[parse(b"s", "SELECT 1"), sync()]);
    s.replies(b"1Z");
    let text = "DEALLOCATE s; PREPARE s AS DELETE FROM t";
    let steps = s.send(&[query(text), bind(b"", b"s", &[]), execute(b""), sync()]);
    // The Query may stop after DEALLOCATE or run both: two candidates.
    assert_eq!(steps[2], Step::Wait);
    complete(&mut s, "DEALLOCATE");
    complete(&mut s, "PREPARE");
    ready(&mut s, b'I');
    s.replies(b"2");
    assert_eq!(s.send(&[execute(b""), sync()]), vec![Step::Forward; 2]);
    assert_eq!(executes(&s), vec![ran("s", "", text)]);
}

#[test]
fn a_failed_prepare_leaves_the_old_definition() {
    let mut s = Session::new();
    s.send(&[parse(b"s", "SELECT 1"), sync()]);
    s.replies(b"1Z");
    s.send(&[query("PREPARE s AS DELETE FROM t")]);
    // 42P05: prepared statement "s" already exists.
    s.reply(
        tags::ERROR_RESPONSE,
        &super::protocol_tests::error("42P05", "StorePreparedStatement"),
    );
    ready(&mut s, b'I');
    s.send(&[bind(b"", b"s", &[]), execute(b""), sync()]);
    assert_eq!(executes(&s), vec![ran("s", "", "SELECT 1")]);
}

#[test]
fn a_cursor_runs_under_no_statement_with_the_text_that_declared_it() {
    let mut s = Session::new();
    let text = "DECLARE c CURSOR FOR SELECT * FROM t";
    s.send(&[query("BEGIN"), query(text)]);
    complete(&mut s, "BEGIN");
    ready(&mut s, b'T');
    complete(&mut s, "DECLARE CURSOR");
    ready(&mut s, b'T');
    s.send(&[execute(b"c"), sync()]);
    assert_eq!(executes(&s), vec![ran("", "c", text)]);
    // It ends with the transaction.
    complete(&mut s, "SELECT 1");
    ready(&mut s, b'I');
    s.send(&[execute(b"c"), sync()]);
    assert_eq!(executes(&s)[1], ran("", "c", ""));
}

#[test]
fn a_holdable_cursor_outlives_the_transaction_until_closed() {
    let mut s = Session::new();
    let text = "DECLARE h CURSOR WITH HOLD FOR SELECT 1";
    s.send(&[query(text)]);
    complete(&mut s, "DECLARE CURSOR");
    ready(&mut s, b'I');
    s.send(&[execute(b"h"), sync()]);
    complete(&mut s, "SELECT 1");
    ready(&mut s, b'I');
    s.send(&[query("CLOSE h")]);
    complete(&mut s, "CLOSE CURSOR");
    ready(&mut s, b'I');
    s.send(&[execute(b"h"), sync()]);
    assert_eq!(executes(&s), vec![ran("", "h", text), ran("", "h", "")]);
}

#[test]
fn a_cursor_declared_by_execute_keeps_its_parameters() {
    let mut s = Session::new();
    let text = "DECLARE c CURSOR WITH HOLD FOR SELECT $1::text";
    s.send(&[
        parse(b"d", text),
        bind(b"", b"d", &["v"]),
        execute(b""),
        sync(),
    ]);
    s.replies(b"12");
    complete(&mut s, "DECLARE CURSOR");
    ready(&mut s, b'I');
    s.send(&[execute(b"c"), sync()]);
    let params: Vec<_> = s
        .recorded
        .iter()
        .filter_map(|e| match e {
            EventBody::Query {
                portal: Some(p),
                params,
                params_from,
                ..
            } if p == "c" => Some((params.len(), *params_from)),
            _ => None,
        })
        .collect();
    assert_eq!(executes(&s)[1], ran("", "c", text));
    assert_eq!(
        params,
        vec![(1, None)],
        "the cursor's execution records its value"
    );
}

#[test]
fn deallocate_all_close_all_and_discard_all_drop_names() {
    let mut s = Session::new();
    s.send(&[parse(b"s", "SELECT 1"), sync()]);
    s.replies(b"1Z");
    s.send(&[query("DEALLOCATE ALL")]);
    complete(&mut s, "DEALLOCATE ALL");
    ready(&mut s, b'I');
    s.send(&[bind(b"", b"s", &[]), execute(b""), sync()]);
    assert_eq!(
        executes(&s),
        vec![ran("s", "", "")],
        "no statement s any more"
    );
    s.reply(
        tags::ERROR_RESPONSE,
        &super::protocol_tests::error("26000", "exec_bind_message"),
    );
    ready(&mut s, b'I');

    let text = "DECLARE h CURSOR WITH HOLD FOR SELECT 1";
    s.send(&[query(text), query("DISCARD ALL")]);
    complete(&mut s, "DECLARE CURSOR");
    ready(&mut s, b'I');
    complete(&mut s, "DISCARD ALL");
    ready(&mut s, b'I');
    s.send(&[execute(b"h"), sync()]);
    assert_eq!(executes(&s)[1], ran("", "h", ""));
}

#[test]
fn names_are_compared_on_their_first_63_bytes_as_the_server_does() {
    let mut s = Session::new();
    let long = |tail: &str| format!("{}{tail}", "n".repeat(63)).into_bytes();
    s.send(&[parse(&long("x"), "DELETE FROM t"), sync()]);
    s.replies(b"1Z");
    // The server finds the statement above under this name.
    s.send(&[bind(b"", &long("y"), &[]), execute(b""), sync()]);
    assert_eq!(executes(&s)[0].2, "DELETE FROM t");
}

#[test]
fn a_text_that_may_define_names_but_cannot_be_parsed_is_refused() {
    let mut s = Session::new();
    let steps = s.send(&[query("PREPARE s AS SELEC 1")]);
    assert!(matches!(steps[0], Step::Replace(_)), "{steps:?}");
    let steps = s.send(&[parse(b"", "DECLARE c CURSOR FOR SELEC")]);
    assert!(matches!(steps[0], Step::Replace(_)), "{steps:?}");
}

#[test]
fn a_name_tag_the_parse_did_not_expect_ends_the_session() {
    let mut s = Session::new();
    s.send(&[query("SELECT 1")]);
    // As if a function had run PREPARE where jitgate saw none.
    complete(&mut s, "PREPARE");
    ready(&mut s, b'I');
    let mut b = BytesMut::new();
    cstr(&mut b, b"SELECT 2");
    let r = s.t.on_client(tags::QUERY, b.freeze(), &mut s.recorded);
    assert!(matches!(r, Err(Halt::Unfollowed)), "{r:?}");
}

#[test]
fn statements_prepared_by_sql_count_against_the_session_limit() {
    let mut s = Session::new();
    s.t = std::mem::take(&mut s.t).with_limits(crate::settings::SessionLimits {
        max_prepared_statements: 2,
        ..Default::default()
    });
    for name in ["a", "b", "c"] {
        s.send(&[query(&format!("PREPARE {name} AS SELECT 1"))]);
        complete(&mut s, "PREPARE");
        ready(&mut s, b'I');
    }
    let mut b = BytesMut::new();
    cstr(&mut b, b"SELECT 2");
    let r = s.t.on_client(tags::QUERY, b.freeze(), &mut s.recorded);
    assert!(matches!(r, Err(Halt::Limit(_))), "{r:?}");
}

/// The crash shield (`shield.rs`): an Execute of the unnamed portal without a Bind,
/// after a simple Query failed in a transaction block, never reaches the server.
#[test]
fn an_execute_of_a_failed_querys_unnamed_portal_is_shielded() {
    let mut s = Session::new();
    s.send(&[query("BEGIN")]);
    complete(&mut s, "BEGIN");
    ready(&mut s, b'T');
    // Pipelined behind a Query that may fail: it waits for the answer.
    let steps = s.send(&[query("COPY t FROM STDIN"), execute(b"")]);
    assert_eq!(steps[1], Step::Wait);
    s.reply(
        tags::ERROR_RESPONSE,
        &super::protocol_tests::error("22P04", "CopyReadAttributesText"),
    );
    ready(&mut s, b'E');
    let steps = s.send(&[execute(b""), sync()]);
    assert!(
        matches!(&steps[0], Step::Replace(f) if f[0] == tags::PARSE),
        "{steps:?}"
    );
    s.reply(
        tags::ERROR_RESPONSE,
        &super::protocol_tests::error("25P02", "exec_parse_message"),
    );
    ready(&mut s, b'E');
    assert_eq!(s.results().last(), Some(&(3, true)));
    // A Bind in an aborted transaction may fail and leave the portal: the Execute
    // behind it waits, and is shielded once the Bind failed.
    let steps = s.send(&[bind(b"", b"s", &[]), sync(), execute(b""), sync()]);
    assert_eq!(steps[2], Step::Wait);
    s.reply(
        tags::ERROR_RESPONSE,
        &super::protocol_tests::error("25P02", "exec_bind_message"),
    );
    ready(&mut s, b'E');
    let steps = s.send(&[execute(b""), sync()]);
    assert!(matches!(&steps[0], Step::Replace(_)), "{steps:?}");
    s.replies(b"EZ");
    // Once the transaction is over, as sent.
    s.send(&[query("ROLLBACK")]);
    complete(&mut s, "ROLLBACK");
    ready(&mut s, b'I');
    assert_eq!(s.send(&[execute(b""), sync()]), vec![Step::Forward; 2]);
}
