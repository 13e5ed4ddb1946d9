//! Bind parameters as recorded in `query` events.
//!
//! Text-format values are stored as the UTF-8 string the client sent. Bytes that are not
//! valid UTF-8 (and NUL bytes) are escaped as U+0000 followed by two lowercase hex digits
//! (`"\u0000ff"` in JSON; see `escape.rs`). Binary-format values are standard base64
//! (with padding). A missing value (`null`) is SQL NULL — unless `redacted` is true: then
//! the value was withheld by a redaction rule and nothing about it is recorded.
//!
//! A value longer than `audit.max_param_bytes` (counted in bytes as sent) is recorded as
//! its head — cut at a character boundary for text — with `truncated`, the whole
//! value's length (`value_len`) and its SHA-256 (`value_sha256`), like SQL text (see
//! `sqltext.rs`): a reviewer can still prove which value ran, and one large value
//! cannot bloat the log.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::escape::{escape_bytes, unescape_bytes, BYTE_ESCAPE};
use crate::sqltext::{char_boundary_at_or_before, sha256_hex};

/// Default for `audit.max_param_bytes`: whole for identifiers, numbers, dates, names and
/// short documents; a bulk value (a file in a `bytea`, a large JSON document) is recorded
/// as its head, length and SHA-256.
pub const DEFAULT_MAX_PARAM_BYTES: usize = 4 * 1024;

/// Wire format code of a parameter (Bind message format codes 0 and 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamFormat {
    /// Format code 0: the value is the type's text representation.
    Text,
    /// Format code 1: the value is the type's binary send/recv representation.
    Binary,
}

/// One parameter of an extended-protocol execution or function call, as the client sent it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Param {
    /// How the value is encoded on the wire (and therefore in `value`).
    pub format: ParamFormat,
    /// Type OID from the Parse message, when the client specified one (0 is recorded as
    /// `None`-equivalent by the proxy: the server infers the type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_oid: Option<u32>,
    /// `None` = SQL NULL (or withheld, see `redacted`). Text: UTF-8 with `\0hh` escapes;
    /// binary: base64. Always written (as `null` for NULL) so a reader never mistakes NULL
    /// for a missing field.
    #[serde(default)]
    pub value: Option<String>,
    /// A redaction rule withheld the value: `value` is `null` whatever the client sent
    /// (even SQL NULL), so a redacted log says nothing about the value but that it was
    /// there. Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
    /// The value was longer than `audit.max_param_bytes`: `value` holds only its head
    /// (the first bytes as sent, cut at a character boundary for text), `value_len` and
    /// `value_sha256` describe the whole value. Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Length in bytes of the whole value as sent (only when `truncated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_len: Option<u64>,
    /// SHA-256 of the whole value as sent, lowercase hex (only when `truncated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_sha256: Option<String>,
}

impl Param {
    /// Builds the audit form of a parameter from the raw bytes of a Bind/FunctionCall
    /// message (`raw` is `None` for length -1, i.e. NULL). Never fails: any bytes encode.
    pub fn from_wire(format: ParamFormat, type_oid: Option<u32>, raw: Option<&[u8]>) -> Param {
        Param::from_wire_capped(format, type_oid, raw, usize::MAX)
    }

    /// Like [`Param::from_wire`], with values longer than `max_bytes` recorded as their
    /// head, length and SHA-256 (`truncated`).
    pub fn from_wire_capped(
        format: ParamFormat,
        type_oid: Option<u32>,
        raw: Option<&[u8]>,
        max_bytes: usize,
    ) -> Param {
        let mut truncated = false;
        let mut value_len = None;
        let mut value_sha256 = None;
        let value = raw.map(|bytes| {
            let head = if bytes.len() > max_bytes {
                truncated = true;
                value_len = Some(bytes.len() as u64);
                value_sha256 = Some(sha256_hex(bytes));
                let cut = match format {
                    ParamFormat::Text => char_boundary_at_or_before(bytes, max_bytes),
                    ParamFormat::Binary => max_bytes,
                };
                &bytes[..cut]
            } else {
                bytes
            };
            match format {
                ParamFormat::Text => escape_bytes(head),
                ParamFormat::Binary => base64::engine::general_purpose::STANDARD.encode(head),
            }
        });
        Param {
            format,
            type_oid,
            value,
            redacted: false,
            truncated,
            value_len,
            value_sha256,
        }
    }

    /// A parameter whose value a redaction rule withholds: only its format and type are
    /// recorded.
    pub fn redacted(format: ParamFormat, type_oid: Option<u32>) -> Param {
        Param {
            format,
            type_oid,
            value: None,
            redacted: true,
            truncated: false,
            value_len: None,
            value_sha256: None,
        }
    }

    /// The exact bytes the client sent (`None` for NULL): undoes the text escapes or the
    /// base64. Errs for redacted values (they were never recorded), truncated ones (use
    /// [`Param::head_bytes`]) and values that were not produced by [`Param::from_wire`].
    pub fn wire_bytes(&self) -> Result<Option<Vec<u8>>, AuditError> {
        if self.truncated {
            return Err(AuditError::InvalidParam(
                "the value was truncated: only its head, length and SHA-256 were recorded",
            ));
        }
        self.head_bytes()
    }

    /// The recorded bytes: the whole value, or its head when `truncated`. Errs like
    /// [`Param::wire_bytes`] otherwise.
    pub fn head_bytes(&self) -> Result<Option<Vec<u8>>, AuditError> {
        if self.redacted {
            return Err(AuditError::InvalidParam("the value was redacted"));
        }
        let Some(value) = &self.value else {
            return Ok(None);
        };
        match self.format {
            ParamFormat::Text => unescape_bytes(value).map(Some),
            ParamFormat::Binary => base64::engine::general_purpose::STANDARD
                .decode(value)
                .map(Some)
                .map_err(|_| AuditError::InvalidParam("binary value is not valid base64")),
        }
    }

