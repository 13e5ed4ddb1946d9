//! Unit tests of the tracker's recording rules: SQL truncation and escaping, parameter
//! redaction, setting-change flags and result byte counts, driven with hand-built
//! frontend/backend message bodies.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use jitgate_audit::{
    sha256_hex, unescape_bytes, ContentRules, EventBody, Param, Redaction, SettingChange,
};

use super::{Halt, Step, Tracker};
use crate::protocol::tags;

/// One client message; its `query` event, if any.
fn client(t: &mut Tracker, tag: u8, body: Bytes) -> Result<Option<EventBody>, Halt> {
    let mut events = Vec::new();
    let step = t.on_client(tag, body, &mut events)?;
    assert_eq!(step, Step::Forward);
    Ok(events.into_iter().next())
}

fn data(t: &mut Tracker, out: &mut Vec<EventBody>, len: usize) {
    t.on_server_header(tags::DATA_ROW, len, out);
}

fn query(sql: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(sql);
    b.put_u8(0);
    b.freeze()
}

fn parse(name: &str, sql: &[u8], oids: &[u32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(name.as_bytes());
    b.put_u8(0);
    b.put_slice(sql);
    b.put_u8(0);
    b.put_i16(oids.len() as i16);
    for o in oids {
        b.put_u32(*o);
    }
    b.freeze()
}

fn bind(portal: &str, statement: &str, values: &[Option<&[u8]>]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(portal.as_bytes());
    b.put_u8(0);
    b.put_slice(statement.as_bytes());
    b.put_u8(0);
    b.put_i16(0); // all text
    b.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                b.put_i32(v.len() as i32);
                b.put_slice(v);
            }
            None => b.put_i32(-1),
        }
    }
    b.put_i16(0);
    b.freeze()
}

fn execute(portal: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(portal.as_bytes());
    b.put_u8(0);
    b.put_i32(0);
    b.freeze()
}

fn rules(max_sql_bytes: usize, redaction: Redaction) -> Arc<ContentRules> {
    Arc::new(ContentRules {
        max_sql_bytes,
        redaction,
        ..ContentRules::default()
    })
}

/// The fields of a `query` event worth asserting on.
struct Q {
    sql: String,
    truncated: bool,
    sql_len: Option<u64>,
    sql_sha256: Option<String>,
    setting: Option<SettingChange>,
    params: Vec<Param>,
}

fn q(body: Option<EventBody>) -> Q {
    match body {
        Some(EventBody::Query {
            sql,
            truncated,
            sql_len,
            sql_sha256,
            setting_change,
            params,
            ..
        }) => Q {
            sql,
            truncated,
            sql_len,
            sql_sha256,
            setting: setting_change,
            params,
        },
        other => panic!("expected a query event, got {other:?}"),
    }
}

#[test]
fn long_sql_is_cut_with_length_and_hash() {
    let mut t = Tracker::new(rules(64, Redaction::none()));
    let sql = format!("select '{}'", "x".repeat(200));
    let e = q(client(&mut t, tags::QUERY, query(sql.as_bytes())).unwrap());
    assert!(e.truncated);
    assert_eq!(e.sql, &sql[..64]);
    assert_eq!(e.sql_len, Some(sql.len() as u64));
    assert_eq!(
        e.sql_sha256.as_deref(),
        Some(sha256_hex(sql.as_bytes()).as_str())
    );

    let short = q(client(&mut t, tags::QUERY, query(b"select 1")).unwrap());
    assert!(!short.truncated);
    assert_eq!((short.sql_len, short.sql_sha256), (None, None));
}

#[test]
fn invalid_utf8_sql_is_escaped_losslessly() {
    let mut t = Tracker::default();
    let raw: &[u8] = b"select '\xff\xfe' as \"caf\xc3\xa9\", '\xe2\x82'";
    let e = q(client(&mut t, tags::QUERY, query(raw)).unwrap());
    assert_eq!(unescape_bytes(&e.sql).unwrap(), raw);
    assert!(e.sql.contains("café"), "{}", e.sql);
    // Extended protocol: the statement's SQL goes through the same encoding.
    client(&mut t, tags::PARSE, parse("s", raw, &[])).unwrap();
    client(&mut t, tags::BIND, bind("", "s", &[])).unwrap();
    let e = q(client(&mut t, tags::EXECUTE, execute("")).unwrap());
    assert_eq!(unescape_bytes(&e.sql).unwrap(), raw);
}

#[test]
fn redaction_withholds_matching_parameters() {
    let redaction = Redaction::new(false, &[r"^\d{16}$".to_owned()]).unwrap();
    let mut t = Tracker::new(rules(1024, redaction));
    client(
        &mut t,
        tags::PARSE,
        parse("", b"insert into cards values ($1, $2, $3)", &[25, 25, 0]),
    )
    .unwrap();
    client(
        &mut t,
        tags::BIND,
        bind("", "", &[Some(b"4111111111111111"), Some(b"alice"), None]),
    )
    .unwrap();
    let e = q(client(&mut t, tags::EXECUTE, execute("")).unwrap());
    assert!(e.params[0].redacted);
    assert_eq!(e.params[0].value, None);
    assert_eq!(e.params[0].type_oid, Some(25));
    assert!(!e.params[1].redacted);
    assert_eq!(e.params[1].value.as_deref(), Some("alice"));
    assert!(!e.params[2].redacted && e.params[2].value.is_none());

    let mut all = Tracker::new(rules(1024, Redaction::new(true, &[]).unwrap()));
    client(&mut all, tags::PARSE, parse("", b"select $1, $2", &[])).unwrap();
    client(&mut all, tags::BIND, bind("", "", &[Some(b"x"), None])).unwrap();
    let e = q(client(&mut all, tags::EXECUTE, execute("")).unwrap());
    assert!(e.params.iter().all(|p| p.redacted && p.value.is_none()));
}

