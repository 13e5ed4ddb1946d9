//! Follows the conversation the way the server does, so the audit records what the
//! server runs, as it runs it.
//!
//! Every client message that reaches the server is a [`Request`] in a FIFO until the
//! server has answered it; the server answers in order, so its replies are matched to
//! the front of the FIFO (`replies.rs`). Definitions — prepared statements and portals —
//! take effect only when the server confirms them (ParseComplete, BindComplete,
//! CloseComplete), never when the client sends them (`confirmed.rs`). The rules are the
//! server's (`postgres.c`): after an error in an extended-protocol message everything up
//! to the next Sync is skipped (those statements are recorded as `skipped`); a Query
//! arriving during that skip is skipped too; a Parse that fails leaves the name as it
//! was (the unnamed statement: dropped); a Bind that fails after creating its portal
//! leaves that portal, empty, until the transaction ends (`replies.rs`); a COPY FROM
//! STDIN consumes the Sync and Flush messages pipelined behind it, and a Sync or Flush
//! sent during its data is dropped here (the server ignores them: forwarding them would
//! only make the count of ReadyForQuery uncertain after a failed COPY); any other
//! message during COPY data ends the session on the server (protocol violation).
//!
//! The `query` event of a statement is written before it is forwarded, so the text it
//! records is predicted (`predict.rs`): exact whenever the statement runs, because a
//! message runs only if the messages of its group before it ran. When the prediction
//! cannot tell which of two definitions a name will hold (the client redefined a name
//! across a Sync whose group the server has not answered yet), the Execute waits
//! ([`Step::Wait`]) until the server's answers decide.
//!
//! What is recorded follows the session's [`ContentRules`]: SQL above the size limit is
//! cut to its head with its length and hash, text is escaped losslessly, parameter values
//! may be redacted, and statements that change the role, session authorization or
//! search_path are flagged. Result data (DataRow and CopyData bodies) is counted by
//! length only, O(1) per message, into the query's `bytes`.

mod client;
mod confirmed;
mod defs;
mod effects;
mod look;
mod names;
mod predict;
mod replies;
mod shield;
mod sqlnames;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use jitgate_audit::{escape_bytes, ContentRules, CopyDirection, EventBody, Param, Protocol};

use crate::guard::RoleChanges;
use crate::protocol::ProtocolError;
use crate::session::limits::LimitExceeded;
use crate::settings::SessionLimits;

use self::confirmed::Confirmed;
use self::defs::{PortalDef, Slot, StatementDef};
use self::effects::Effects;
use self::names::Name;
use self::predict::Prediction;

/// What the relay does with a client message the tracker has looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward it (after writing the events the call appended).
    Forward,
    /// Forward this frame (tag, length, body) in its place: the guard refused the
    /// message, and the substitute makes the server fail it with 42501
    /// (`guard/substitute.rs`). The events were appended as for `Forward`.
    Replace(Bytes),
    /// Do not forward it: the server would ignore it (Sync or Flush during COPY data).
    Drop,
    /// Do not forward it yet: which definition it runs depends on answers the server has
    /// not sent. Call again with the same message after the next server bytes; nothing
    /// was recorded for it.
    Wait,
}

/// Why the tracker takes no more of the client's messages: the session ends.
#[derive(Debug)]
pub enum Halt {
    /// The message is not the protocol.
    Protocol(ProtocolError),
    /// The session went over a per-session limit (prepared statements, portals, bytes
    /// kept): it ends with 53400 (see `session/limits.rs`).
    Limit(LimitExceeded),
    /// The server's answers to SQL that defines or drops statement and cursor names
    /// disagreed with jitgate's parse of it: jitgate no longer knows what those names
    /// hold, so it cannot audit what they run (fail closed).
    Unfollowed,
}

impl From<ProtocolError> for Halt {
    fn from(e: ProtocolError) -> Halt {
        Halt::Protocol(e)
    }
}

/// What a forwarded client message does, as far as the replies are concerned.
#[derive(Debug)]
enum Op {
    /// The statement's name is `def.name`.
    Parse {
        def: Arc<StatementDef>,
    },
    /// The statement's name is `def.statement_name` (or, when `def` is `None`, in `body`).
    Bind {
        portal: Name,
        /// The portal as predicted when forwarded (`None`: the statement was ambiguous).
        def: Option<Arc<PortalDef>>,
        /// The message, to rebuild the portal should the confirmed statement differ.
        body: Bytes,
    },
    Describe,
    Execute {
        portal: Name,
        /// The portal whose text the `query` event recorded.
        def: Option<Arc<PortalDef>>,
        /// What it does to names, when its statement is SQL that defines or drops them.
        effects: Option<Box<Effects>>,
    },
    Close {
        statement: bool,
        name: Name,
    },
    Sync,
    Query {
        /// What its statements do to names, when one of them may define or drop one.
        effects: Option<Box<Effects>>,
    },
    FunctionCall,
    /// Answered with nothing: Flush, and CopyData / CopyDone / CopyFail (consumed by a
    /// COPY, or ignored outside one).
    Silent {
        copy_end: bool,
        copy_bytes: u64,
    },
}

