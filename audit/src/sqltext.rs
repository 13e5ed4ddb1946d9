//! How the SQL text of a `query` event is recorded: losslessly escaped, and above a size
//! limit cut to its head with the whole text's length and SHA-256 — never cut silently.
//!
//! The limit counts the bytes the client sent (before escaping), so it bounds what one
//! statement can add to the log whatever its encoding; the cut backs off to a UTF-8
//! character boundary so the head does not end in a split character.

use sha2::{Digest, Sha256};

use crate::escape::escape_bytes;

/// Default for `audit.max_sql_bytes`: large enough for any hand-written or ORM statement,
/// small enough that a multi-megabyte generated `INSERT … VALUES` does not bloat the log.
pub const DEFAULT_MAX_SQL_BYTES: usize = 64 * 1024;

/// The SQL fields of a `query` event, ready to be put in [`crate::EventBody::Query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedSql {
    /// The (head of the) text, escaped with [`escape_bytes`].
    pub sql: String,
    /// Whether `sql` is only the head.
    pub truncated: bool,
    /// Length of the whole text in bytes, when truncated.
    pub sql_len: Option<u64>,
    /// Lowercase hex SHA-256 of the whole text, when truncated.
    pub sql_sha256: Option<String>,
}

/// Records `raw` (the SQL bytes from the wire) under a limit of `max_bytes`.
pub fn record_sql(raw: &[u8], max_bytes: usize) -> RecordedSql {
    if raw.len() <= max_bytes {
        return RecordedSql {
            sql: escape_bytes(raw),
            truncated: false,
            sql_len: None,
            sql_sha256: None,
        };
    }
    let cut = char_boundary_at_or_before(raw, max_bytes);
    RecordedSql {
        sql: escape_bytes(&raw[..cut]),
        truncated: true,
        sql_len: Some(raw.len() as u64),
        sql_sha256: Some(sha256_hex(raw)),
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::encode(&Sha256::digest(bytes))
}

/// `at` moved back (by at most 3 bytes) when it falls inside a UTF-8 character; where the
/// bytes around it are not UTF-8, `at` itself (the escape keeps them lossless anyway).
pub(crate) fn char_boundary_at_or_before(raw: &[u8], at: usize) -> usize {
    let at = at.min(raw.len());
    let start = at.saturating_sub(3);
    for cut in (start..at).rev() {
        let b = raw[cut];
        if b & 0xc0 == 0x80 {
            continue; // a continuation byte: keep looking for the lead byte
        }
        let len = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return at,
        };
        return if cut + len > at { cut } else { at };
    }
    at
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::escape::unescape_bytes;

    #[test]
    fn short_sql_is_kept_whole() {
        let r = record_sql(b"select 1", 8);
        assert_eq!(r.sql, "select 1");
        assert!(!r.truncated);
        assert_eq!((r.sql_len, r.sql_sha256), (None, None));
    }

    #[test]
    fn long_sql_keeps_head_length_and_hash() {
        let raw = b"select 123456789";
        let r = record_sql(raw, 9);
        assert_eq!(r.sql, "select 12");
        assert!(r.truncated);
        assert_eq!(r.sql_len, Some(16));
        // sha256("select 123456789"), computed independently with sha256sum.
        assert_eq!(
            r.sql_sha256.as_deref(),
            Some("2b4b5242151e532aeced4930c1c14d77d2c8d7f2f6a162b9975e390fcc53b5c6")
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_cut_does_not_split_a_character() {
        // "é" is two bytes; a limit of 2 would split it after 'a'.
        let raw = "aé€b".as_bytes();
        assert_eq!(record_sql(raw, 2).sql, "a");
        assert_eq!(record_sql(raw, 3).sql, "aé");
        assert_eq!(record_sql(raw, 4).sql, "aé");
        assert_eq!(record_sql(raw, 5).sql, "aé");
        assert_eq!(record_sql(raw, 6).sql, "aé€");
    }

    #[test]
    fn invalid_utf8_is_escaped_and_cut_losslessly() {
        let raw = b"select '\xff\x80\x80\x80\x80' || '\x00\x01'";
        let whole = record_sql(raw, 1024);
        assert_eq!(unescape_bytes(&whole.sql).unwrap(), raw);
        assert!(
            whole.sql.contains("\u{0}00\u{1}"),
            "NUL escaped, other controls kept: {:?}",
            whole.sql
        );
        // Cutting inside a run of stray continuation bytes keeps exactly `max` bytes.
        let head = record_sql(raw, 11);
        assert_eq!(unescape_bytes(&head.sql).unwrap(), &raw[..11]);
        assert_eq!(head.sql_len, Some(raw.len() as u64));
    }
}
