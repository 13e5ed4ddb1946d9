//! Follows the conversation to know what each query is and how it ended.
//!
//! Client → server messages are decoded just enough to audit them (Query, Parse, Bind,
//! Execute, FunctionCall, COPY data); server → client messages are looked at only when
//! they close a query (CommandComplete, EmptyQueryResponse, PortalSuspended,
//! ErrorResponse, FunctionCallResponse, ReadyForQuery) or move COPY along. Responses come
//! back in the order requests were sent, so a FIFO of pending requests pairs them up.
//!
//! What is recorded of each statement follows the session's [`ContentRules`]: SQL above
//! the size limit is cut to its head with its length and hash, text is escaped
//! losslessly, parameter values may be redacted, and statements that change the role,
//! session authorization or search_path are flagged. Result data (DataRow and CopyData
//! bodies) is counted by length only, O(1) per message, into the query's `bytes`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use jitgate_audit::{
    setting_change, ContentRules, CopyDirection, EventBody, Param, ParamFormat, Protocol,
    SettingChange,
};

use crate::error::ProtocolError;
use crate::protocol::{backend, frontend, tags};

/// A prepared statement as the client defined it.
#[derive(Clone, Debug)]
struct Statement {
    sql: Bytes,
    param_types: Vec<u32>,
    /// Looked up once at Parse: a statement may be executed many times.
    setting: Option<SettingChange>,
}

/// A bound portal: its statement and parameters, ready for Execute.
#[derive(Clone, Debug)]
struct Portal {
    statement: String,
    sql: Bytes,
    setting: Option<SettingChange>,
    params: Vec<Param>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Simple,
    Execute,
    Function,
    Sync,
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    query_id: u64,
    started: Instant,
    tag: Option<String>,
    rows: Option<u64>,
    sqlstate: Option<String>,
    message: Option<String>,
    /// Result data bytes attributed to this request so far.
    bytes: u64,
    done: bool,
    /// The server never ran it.
    skipped: bool,
}

#[derive(Debug)]
struct Copy {
    query_id: u64,
    direction: CopyDirection,
    bytes: u64,
}

/// Per-session protocol state for auditing.
#[derive(Debug, Default)]
pub struct Tracker {
    /// How statements are recorded (SQL limit, redaction); `Default` = no redaction and
    /// the default SQL limit.
    rules: Arc<ContentRules>,
    next_query_id: u64,
    statements: HashMap<String, Statement>,
    portals: HashMap<String, Portal>,
    pending: VecDeque<Pending>,
    copy: Option<Copy>,
    /// DataRow/CopyData bytes since the last message that closed a request; added to the
    /// request that message closes (keeps counting O(1) per data message).
    data_bytes: u64,
    saw_fatal: bool,
}

/// The `query` event of a statement, its SQL recorded under `rules`.
fn query_event(
    rules: &ContentRules,
    query_id: u64,
    protocol: Protocol,
    sql: &[u8],
    setting: Option<SettingChange>,
) -> EventBody {
    let recorded = rules.sql(sql);
    EventBody::Query {
        query_id,
        protocol,
        sql: recorded.sql,
        truncated: recorded.truncated,
        sql_len: recorded.sql_len,
        sql_sha256: recorded.sql_sha256,
        setting_change: setting,
        statement: None,
        portal: None,
        params: Vec::new(),
        function_oid: None,
    }
}

fn format_of(code: i16) -> ParamFormat {
    if code == 1 {
        ParamFormat::Binary
    } else {
        ParamFormat::Text
    }
}

impl Tracker {
    /// A tracker recording statements under `rules` (the session's target and role).
    pub fn new(rules: Arc<ContentRules>) -> Tracker {
        Tracker {
            rules,
            ..Tracker::default()
        }
    }

    /// Queries audited so far.
    pub fn queries(&self) -> u64 {
        self.next_query_id
    }

    /// A point to return to if a batch of client messages is refused before forwarding.
    pub fn mark(&self) -> usize {
        self.pending.len()
    }

    /// Forgets the requests recorded since `mark`: they never reached the server, so no
    /// response will come for them. Query ids are not reused.
    pub fn rollback(&mut self, mark: usize) {
        self.pending.truncate(mark);
    }

    /// Whether the server sent a FATAL error (it then closes; the client already knows why).
    pub fn saw_fatal(&self) -> bool {
        self.saw_fatal
    }

    /// Whether the server is working on something the client asked for (a cancel on
    /// expiry is needed only then).
    pub fn in_flight(&self) -> bool {
        self.copy.is_some() || self.pending.iter().any(|p| p.kind != Kind::Sync || !p.done)
    }

