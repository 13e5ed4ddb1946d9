//! `jitgate audit search`: the query events that match a [`Filter`], each with its
//! outcome (the `query_result` with the same session and `query_id`).
//!
//! A query's result comes later in the log, after other sessions' lines. Matches wait in
//! a queue, in log order, until their result (or their session's end, or the end of the
//! log) arrives; the queue is emitted from its head, so output is in query order and
//! memory holds only matches still waiting for an answer.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::Path;
use std::rc::Rc;

use uuid::Uuid;

use super::matcher::Matcher;
use super::raw::Kind;
use super::{scan_log, Filter, Line, ScanStats};
use crate::describe::{rows_field, Outcome, Statement};
use crate::error::AuditError;
use crate::event::{Event, EventBody};
use crate::render::{clean, one_line};
use crate::time::display_micros;

/// Longest excerpt of an error message in a search line.
const MESSAGE_EXCERPT_CHARS: usize = 120;

/// A matching query event and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// The `query` event.
    pub query: Event,
    /// Its `query_result`; `None` when the log has none (the session ended first, or the
    /// query is still running).
    pub result: Option<Event>,
}

impl Found {
    /// One line for a terminal: time, session, who and where, query number, outcome,
    /// and the SQL collapsed to one line (control characters escaped).
    pub fn summary(&self) -> String {
        let q = &self.query;
        let mut s = format!("{}", display_micros(&q.ts));
        if let Some(id) = q.session_id {
            let _ = write!(s, "  session={id}");
        }
        let who = format!(
            "{}@{}",
            q.identity.as_deref().unwrap_or("?"),
            q.target.as_deref().unwrap_or("?")
        );
        let _ = write!(s, "  {}", clean(&who, false));
        let Some(statement) = Statement::of(&q.body) else {
            return s;
        };
        let _ = write!(s, "  q{}  ", statement.query_id);
        match self.result.as_ref().and_then(|r| Outcome::of(&r.body)) {
            Some(outcome) => s.push_str(&outcome_text(&outcome)),
            None => s.push_str("(no result)"),
        }
        if let Some(changes) = statement.changes() {
            let _ = write!(s, "  {changes}");
        }
        let _ = write!(s, "  {}", statement.excerpt());
        if let Some(mark) = statement.truncated_mark() {
            let _ = write!(s, " {mark}");
        }
        match statement.params.len() {
            0 => {}
            1 => s.push_str(" (1 param)"),
            n => {
                let _ = write!(s, " ({n} params)");
            }
        }
        if let Some(params_of) = statement.params_of() {
            let _ = write!(s, " {params_of}");
        }
        s
    }

    /// Whether the outcome is an error (a SQLSTATE was recorded).
    pub fn is_error(&self) -> bool {
        matches!(
            self.result.as_ref().map(|r| &r.body),
            Some(EventBody::QueryResult {
                sqlstate: Some(_),
                ..
            })
        )
    }
}

/// How a found query ended: the error and its message, or the tag and row count; then
/// the bytes returned and the duration.
fn outcome_text(outcome: &Outcome<'_>) -> String {
    let mut s = String::new();
    if let Some(error) = outcome.error() {
        s.push_str(&error);
        if let Some(message) = outcome.message {
            let _ = write!(s, " {}", one_line(message, MESSAGE_EXCERPT_CHARS));
        }
    } else {
        s.push_str(outcome.tag().as_deref().unwrap_or("OK"));
        if let Some(rows) = outcome.rows {
            let _ = write!(s, " {}", rows_field(rows));
        }
    }
    if let Some(bytes) = outcome.bytes_field() {
        let _ = write!(s, " {bytes}");
    }
    let _ = write!(s, " {}", outcome.duration());
    s
}

/// Where a line came from, for the message if it does not parse.
#[derive(Clone)]
struct Origin {
    path: Rc<Path>,
    line: u64,
}

/// A line kept for later: candidates are copied as bytes and parsed only when they are
/// emitted, so a search for errors never parses the queries that succeeded.
struct Kept {
    bytes: Vec<u8>,
    origin: Origin,
}

impl Kept {
    fn parse(&self, stats: &mut ScanStats) -> Option<Event> {
        Line {
            path: &self.origin.path,
            number: self.origin.line,
            bytes: &self.bytes,
        }
        .parse(stats)
    }
}

struct Slot {
    query: Kept,
    result: Option<Kept>,
    /// The result arrived or will not come.
    settled: bool,
    /// Still a candidate (false once its result shows it does not match `--errors`).
    keep: bool,
}

/// The streaming state of a search.
struct SearchScan {
    m: Matcher,
    queue: VecDeque<Slot>,
    /// Position (in the sequence of all slots ever queued) of `queue[0]`.
    base: u64,
    /// (session, query_id) → slot position, for matches waiting for their result.
    waiting: HashMap<(Uuid, u64), u64>,
    /// The file being read, shared by the slots of its lines.
    path: Option<Rc<Path>>,
}

impl SearchScan {
    fn new(filter: &Filter) -> Result<SearchScan, AuditError> {
        Ok(SearchScan {
            m: Matcher::new(filter)?,
            queue: VecDeque::new(),
            base: 0,
            waiting: HashMap::new(),
            path: None,
        })
    }

