//! What a session records of its statements: [`ContentRules`] (the SQL size limit and
//! the parameter [`Redaction`]) turn raw wire bytes into the fields of a `query` event.
//!
//! The proxy builds one `ContentRules` per session from its target's and role's
//! configuration and applies it to every statement, so the rules are compiled once (at
//! config load) and applying them is a size check and, for redaction, one `RegexSet`
//! match per parameter value.

use regex::bytes::RegexSet;

use crate::error::AuditError;
use crate::param::{Param, ParamFormat, DEFAULT_MAX_PARAM_BYTES};
use crate::sqltext::{record_sql, RecordedSql, DEFAULT_MAX_SQL_BYTES};

/// Which bind parameter / function argument values are withheld from the log.
///
/// Rules only ever add redaction: [`Redaction::union`] of a target's and a role's rules
/// hides what either hides.
#[derive(Clone, Debug, Default)]
pub struct Redaction {
    all_params: bool,
    patterns: Vec<String>,
    set: Option<RegexSet>,
}

impl Redaction {
    /// Withholds every value (`all_params`), and any value whose bytes match one of
    /// `patterns` (Rust `regex` syntax, unanchored: add `^…$` to match whole values).
    /// Patterns are matched against the raw bytes the client sent, whatever the format:
    /// for text-format values that is the text; binary values of text types (`text`,
    /// `varchar`, `json`) are their UTF-8 bytes too.
    pub fn new(all_params: bool, patterns: &[String]) -> Result<Redaction, AuditError> {
        let set = if patterns.is_empty() {
            None
        } else {
            for p in patterns {
                // Compile one by one first so the error names the pattern at fault.
                regex::bytes::Regex::new(p).map_err(|source| AuditError::InvalidPattern {
                    pattern: p.clone(),
                    source,
                })?;
            }
            Some(
                RegexSet::new(patterns).map_err(|source| AuditError::InvalidPattern {
                    pattern: patterns.join(" | "),
                    source,
                })?,
            )
        };
        Ok(Redaction {
            all_params,
            patterns: patterns.to_vec(),
            set,
        })
    }

    /// No value is withheld.
    pub fn none() -> Redaction {
        Redaction::default()
    }

    /// Rules that withhold what either `self` or `other` withholds.
    pub fn union(&self, other: &Redaction) -> Result<Redaction, AuditError> {
        let mut patterns = self.patterns.clone();
        patterns.extend(other.patterns.iter().cloned());
        Redaction::new(self.all_params || other.all_params, &patterns)
    }

    /// Whether every value is withheld.
    pub fn all_params(&self) -> bool {
        self.all_params
    }

    /// The patterns values are matched against.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether nothing is ever withheld.
    pub fn is_empty(&self) -> bool {
        !self.all_params && self.set.is_none()
    }

    /// Whether the value `raw` (`None` = SQL NULL) is withheld. With `all_params` even a
    /// NULL is, so the log does not tell NULL from a value.
    pub fn hides(&self, raw: Option<&[u8]>) -> bool {
        if self.all_params {
            return true;
        }
        match (&self.set, raw) {
            (Some(set), Some(bytes)) => set.is_match(bytes),
            _ => false,
        }
    }
}

/// How a session records statement content.
#[derive(Clone, Debug)]
pub struct ContentRules {
    /// SQL longer than this (in bytes as sent) is recorded as its head plus length and
    /// SHA-256 (`audit.max_sql_bytes`).
    pub max_sql_bytes: usize,
    /// A parameter value longer than this (in bytes as sent) is recorded as its head plus
    /// length and SHA-256 (`audit.max_param_bytes`).
    pub max_param_bytes: usize,
    /// Which parameter values are withheld.
    pub redaction: Redaction,
}

impl Default for ContentRules {
    fn default() -> Self {
        ContentRules {
            max_sql_bytes: DEFAULT_MAX_SQL_BYTES,
            max_param_bytes: DEFAULT_MAX_PARAM_BYTES,
            redaction: Redaction::none(),
        }
    }
}

impl ContentRules {
    /// The SQL fields of a `query` event for the SQL bytes `raw`.
    pub fn sql(&self, raw: &[u8]) -> RecordedSql {
        record_sql(raw, self.max_sql_bytes)
    }

    /// The recorded form of one parameter value (`raw` is `None` for SQL NULL): redaction
    /// first (on the whole value), then the size limit.
    pub fn param(&self, format: ParamFormat, type_oid: Option<u32>, raw: Option<&[u8]>) -> Param {
        if self.redaction.hides(raw) {
            Param::redacted(format, type_oid)
        } else {
            Param::from_wire_capped(format, type_oid, raw, self.max_param_bytes)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn patterns_hide_matching_values_only() {
        let r = Redaction::new(false, &pats(&[r"^\d{16}$", "(?i)secret"])).unwrap();
        assert!(r.hides(Some(b"4111111111111111")));
        assert!(r.hides(Some(b"my SECRET value")));
        assert!(!r.hides(Some(b"41111")));
        assert!(!r.hides(None));
        assert!(!r.hides(Some(b"\xff\xfe")));
        let rules = ContentRules {
            max_sql_bytes: 10,
            max_param_bytes: 4,
            redaction: r,
        };
        let hidden = rules.param(ParamFormat::Text, Some(25), Some(b"top secret"));
        assert!(hidden.redacted);
        assert_eq!(hidden.value, None);
        assert_eq!(hidden.type_oid, Some(25));
        // Redaction looks at the whole value, before the size limit cuts it.
        let long_secret = rules.param(ParamFormat::Text, None, Some(b"xxxxxxxx secret"));
        assert!(long_secret.redacted && !long_secret.truncated);
        assert_eq!(
            long_secret.value_sha256, None,
            "nothing of a redacted value"
        );
        let shown = rules.param(ParamFormat::Text, Some(25), Some(b"plain"));
        assert_eq!(shown.value.as_deref(), Some("plai"));
        assert!(!shown.redacted);
        assert!(shown.truncated);
        assert_eq!(shown.value_len, Some(5));
    }

    #[test]
    fn all_params_hides_everything_even_null() {
        let r = Redaction::new(true, &[]).unwrap();
        assert!(r.hides(None));
        assert!(r.hides(Some(b"")));
        assert!(!Redaction::none().hides(Some(b"x")));
        assert!(Redaction::none().is_empty());
    }

    #[test]
    fn union_adds_rules() {
        let a = Redaction::new(false, &pats(&["alpha"])).unwrap();
        let b = Redaction::new(false, &pats(&["beta"])).unwrap();
        let u = a.union(&b).unwrap();
        assert!(u.hides(Some(b"alpha")) && u.hides(Some(b"beta")));
        assert!(!u.hides(Some(b"gamma")));
        assert!(a
            .union(&Redaction::new(true, &[]).unwrap())
            .unwrap()
            .all_params());
    }

    #[test]
    fn a_bad_pattern_is_named_in_the_error() {
        let err = Redaction::new(false, &pats(&["ok", "(unclosed"])).unwrap_err();
        assert!(err.to_string().contains("(unclosed"), "{err}");
    }
}
