//! The server side of the tracker: each reply is matched to the oldest forwarded
//! message not yet answered, confirms what that message did to the server's names,
//! and closes the statements it ends (`query_result`, `copy`).
//!
//! What answers what (PostgreSQL 15, `postgres.c` and the COPY code):
//! - Parse → ParseComplete; Bind → BindComplete; Close → CloseComplete; Describe →
//!   [ParameterDescription] RowDescription | NoData; Execute → rows, then
//!   CommandComplete | EmptyQueryResponse | PortalSuspended; Sync → ReadyForQuery;
//!   Query and FunctionCall → their results, then ReadyForQuery; Flush and COPY
//!   messages → nothing. Any of them → ErrorResponse instead.
//! - An ErrorResponse for an extended-protocol message makes the server skip every
//!   message up to the next Sync (`ignore_till_sync`): those are answered with nothing,
//!   and their statements are recorded as skipped. An error in a Query, FunctionCall or
//!   Sync does not (ReadyForQuery follows).
//! - CopyInResponse: the COPY reads the client's messages in order — CopyData until
//!   CopyDone or CopyFail, ignoring Sync and Flush; any other message is a protocol
//!   violation that ends the session.
//! - ReadyForQuery `I`: the transaction ended, and with it every portal. (A COMMIT or
//!   ROLLBACK run by Execute ends it earlier; its tag cannot be told from ROLLBACK TO
//!   SAVEPOINT's, which keeps older portals, so portals go at the ReadyForQuery.)
//! - A Bind refused after the server created its portal leaves the portal, holding
//!   nothing it will run, until the transaction ends: in a transaction block, until
//!   ROLLBACK (see [`bind_created_portal`]). An Execute of it in the aborted block
//!   answers EmptyQueryResponse (the portal is empty) or is logged and refused with
//!   25P02 (the Bind failed as its portal started).

use std::sync::Arc;

use bytes::Bytes;

use jitgate_audit::{CopyDirection, EventBody};

use super::client::{same_statement, SKIPPED_IN_COPY, SKIPPED_UNTIL_SYNC};
use super::defs::{keyed_bind, PortalDef};
use super::effects::Created;
use super::names::Name;
use super::{sqlnames, Copy, Op, Request, Tracker};
use crate::protocol::backend::{self, ErrorFields};
use crate::protocol::tags;
use crate::session::limits::{LimitExceeded, LimitKind};

/// Why statements still waiting when the server ended the session did not run.
const SKIPPED_SERVER_GONE: &str =
    "not executed: the server ended the session before it reached this statement";

/// Why an Execute answered with EmptyQueryResponse ran nothing although a statement was
/// recorded for it.
const EMPTY_PORTAL_OF_FAILED_BIND: &str =
    "not executed: the portal holds no statement (the Bind that made it failed; the server keeps such a portal until the transaction ends)";

/// Whether a Bind the server refused had created its portal by then, so that the
/// portal stays (PostgreSQL 15 `exec_bind_message`; see
/// [`super::confirmed::Confirmed::bind_failed`]). Before creating it the server reads
/// the names (22021 for one not valid in the client encoding), finds the statement
/// (26000), checks the counts of parameter formats and values (08P01, raised by
/// `exec_bind_message` itself), refuses a failed transaction (25P02) and a portal name
/// in use (42P03, `CreatePortal`). Every later error leaves the portal: converting a
/// parameter (the error's context names the parameter, which tells a value's 22021 from
/// a name's; a short binary value is 08P01 from `pq_copymsgbytes`), planning (e.g.
/// 22012 from constant folding), starting the portal. The differential test checks
/// each of these on the real server.
fn bind_created_portal(fields: &ErrorFields) -> bool {
    match fields.code.as_deref() {
        Some("26000" | "25P02" | "42P03") => false,
        Some("08P01") => fields.routine.as_deref() != Some("exec_bind_message"),
        Some("22021") => fields.context.is_some(),
        _ => true,
    }
}

/// The routine of the error the server raises for an Execute whose portal does not
/// exist (SQLSTATE 34000), before logging and running anything. (An Execute can also
/// fail with 34000 while it runs: FETCH of a missing cursor.)
const PORTAL_LOOKUP_ROUTINE: &str = "exec_execute_message";

/// A reply (`what`) the front request does not get: the tracker lost the server's
/// track. Logged (out of line: the reply path is hot) and ignored.
#[cold]
#[inline(never)]
fn unmatched(front: &Op, what: &str) {
    tracing::warn!(front = ?front, "{what} from the server matches no message the tracker expected; ignored");
}