impl Op {
    /// A statement whose SQL defines or drops names (see [`Effects`]).
    fn has_effects(&self) -> bool {
        matches!(
            self,
            Op::Query { effects: Some(_) }
                | Op::Execute {
                    effects: Some(_),
                    ..
                }
        )
    }

    /// What a named definition it makes will keep (`session_limits.max_retained_bytes`).
    fn retained_bytes(&self) -> usize {
        match self {
            Op::Parse { def } if !def.name.is_empty() => def.size(),
            Op::Bind {
                portal,
                def: Some(def),
                ..
            } if !portal.is_empty() => def.size(),
            _ => 0,
        }
    }
}

/// A forwarded message the server has not finished answering.
#[derive(Debug)]
struct Request {
    op: Op,
    /// The `query` event's id for statements (Query, Execute, FunctionCall), else 0.
    query_id: u64,
    /// When a statement was forwarded (its duration is recorded); `None` for the other
    /// messages, which are not timed.
    started: Option<Instant>,
    /// Some reply for it has arrived.
    answered: bool,
    tag: Option<String>,
    rows: Option<u64>,
    /// Its error, or why it did not run (boxed: most statements succeed, and a
    /// `Request` is moved in and out of the queue for every message).
    failure: Option<Box<Failure>>,
    /// Result data bytes attributed to it so far.
    bytes: u64,
    /// The guard refused it (the server got a substitute that fails): its result is
    /// recorded `skipped`, since the statement the client sent never ran.
    refused: bool,
    /// An Execute the shield replaced (`shield.rs`): recorded `skipped`, with why.
    shielded: bool,
}

impl Request {
    fn new(op: Op, query_id: u64) -> Request {
        Request {
            op,
            query_id,
            started: (query_id != 0).then(Instant::now),
            answered: false,
            tag: None,
            rows: None,
            failure: None,
            bytes: 0,
            refused: false,
            shielded: false,
        }
    }

    /// Its failure, to fill in.
    fn fail(&mut self) -> &mut Failure {
        self.failure.get_or_insert_with(Box::default)
    }

    /// Records why it did not run.
    fn not_run(&mut self, why: &str) {
        self.fail().message = Some(why.to_owned());
    }

    fn expects_reply(&self) -> bool {
        !matches!(self.op, Op::Silent { .. })
    }

    /// Its `query_result` event (it is done with: its strings move into the event).
    fn result(self, skipped: bool) -> EventBody {
        let Failure { sqlstate, message } = self.failure.map(|f| *f).unwrap_or_default();
        let message = if self.shielded {
            Some(shield::SHIELDED.to_owned())
        } else {
            message
        };
        EventBody::QueryResult {
            query_id: self.query_id,
            tag: self.tag,
            rows: self.rows,
            sqlstate,
            message,
            duration_us: self.started.map_or(0, |t| {
                u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
            }),
            bytes: self.bytes,
            skipped: skipped || self.refused || self.shielded,
        }
    }
}

/// How a statement failed: the server's error, or why it did not run.
#[derive(Debug, Default)]
struct Failure {
    sqlstate: Option<String>,
    message: Option<String>,
}

/// The COPY in progress, from the server's CopyInResponse / CopyOutResponse on.
#[derive(Debug)]
struct Copy {
    query_id: u64,
    direction: CopyDirection,
    bytes: u64,
    /// COPY FROM STDIN still takes client messages (its CopyDone / CopyFail was not sent).
    taking_input: bool,
}