    /// Looks at one line; emits the matches it settles.
    fn line<F>(&mut self, line: &Line<'_>, stats: &mut ScanStats, out: &mut F) -> ControlFlow<()>
    where
        F: FnMut(Found) -> ControlFlow<()>,
    {
        let Some((kind, bytes)) = line.canonical(&self.m.keys, stats) else {
            return ControlFlow::Continue(());
        };
        match kind {
            Kind::Query => self.on_query(line, &bytes),
            Kind::QueryResult if !self.waiting.is_empty() => self.on_result(line, &bytes),
            Kind::SessionEnd if !self.waiting.is_empty() => {
                if let Some(session) = self.session_of(&bytes) {
                    self.settle_session(session);
                }
            }
            _ => return ControlFlow::Continue(()),
        }
        self.flush(stats, out)
    }

    /// At the end of the log: every match still waiting is emitted without a result.
    fn finish<F>(mut self, stats: &mut ScanStats, out: &mut F)
    where
        F: FnMut(Found) -> ControlFlow<()>,
    {
        for slot in &mut self.queue {
            slot.settled = true;
        }
        let _ = self.flush(stats, out);
    }

    fn session_of(&self, line: &[u8]) -> Option<Uuid> {
        Uuid::try_parse_ascii(self.m.keys.session_id(line)?).ok()
    }

    fn origin(&mut self, line: &Line<'_>) -> Origin {
        let path = match &self.path {
            Some(p) if **p == *line.path => Rc::clone(p),
            _ => {
                let p: Rc<Path> = Rc::from(line.path);
                self.path = Some(Rc::clone(&p));
                p
            }
        };
        Origin {
            path,
            line: line.number,
        }
    }

    fn on_query(&mut self, line: &Line<'_>, bytes: &[u8]) {
        let m = &self.m;
        if !m.context_raw(bytes) || m.time_raw(bytes) == Some(false) || !m.text_raw(bytes) {
            return;
        }
        let key = self.session_of(bytes).zip(self.m.keys.query_id(bytes));
        let position = self.base + self.queue.len() as u64;
        let settled = match key {
            Some(key) => {
                self.waiting.insert(key, position);
                false
            }
            None => true, // no session: no result can be paired with it
        };
        let origin = self.origin(line);
        self.queue.push_back(Slot {
            query: Kept {
                bytes: bytes.to_vec(),
                origin,
            },
            result: None,
            settled,
            keep: true,
        });
    }

    fn on_result(&mut self, line: &Line<'_>, bytes: &[u8]) {
        let (Some(session), Some(query_id)) = (self.session_of(bytes), self.m.keys.query_id(bytes))
        else {
            return;
        };
        let Some(position) = self.waiting.remove(&(session, query_id)) else {
            return;
        };
        let keep = !self.m.filter().errors || self.m.keys.has_sqlstate(bytes);
        let result = keep.then(|| Kept {
            bytes: bytes.to_vec(),
            origin: self.origin(line),
        });
        if let Some(slot) = position
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.queue.get_mut(i))
        {
            slot.result = result;
            slot.keep = keep;
            slot.settled = true;
        }
    }

    /// The session ended: its queries still waiting will get no result.
    fn settle_session(&mut self, session: Uuid) {
        let base = self.base;
        let queue = &mut self.queue;
        self.waiting.retain(|(s, _), position| {
            if *s != session {
                return true;
            }
            if let Some(slot) = position
                .checked_sub(base)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| queue.get_mut(i))
            {
                slot.settled = true;
            }
            false
        });
    }

    /// Emits settled matches from the head of the queue (parsing them now, and checking
    /// the filter exactly on the parsed events).
    fn flush<F>(&mut self, stats: &mut ScanStats, out: &mut F) -> ControlFlow<()>
    where
        F: FnMut(Found) -> ControlFlow<()>,
    {
        while self.queue.front().is_some_and(|s| s.settled) {
            let Some(slot) = self.queue.pop_front() else {
                break;
            };
            self.base += 1;
            if !slot.keep {
                continue;
            }
            let Some(query) = slot.query.parse(stats) else {
                continue;
            };
            if !(self.m.context_event(&query) && self.m.text_event(&query)) {
                continue;
            }
            let found = Found {
                query,
                result: slot.result.and_then(|r| r.parse(stats)),
            };
            if self.m.filter().errors && !found.is_error() {
                continue;
            }
            out(found)?;
        }
        ControlFlow::Continue(())
    }
}

/// Feeds the query events of the log `path` that match `filter` to `out`, each with its
/// result, in log order; `out` may stop the scan early. Errs when the log cannot be
/// opened or `filter.text` is not a valid regex.
pub fn search<F>(path: &Path, filter: &Filter, mut out: F) -> Result<ScanStats, AuditError>
where
    F: FnMut(Found) -> ControlFlow<()>,
{
    let mut scan = SearchScan::new(filter)?;
    let mut stats = ScanStats::default();
    let mut stopped = false;
    scan_log(path, &mut stats, |line, stats| {
        let flow = scan.line(line, stats, &mut out);
        stopped = flow.is_break();
        flow
    })?;
    if !stopped {
        scan.finish(&mut stats, &mut out);
    }
    Ok(stats)
}
