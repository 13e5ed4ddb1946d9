//! The client side of the tracker: each message the client sends, looked at before it
//! is forwarded — the `query` event of each statement, what the message will do to the
//! server's names, and whether it may be forwarded now (see [`Step`]).

use std::sync::Arc;

use bytes::Bytes;
use jitgate_audit::{ContentRules, EventBody, Protocol};

use super::confirmed::Confirmed;
use super::defs::{function_args, keyed_bind, retained, PortalDef, Slot, StatementDef};
use super::effects::Effects;
use super::look::Look;
use super::names::key;
use super::predict::Prediction;
use super::{name_text, query_event, Copy, Halt, Op, Request, Step, Tracker};
use crate::guard::{self, substitute, Refusal, RoleChanges};
use crate::protocol::frontend::{self, Bind};
use crate::protocol::tags;
use crate::protocol::ProtocolError;
use crate::session::limits::{LimitExceeded, LimitKind};

/// Why a statement forwarded while the server skips will not run.
pub(super) const SKIPPED_UNTIL_SYNC: &str =
    "not executed: an earlier message of this extended-protocol group failed, so the server skipped everything up to the next Sync";
/// Why a statement forwarded during COPY data will not run.
pub(super) const SKIPPED_IN_COPY: &str =
    "not executed: it was sent during COPY data, which the server treats as a protocol violation and ends the session";

/// What the portal a Bind creates will hold: made from what the statement name holds
/// when the server reaches the Bind. `known` is a portal made earlier from the same
/// message, reused when the statement is still the same.
pub(super) fn portal_slot(
    rules: &ContentRules,
    prediction: &Prediction,
    confirmed: &Confirmed,
    bind: &Bind,
    known: Option<&Arc<PortalDef>>,
) -> Slot<PortalDef> {
    let statement = match prediction.statement(&bind.statement, confirmed) {
        Slot::Ambiguous => return Slot::Ambiguous,
        // No statement by that name: the Bind fails, unless SQL PREPARE made one (the
        // protocol does not show it); then the text is unknown here.
        Slot::Absent => None,
        Slot::Def(d) => Some(d),
    };
    if let Some(known) = known {
        if same_statement(known.statement.as_ref(), statement.as_ref()) {
            return Slot::Def(Arc::clone(known));
        }
    }
    Slot::Def(Arc::new(PortalDef::bound(rules, bind, statement)))
}

/// The text recorded for a statement: as sent, or — refused — with its passwords masked.
fn recorded_sql(refusal: Option<Refusal>, sql: &Bytes) -> Bytes {
    refusal
        .and_then(|_| guard::mask_passwords(sql))
        .map_or_else(|| sql.clone(), Bytes::from)
}

/// A message while a COPY takes the client's input.
#[inline(never)]
fn copy_input(copy: &mut Copy, tag: u8, len: usize) -> Result<Step, ProtocolError> {
    match tag {
        tags::COPY_DATA => {
            copy.bytes += len as u64;
            Ok(Step::Forward)
        }
        tags::COPY_DONE | tags::COPY_FAIL => {
            copy.taking_input = false;
            Ok(Step::Forward)
        }
        // The COPY ignores them (postgres.c: for libraries that send them without
        // knowing the command was a COPY). Not forwarded: should the COPY have
        // failed meanwhile, the server would take a Sync as the end of a skip, and
        // which Syncs count would be unknown.
        tags::SYNC | tags::FLUSH => Ok(Step::Drop),
        // The server ends the session at anything else — unless its COPY failed
        // meanwhile and it runs the message after all. Not forwarded: the session
        // ends here, as it would on the server.
        _ => Err(ProtocolError::UnexpectedDuringCopy { tag }),
    }
}

/// The `query_result` of a statement the server will not run, and why.
#[cold]
#[inline(never)]
fn skipped(mut request: Request, why: &str) -> EventBody {
    request.not_run(why);
    request.result(true)
}