    /// True when the text value holds escaped bytes (invalid UTF-8 or NUL), i.e. it is not
    /// the literal text the client sent.
    pub fn has_escapes(&self) -> bool {
        self.format == ParamFormat::Text
            && self
                .value
                .as_deref()
                .is_some_and(|v| v.contains(BYTE_ESCAPE))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn roundtrip(format: ParamFormat, raw: &[u8]) -> Param {
        let p = Param::from_wire(format, Some(25), Some(raw));
        assert_eq!(p.wire_bytes().unwrap().as_deref(), Some(raw), "{p:?}");
        p
    }

    #[test]
    fn valid_utf8_text_is_verbatim() {
        let p = roundtrip(ParamFormat::Text, "héllo \\x41 'q'".as_bytes());
        assert_eq!(p.value.as_deref(), Some("héllo \\x41 'q'"));
        assert!(!p.has_escapes());
    }

    #[test]
    fn invalid_utf8_and_nul_are_escaped_losslessly() {
        let p = roundtrip(ParamFormat::Text, b"a\xffb\x00c\xe2\x82");
        assert_eq!(p.value.as_deref(), Some("a\u{0}ffb\u{0}00c\u{0}e2\u{0}82"));
        assert!(p.has_escapes());
        // Valid multi-byte characters next to invalid bytes survive unchanged.
        roundtrip(ParamFormat::Text, "€\u{80}".as_bytes());
        roundtrip(
            ParamFormat::Text,
            &[0xc3, 0x28, 0xa0, 0xa1, 0xf0, 0x9f, 0x98, 0x80],
        );
    }

    #[test]
    fn every_byte_roundtrips() {
        let all: Vec<u8> = (0..=255u8).collect();
        roundtrip(ParamFormat::Text, &all);
        roundtrip(ParamFormat::Binary, &all);
    }

    #[test]
    fn binary_is_base64_and_null_is_none() {
        let p = roundtrip(ParamFormat::Binary, &[0, 1, 2, 255]);
        assert_eq!(p.value.as_deref(), Some("AAEC/w=="));
        let null = Param::from_wire(ParamFormat::Text, None, None);
        assert_eq!(null.value, None);
        assert_eq!(null.wire_bytes().unwrap(), None);
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        for bad in ["\u{0}f", "\u{0}zz", "\u{0}+f", "x\u{0}"] {
            let p = Param {
                format: ParamFormat::Text,
                type_oid: None,
                value: Some(bad.into()),
                redacted: false,
                truncated: false,
                value_len: None,
                value_sha256: None,
            };
            assert!(p.wire_bytes().is_err(), "{bad:?}");
        }
        let p = Param {
            format: ParamFormat::Binary,
            type_oid: None,
            value: Some("!!".into()),
            redacted: false,
            truncated: false,
            value_len: None,
            value_sha256: None,
        };
        assert!(p.wire_bytes().is_err());
    }

    #[test]
    fn redacted_values_are_absent_and_marked() {
        let p = Param::redacted(ParamFormat::Text, Some(25));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"format":"text","type_oid":25,"value":null,"redacted":true}"#
        );
        assert!(p.wire_bytes().is_err());
        let back: Param = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        // An ordinary value does not carry the flag at all.
        let plain = serde_json::to_string(&Param::from_wire(ParamFormat::Text, None, Some(b"x")));
        assert_eq!(plain.unwrap(), r#"{"format":"text","value":"x"}"#);
    }

    #[test]
    fn long_values_keep_head_length_and_hash() {
        let raw = b"select 123456789";
        let p = Param::from_wire_capped(ParamFormat::Text, Some(25), Some(raw), 9);
        assert_eq!(p.value.as_deref(), Some("select 12"));
        assert!(p.truncated);
        assert_eq!(p.value_len, Some(16));
        // sha256("select 123456789"), computed independently with sha256sum.
        assert_eq!(
            p.value_sha256.as_deref(),
            Some("2b4b5242151e532aeced4930c1c14d77d2c8d7f2f6a162b9975e390fcc53b5c6")
        );
        assert!(p.wire_bytes().is_err(), "a head is not the value");
        assert_eq!(p.head_bytes().unwrap().unwrap(), b"select 12");
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains(r#""truncated":true,"value_len":16,"value_sha256":"2b4b"#),
            "{json}"
        );
        let back: Param = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        // At the limit: whole, no extra fields.
        let whole = Param::from_wire_capped(ParamFormat::Text, None, Some(raw), 16);
        assert!(!whole.truncated);
        assert_eq!(
            (whole.value_len, whole.value_sha256.as_deref()),
            (None, None)
        );
        assert_eq!(whole.wire_bytes().unwrap().unwrap(), raw);
    }

    #[test]
    fn capping_text_does_not_split_a_character_and_binary_cuts_bytes() {
        let raw = "aé€b".as_bytes();
        let p = Param::from_wire_capped(ParamFormat::Text, None, Some(raw), 2);
        assert_eq!(p.value.as_deref(), Some("a"));
        assert_eq!(p.value_len, Some(raw.len() as u64));
        let bin = Param::from_wire_capped(ParamFormat::Binary, None, Some(&[0, 1, 2, 255]), 3);
        assert_eq!(bin.value.as_deref(), Some("AAEC"));
        assert_eq!(bin.head_bytes().unwrap().unwrap(), [0, 1, 2]);
        assert_eq!(bin.value_len, Some(4));
        // NULL is never truncated.
        let null = Param::from_wire_capped(ParamFormat::Text, None, None, 0);
        assert!(!null.truncated && null.value.is_none());
    }
}
