//! Reading single fields straight from the bytes of a log line, without parsing JSON.
//!
//! jitgate writes each event with `serde_json` in compact form, so a top-level field is
//! the bytes `"name":` followed by its value, and such a key can never occur inside a
//! string value (a quote inside a JSON string is always escaped as `\"`). Nested objects
//! (parameters) use none of the keys looked up here. So `memmem` on `"name":"` finds
//! exactly the field — at SIMD speed, which is what lets a scan skip most lines after
//! looking at a few hundred bytes of each.

use memchr::memmem::Finder;

/// The event kinds a scan distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    SessionStart,
    Query,
    QueryResult,
    Copy,
    SessionEnd,
    GrantIssued,
    Other,
}

/// Precompiled searchers for the keys scans look at.
pub(crate) struct Keys {
    kind: Finder<'static>,
    ts: Finder<'static>,
    session_id: Finder<'static>,
    sql: Finder<'static>,
    query_id: Finder<'static>,
    sqlstate: Finder<'static>,
}

impl Keys {
    pub(crate) fn new() -> Keys {
        Keys {
            kind: Finder::new(b"\"kind\":\"").into_owned(),
            ts: Finder::new(b"\"ts\":\"").into_owned(),
            session_id: Finder::new(b"\"session_id\":\"").into_owned(),
            sql: Finder::new(b"\"sql\":\"").into_owned(),
            query_id: Finder::new(b"\"query_id\":").into_owned(),
            sqlstate: Finder::new(b"\"sqlstate\":\"").into_owned(),
        }
    }

    /// The event's kind; `None` when the line does not look like a compact event (a
    /// hand-edited or damaged line: the caller parses it to find out).
    pub(crate) fn kind(&self, line: &[u8]) -> Option<Kind> {
        let v = string_at(line, &self.kind)?;
        Some(match v {
            b"query" => Kind::Query,
            b"query_result" => Kind::QueryResult,
            b"session_start" => Kind::SessionStart,
            b"session_end" => Kind::SessionEnd,
            b"copy" => Kind::Copy,
            b"grant_issued" => Kind::GrantIssued,
            _ => Kind::Other,
        })
    }

    /// The raw `ts` string (`2026-11-27T23:38:17.123456Z`).
    pub(crate) fn ts<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        string_at(line, &self.ts)
    }

    /// The raw `session_id` string (hyphenated lowercase uuid).
    pub(crate) fn session_id<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        string_at(line, &self.session_id)
    }

    /// The `query_id` number.
    pub(crate) fn query_id(&self, line: &[u8]) -> Option<u64> {
        let at = self.query_id.find(line)? + self.query_id.needle().len();
        let digits = &line[at..];
        let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
    }

    /// Whether the line has a `sqlstate` (a `query_result` of a failed query).
    pub(crate) fn has_sqlstate(&self, line: &[u8]) -> bool {
        self.sqlstate.find(line).is_some()
    }

    /// The `sql` string exactly as stored in the line, still JSON-escaped.
    pub(crate) fn sql_escaped<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        string_at(line, &self.sql)
    }
}

/// The raw (still escaped) content of the string value that follows `key` (a finder for
/// `"name":"`), up to its closing quote.
fn string_at<'a>(line: &'a [u8], key: &Finder<'_>) -> Option<&'a [u8]> {
    let start = key.find(line)? + key.needle().len();
    let rest = &line[start..];
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'"', b'\\', &rest[i..]) {
        let at = i + off;
        if rest[at] == b'"' {
            return Some(&rest[..at]);
        }
        i = at + 2; // skip the escaped character
        if i > rest.len() {
            return None;
        }
    }
    None
}

/// Decodes the content of a JSON string (as returned by the accessors above) when it has
/// escapes; borrows it otherwise.
pub(crate) fn unescape_json(raw: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if !raw.contains(&b'\\') {
        return Some(std::borrow::Cow::Borrowed(raw));
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    let s: String = serde_json::from_slice(&quoted).ok()?;
    Some(std::borrow::Cow::Owned(s.into_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_from_a_real_event_line() {
        let line = br#"{"v":1,"seq":7,"ts":"2026-01-02T03:04:05.000006Z","session_id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","identity":"alice","kind":"query","query_id":42,"protocol":"simple","sql":"select \"kind\":\"x\", '\\\\'","params":[]}"#;
        let k = Keys::new();
        assert_eq!(k.kind(line), Some(Kind::Query));
        assert_eq!(k.ts(line).unwrap(), b"2026-01-02T03:04:05.000006Z");
        assert_eq!(
            k.session_id(line).unwrap(),
            b"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
        );
        assert_eq!(k.query_id(line), Some(42));
        let sql = k.sql_escaped(line).unwrap();
        assert_eq!(sql, br#"select \"kind\":\"x\", '\\\\'"#);
        assert_eq!(&*unescape_json(sql).unwrap(), br#"select "kind":"x", '\\'"#);
        assert!(!k.has_sqlstate(line));
    }

    #[test]
    fn a_key_inside_a_string_is_not_a_field() {
        // The sql mentions "kind":"session_end" but the real kind comes first anyway;
        // here the only "kind" is inside a string, so there is none.
        let line = br#"{"v":1,"sql":"\"kind\":\"session_end\""}"#;
        assert_eq!(Keys::new().kind(line), None);
    }

    #[test]
    fn damaged_lines_do_not_panic() {
        let k = Keys::new();
        for line in [
            &b""[..],
            b"{",
            br#"{"kind":""#,
            br#"{"kind":"query\"#,
            br#"{"query_id":"#,
            br#"{"query_id":99999999999999999999999}"#,
        ] {
            let _ = (k.kind(line), k.query_id(line), k.sql_escaped(line));
        }
    }
}