#[test]
fn setting_changes_are_flagged_in_both_protocols() {
    let mut t = Tracker::default();
    let e = q(client(&mut t, tags::QUERY, query(b"/* hi */ SET ROLE admin")).unwrap());
    assert_eq!(e.setting, Some(SettingChange::Role));
    let e = q(client(&mut t, tags::QUERY, query(b"select 1")).unwrap());
    assert_eq!(e.setting, None);
    client(
        &mut t,
        tags::PARSE,
        parse("p", b"select set_config('search_path', $1, false)", &[]),
    )
    .unwrap();
    for _ in 0..2 {
        client(&mut t, tags::BIND, bind("", "p", &[Some(b"evil")])).unwrap();
        let e = q(client(&mut t, tags::EXECUTE, execute("")).unwrap());
        assert_eq!(e.setting, Some(SettingChange::SearchPath));
    }
}

fn backend(tag: u8, body: &[u8], t: &mut Tracker, out: &mut Vec<EventBody>) {
    t.on_server(tag, body, out);
}

fn result_bytes(events: &[EventBody]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            EventBody::QueryResult {
                query_id, bytes, ..
            } => Some((*query_id, *bytes)),
            _ => None,
        })
        .collect()
}

#[test]
fn returned_bytes_are_counted_per_query() {
    let mut t = Tracker::default();
    let mut out = Vec::new();
    // Simple query with two statements: both results count for the one query.
    client(
        &mut t,
        tags::QUERY,
        query(b"select a from t; select b from t"),
    )
    .unwrap();
    data(&mut t, &mut out, 10);
    data(&mut t, &mut out, 20);
    backend(tags::COMMAND_COMPLETE, b"SELECT 2\0", &mut t, &mut out);
    data(&mut t, &mut out, 5);
    backend(tags::COMMAND_COMPLETE, b"SELECT 1\0", &mut t, &mut out);
    backend(tags::READY_FOR_QUERY, b"I", &mut t, &mut out);
    assert_eq!(result_bytes(&out), vec![(1, 35)]);
    out.clear();

    // A pipeline of two Executes and a Sync: each gets its own rows' bytes.
    client(&mut t, tags::PARSE, parse("", b"select x from t", &[])).unwrap();
    client(&mut t, tags::BIND, bind("", "", &[])).unwrap();
    client(&mut t, tags::EXECUTE, execute("")).unwrap();
    client(&mut t, tags::BIND, bind("", "", &[])).unwrap();
    client(&mut t, tags::EXECUTE, execute("")).unwrap();
    client(&mut t, tags::SYNC, Bytes::new()).unwrap();
    backend(tags::PARSE_COMPLETE, b"", &mut t, &mut out);
    backend(tags::BIND_COMPLETE, b"", &mut t, &mut out);
    data(&mut t, &mut out, 7);
    backend(tags::COMMAND_COMPLETE, b"SELECT 1\0", &mut t, &mut out);
    backend(tags::BIND_COMPLETE, b"", &mut t, &mut out);
    data(&mut t, &mut out, 8);
    data(&mut t, &mut out, 9);
    backend(tags::COMMAND_COMPLETE, b"SELECT 2\0", &mut t, &mut out);
    backend(tags::READY_FOR_QUERY, b"I", &mut t, &mut out);
    assert_eq!(result_bytes(&out), vec![(2, 7), (3, 17)]);
    out.clear();

    // COPY TO STDOUT: CopyData counts for the query and for the copy event.
    client(&mut t, tags::QUERY, query(b"copy t to stdout")).unwrap();
    backend(tags::COPY_OUT_RESPONSE, b"\0\0\0", &mut t, &mut out);
    data(&mut t, &mut out, 100);
    data(&mut t, &mut out, 50);
    backend(tags::COMMAND_COMPLETE, b"COPY 2\0", &mut t, &mut out);
    backend(tags::READY_FOR_QUERY, b"I", &mut t, &mut out);
    assert_eq!(result_bytes(&out), vec![(4, 150)]);
    assert!(out.iter().any(|e| matches!(
        e,
        EventBody::Copy {
            bytes: 150,
            rows: Some(2),
            ..
        }
    )));
    out.clear();

    // Rows sent before an error still count for the failed query.
    client(&mut t, tags::QUERY, query(b"select 1/(x-3) from t")).unwrap();
    data(&mut t, &mut out, 12);
    backend(
        tags::ERROR_RESPONSE,
        b"SERROR\0C22012\0Mdivision by zero\0\0",
        &mut t,
        &mut out,
    );
    backend(tags::READY_FOR_QUERY, b"I", &mut t, &mut out);
    assert_eq!(result_bytes(&out), vec![(5, 12)]);
}