/// Whether two portals were bound from the same statement definition.
pub(super) fn same_statement(a: Option<&Arc<StatementDef>>, b: Option<&Arc<StatementDef>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Tracker {
    /// Looks at one client message before it is forwarded. Appends the events to write
    /// before forwarding it (the `query` event of a statement; with it, its
    /// `query_result` when the server certainly will not run it) and says what to do
    /// with the message. A malformed message is a protocol error (the session ends).
    pub fn on_client(
        &mut self,
        tag: u8,
        body: Bytes,
        events: &mut Vec<EventBody>,
    ) -> Result<Step, Halt> {
        // COPY data while no COPY takes it, with something in front of the server: a
        // COPY may be about to start. It waits until the server says, so that whether
        // the messages around it go to a COPY is never in doubt.
        let copy_data = matches!(tag, tags::COPY_DATA | tags::COPY_DONE | tags::COPY_FAIL);
        let taking = self.copy.as_ref().is_some_and(|c| c.taking_input);
        if copy_data && !taking && self.in_flight() {
            return Ok(Step::Wait);
        }
        if let Some(copy) = self.copy.as_mut().filter(|c| c.taking_input) {
            return Ok(copy_input(copy, tag, body.len())?);
        }
        if self.unfollowed || self.over_limit.is_some() {
            return Err(self.refused_session());
        }
        match tag {
            tags::QUERY => self.query(body, events),
            tags::PARSE => self.parse(body),
            tags::BIND => self.bind(body),
            tags::EXECUTE => self.execute(body, events),
            tags::FUNCTION_CALL => self.function_call(body, events),
            tags::CLOSE => {
                let c = frontend::parse_close(body)?;
                self.message(Op::Close {
                    statement: c.kind == tags::KIND_STATEMENT,
                    name: key(c.name),
                });
                Ok(Step::Forward)
            }
            tags::DESCRIBE => {
                frontend::parse_describe(body)?;
                self.message(Op::Describe);
                Ok(Step::Forward)
            }
            tags::SYNC => {
                // It ends the server's skip, and is answered (ReadyForQuery).
                self.server_skipping = false;
                if !self.doomed {
                    self.push(Request::new(Op::Sync, 0));
                }
                Ok(Step::Forward)
            }
            tags::FLUSH | tags::COPY_DATA | tags::COPY_DONE | tags::COPY_FAIL if !self.doomed => {
                let op = Op::Silent {
                    copy_end: tag != tags::FLUSH && tag != tags::COPY_DATA,
                    copy_bytes: if tag == tags::COPY_DATA {
                        body.len() as u64
                    } else {
                        0
                    },
                };
                self.push(Request::new(op, 0));
                Ok(Step::Forward)
            }
            tags::TERMINATE => Ok(Step::Forward),
            // Not a message the server takes after startup: it ends the session there
            // ("invalid frontend message type"), so nothing after it runs.
            _ => {
                self.doomed = true;
                Ok(Step::Forward)
            }
        }
    }

    /// Query: one `query` event for its whole text (a refused one is replaced by a
    /// substitute the server fails).
    fn query(&mut self, body: Bytes, events: &mut Vec<EventBody>) -> Result<Step, Halt> {
        let q = frontend::parse_query(body)?;
        let Look {
            refusal,
            names,
            setting,
        } = self.last_look.look(self.role_changes, &q.sql);
        let recorded = recorded_sql(refusal, &q.sql);
        let query_id = self.next_id();
        let mut event = query_event(&self.rules, query_id, Protocol::Simple, &recorded);
        if let EventBody::Query {
            setting_change: s, ..
        } = &mut event
        {
            *s = setting;
        }
        // The server keeps the whole text as the source of what it defines.
        let effects = names.map(|n| Effects::new(&n, &Bytes::copy_from_slice(&q.sql), &[]));
        let mut request = Request::new(Op::Query { effects }, query_id);
        let mut step = Step::Forward;
        if let Some(r) = refusal {
            request.refused = true;
            step = Step::Replace(substitute::query_frame(r));
        }
        self.statement(event, request, events);
        Ok(step)
    }

    /// Parse: the statement it defines, in effect once ParseComplete confirms it.
    fn parse(&mut self, body: Bytes) -> Result<Step, Halt> {
        let mut p = frontend::parse_parse(body)?;
        p.statement = key(p.statement);
        let named = !p.statement.is_empty();
        if named && self.runs() {
            self.check_limit(LimitKind::PreparedStatements, &p.statement)?;
        }
        let Look {
            refusal,
            names,
            setting,
        } = self.last_look.look(self.role_changes, &p.sql);
        // A Parse holds one statement (the server refuses more).
        let names = names
            .filter(|n| n.len() == 1)
            .and_then(|n| n.first().cloned());
        let mut step = Step::Forward;
        if let Some(r) = refusal {
            let params = guard::max_param(&p.sql);
            step = Step::Replace(substitute::parse_frame(
                r,
                &p.statement,
                &p.param_types,
                params,
            ));
        }
        // Kept past the batch: a named statement for as long as the client keeps
        // it, so always copied; the unnamed one until the next Parse, so only
        // when the buffer is large.
        let copy = named || self.copy_retained;
        let name = retained(p.statement, copy);
        let def = Arc::new(StatementDef {
            name: name.clone(),
            sql: retained(recorded_sql(refusal, &p.sql), copy),
            param_types: p.param_types,
            setting,
            refused: refusal,
            names,
        });
        if named && self.runs() {
            self.check_bytes(def.size())?;
        }
        self.message(Op::Parse { def });
        Ok(step)
    }

    /// Bind: the portal it makes from what the statement name will hold then.
    fn bind(&mut self, body: Bytes) -> Result<Step, Halt> {
        let b = keyed_bind(body.clone())?;
        if self.runs() {
            if !b.portal.is_empty() {
                self.check_limit(LimitKind::Portals, &b.portal)?;
            }
            let slot = portal_slot(&self.rules, &self.prediction, &self.confirmed, &b, None);
            if !b.portal.is_empty() {
                self.check_bytes(slot.def().map_or(0, |d| d.size()))?;
            }
            self.prediction
                .bind(&b.portal, slot.clone(), &self.confirmed);
            let op = Op::Bind {
                // A named portal's name is kept as long as the portal: copied.
                portal: retained(b.portal, true),
                def: slot.def().cloned(),
                body,
            };
            // Predicted above: straight into the queue.
            self.predicted_bytes += op.retained_bytes();
            self.pending.push_back(Request::new(op, 0));
        }
        Ok(Step::Forward)
    }

    /// Execute: the `query` event of the statement its portal runs, with the portal's
    /// parameters; it waits while two definitions are possible.
    fn execute(&mut self, body: Bytes, events: &mut Vec<EventBody>) -> Result<Step, Halt> {
        let e = frontend::parse_execute(body)?;
        let mut step = Step::Forward;
        let mut shielded = false;
        if self.runs() {
            match self.shield_execute(&e.portal) {
                Some(Step::Wait) => return Ok(Step::Wait),
                Some(Step::Replace(frame)) => {
                    shielded = true;
                    step = Step::Replace(frame);
                }
                _ => {}
            }
        }
        let portal_key = key(e.portal.clone());
        let slot = self.prediction.portal(&portal_key, &self.confirmed);
        let runs = !(self.doomed || self.server_skipping);
        // With nothing in front of the server the prediction is its state and
        // cannot be ambiguous; the check keeps a waiting relay from spinning.
        if runs && slot.is_ambiguous() && self.in_flight() {
            return Ok(Step::Wait);
        }
        let def = slot.def().cloned();
        let query_id = self.next_id();
        let statement = def.as_ref().and_then(|d| d.statement.as_ref());
        let sql = statement.map_or(&[][..], |s| &s.sql[..]);
        let mut event = query_event(&self.rules, query_id, Protocol::Extended, sql);
        if let EventBody::Query {
            statement: st,
            portal,
            params,
            setting_change,
            params_from,
            ..
        } = &mut event
        {
            *st = def.as_ref().map(|d| name_text(&d.statement_name));
            *portal = Some(name_text(&e.portal));
            (*params, *params_from) = self.portal_params(def.as_ref(), query_id);
            *setting_change = statement.and_then(|s| s.setting);
        }
        let refused = statement.is_some_and(|s| s.refused.is_some());
        let effects = match (statement, &def) {
            (Some(s), Some(d)) if !refused && !shielded => s
                .names
                .as_ref()
                .map(|n| Effects::new(std::slice::from_ref(n), &s.sql, &d.params)),
            _ => None,
        };
        let mut request = Request::new(
            Op::Execute {
                portal: portal_key,
                def,
                effects,
            },
            query_id,
        );
        request.refused = refused;
        request.shielded = shielded;
        self.statement(event, request, events);
        Ok(step)
    }

    /// Why no message of the session is taken any more: the tracker lost track of the
    /// names, or the session went over a limit.
    #[cold]
    #[inline(never)]
    fn refused_session(&self) -> Halt {
        match self.over_limit {
            Some(limit) if !self.unfollowed => Halt::Limit(limit),
            _ => Halt::Unfollowed,
        }
    }

    /// FunctionCall: a statement, recorded with its arguments; refused (replaced by a
    /// Query that fails) when it would change the role.
    #[inline(never)]
    fn function_call(&mut self, body: Bytes, events: &mut Vec<EventBody>) -> Result<Step, Halt> {
        let f = frontend::parse_function_call(body)?;
        let query_id = self.next_id();
        let mut event = query_event(&self.rules, query_id, Protocol::FunctionCall, b"");
        if let EventBody::Query {
            params,
            function_oid,
            ..
        } = &mut event
        {
            *params = function_args(&self.rules, &f.arg_formats, &f.args);
            *function_oid = Some(f.oid);
        }
        let refusal = match self.role_changes {
            RoleChanges::Refuse => guard::check_function_call(f.oid, &f.args),
            RoleChanges::Allow => None,
        };
        let mut step = Step::Forward;
        let request = match refusal {
            // The server gets a Query instead, and answers it as one.
            Some(r) => {
                step = Step::Replace(substitute::query_frame(r));
                let mut request = Request::new(Op::Query { effects: None }, query_id);
                request.refused = true;
                request
            }
            None => Request::new(Op::FunctionCall, query_id),
        };
        self.statement(event, request, events);
        Ok(step)
    }

    /// Whether the server will take the next message (it does not skip, and the session
    /// is not doomed).
    fn runs(&self) -> bool {
        !(self.doomed || self.server_skipping)
    }

    /// Refuses a new named statement or portal beyond the session's limit (the session
    /// then ends: see `session/limits.rs`).
    fn check_limit(&self, kind: LimitKind, name: &[u8]) -> Result<(), Halt> {
        let (limit, over) = match kind {
            LimitKind::PreparedStatements => {
                let limit = self.limits.max_prepared_statements;
                (
                    limit,
                    self.prediction
                        .statements_over(name, &self.confirmed, limit),
                )
            }
            LimitKind::Portals => {
                let limit = self.limits.max_portals;
                (
                    limit,
                    self.prediction.portals_over(name, &self.confirmed, limit),
                )
            }
            LimitKind::RetainedBytes => return self.check_bytes(0),
        };
        if over {
            return Err(Halt::Limit(LimitExceeded { kind, limit }));
        }
        Ok(())
    }

    /// Refuses a named definition of `size` bytes that would make the session keep more
    /// than its limit (counting what is in flight as if it all succeeds).
    fn check_bytes(&self, size: usize) -> Result<(), Halt> {
        let limit = self.limits.max_retained_bytes;
        if self.confirmed.retained_bytes() + self.predicted_bytes + size > limit {
            return Err(Halt::Limit(LimitExceeded {
                kind: LimitKind::RetainedBytes,
                limit,
            }));
        }
        Ok(())
    }

    /// A message that defines or drops a name (or describes one): the server ignores it
    /// while it skips or once the session is doomed; else it is answered in turn.
    fn message(&mut self, op: Op) {
        if self.runs() {
            self.push(Request::new(op, 0));
        }
    }

    /// A statement: its `query` event, and — when the server certainly will not run it
    /// (it skips until Sync, or the session is doomed) — its `query_result` at once.
    fn statement(&mut self, event: EventBody, request: Request, events: &mut Vec<EventBody>) {
        events.push(event);
        let why = if self.doomed {
            SKIPPED_IN_COPY
        } else if self.server_skipping {
            SKIPPED_UNTIL_SYNC
        } else {
            self.push(request);
            return;
        };
        events.push(skipped(request, why));
    }

    /// The relay forwarded a Flush of its own (to have the server send the answers a
    /// waiting Execute needs).
    pub fn flush_sent(&mut self) {
        if !self.doomed {
            self.push(Request::new(
                Op::Silent {
                    copy_end: false,
                    copy_bytes: 0,
                },
                0,
            ));
        }
    }
}
