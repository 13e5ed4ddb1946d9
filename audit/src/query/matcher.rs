//! A [`Filter`] compiled for scanning: byte needles and timestamp bounds checked on the
//! raw line first (cheap, and exact for lines as jitgate writes them), and the same
//! conditions checked on a parsed [`Event`] for the few lines that get parsed.

use memchr::memmem::Finder;

use super::raw::{unescape_json, Keys};
use super::Filter;
use crate::error::AuditError;
use crate::event::{Event, EventBody};
use crate::time::display_micros;

/// Filter conditions, ready for raw lines and parsed events.
pub(crate) struct Matcher {
    pub(crate) keys: Keys,
    filter: Filter,
    /// `"identity":"alice"`, `"target":"…"`, `"grant_id":"…"`, `"session_id":"…"`.
    needles: Vec<Finder<'static>>,
    since: Option<String>,
    until: Option<String>,
    text: Option<regex::bytes::Regex>,
}

fn needle(key: &str, value: &str) -> Finder<'static> {
    // serde_json escapes the value exactly as the writer did.
    let quoted = serde_json::to_string(value).unwrap_or_default();
    Finder::new(format!("\"{key}\":{quoted}").as_bytes()).into_owned()
}

impl Matcher {
    pub(crate) fn new(filter: &Filter) -> Result<Matcher, AuditError> {
        let mut needles = Vec::new();
        if let Some(v) = &filter.identity {
            needles.push(needle("identity", v));
        }
        if let Some(v) = &filter.target {
            needles.push(needle("target", v));
        }
        if let Some(v) = &filter.grant {
            needles.push(needle("grant_id", &v.to_string()));
        }
        if let Some(v) = &filter.session {
            needles.push(needle("session_id", &v.to_string()));
        }
        let text = filter
            .text
            .as_deref()
            .map(|p| {
                regex::bytes::Regex::new(p).map_err(|source| AuditError::InvalidPattern {
                    pattern: p.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Ok(Matcher {
            keys: Keys::new(),
            filter: filter.clone(),
            needles,
            since: filter.since.map(|t| display_micros(&t).to_string()),
            until: filter.until.map(|t| display_micros(&t).to_string()),
            text,
        })
    }

    /// The filter this was compiled from.
    pub(crate) fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Whether a `--text` or `--errors` condition narrows the scan to queries.
    pub(crate) fn is_query_search(&self) -> bool {
        self.text.is_some() || self.filter.errors
    }

    /// Context conditions (identity, target, grant, session) on the raw line.
    pub(crate) fn context_raw(&self, line: &[u8]) -> bool {
        self.needles.iter().all(|n| n.find(line).is_some())
    }

    /// The `since`/`until` window on the raw line: `None` when the line's timestamp is not
    /// in the writer's fixed-width form (the caller then parses the line).
    pub(crate) fn time_raw(&self, line: &[u8]) -> Option<bool> {
        if self.since.is_none() && self.until.is_none() {
            return Some(true);
        }
        let ts = self.keys.ts(line)?;
        let canonical = ts.len() == 27 && ts.last() == Some(&b'Z') && ts.get(10) == Some(&b'T');
        if !canonical {
            return None;
        }
        let after_since = self.since.as_ref().is_none_or(|s| ts >= s.as_bytes());
        let before_until = self.until.as_ref().is_none_or(|u| ts < u.as_bytes());
        Some(after_since && before_until)
    }

    /// The `--text` regex on a `query` line's SQL; true when there is no regex.
    pub(crate) fn text_raw(&self, line: &[u8]) -> bool {
        let Some(re) = &self.text else {
            return true;
        };
        match self.keys.sql_escaped(line).and_then(unescape_json) {
            Some(sql) => re.is_match(&sql),
            // No sql field (a damaged line): let the parsed check decide.
            None => true,
        }
    }

    /// The context and time conditions on a parsed event.
    pub(crate) fn context_event(&self, e: &Event) -> bool {
        let f = &self.filter;
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        eq(&f.identity, &e.identity)
            && eq(&f.target, &e.target)
            && f.grant.is_none_or(|g| e.grant_id == Some(g))
            && f.session.is_none_or(|s| e.session_id == Some(s))
            && f.since.is_none_or(|s| e.ts >= s)
            && f.until.is_none_or(|u| e.ts < u)
    }

    /// The `--text` regex on a parsed `query` event (true for other kinds without a regex).
    pub(crate) fn text_event(&self, e: &Event) -> bool {
        let Some(re) = &self.text else {
            return true;
        };
        match &e.body {
            EventBody::Query { sql, .. } => re.is_match(sql.as_bytes()),
            _ => false,
        }
    }
}