/// Per-session protocol state for auditing.
#[derive(Debug, Default)]
pub struct Tracker {
    /// How statements are recorded (SQL limit, redaction).
    rules: Arc<ContentRules>,
    /// Whether statements that change roles or the server are refused.
    role_changes: RoleChanges,
    /// The verdict on the last plain SQL text, for the same text sent again.
    last_look: look::LastLook,
    next_query_id: u64,
    confirmed: Confirmed,
    prediction: Prediction,
    pending: VecDeque<Request>,
    /// The server skips messages until a Sync, and no Sync is on its way.
    server_skipping: bool,
    copy: Option<Copy>,
    /// A message forwarded during COPY data that the server answers by ending the
    /// session: nothing forwarded after it runs.
    doomed: bool,
    /// DataRow/CopyData bytes since the last message that closed a request.
    data_bytes: u64,
    saw_fatal: bool,
    /// Executes whose recorded text turned out not to be what the server bound (a
    /// definition changed outside the protocol, e.g. SQL `DEALLOCATE` and `PREPARE`).
    disagreements: u64,
    /// How many statements and portals the session may hold.
    limits: SessionLimits,
    /// The current batch is in a large read buffer: what is kept past it (even of the
    /// unnamed statement and portal) is copied out (see `defs::retained`).
    copy_retained: bool,
    /// The last ReadyForQuery said the transaction is aborted, and it ended a simple
    /// Query that failed: the server's unnamed portal may be that Query's, which an
    /// Execute must not reach (`shield.rs`). Cleared when the transaction leaves the
    /// aborted state or the unnamed portal is bound or closed.
    dangling_unnamed: bool,
    /// The server's answers to SQL that defines names disagreed with the parse: what a
    /// name holds is no longer known, and the session is ended at the next message.
    unfollowed: bool,
    /// SQL defined more statements or cursors than the session's limits allow: the
    /// session is ended at the next message.
    over_limit: Option<LimitExceeded>,
    /// Bytes of the named definitions forwarded since nothing was last in front of the
    /// server (confirmed ones included: an over-estimate, reset when all is answered),
    /// for `session_limits.max_retained_bytes`.
    predicted_bytes: usize,
    /// `query` events up to this id may not be in the log (a batch was rolled back after
    /// they were built): a later execution records its parameters again rather than
    /// point at one of them.
    params_floor: u64,
}

/// A point to return to when a batch of client messages is refused before forwarding.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pending: usize,
    server_skipping: bool,
    copy_input: Option<(bool, u64)>,
    doomed: bool,
}

/// The `query` event of a statement, its SQL recorded under `rules`.
fn query_event(rules: &ContentRules, query_id: u64, protocol: Protocol, sql: &[u8]) -> EventBody {
    let recorded = rules.sql(sql);
    EventBody::Query {
        query_id,
        protocol,
        sql: recorded.sql,
        truncated: recorded.truncated,
        sql_len: recorded.sql_len,
        sql_sha256: recorded.sql_sha256,
        setting_change: None,
        statement: None,
        portal: None,
        params: Vec::new(),
        function_oid: None,
        params_from: None,
    }
}

/// A name as recorded: lossless text (see [`escape_bytes`]).
fn name_text(name: &[u8]) -> String {
    escape_bytes(name)
}

impl Tracker {
    /// A tracker recording statements under `rules` (the session's target and role).
    pub fn new(rules: Arc<ContentRules>) -> Tracker {
        Tracker {
            rules,
            ..Tracker::default()
        }
    }

    /// The same, with statements that change roles or the server refused or allowed
    /// (refused unless told otherwise).
    pub fn with_role_changes(mut self, role_changes: RoleChanges) -> Tracker {
        self.role_changes = role_changes;
        self
    }

    /// The same, under `limits` (statements and portals the session may hold).
    pub fn with_limits(mut self, limits: SessionLimits) -> Tracker {
        self.limits = limits;
        self
    }

    /// Says whether the client batch about to be looked at sits in a large read buffer:
    /// then the names and texts the tracker keeps past the batch are copied out of it.
    /// In small buffers they are kept as slices (no allocation per statement): a slice
    /// keeps at most that small buffer alive.
    pub fn set_copy_retained(&mut self, copy: bool) {
        self.copy_retained = copy;
    }

    /// Queries audited so far.
    pub fn queries(&self) -> u64 {
        self.next_query_id
    }

    /// Whether the server sent a FATAL error (it then closes; the client already knows why).
    pub fn saw_fatal(&self) -> bool {
        self.saw_fatal
    }

    /// Whether the server may still be working on something the client sent: a message
    /// not answered yet, or a COPY in progress. Conservative: a Parse or Bind forwarded
    /// without a Sync or Flush counts until answered.
    pub fn in_flight(&self) -> bool {
        self.copy.is_some() || self.pending.iter().any(Request::expects_reply)
    }

    /// Executes whose recorded text differed from what the server had bound.
    pub fn disagreements(&self) -> u64 {
        self.disagreements
    }

    /// A point to return to if a batch of client messages is refused before forwarding.
    pub fn mark(&self) -> Mark {
        Mark {
            pending: self.pending.len(),
            server_skipping: self.server_skipping,
            copy_input: self.copy.as_ref().map(|c| (c.taking_input, c.bytes)),
            doomed: self.doomed,
        }
    }

    /// Forgets the messages seen since `mark`: they never reached the server, so no
    /// answer will come for them. Query ids are not reused.
    pub fn rollback(&mut self, mark: Mark) {
        // Events built since the mark may never be written: no later execution may point
        // at their parameters.
        self.params_floor = self.next_query_id;
        self.pending.truncate(mark.pending);
        self.server_skipping = mark.server_skipping;
        self.doomed = mark.doomed;
        if let (Some(copy), Some((taking_input, bytes))) = (self.copy.as_mut(), mark.copy_input) {
            copy.taking_input = taking_input;
            copy.bytes = bytes;
        }
        self.repredict();
    }