    fn push(&mut self, kind: Kind) -> u64 {
        let query_id = if kind == Kind::Sync {
            0
        } else {
            self.next_query_id += 1;
            self.next_query_id
        };
        self.pending.push_back(Pending {
            kind,
            query_id,
            started: Instant::now(),
            tag: None,
            rows: None,
            sqlstate: None,
            message: None,
            bytes: 0,
            done: false,
            skipped: false,
        });
        query_id
    }

    /// Looks at one client message before it is forwarded. Returns the `query` event to
    /// write first, if the message runs a query.
    pub fn on_client(&mut self, tag: u8, body: Bytes) -> Result<Option<EventBody>, ProtocolError> {
        match tag {
            tags::QUERY => {
                let q = frontend::parse_query(body)?;
                // A simple Query drops the unnamed statement and portal.
                self.statements.remove("");
                self.portals.remove("");
                let query_id = self.push(Kind::Simple);
                let setting = setting_change(&q.sql);
                Ok(Some(query_event(
                    &self.rules,
                    query_id,
                    Protocol::Simple,
                    &q.sql,
                    setting,
                )))
            }
            tags::PARSE => {
                let p = frontend::parse_parse(body)?;
                let setting = setting_change(&p.sql);
                self.statements.insert(
                    p.statement,
                    Statement {
                        sql: p.sql,
                        param_types: p.param_types,
                        setting,
                    },
                );
                Ok(None)
            }
            tags::BIND => {
                let b = frontend::parse_bind(body)?;
                let (sql, types, setting) = match self.statements.get(&b.statement) {
                    Some(s) => (s.sql.clone(), s.param_types.as_slice(), s.setting),
                    None => (Bytes::new(), &[][..], None),
                };
                let rules = &self.rules;
                let params = b
                    .params
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let oid = types.get(i).copied().filter(|o| *o != 0);
                        rules.param(format_of(b.param_format(i)), oid, v.as_deref())
                    })
                    .collect();
                self.portals.insert(
                    b.portal,
                    Portal {
                        statement: b.statement,
                        sql,
                        setting,
                        params,
                    },
                );
                Ok(None)
            }
            tags::EXECUTE => {
                let e = frontend::parse_execute(body)?;
                let portal = self.portals.get(&e.portal).cloned();
                let query_id = self.push(Kind::Execute);
                let (statement, sql, setting, portal_params) = match portal {
                    Some(p) => (Some(p.statement), p.sql, p.setting, p.params),
                    // Unknown portal: the server will refuse it; audit the attempt anyway.
                    None => (None, Bytes::new(), None, Vec::new()),
                };
                let mut event =
                    query_event(&self.rules, query_id, Protocol::Extended, &sql, setting);
                if let EventBody::Query {
                    statement: s,
                    portal: p,
                    params,
                    ..
                } = &mut event
                {
                    *s = statement;
                    *p = Some(e.portal);
                    *params = portal_params;
                }
                Ok(Some(event))
            }
            tags::FUNCTION_CALL => {
                let f = frontend::parse_function_call(body)?;
                let rules = &self.rules;
                let params = f
                    .args
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let code = match f.arg_formats.len() {
                            0 => 0,
                            1 => f.arg_formats[0],
                            _ => f.arg_formats.get(i).copied().unwrap_or(0),
                        };
                        rules.param(format_of(code), None, v.as_deref())
                    })
                    .collect::<Vec<Param>>();
                let query_id = self.push(Kind::Function);
                let mut event =
                    query_event(&self.rules, query_id, Protocol::FunctionCall, b"", None);
                if let EventBody::Query {
                    params: p,
                    function_oid,
                    ..
                } = &mut event
                {
                    *p = params;
                    *function_oid = Some(f.oid);
                }
                Ok(Some(event))
            }
            tags::CLOSE => {
                let c = frontend::parse_close(body)?;
                if c.kind == tags::KIND_STATEMENT {
                    self.statements.remove(&c.name);
                } else {
                    self.portals.remove(&c.name);
                }
                Ok(None)
            }
            tags::SYNC => {
                self.push(Kind::Sync);
                Ok(None)
            }
            tags::COPY_DATA => {
                if let Some(copy) = self.copy.as_mut() {
                    if copy.direction == CopyDirection::In {
                        copy.bytes += body.len() as u64;
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// The first request that has not been answered yet, skipping Syncs when asked.
    fn current(&mut self, skip_sync: bool) -> Option<&mut Pending> {
        self.pending
            .iter_mut()
            .find(|p| !(p.done || (skip_sync && p.kind == Kind::Sync)))
    }

    fn result_of(p: &Pending) -> EventBody {
        EventBody::QueryResult {
            query_id: p.query_id,
            tag: p.tag.clone(),
            rows: p.rows,
            sqlstate: p.sqlstate.clone(),
            message: p.message.clone(),
            duration_us: u64::try_from(p.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            bytes: p.bytes,
            skipped: p.skipped,
        }
    }

    /// Body length of a server DataRow or CopyData message (counted without decoding
    /// it): result bytes of the running query, and COPY TO volume.
    pub fn on_server_data(&mut self, len: usize) {
        self.data_bytes += len as u64;
        if let Some(copy) = self.copy.as_mut() {
            // DataRow never comes during COPY OUT, so this is CopyData.
            if copy.direction == CopyDirection::Out {
                copy.bytes += len as u64;
            }
        }
    }

    /// The first unanswered request, which gets the data bytes counted since the last
    /// request was closed.
    fn current_with_data(&mut self) -> Option<&mut Pending> {
        let bytes = std::mem::take(&mut self.data_bytes);
        let p = self.current(true)?;
        p.bytes += bytes;
        Some(p)
    }

    /// Looks at one server message that may close a query; appends the events it
    /// completes (`query_result`, `copy`) to `out`.
    pub fn on_server(&mut self, tag: u8, body: &[u8], out: &mut Vec<EventBody>) {
        match tag {
            tags::COMMAND_COMPLETE => {
                let parsed = backend::parse_command_complete(body);
                if let Some(copy) = self.copy.take() {
                    out.push(EventBody::Copy {
                        query_id: copy.query_id,
                        direction: copy.direction,
                        bytes: copy.bytes,
                        rows: parsed.as_ref().and_then(|t| t.rows),
                    });
                }
                if let Some(p) = self.current_with_data() {
                    if let Some(t) = parsed {
                        p.tag = Some(t.tag);
                        p.rows = t.rows;
                    }
                    if p.kind == Kind::Execute {
                        p.done = true;
                        out.push(Self::result_of(p));
                    }
                }
            }
            tags::EMPTY_QUERY | tags::PORTAL_SUSPENDED => {
                if let Some(p) = self.current_with_data() {
                    if p.kind == Kind::Execute {
                        p.done = true;
                        if tag == tags::PORTAL_SUSPENDED {
                            p.tag = Some("PORTAL SUSPENDED".into());
                        }
                        out.push(Self::result_of(p));
                    }
                }
            }
            tags::FUNCTION_CALL_RESPONSE => {
                if let Some(p) = self.current(true) {
                    if p.kind == Kind::Function {
                        p.done = true;
                        out.push(Self::result_of(p));
                    }
                }
            }
            tags::ERROR_RESPONSE => {
                let fields = backend::parse_error_fields(body);
                self.saw_fatal |= matches!(fields.severity.as_deref(), Some("FATAL" | "PANIC"));
                self.copy = None;
                if let Some(p) = self.current_with_data() {
                    p.sqlstate = fields.code;
                    p.message = fields.message;
                    if matches!(p.kind, Kind::Execute | Kind::Function) {
                        p.done = true;
                        out.push(Self::result_of(p));
                    }
                }
            }
            tags::COPY_IN_RESPONSE | tags::COPY_OUT_RESPONSE => {
                let query_id = self.current(true).map(|p| p.query_id).unwrap_or(0);
                self.copy = Some(Copy {
                    query_id,
                    direction: if tag == tags::COPY_IN_RESPONSE {
                        CopyDirection::In
                    } else {
                        CopyDirection::Out
                    },
                    bytes: 0,
                });
            }
            tags::READY_FOR_QUERY => self.on_ready(out),
            _ => {}
        }
    }

    /// ReadyForQuery ends a simple query, or a Sync with everything before it; Executes
    /// that never ran (an earlier message failed) are recorded as not executed.
    fn on_ready(&mut self, out: &mut Vec<EventBody>) {
        let mut leftover = std::mem::take(&mut self.data_bytes);
        while let Some(mut p) = self.pending.pop_front() {
            p.bytes += std::mem::take(&mut leftover);
            match p.kind {
                Kind::Sync => return,
                Kind::Simple => {
                    out.push(Self::result_of(&p));
                    return;
                }
                Kind::Function if p.done => return,
                Kind::Function => {
                    out.push(Self::result_of(&p));
                    return;
                }
                Kind::Execute if p.done => {}
                Kind::Execute => {
                    if p.message.is_none() {
                        p.message =
                            Some("not executed: an earlier message of the pipeline failed".into());
                        p.skipped = true;
                    }
                    out.push(Self::result_of(&p));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "tracker_tests.rs"]
mod tests;
