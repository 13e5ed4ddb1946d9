//! Encodes an [`Event`] as its log line: byte for byte what `serde_json::to_writer`
//! writes for it, in less CPU.
//!
//! The writer encodes every event under the log's lock, twice per transaction, so this
//! is on every query's path. The derived serde encoding spends most of its time on the
//! context every event repeats (`prev`, `ts`, session, identity, target, role, grant):
//! the flattened map, `collect_str` through `fmt` for the hash and the timestamp, and
//! serde_json's byte-at-a-time escaping of strings that need none (hex, digits, uuids).
//! Here that context is written directly (hex and digits from tables, uuids with
//! `uuid`'s encoder, names copied when they need no escaping). The bodies of `query`
//! and `query_result` are written the same way (`body`); every other kind's body is
//! serialized by serde_json and spliced in. The serde derive on [`Event`] remains the
//! definition of the format; tests check this encoding equals it for every kind and for
//! strings that need escaping.

mod body;

use jiff::tz::Offset;
use jiff::Timestamp;
use uuid::Uuid;

use crate::chain::LineHash;
use crate::event::Event;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Scratch space for integers.
type Digits = itoa::Buffer;

/// Appends `event` as one JSON object (no trailing newline) to `out`. On error `out`
/// may hold a partial object; the caller truncates it.
pub fn encode(event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    // Taken apart without `..`: a field added to `Event` must be written here too.
    let Event {
        v,
        seq,
        prev,
        ts,
        session_id,
        identity,
        target,
        role,
        grant_id,
        body,
    } = event;
    let mut digits = Digits::new();
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(digits.format(*v).as_bytes());
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(digits.format(*seq).as_bytes());
    if let Some(prev) = prev {
        out.extend_from_slice(b",\"prev\":\"");
        hash(prev, out);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"ts\":\"");
    timestamp(ts, out);
    out.push(b'"');
    if let Some(id) = session_id {
        out.extend_from_slice(b",\"session_id\":");
        uuid(id, out);
    }
    for (key, value) in [
        (&b",\"identity\":"[..], identity),
        (b",\"target\":", target),
        (b",\"role\":", role),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(key);
            string(value, out)?;
        }
    }
    if let Some(id) = grant_id {
        out.extend_from_slice(b",\"grant_id\":");
        uuid(id, out);
    }
    if body::write(body, out, &mut digits)? {
        return Ok(());
    }
    // The body is an internally tagged object, `{"kind":…}`: its fields continue ours.
    let start = out.len();
    serde_json::to_writer(&mut *out, body)?;
    match out.get_mut(start) {
        Some(open) if *open == b'{' => *open = b',',
        _ => {
            return Err(serde::ser::Error::custom(
                "an event body did not serialize as a JSON object",
            ))
        }
    }
    Ok(())
}

/// 64 lowercase hex digits.
fn hash(hash: &LineHash, out: &mut Vec<u8>) {
    for b in hash.0 {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

/// `"xxxxxxxx-xxxx-…"`, lowercase, with quotes.
fn uuid(id: &Uuid, out: &mut Vec<u8>) {
    out.push(b'"');
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.push(b'"');
}

/// A JSON string: copied as is when nothing in it needs escaping (the usual identity,
/// target and role names), else escaped by serde_json.
fn string(s: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as [`crate::time::display_micros`] renders it; years
/// outside 0000–9999 (which jiff can hold) go through that renderer.
fn timestamp(ts: &Timestamp, out: &mut Vec<u8>) {
    let dt = Offset::UTC.to_datetime(*ts);
    let year = dt.year();
    if !(0..=9999).contains(&year) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}", crate::time::display_micros(ts));
        return;
    }
    let year = year.unsigned_abs();
    push_digits(out, u32::from(year), 4);
    out.push(b'-');
    push_digits(out, u32::from(dt.month().unsigned_abs()), 2);
    out.push(b'-');
    push_digits(out, u32::from(dt.day().unsigned_abs()), 2);
    out.push(b'T');
    push_digits(out, u32::from(dt.hour().unsigned_abs()), 2);
    out.push(b':');
    push_digits(out, u32::from(dt.minute().unsigned_abs()), 2);
    out.push(b':');
    push_digits(out, u32::from(dt.second().unsigned_abs()), 2);
    out.push(b'.');
    push_digits(out, dt.subsec_nanosecond().unsigned_abs() / 1000, 6);
    out.push(b'Z');
}

/// `value` as exactly `width` decimal digits (zero-padded; `value` fits).
fn push_digits(out: &mut Vec<u8>, value: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push(b'0' + ((value / div) % 10) as u8);
        div /= 10;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::event::{EventBody, Protocol};

    fn query(identity: &str, ts: &str, prev: Option<LineHash>) -> Event {
        let mut e = Event::new(EventBody::Query {
            query_id: 7,
            protocol: Protocol::Simple,
            sql: "SELECT '\"\\\n\u{1}é';".into(),
            statement: None,
            portal: None,
            params: vec![],
            function_oid: None,
            params_from: None,
            truncated: false,
            sql_len: None,
            sql_sha256: None,
            setting_change: None,
        })
        .with_ts(ts.parse().unwrap())
        .with_identity(identity)
        .with_target("prod")
        .with_role("read\"only")
        .with_session(Uuid::now_v7())
        .with_grant(Uuid::now_v7());
        e.seq = 123_456_789;
        e.prev = prev;
        e
    }

    fn same_as_serde(event: &Event) {
        let mut fast = Vec::new();
        encode(event, &mut fast).unwrap();
        let slow = serde_json::to_vec(event).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow)
        );
    }

    #[test]
    fn equals_serde_for_names_needing_escapes_and_odd_times() {
        let prev = Some(LineHash::of_line(b"x"));
        for identity in [
            "alice",
            "",
            "a\"b",
            "back\\slash",
            "tab\there",
            "ünï",
            "\u{7f}",
        ] {
            for ts in [
                "2026-11-27T23:38:17.123456Z",
                "2026-01-02T03:04:05Z",
                "0001-01-01T00:00:00.000001Z",
                "9999-12-30T21:59:59.999999Z",
                "-000044-03-15T12:00:00Z",
            ] {
                same_as_serde(&query(identity, ts, prev));
                same_as_serde(&query(identity, ts, None));
            }
        }
    }

    #[test]
    fn equals_serde_without_any_context() {
        same_as_serde(&Event::new(EventBody::AuthFailure {
            client_addr: "10.0.0.1:5".into(),
            reason: "bad password".into(),
        }));
    }
}