/// A ReadyForQuery with no Sync, Query or FunctionCall in front.
#[cold]
#[inline(never)]
fn ready_for_nothing(front: Option<&Op>) {
    tracing::debug!(front = ?front, "ReadyForQuery that ends nothing forwarded; ignored");
}

/// An Execute ran another portal than the one whose text was recorded.
#[cold]
#[inline(never)]
fn report_disagreement(
    query_id: u64,
    portal: &[u8],
    recorded: Option<&Arc<PortalDef>>,
    bound: Option<&Arc<PortalDef>>,
) {
    let sql_of = |d: Option<&Arc<PortalDef>>| {
        d.and_then(|d| d.statement.as_ref())
            .map(|s| String::from_utf8_lossy(&s.sql).into_owned())
    };
    tracing::error!(
        query_id,
        portal = %String::from_utf8_lossy(portal),
        recorded = ?sql_of(recorded),
        bound = ?sql_of(bound),
        "the text recorded for this Execute is not what the server had bound (a definition changed outside the protocol, e.g. SQL DEALLOCATE/PREPARE in a function)"
    );
}

impl Tracker {
    /// A server message whose body is not needed: DataRow and CopyData are counted by
    /// length; the others (RowDescription, ParameterDescription, ParseComplete, …) are
    /// matched like any reply.
    pub fn on_server_header(&mut self, tag: u8, len: usize, out: &mut Vec<EventBody>) {
        if tag == tags::DATA_ROW || tag == tags::COPY_DATA {
            self.data_bytes += len as u64;
            if let Some(copy) = self.copy.as_mut() {
                if copy.direction == CopyDirection::Out {
                    copy.bytes += len as u64;
                }
            }
        } else {
            self.on_server(tag, &[], out);
        }
    }

