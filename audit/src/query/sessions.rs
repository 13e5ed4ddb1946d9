//! `jitgate audit sessions`: one row per session — who, where, under which grant (and
//! the reason it was given), from where, when it started and ended and why, how many
//! queries and how many failed.
//!
//! Only `session_start`, `session_end` and `grant_issued` lines are parsed (a few per
//! session); `query` lines are counted and `query_result` lines checked for a
//! `sqlstate` on their raw bytes.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::matcher::Matcher;
use super::raw::Kind;
use super::{scan_log, Filter, Line, ScanStats};
use crate::error::AuditError;
use crate::event::{EndReason, Event, EventBody};

/// A session as the log tells it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionRow {
    /// The session id.
    pub session_id: Uuid,
    /// Who connected.
    pub identity: Option<String>,
    /// To which target.
    pub target: Option<String>,
    /// As which upstream role.
    pub role: Option<String>,
    /// Under which grant.
    pub grant_id: Option<Uuid>,
    /// The justification recorded when the grant was issued (from its `grant_issued`
    /// event, when the log has it).
    pub grant_reason: Option<String>,
    /// From which client address.
    pub client_addr: Option<String>,
    /// `session_start` time (`None` when the log does not have it, e.g. retention removed
    /// the file).
    pub start: Option<Timestamp>,
    /// `session_end` time (`None`: still open, or jitgate stopped without recording it).
    pub end: Option<Timestamp>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// Detail recorded with the end (protocol error, who revoked, …).
    pub end_detail: Option<String>,
    /// `query` events of the session in the log.
    pub queries: u64,
    /// Its `query_result` events with a SQLSTATE.
    pub errors: u64,
}

impl SessionRow {
    fn new(session_id: Uuid) -> SessionRow {
        SessionRow {
            session_id,
            identity: None,
            target: None,
            role: None,
            grant_id: None,
            grant_reason: None,
            client_addr: None,
            start: None,
            end: None,
            end_reason: None,
            end_detail: None,
            queries: 0,
            errors: 0,
        }
    }

    fn context_from(&mut self, e: &Event) {
        self.identity = self.identity.take().or_else(|| e.identity.clone());
        self.target = self.target.take().or_else(|| e.target.clone());
        self.role = self.role.take().or_else(|| e.role.clone());
        self.grant_id = self.grant_id.or(e.grant_id);
    }

    /// Whether the row passes the filter: context fields equal, and the session overlaps
    /// the `since`/`until` window.
    fn matches(&self, f: &Filter) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        eq(&f.identity, &self.identity)
            && eq(&f.target, &self.target)
            && f.grant.is_none_or(|g| self.grant_id == Some(g))
            && f.session.is_none_or(|s| self.session_id == s)
            && f.since.is_none_or(|s| self.end.is_none_or(|end| end >= s))
            && f.until
                .is_none_or(|u| self.start.is_none_or(|start| start < u))
            && (!f.errors || self.errors > 0)
    }
}

/// The streaming state of a sessions scan.
pub(crate) struct SessionScan {
    m: Matcher,
    /// The whole filter, applied to the finished rows.
    filter: Filter,
    rows: Vec<SessionRow>,
    index: HashMap<Uuid, usize>,
    /// grant id → reason, from `grant_issued` events.
    grant_reasons: HashMap<Uuid, String>,
}

impl SessionScan {
    pub(crate) fn new(filter: &Filter) -> Result<SessionScan, AuditError> {
        // The time window selects sessions, not lines; the rest can skip lines early.
        let mut line_filter = filter.clone();
        line_filter.since = None;
        line_filter.until = None;
        line_filter.text = None;
        line_filter.errors = false;
        Ok(SessionScan {
            m: Matcher::new(&line_filter)?,
            filter: filter.clone(),
            rows: Vec::new(),
            index: HashMap::new(),
            grant_reasons: HashMap::new(),
        })
    }

    fn row(&mut self, session: Uuid) -> &mut SessionRow {
        let rows = &mut self.rows;
        let i = *self.index.entry(session).or_insert_with(|| {
            rows.push(SessionRow::new(session));
            rows.len() - 1
        });
        &mut self.rows[i]
    }

    pub(crate) fn line(&mut self, line: &Line<'_>, stats: &mut ScanStats) {
        let Some((kind, bytes)) = line.canonical(&self.m.keys, stats) else {
            return;
        };
        let counted = match kind {
            Kind::Query => true,
            Kind::QueryResult => self.m.keys.has_sqlstate(&bytes),
            Kind::SessionStart | Kind::SessionEnd | Kind::GrantIssued => {
                // Grant events carry no session id: keep them all (they are few).
                if kind == Kind::GrantIssued || self.m.context_raw(&bytes) {
                    self.parsed(line, &bytes, stats);
                }
                return;
            }
            _ => return,
        };
        if !counted || !self.m.context_raw(&bytes) {
            return;
        }
        let Some(session) = self
            .m
            .keys
            .session_id(&bytes)
            .and_then(|s| Uuid::try_parse_ascii(s).ok())
        else {
            return;
        };
        let row = self.row(session);
        if kind == Kind::Query {
            row.queries += 1;
        } else {
            row.errors += 1;
        }
        if row.identity.is_none() && row.start.is_none() && row.queries == 1 {
            // No session_start seen (yet): take the context from this query.
            let parsed = Line {
                path: line.path,
                number: line.number,
                bytes: &bytes,
            };
            if let Some(e) = parsed.parse(stats) {
                self.row(session).context_from(&e);
            }
        }
    }

    fn parsed(&mut self, line: &Line<'_>, bytes: &[u8], stats: &mut ScanStats) {
        let parsed = Line {
            path: line.path,
            number: line.number,
            bytes,
        };
        let Some(e) = parsed.parse(stats) else {
            return;
        };
        if let (EventBody::GrantIssued { reason, .. }, Some(grant)) = (&e.body, e.grant_id) {
            self.grant_reasons.insert(grant, reason.clone());
            return;
        }
        let Some(session) = e.session_id else {
            return;
        };
        let row = self.row(session);
        row.context_from(&e);
        match &e.body {
            EventBody::SessionStart { client_addr, .. } => {
                row.client_addr = Some(client_addr.clone());
                row.start = Some(e.ts);
            }
            EventBody::SessionEnd { reason, detail, .. } => {
                row.end = Some(e.ts);
                row.end_reason = Some(*reason);
                row.end_detail = detail.clone();
            }
            _ => {}
        }
    }

    pub(crate) fn finish(self) -> Vec<SessionRow> {
        let filter = &self.filter;
        let reasons = &self.grant_reasons;
        let mut rows: Vec<SessionRow> = self
            .rows
            .into_iter()
            .filter(|r| r.matches(filter))
            .map(|mut r| {
                r.grant_reason = r.grant_id.and_then(|g| reasons.get(&g).cloned());
                r
            })
            .collect();
        // Log order is start order for complete sessions; rows without a start go last.
        rows.sort_by_key(|r| r.start.is_none());
        rows
    }
}

/// The sessions of the log `path` that match `filter` (identity, target, grant, session,
/// overlap with the `since`/`until` window, and with `errors` only sessions that had a
/// failed query; `text` is not used), in order of their start.
pub fn sessions(path: &Path, filter: &Filter) -> Result<(Vec<SessionRow>, ScanStats), AuditError> {
    let mut scan = SessionScan::new(filter)?;
    let mut stats = ScanStats::default();
    scan_log(path, &mut stats, |line, stats| {
        scan.line(line, stats);
        ControlFlow::Continue(())
    })?;
    Ok((scan.finish(), stats))
}
