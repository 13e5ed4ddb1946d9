//! The lossless text encoding shared by parameter values and SQL text: any bytes as a
//! string. Valid UTF-8 other than NUL is kept as is; every other byte becomes `\0hh`
//! (U+0000 and two lowercase hex digits, `"\u0000ff"` in JSON). PostgreSQL text can
//! never contain NUL, so a NUL in a stored value always starts an escape and the
//! encoding is reversible for any byte string ([`unescape_bytes`] undoes
//! [`escape_bytes`]).

use crate::error::AuditError;

/// The character that introduces a `\0hh` byte escape in a text value.
pub const BYTE_ESCAPE: char = '\0';

/// Encodes any bytes as a string, losslessly: valid UTF-8 other than NUL is kept as is,
/// every other byte becomes `\0hh` (U+0000 and two lowercase hex digits). Used for text
/// parameter values and for SQL text, which the client may send in any encoding.
pub fn escape_bytes(bytes: &[u8]) -> String {
    // Fast path: plain UTF-8 without NUL is stored verbatim (one copy).
    if !bytes.contains(&0) {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return s.to_owned();
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == BYTE_ESCAPE {
                push_escape(&mut out, 0);
            } else {
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            push_escape(&mut out, b);
        }
    }
    out
}

fn push_escape(out: &mut String, b: u8) {
    out.push(BYTE_ESCAPE);
    out.push_str(const_hex::Buffer::<1>::new().format(&[b]));
}

/// Undoes [`escape_bytes`]: the exact original bytes. Errs on a malformed escape (a NUL
/// not followed by two hex digits), which `escape_bytes` never produces.
pub fn unescape_bytes(value: &str) -> Result<Vec<u8>, AuditError> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find(BYTE_ESCAPE) {
        out.extend_from_slice(&rest.as_bytes()[..pos]);
        let hex = rest.get(pos + 1..pos + 3).ok_or(AuditError::InvalidParam(
            "truncated \\0hh escape in text value",
        ))?;
        let [b] = const_hex::decode_to_array::<_, 1>(hex)
            .map_err(|_| AuditError::InvalidParam("malformed \\0hh escape in text value"))?;
        out.push(b);
        rest = &rest[pos + 3..];
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escape_bytes_roundtrips_sql_like_text() {
        let raw = b"select '\xff' -- \xe2\x82\x00";
        assert_eq!(unescape_bytes(&escape_bytes(raw)).unwrap(), raw);
        let odd = b"select '\xff\x00\xc3(' as x";
        let escaped = escape_bytes(odd);
        assert_eq!(escaped, "select '\u{0}ff\u{0}00\u{0}c3(' as x");
        assert_eq!(unescape_bytes(&escaped).unwrap(), odd);
    }
}