    /// Looks at one server message; appends the events it completes to `out`.
    pub fn on_server(&mut self, tag: u8, body: &[u8], out: &mut Vec<EventBody>) {
        match tag {
            tags::PARSE_COMPLETE => {
                if let Some(Op::Parse { def }) =
                    self.take_front(|op| matches!(op, Op::Parse { .. }))
                {
                    self.confirmed.define_statement(def.name.clone(), def);
                }
            }
            tags::BIND_COMPLETE => {
                if let Some(op) = self.take_front(|op| matches!(op, Op::Bind { .. })) {
                    self.confirm_bind(op);
                }
            }
            tags::CLOSE_COMPLETE => self.close_done(),
            tags::ROW_DESCRIPTION | tags::NO_DATA => {
                // Part of a Query's results, or the end of a Describe's answer.
                self.take_front(|op| matches!(op, Op::Describe));
            }
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
                // A COMMIT or ROLLBACK run by Execute ends the transaction, but the tag
                // alone cannot say so: ROLLBACK TO SAVEPOINT has the tag ROLLBACK too and
                // keeps the portals made before the savepoint. Portals are dropped at the
                // next ReadyForQuery that says the transaction ended; until then a portal
                // the server dropped is still here, which only means an Execute of it is
                // recorded with its text and then refused (34000, recorded as skipped).
                if let Some(t) = &parsed {
                    self.names_done(&t.tag);
                }
                self.statement_done(out, false, |r| {
                    if let Some(t) = parsed {
                        r.tag = Some(t.tag);
                        r.rows = t.rows;
                    }
                });
            }
            tags::EMPTY_QUERY => self.statement_done(out, true, |_| {}),
            tags::PORTAL_SUSPENDED => self.statement_done(out, false, |r| {
                r.tag = Some("PORTAL SUSPENDED".into());
            }),
            tags::FUNCTION_CALL_RESPONSE => {
                if let Some(r) = self.front() {
                    r.answered = true;
                }
            }
            tags::COPY_IN_RESPONSE => self.copy_in_started(out),
            tags::COPY_OUT_RESPONSE | tags::COPY_BOTH_RESPONSE => self.copy_out_started(),
            tags::ERROR_RESPONSE => self.on_error(body, out),
            tags::READY_FOR_QUERY => self.on_ready(body, out),
            _ => return,
        }
        if !self.pending.iter().any(Request::expects_reply) {
            // Nothing in front of the server: the prediction is the confirmed state.
            self.prediction.reset(self.server_skipping || self.doomed);
            self.predicted_bytes = 0;
        }
    }

    /// The oldest request that expects an answer (Flush and COPY messages in front of it
    /// are answered with nothing, so they go).
    fn front(&mut self) -> Option<&mut Request> {
        while self.pending.front().is_some_and(|r| !r.expects_reply()) {
            self.pending.pop_front();
        }
        self.pending.front_mut()
    }

    /// Removes the front request if it is of the kind `expected`, and gives its op. A
    /// reply for another kind means the tracker lost the server's track: it is logged
    /// and ignored rather than attributed to the wrong message.
    fn take_front(&mut self, expected: impl Fn(&Op) -> bool) -> Option<Op> {
        let front = self.front()?;
        if !expected(&front.op) {
            if matches!(front.op, Op::Query { .. }) {
                // RowDescription inside a Query's results.
                return None;
            }
            unmatched(&front.op, "a reply");
            return None;
        }
        self.pending.pop_front().map(|r| r.op)
    }

    /// BindComplete: the portal now holds what the Bind made of the statement the server
    /// had under that name.
    fn confirm_bind(&mut self, op: Op) {
        if let Some((portal, def)) = self.bound_portal(&op) {
            self.dangling_unnamed &= !portal.is_empty();
            self.confirmed.bound(portal, def);
        }
    }

    /// The portal a Bind made (or, refused, would have made) of the statement the server
    /// had under that name: the predicted one, rebuilt if the prediction used another
    /// definition of the statement.
    fn bound_portal(&self, op: &Op) -> Option<(Name, Arc<PortalDef>)> {
        let Op::Bind { portal, def, body } = op else {
            return None;
        };
        let def = match def {
            Some(d)
                if same_statement(
                    d.statement.as_ref(),
                    self.confirmed.statements.get(&d.statement_name),
                ) =>
            {
                Arc::clone(d)
            }
            _ => self.rebound(body)?,
        };
        Some((portal.clone(), def))
    }

    /// The portal a Bind makes of what the server holds under its statement name, when
    /// that is not the definition predicted as the Bind was forwarded (or the prediction
    /// was ambiguous): built again from the message.
    #[cold]
    #[inline(never)]
    fn rebound(&self, body: &Bytes) -> Option<Arc<PortalDef>> {
        let bind = keyed_bind(body.clone()).ok()?;
        let held = self.confirmed.statements.get(&bind.statement).cloned();
        Some(Arc::new(PortalDef::bound(&self.rules, &bind, held)))
    }

    /// CloseComplete: the name is gone.
    #[inline(never)]
    fn close_done(&mut self) {
        if let Some(Op::Close { statement, name }) =
            self.take_front(|op| matches!(op, Op::Close { .. }))
        {
            if statement {
                self.confirmed.drop_statement(&name);
            } else {
                self.dangling_unnamed &= !name.is_empty();
                self.confirmed.portal_closed(&name);
            }
        }
    }

    /// CopyOutResponse or CopyBothResponse: the front statement's rows come as COPY data.
    #[cold]
    #[inline(never)]
    fn copy_out_started(&mut self) {
        if let Some(r) = self.front() {
            r.answered = true;
            let query_id = r.query_id;
            self.copy = Some(Copy {
                query_id,
                direction: CopyDirection::Out,
                bytes: 0,
                taking_input: false,
            });
        }
    }

    /// A reply that ends an Execute (CommandComplete, EmptyQueryResponse (`empty`),
    /// PortalSuspended) — or one statement of a Query, which goes on until ReadyForQuery.
    fn statement_done(
        &mut self,
        out: &mut Vec<EventBody>,
        empty: bool,
        fill: impl FnOnce(&mut Request),
    ) {
        let bytes = std::mem::take(&mut self.data_bytes);
        let Some(r) = self.front() else { return };
        if !matches!(r.op, Op::Execute { .. } | Op::Query { .. }) {
            unmatched(&r.op, "a statement's completion");
            return;
        }
        r.bytes += bytes;
        r.answered = true;
        fill(r);
        if let Op::Execute { .. } = r.op {
            if let Some(mut r) = self.pending.pop_front() {
                self.check_execute(&r);
                // An empty portal left by a failed Bind: the statement recorded for it
                // (the Bind's) never ran.
                let never_ran = empty
                    && match &r.op {
                        Op::Execute { portal, .. } => self.confirmed.is_failed_portal(portal),
                        _ => false,
                    };
                if never_ran {
                    r.not_run(EMPTY_PORTAL_OF_FAILED_BIND);
                }
                out.push(r.result(never_ran));
            }
        }
    }

    /// A statement of the front Query or Execute completed with `tag`: what it did to
    /// the names (SQL `PREPARE`, `DECLARE`, …) takes effect, if the tag is the one the
    /// parse expected. A tag that says a name was defined or dropped where the parse
    /// saw no such statement, or the other way round, means the tracker no longer knows
    /// what the names hold: the session is ended (see `Tracker::unfollowed`).
    fn names_done(&mut self, tag: &str) {
        let front = self.front();
        if front.is_some_and(|f| !f.op.has_effects()) && !sqlnames::is_name_tag(tag) {
            // The common case: a statement that neither defines nor drops names.
            return;
        }
        self.names_changed(tag);
    }

    /// [`Tracker::names_done`] for a statement that defines or drops names, or a tag
    /// that says one did.
    #[cold]
    #[inline(never)]
    fn names_changed(&mut self, tag: &str) {
        let Some(front) = self.pending.front_mut() else {
            return;
        };
        let (effects, running) = match &mut front.op {
            Op::Query { effects } => (effects, None),
            Op::Execute {
                effects, portal, ..
            } => (effects, Some(&portal[..])),
            _ => return,
        };
        let effect = match effects.as_mut() {
            Some(effects) => effects.next(),
            None => None,
        };
        let agrees = match effect {
            Some(e) => e.parsed.agrees(tag),
            None => !sqlnames::is_name_tag(tag),
        };
        if !agrees {
            self.unfollowed = true;
            tracing::error!(
                tag,
                "a statement that defines or drops prepared statements or cursors completed where jitgate's parse did not expect it; the session will be ended"
            );
            return;
        }
        let Some(effect) = effect else { return };
        self.confirmed.apply(effect, running);
        if !matches!(effect.created, Created::Nothing) {
            let (statements, portals) = self.confirmed.named();
            if self.confirmed.retained_bytes() > self.limits.max_retained_bytes {
                self.over_limit = Some(LimitExceeded {
                    kind: LimitKind::RetainedBytes,
                    limit: self.limits.max_retained_bytes,
                });
            } else if statements > self.limits.max_prepared_statements {
                self.over_limit = Some(LimitExceeded {
                    kind: LimitKind::PreparedStatements,
                    limit: self.limits.max_prepared_statements,
                });
            } else if portals > self.limits.max_portals {
                self.over_limit = Some(LimitExceeded {
                    kind: LimitKind::Portals,
                    limit: self.limits.max_portals,
                });
            }
        }
    }

    /// Cross-check: the portal the server ran is the one whose text was recorded.
    fn check_execute(&mut self, r: &Request) {
        let Op::Execute { portal, def, .. } = &r.op else {
            return;
        };
        let held = self.confirmed.portals.get(portal);
        let same = match (def, held) {
            (Some(a), Some(b)) => {
                Arc::ptr_eq(a, b)
                    || (a.statement_name == b.statement_name
                        && same_statement(a.statement.as_ref(), b.statement.as_ref())
                        && a.params == b.params)
            }
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.disagreements += 1;
            report_disagreement(r.query_id, portal, def.as_ref(), held);
        }
    }

    /// CopyInResponse: the COPY takes the client's next messages. Those already
    /// forwarded behind the statement go to it in order: CopyData until CopyDone or
    /// CopyFail, Sync and Flush ignored; any other message ends the session on the
    /// server, so nothing from there on runs.
    #[cold]
    #[inline(never)]
    fn copy_in_started(&mut self, out: &mut Vec<EventBody>) {
        let Some(front) = self.front() else { return };
        front.answered = true;
        let mut copy = Copy {
            query_id: front.query_id,
            direction: CopyDirection::In,
            bytes: 0,
            taking_input: true,
        };
        // The front stays; each message behind it is consumed in turn. (COPY data the
        // client sent before this answer waited for it, see `on_client`: what is here
        // is what a client sends behind any statement.)
        let i = 1;
        while copy.taking_input {
            let Some(next) = self.pending.get(i) else {
                break;
            };
            match next.op {
                Op::Sync => {
                    self.pending.remove(i);
                }
                Op::Silent {
                    copy_end,
                    copy_bytes,
                } => {
                    copy.bytes += copy_bytes;
                    copy.taking_input = !copy_end;
                    self.pending.remove(i);
                }
                _ => {
                    // The COPY reads it first thing: a protocol violation that ends
                    // the session.
                    self.doomed = true;
                    self.skip_from(i, SKIPPED_IN_COPY, out);
                    break;
                }
            }
        }
        self.copy = Some(copy);
        self.repredict();
    }

    /// Removes the requests from `i` on, recording their statements as not run.
    #[cold]
    #[inline(never)]
    fn skip_from(&mut self, i: usize, why: &str, out: &mut Vec<EventBody>) {
        for mut r in self.pending.drain(i..) {
            if r.query_id != 0 {
                r.not_run(why);
                out.push(r.result(true));
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn on_error(&mut self, body: &[u8], out: &mut Vec<EventBody>) {
        let fields = backend::parse_error_fields(body);
        let fatal = matches!(fields.severity.as_deref(), Some("FATAL" | "PANIC"));
        self.saw_fatal |= fatal;
        if let Some(copy) = self.copy.take() {
            // The COPY is over; what it moved so far is recorded with it.
            out.push(EventBody::Copy {
                query_id: copy.query_id,
                direction: copy.direction,
                bytes: copy.bytes,
                rows: None,
            });
        }
        let bytes = std::mem::take(&mut self.data_bytes);
        let Some(front) = self.front() else {
            // Not an answer to anything (e.g. the server is being shut down).
            if fatal {
                self.doomed = true;
            }
            return;
        };
        front.bytes += bytes;
        front.answered = true;
        let failure = front.fail();
        failure.sqlstate = fields.code.clone();
        failure.message = fields.message.clone();
        let extended = !matches!(front.op, Op::Query { .. } | Op::FunctionCall | Op::Sync);
        if extended || fatal {
            if let Some(r) = self.pending.pop_front() {
                if let Op::Parse { def } = &r.op {
                    // The unnamed statement was dropped before the new one was parsed.
                    if def.name.is_empty() {
                        self.confirmed.drop_statement(&def.name);
                    }
                }
                if matches!(r.op, Op::Bind { .. }) && !fatal && bind_created_portal(&fields) {
                    if let Some((portal, def)) = self.bound_portal(&r.op) {
                        self.confirmed.bind_failed(portal, def);
                    }
                }
                if r.query_id != 0 {
                    let never_ran = matches!(r.op, Op::Execute { .. })
                        && match fields.code.as_deref() {
                            Some("34000") => {
                                fields.routine.as_deref() == Some(PORTAL_LOOKUP_ROUTINE)
                            }
                            // The portal name is not valid in the session's encoding:
                            // the message is refused as it is read, before anything.
                            Some("22021") => true,
                            _ => false,
                        };
                    out.push(r.result(never_ran));
                }
            }
        }
        if fatal {
            // The server closes the connection: nothing behind it runs.
            self.doomed = true;
            self.skip_from(0, SKIPPED_SERVER_GONE, out);
            self.repredict();
        } else if extended {
            self.skip_until_sync(out);
        }
    }

    /// After an error in an extended-protocol message: the server skips everything up to
    /// the next Sync.
    #[cold]
    #[inline(never)]
    fn skip_until_sync(&mut self, out: &mut Vec<EventBody>) {
        let upto = self
            .pending
            .iter()
            .position(|r| matches!(r.op, Op::Sync))
            .unwrap_or(self.pending.len());
        let rest = self.pending.split_off(upto);
        for mut r in std::mem::replace(&mut self.pending, rest) {
            if r.query_id != 0 {
                r.not_run(SKIPPED_UNTIL_SYNC);
                out.push(r.result(true));
            }
        }
        if self.pending.is_empty() {
            self.server_skipping = true;
        }
        self.repredict();
    }

    /// ReadyForQuery: ends a Sync, a Query or a FunctionCall.
    fn on_ready(&mut self, body: &[u8], out: &mut Vec<EventBody>) {
        let status = backend::parse_ready_for_query(body);
        self.copy = None;
        let bytes = std::mem::take(&mut self.data_bytes);
        match self.front() {
            Some(r) if matches!(r.op, Op::Sync) => {
                self.pending.pop_front();
            }
            Some(r) if matches!(r.op, Op::Query { .. } | Op::FunctionCall) && r.answered => {
                r.bytes += bytes;
                if let Some(r) = self.pending.pop_front() {
                    if matches!(r.op, Op::Query { .. }) {
                        self.confirmed.simple_query(r.tag.is_some());
                        let failed = r.failure.as_ref().is_some_and(|f| f.sqlstate.is_some());
                        if failed && status == Some(tags::TX_FAILED) {
                            self.dangling_unnamed = true;
                        }
                    }
                    out.push(r.result(false));
                }
            }
            other => ready_for_nothing(other.map(|r| &r.op)),
        }
        if status != Some(tags::TX_FAILED) {
            self.dangling_unnamed = false;
        }
        if status == Some(tags::TX_IDLE) {
            self.confirmed.transaction_ended();
        }
    }
}
