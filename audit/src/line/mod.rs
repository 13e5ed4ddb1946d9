//! Encodes an [`Event`] as its log line: byte for byte what `serde_json::to_writer`
//! writes for it, in less CPU.
//!
//! The writer encodes every event under the log's lock, twice per transaction, so this
//! is on every query's path. The derived serde encoding spends most of its time on the
//! context every event repeats (`prev`, `ts`, session, identity, target, role, grant):
//! the flattened map, `collect_str` through `fmt` for the hash and the timestamp, and
//! serde_json's byte-at-a-time escaping of strings that need none (hex, digits, uuids).
//! Here that context is written directly, each field built on the stack and appended as
//! one slice: the hash and the uuids as hex (`const_hex`, several bytes per instruction),
//! the timestamp's digits in place, strings copied once a check of eight bytes at a
//! time finds nothing to escape (`plain`). Measured with callgrind on the
//! `audit/benches/encode.rs` events: 3 402 → 2 210 instructions for a `query` event,
//! 2 561 → 1 673 for a `query_result` (BENCHMARKS.md, "Audit lines encoded
//! directly, not through serde"). The bodies of `query` and `query_result` are written the same way
//! (`body`); every other kind's body is serialized by serde_json and spliced in. The
//! serde derive on [`Event`] remains the definition of the format; tests check this
//! encoding equals it for every kind and for strings that need escaping.

mod body;

use jiff::tz::Offset;
use jiff::Timestamp;
use uuid::Uuid;

use crate::chain::LineHash;
use crate::event::Event;

/// Scratch space for integers.
type Digits = itoa::Buffer;

/// 0x01 in every byte of a word: for the word-at-a-time escape check.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);

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

/// 64 lowercase hex digits, written as one slice.
fn hash(hash: &LineHash, out: &mut Vec<u8>) {
    out.extend_from_slice(const_hex::Buffer::<32>::new().format(&hash.0).as_bytes());
}

/// `"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"`, lowercase, with quotes, as one slice.
fn uuid(id: &Uuid, out: &mut Vec<u8>) {
    let mut hex = const_hex::Buffer::<16>::new();
    let digits = hex.format(id.as_bytes()).as_bytes();
    let mut text = [b'-'; 38];
    text[0] = b'"';
    text[1..9].copy_from_slice(&digits[0..8]);
    text[10..14].copy_from_slice(&digits[8..12]);
    text[15..19].copy_from_slice(&digits[12..16]);
    text[20..24].copy_from_slice(&digits[16..20]);
    text[25..37].copy_from_slice(&digits[20..32]);
    text[37] = b'"';
    out.extend_from_slice(&text);
}

/// A JSON string: copied as is when nothing in it needs escaping (the usual identity,
/// target and role names, most SQL), else escaped by serde_json.
fn string(s: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    if plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

/// Whether no byte of `s` needs escaping in a JSON string (a control character, `"` or
/// `\`), eight bytes at a time. Each test is the classic "has a byte below n" bit
/// trick: non-zero exactly when some byte of the word is below 0x20, or (after the XOR)
/// is the quote or the backslash. Bytes from 0x80 up (UTF-8) never match.
fn plain(s: &[u8]) -> bool {
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Non-zero when some byte of `v` is below `n` (n ≤ 0x80).
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let byte = |b: u8| ONES * u64::from(b);
    let needs_escape =
        |w: u64| (below(w, 0x20) | below(w ^ byte(b'"'), 1) | below(w ^ byte(b'\\'), 1)) != 0;
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if needs_escape(u64::from_ne_bytes(w)) {
            return false;
        }
    }
    // The last few bytes, padded with a byte that needs no escaping.
    let rest = words.remainder();
    let mut w = [b' '; 8];
    w[..rest.len()].copy_from_slice(rest);
    !needs_escape(u64::from_ne_bytes(w))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as [`crate::time::display_micros`] renders it, as one
/// slice; years outside 0000–9999 (which jiff can hold) go through that renderer.
fn timestamp(ts: &Timestamp, out: &mut Vec<u8>) {
    let dt = Offset::UTC.to_datetime(*ts);
    let year = dt.year();
    if !(0..=9999).contains(&year) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}", crate::time::display_micros(ts));
        return;
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let year = u32::from(year.unsigned_abs());
    put_digits(&mut text[0..2], year / 100);
    put_digits(&mut text[2..4], year % 100);
    put_digits(&mut text[5..7], u32::from(dt.month().unsigned_abs()));
    put_digits(&mut text[8..10], u32::from(dt.day().unsigned_abs()));
    put_digits(&mut text[11..13], u32::from(dt.hour().unsigned_abs()));
    put_digits(&mut text[14..16], u32::from(dt.minute().unsigned_abs()));
    put_digits(&mut text[17..19], u32::from(dt.second().unsigned_abs()));
    let micros = dt.subsec_nanosecond().unsigned_abs() / 1000;
    put_digits(&mut text[20..22], micros / 10_000);
    put_digits(&mut text[22..24], micros / 100 % 100);
    put_digits(&mut text[24..26], micros % 100);
    out.extend_from_slice(&text);
}

/// `value` (below 100) as two decimal digits into `at`.
fn put_digits(at: &mut [u8], value: u32) {
    // Both digits are below 10: the casts cannot truncate.
    at[0] = b'0' + (value / 10 % 10) as u8;
    at[1] = b'0' + (value % 10) as u8;
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
    fn uuids_are_hyphenated_lowercase() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        let mut out = Vec::new();
        uuid(&id, &mut out);
        assert_eq!(out, format!("\"{id}\"").as_bytes());
    }

    #[test]
    fn plain_agrees_with_a_byte_by_byte_check() {
        let naive = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        // Every pair of neighbouring bytes, at every offset of a word and across words.
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                for at in [0, 3, 6, 7, 8, 14] {
                    let mut s = [b'a'; 17];
                    s[at] = first;
                    s[at + 1] = second;
                    assert_eq!(plain(&s), naive(&s), "{first:#x} {second:#x} at {at}");
                }
            }
        }
        for len in 0..20 {
            assert!(plain(&vec![b'x'; len]));
            assert!(plain("é€".repeat(len).as_bytes()));
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
