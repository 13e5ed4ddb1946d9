//! Lenient decoders for the upstream messages the relay inspects to complete audit
//! records: CommandComplete, ErrorResponse/NoticeResponse, ReadyForQuery.
//!
//! The relay forwards these frames untouched whatever these functions say, so they
//! return `Option` (or a best-effort struct) instead of errors, and never panic.

/// Commands whose CommandComplete tag ends in a row count
/// (<https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COMMANDCOMPLETE>).
const TAGS_WITH_ROWS: [&str; 8] = [
    "INSERT", "UPDATE", "DELETE", "SELECT", "MOVE", "FETCH", "COPY", "MERGE",
];

/// A decoded CommandComplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTag {
    /// The command: `INSERT`, `SELECT`, … for commands that report a row count (the
    /// counts are removed), otherwise the whole tag as sent, e.g. `CREATE TABLE`.
    pub tag: String,
    /// Rows affected or returned, for the commands that report it.
    pub rows: Option<u64>,
}

/// Decodes a CommandComplete body (`INSERT 0 5\0`); `None` unless it is one
/// NUL-terminated string.
pub fn parse_command_complete(body: &[u8]) -> Option<CommandTag> {
    let (text, rest) = split_cstr(body)?;
    if !rest.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(text);
    let mut words = text.split(' ');
    let first = words.next().unwrap_or_default();
    if TAGS_WITH_ROWS.contains(&first) {
        if let Some(rows) = words.next_back().and_then(|n| n.parse::<u64>().ok()) {
            return Some(CommandTag {
                tag: first.to_owned(),
                rows: Some(rows),
            });
        }
    }
    Some(CommandTag {
        tag: text.into_owned(),
        rows: None,
    })
}

/// The fields of an ErrorResponse or NoticeResponse that audit records keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Non-localized severity ('V') if present, else the localized one ('S').
    pub severity: Option<String>,
    /// SQLSTATE ('C').
    pub code: Option<String>,
    /// Primary message ('M').
    pub message: Option<String>,
    /// Detail ('D').
    pub detail: Option<String>,
    /// Hint ('H').
    pub hint: Option<String>,
    /// The server's source routine that raised it ('R'), never translated: tells the
    /// errors raised before a statement runs from those raised while it runs.
    pub routine: Option<String>,
    /// Where the error arose ('W', the context lines), translated: only whether there is
    /// one is meaningful here (a Bind parameter's conversion error names the parameter).
    pub context: Option<String>,
}

/// Decodes the fields of an ErrorResponse/NoticeResponse body. Never fails: unknown
/// fields are skipped, text is decoded lossily, a missing final NUL ends the last field.
pub fn parse_error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    let mut localized_severity = None;
    let mut rest = body;
    while let Some((&kind, after)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let (value, next) = split_cstr(after).unwrap_or((after, &[]));
        rest = next;
        let value = || Some(String::from_utf8_lossy(value).into_owned());
        match kind {
            b'S' => localized_severity = value(),
            b'V' => out.severity = value(),
            b'C' => out.code = value(),
            b'M' => out.message = value(),
            b'D' => out.detail = value(),
            b'H' => out.hint = value(),
            b'R' => out.routine = value(),
            b'W' => out.context = value(),
            _ => {}
        }
    }
    if out.severity.is_none() {
        out.severity = localized_severity;
    }
    out
}

/// Decodes ReadyForQuery: the transaction status byte (`I`, `T` or `E`).
pub fn parse_ready_for_query(body: &[u8]) -> Option<u8> {
    match body {
        [status @ (b'I' | b'T' | b'E')] => Some(*status),
        _ => None,
    }
}

/// Splits at the first NUL: (string, bytes after the NUL).
fn split_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((buf.get(..nul)?, buf.get(nul + 1..)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn tag(body: &[u8]) -> Option<(String, Option<u64>)> {
        parse_command_complete(body).map(|t| (t.tag, t.rows))
    }

    #[test]
    fn command_complete_tags_and_rows() {
        assert_eq!(tag(b"INSERT 0 5\0"), Some(("INSERT".into(), Some(5))));
        assert_eq!(tag(b"SELECT 3\0"), Some(("SELECT".into(), Some(3))));
        assert_eq!(tag(b"UPDATE 0\0"), Some(("UPDATE".into(), Some(0))));
        assert_eq!(
            tag(b"DELETE 18446744073709551615\0"),
            Some(("DELETE".into(), Some(u64::MAX)))
        );
        assert_eq!(tag(b"MERGE 2\0"), Some(("MERGE".into(), Some(2))));
        assert_eq!(tag(b"COPY 10\0"), Some(("COPY".into(), Some(10))));
        assert_eq!(tag(b"FETCH 1\0"), Some(("FETCH".into(), Some(1))));
        assert_eq!(tag(b"MOVE 7\0"), Some(("MOVE".into(), Some(7))));
        assert_eq!(tag(b"CREATE TABLE\0"), Some(("CREATE TABLE".into(), None)));
        assert_eq!(tag(b"BEGIN\0"), Some(("BEGIN".into(), None)));
        assert_eq!(tag(b"SELECT x\0"), Some(("SELECT x".into(), None)));
        assert_eq!(tag(b"\0"), Some(("".into(), None)));
        assert_eq!(tag(b"SELECT 1"), None, "no NUL");
        assert_eq!(tag(b"SELECT 1\0x"), None, "trailing bytes");
    }

    #[test]
    fn error_fields_best_effort() {
        let body = b"SERREUR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0P15\0Dd\0Hh\0\0";
        let f = parse_error_fields(body);
        assert_eq!(f.severity.as_deref(), Some("ERROR"));
        assert_eq!(f.code.as_deref(), Some("42P01"));
        assert_eq!(f.message.as_deref(), Some("relation \"t\" does not exist"));
        assert_eq!(f.detail.as_deref(), Some("d"));
        assert_eq!(f.hint.as_deref(), Some("h"));
        let f = parse_error_fields(b"C22021\0Wunnamed portal parameter $1\0");
        assert_eq!(f.context.as_deref(), Some("unnamed portal parameter $1"));

        // only the localized severity: it is used
        let f = parse_error_fields(b"SFATAL\0C57P01\0");
        assert_eq!(f.severity.as_deref(), Some("FATAL"));
        // truncated last field and invalid UTF-8
        let f = parse_error_fields(b"C28P01\0M\xffoops");
        assert_eq!(f.code.as_deref(), Some("28P01"));
        assert_eq!(f.message.as_deref(), Some("\u{fffd}oops"));
        assert_eq!(parse_error_fields(b""), ErrorFields::default());
        assert_eq!(parse_error_fields(b"\0CXX000\0"), ErrorFields::default());
    }

    #[test]
    fn small_messages() {
        assert_eq!(parse_ready_for_query(b"I"), Some(b'I'));
        assert_eq!(parse_ready_for_query(b"E"), Some(b'E'));
        assert_eq!(parse_ready_for_query(b"X"), None);
        assert_eq!(parse_ready_for_query(b"II"), None);
        assert_eq!(parse_ready_for_query(b""), None);
    }
}