    /// Like [`Tracker::rollback`], for messages whose `query` events were written but
    /// that will not be forwarded after all (the grant ended meanwhile): their
    /// statements get a skipped `query_result` in `out`.
    pub fn abandon(&mut self, mark: Mark, out: &mut Vec<EventBody>) {
        for mut r in self.pending.drain(mark.pending.min(self.pending.len())..) {
            if r.query_id != 0 {
                r.not_run("not executed: the session ended before it was forwarded");
                out.push(r.result(true));
            }
        }
        self.rollback(mark);
    }

    /// Results for the statements still unanswered when the session ends: the server
    /// may have run them in part (the end stopped them) or not at all.
    pub fn unanswered(&mut self, out: &mut Vec<EventBody>) {
        for mut r in self.pending.drain(..) {
            if r.query_id != 0 {
                r.not_run("no answer: the session ended while the server had it (stopped with the session)");
                out.push(r.result(false));
            }
        }
    }

    /// Rebuilds the prediction from the confirmed state and the messages still in front
    /// of the server (after an error made the server skip some, or a rollback).
    fn repredict(&mut self) {
        self.prediction.reset(self.server_skipping);
        let pending = std::mem::take(&mut self.pending);
        self.predicted_bytes = 0;
        for request in &pending {
            self.predict(request);
            self.predicted_bytes += request.op.retained_bytes();
        }
        self.pending = pending;
    }

    /// Applies one forwarded message to the prediction.
    fn predict(&mut self, request: &Request) {
        let c = &self.confirmed;
        let p = &mut self.prediction;
        match &request.op {
            Op::Parse { def } => p.parse(&def.name, def, c),
            Op::Bind { portal, body, def } => {
                let slot = self.rebind_slot(body, def.as_ref());
                self.prediction.bind(portal, slot, &self.confirmed);
            }
            Op::Close { statement, name } => p.close(*statement, name, c),
            Op::Sync => p.sync(),
            Op::Query { effects } => {
                p.query(c);
                for e in effects.iter().flat_map(|e| &e.list) {
                    p.define(e, false, c);
                }
            }
            Op::Execute {
                effects: Some(effects),
                ..
            } => {
                for e in &effects.list {
                    p.define(e, true, c);
                }
            }
            Op::Describe | Op::Execute { .. } | Op::FunctionCall | Op::Silent { .. } => {}
        }
    }

    /// What a Bind already forwarded makes of the statement its name holds now (when the
    /// prediction is rebuilt; a new Bind is predicted where it is read).
    #[cold]
    #[inline(never)]
    fn rebind_slot(&self, body: &Bytes, known: Option<&Arc<PortalDef>>) -> Slot<PortalDef> {
        match defs::keyed_bind(body.clone()) {
            Ok(b) => client::portal_slot(&self.rules, &self.prediction, &self.confirmed, &b, known),
            // It parsed when it was forwarded; cannot happen.
            Err(_) => Slot::Ambiguous,
        }
    }

    /// Records a request as forwarded.
    fn push(&mut self, request: Request) {
        self.predict(&request);
        self.predicted_bytes += request.op.retained_bytes();
        self.pending.push_back(request);
    }

    fn next_id(&mut self) -> u64 {
        self.next_query_id += 1;
        self.next_query_id
    }

    /// The parameters of a portal for the `query` event `query_id` of one of its
    /// executions: recorded with its first execution, pointed at (`params_from`) by the
    /// later ones, so a portal run in many steps does not copy its values each time.
    fn portal_params(
        &self,
        def: Option<&Arc<PortalDef>>,
        query_id: u64,
    ) -> (Vec<Param>, Option<u64>) {
        match def {
            Some(d) if !d.params.is_empty() => match d.params_recorded(query_id, self.params_floor)
            {
                Some(from) => (Vec::new(), Some(from)),
                None => (d.params.clone(), None),
            },
            _ => (Vec::new(), None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod protocol_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod limits_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod sqlnames_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod timing;
#[cfg(test)]
mod size_tests {
    /// A `Request` is moved into and out of the queue for every message a client sends:
    /// its size is a per-message cost (measured: 240 bytes cost +20 first-level cache
    /// write misses per `-M prepared` transaction at 16 clients, BENCHMARKS.md). What
    /// only some requests need is boxed (`failure`) or kept once (`Op::Parse`'s name
    /// is its definition's).
    #[test]
    fn a_request_stays_small() {
        assert!(std::mem::size_of::<super::Op>() <= 80);
        assert!(std::mem::size_of::<super::Request>() <= 168);
    }
}
