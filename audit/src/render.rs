//! Text helpers shared by the renderers (the `replay` transcript, the one-line summaries
//! of `audit tail`, the `audit search` lines) and the facts they show (`describe`).
//!
//! Everything in an audit event that came from a client (SQL, parameters, names) is
//! untrusted: control characters are escaped so replaying a log cannot inject terminal
//! escape sequences into a DBA's terminal or forge extra lines in `audit tail` output.

use std::fmt::Write as _;

use crate::escape::BYTE_ESCAPE;
use crate::param::{Param, ParamFormat};

/// Escapes control characters as `\u{…}`; keeps `\n` and `\t` when `multiline`.
pub(crate) fn clean(s: &str, multiline: bool) -> String {
    let keep = |c: char| multiline && (c == '\n' || c == '\t');
    if !s.chars().any(|c| c.is_control() && !keep(c)) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && !keep(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Collapses all whitespace runs (including newlines) to single spaces, escapes control
/// characters, and cuts the result to `max` characters with a trailing `…`.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let cleaned = clean(&joined, false);
    if cleaned.chars().count() <= max {
        return cleaned;
    }
    let mut cut: String = cleaned.chars().take(max).collect();
    cut.push('…');
    cut
}

/// `'text'` with quotes doubled, or `E'…'` with `\xNN` for escaped (non-UTF-8/NUL)
/// bytes, `NULL`, `<redacted>`, or the base64 of a binary value — as `$n = <this>`.
pub(crate) fn param_value(p: &Param) -> String {
    if p.redacted {
        return "<redacted>".to_owned();
    }
    let Some(value) = &p.value else {
        return "NULL".to_owned();
    };
    match p.format {
        ParamFormat::Binary => format!("'{value}'"),
        ParamFormat::Text if p.has_escapes() => {
            let mut out = String::from("E'");
            let mut chars = value.chars();
            while let Some(c) = chars.next() {
                match c {
                    BYTE_ESCAPE => {
                        out.push_str("\\x");
                        out.extend(chars.by_ref().take(2));
                    }
                    '\\' => out.push_str("\\\\"),
                    '\'' => out.push_str("''"),
                    c => out.push(c),
                }
            }
            out.push('\'');
            clean(&out, false)
        }
        ParamFormat::Text => format!("'{}'", clean(&value.replace('\'', "''"), false)),
    }
}

/// `(text, oid 23)`, `(binary base64, oid 17)`.
pub(crate) fn param_note(p: &Param) -> String {
    let format = match p.format {
        ParamFormat::Text if p.redacted => "text, redacted",
        ParamFormat::Binary if p.redacted => "binary, redacted",
        ParamFormat::Text if p.has_escapes() => "text, not valid UTF-8",
        ParamFormat::Text => "text",
        ParamFormat::Binary => "binary base64",
    };
    let format = if p.truncated {
        format!("{format}, head only")
    } else {
        format.to_owned()
    };
    match p.type_oid {
        Some(oid) => format!("({format}, oid {oid})"),
        None => format!("({format})"),
    }
}

/// Microseconds as milliseconds with three decimals: `0.412 ms`.
pub(crate) fn micros_as_ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// Milliseconds, switching to seconds from 1 s: `950 ms`, `901.234 s`.
pub(crate) fn millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{}.{:03} s", ms / 1000, ms % 1000)
    }
}

/// `1 row`, `3 rows`.
pub(crate) fn rows(n: u64) -> String {
    if n == 1 {
        "1 row".to_owned()
    } else {
        format!("{n} rows")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\u{1b}[31mb\nc", true), "a\\u{1b}[31mb\nc");
        assert_eq!(clean("a\nb", false), "a\\u{a}b");
        assert_eq!(one_line("select\n  1,\t2", 100), "select 1, 2");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn params_render_like_sql_literals() {
        let text = Param::from_wire(ParamFormat::Text, Some(25), Some(b"it's"));
        assert_eq!(param_value(&text), "'it''s'");
        assert_eq!(param_note(&text), "(text, oid 25)");
        let bad = Param::from_wire(ParamFormat::Text, None, Some(b"a\\\xff'"));
        assert_eq!(param_value(&bad), "E'a\\\\\\xff'''");
        assert_eq!(param_note(&bad), "(text, not valid UTF-8)");
        let bin = Param::from_wire(ParamFormat::Binary, Some(17), Some(&[1, 2]));
        assert_eq!(param_value(&bin), "'AQI='");
        assert_eq!(param_note(&bin), "(binary base64, oid 17)");
        assert_eq!(
            param_value(&Param::from_wire(ParamFormat::Text, None, None)),
            "NULL"
        );
        let hidden = Param::redacted(ParamFormat::Text, Some(25));
        assert_eq!(param_value(&hidden), "<redacted>");
        assert_eq!(param_note(&hidden), "(text, redacted, oid 25)");
    }

    #[test]
    fn durations() {
        assert_eq!(micros_as_ms(412), "0.412 ms");
        assert_eq!(micros_as_ms(12_345_678), "12345.678 ms");
        assert_eq!(millis(950), "950 ms");
        assert_eq!(millis(901_234), "901.234 s");
    }
}
