//! Reading jitgate's audit log as it grows: per session, its `query` events in order with
//! the `query_result` of each, found by the upstream backend pid of its `session_start`.

use std::collections::HashMap;
use std::path::PathBuf;

use jitgate_audit::{EventBody, Param, Protocol};
use uuid::Uuid;

use super::tail::Tail;

/// How a recorded query ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub tag: Option<String>,
    pub sqlstate: Option<String>,
    pub message: Option<String>,
    pub skipped: bool,
}

/// A `query` event and its result.
#[derive(Clone, Debug)]
pub struct Query {
    pub query_id: u64,
    pub protocol: Protocol,
    pub sql: String,
    pub statement: Option<String>,
    pub portal: Option<String>,
    pub params: Vec<Param>,
    pub function_oid: Option<u32>,
    pub outcome: Option<Outcome>,
}

/// One session's queries.
#[derive(Default, Debug)]
pub struct Session {
    pub queries: Vec<Query>,
    by_id: HashMap<u64, usize>,
    /// Its `session_end` was read.
    pub ended: bool,
}

/// The audit log, read incrementally.
pub struct AuditLog {
    tail: Tail,
    line: u64,
    sessions: HashMap<Uuid, Session>,
    by_pid: HashMap<i32, Uuid>,
}

impl AuditLog {
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog {
            tail: Tail::new(path, 0),
            line: 0,
            sessions: HashMap::new(),
            by_pid: HashMap::new(),
        }
    }

    /// Reads the events appended since the last call.
    pub fn poll(&mut self) {
        let complete = self.tail.poll();
        for line in complete.split_inclusive(|b| *b == b'\n') {
            self.line += 1;
            match jitgate_audit::reader::parse_line(line, self.tail.path(), self.line) {
                None => {}
                Some(Ok(event)) => self.event(event.session_id, event.body),
                Some(Err(e)) => panic!("audit line {} does not parse: {e}", self.line),
            }
        }
    }

    fn event(&mut self, session: Option<Uuid>, body: EventBody) {
        let Some(session) = session else { return };
        match body {
            EventBody::SessionStart {
                upstream_pid: Some(pid),
                ..
            } => {
                self.sessions.insert(session, Session::default());
                self.by_pid.insert(pid, session);
            }
            EventBody::Query {
                query_id,
                protocol,
                sql,
                statement,
                portal,
                params,
                function_oid,
                params_from,
                ..
            } => {
                let s = self.sessions.entry(session).or_default();
                // Another execution of a bound portal: its parameters are those recorded
                // with the portal's first execution, earlier in the same session.
                let params = match params_from {
                    Some(from) => {
                        let i = *s.by_id.get(&from).unwrap_or_else(|| {
                            panic!("query {query_id}: params_from {from} names no earlier query of the session")
                        });
                        s.queries[i].params.clone()
                    }
                    None => params,
                };
                s.by_id.insert(query_id, s.queries.len());
                s.queries.push(Query {
                    query_id,
                    protocol,
                    sql,
                    statement,
                    portal,
                    params,
                    function_oid,
                    outcome: None,
                });
            }
            EventBody::QueryResult {
                query_id,
                tag,
                sqlstate,
                message,
                skipped,
                ..
            } => {
                let s = self.sessions.entry(session).or_default();
                if let Some(&i) = s.by_id.get(&query_id) {
                    s.queries[i].outcome = Some(Outcome {
                        tag,
                        sqlstate,
                        message,
                        skipped,
                    });
                }
            }
            EventBody::SessionEnd { .. } => self.sessions.entry(session).or_default().ended = true,
            _ => {}
        }
    }

    /// The latest session whose upstream backend has this pid.
    pub fn session_of(&self, pid: i32) -> Option<&Session> {
        self.sessions.get(self.by_pid.get(&pid)?)
    }

    /// Forgets the session of a pid whose comparison is done.
    pub fn forget(&mut self, pid: i32) {
        if let Some(id) = self.by_pid.remove(&pid) {
            self.sessions.remove(&id);
        }
    }
}
