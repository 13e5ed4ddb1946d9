//! What each name will hold when the server reaches the next message the client sends.
//!
//! The client pipelines: it may send Bind and Execute before the server has answered the
//! Parse they use. The audit event of an Execute must be written before the Execute is
//! forwarded, so the tracker predicts, from the server's confirmed state and the
//! messages still in front of it, what the portal will hold.
//!
//! The rule that makes this exact is the server's own (`postgres.c`): after an error in
//! an extended-protocol message the server skips everything up to the next Sync. So a
//! message runs only if every extended message before it since the last Sync ran
//! without error; for that message, each earlier message of its group has had its
//! effect. Across a Sync nothing is known until the server answers: a name then holds
//! the value it had after *some* prefix of the group (before it, or after any of its
//! messages that touched the name). While those values are one definition (or it or
//! nothing), a message that runs under the name runs that definition; when they are two
//! definitions the name is [`Slot::Ambiguous`] and an Execute of it must wait for the
//! server's answers (see `Tracker::on_client`).
//!
//! Effects modelled (PostgreSQL 15 `exec_parse_message`, `exec_bind_message`,
//! `exec_simple_query`):
//! - Parse of a name defines it (for the unnamed statement: drops the old one first);
//! - Bind defines a portal from the statement the name holds then;
//! - Close drops the name (closing a missing name is not an error);
//! - a simple Query drops the unnamed statement, and the unnamed portal once one of its
//!   statements runs (an empty Query, or one that fails before running, leaves it);
//! - nothing runs while the server skips until Sync;
//! - SQL `PREPARE` and `DECLARE` define a name when their statement completes: run by an
//!   Execute, for the rest of its group; run by a simple Query, whose later statements
//!   may fail and whose failure does not stop the messages behind it, the name holds the
//!   new definition or its old value. Names SQL drops (`DEALLOCATE`, `CLOSE`, `DISCARD
//!   ALL`) need no prediction: "its definition or nothing" stays true.
//!
//! The end of a transaction (a Sync outside a transaction block, COMMIT) drops every
//! portal. That is not modelled here: a dropped name holds nothing, and whatever runs
//! under a name that "holds `d` or nothing" runs `d` (see [`Slot`]); the confirmed side
//! drops them when the server says the transaction ended.

use std::sync::Arc;

use super::confirmed::Confirmed;
use super::defs::{PortalDef, Slot, StatementDef};
use super::effects::{Created, Effect};
use super::names::Name;
use super::names::Names;

/// Values of names touched since the last Sync: in the group (what a later message of
/// the group sees) and over the group (every value the name may hold after it).
#[derive(Debug)]
struct Overlay<T> {
    /// What a later message sees, for names touched by a message not yet answered.
    now: Names<Slot<T>>,
    /// For names touched since the last Sync: every value they may hold once the group
    /// ends, whichever message of it fails.
    group: Names<Slot<T>>,
}

impl<T> Default for Overlay<T> {
    fn default() -> Self {
        Overlay {
            now: Names::default(),
            group: Names::default(),
        }
    }
}

impl<T> Overlay<T> {
    fn get(&self, name: &[u8], confirmed: &Names<Arc<T>>) -> Slot<T> {
        match self.now.get(name) {
            Some(slot) => slot.clone(),
            None => Slot::of(confirmed.get(name)),
        }
    }

    /// A message of the group gives `name` the value `value`.
    fn set(&mut self, name: &Name, value: Slot<T>, confirmed: &Names<Arc<T>>) {
        let before = self.get(name, confirmed);
        let group = self.group.get_or_insert_with(name, || before);
        *group = group.union(&value);
        self.now.insert(name.clone(), value);
    }

    /// The group ended (Sync): each touched name may hold any of its group values.
    fn end_group(&mut self) {
        for (name, slot) in self.group.drain() {
            self.now.insert(name, slot);
        }
    }

    fn clear(&mut self) {
        if !self.now.is_empty() || !self.group.is_empty() {
            self.now.clear();
            self.group.clear();
        }
    }

    /// Whether defining `name` would make the server hold more than `limit` named
    /// definitions (the unnamed one is not counted) at some point of the stream: the
    /// names it holds for certain or perhaps. O(1) while the names are well under the
    /// limit; counted exactly (once per new name) only near it.
    fn over_limit(&self, name: &[u8], confirmed: &Names<Arc<T>>, limit: usize) -> bool {
        // Every name confirmed or touched by a message not yet answered, "" included:
        // one more stays within the limit.
        if confirmed.len() + self.now.len() < limit {
            return false;
        }
        let held = |s: &Slot<T>| !matches!(s, Slot::Absent);
        if held(&self.get(name, confirmed)) {
            // Not a new name (the server refuses to define it twice).
            return false;
        }
        let confirmed_held = confirmed
            .named()
            .filter(|(k, _)| self.now.get(k).is_none_or(held))
            .count();
        let predicted_new = self
            .now
            .named()
            .filter(|(k, s)| !confirmed.contains(k) && held(s))
            .count();
        confirmed_held + predicted_new >= limit
    }
}

/// The tracker's view of the names as the server will see them at the next message.
#[derive(Debug, Default)]
pub struct Prediction {
    statements: Overlay<StatementDef>,
    portals: Overlay<PortalDef>,
    /// The server will skip the next message (it is skipping until a Sync).
    skipping: bool,
}

impl Prediction {
    /// The prediction when every forwarded message has been answered: the confirmed
    /// state itself.
    pub fn reset(&mut self, skipping: bool) {
        self.statements.clear();
        self.portals.clear();
        self.skipping = skipping;
    }

    pub fn statement(&self, name: &[u8], c: &Confirmed) -> Slot<StatementDef> {
        self.statements.get(name, &c.statements)
    }

    pub fn portal(&self, name: &[u8], c: &Confirmed) -> Slot<PortalDef> {
        self.portals.get(name, &c.portals)
    }

    /// Whether a Parse of the new statement `name` would exceed `limit` named statements.
    pub fn statements_over(&self, name: &[u8], c: &Confirmed, limit: usize) -> bool {
        self.statements.over_limit(name, &c.statements, limit)
    }

    /// Whether a Bind of the new portal `name` would exceed `limit` named portals.
    pub fn portals_over(&self, name: &[u8], c: &Confirmed, limit: usize) -> bool {
        self.portals.over_limit(name, &c.portals, limit)
    }

    /// Parse: `name` holds `def` for the rest of the group.
    pub fn parse(&mut self, name: &Name, def: &Arc<StatementDef>, c: &Confirmed) {
        if !self.skipping {
            self.statements
                .set(name, Slot::Def(Arc::clone(def)), &c.statements);
        }
    }

    /// Bind: `portal` holds what `def` says (built by the caller from the statement
    /// the name holds now; ambiguous when that is).
    pub fn bind(&mut self, portal: &Name, def: Slot<PortalDef>, c: &Confirmed) {
        if !self.skipping {
            self.portals.set(portal, def, &c.portals);
        }
    }

    /// Close of a statement or portal.
    pub fn close(&mut self, statement: bool, name: &Name, c: &Confirmed) {
        if self.skipping {
            return;
        }
        if statement {
            self.statements.set(name, Slot::Absent, &c.statements);
        } else {
            self.portals.set(name, Slot::Absent, &c.portals);
        }
    }

    /// A simple Query: drops the unnamed statement; drops the unnamed portal only if
    /// one of its statements gets as far as running (whatever runs under it after the
    /// Query runs the old one, or nothing).
    pub fn query(&mut self, c: &Confirmed) {
        if !self.skipping {
            self.statements
                .set(&Name::new(), Slot::Absent, &c.statements);
        }
    }

    /// What a statement that defines names will define (see [`Prediction::prepared`]).
    pub fn define(&mut self, effect: &Effect, certain: bool, c: &Confirmed) {
        match &effect.created {
            Created::Statement(def) => self.prepared(def, certain, c),
            Created::Cursor(name, def) => self.declared(name, def, certain, c),
            Created::Nothing => {}
        }
    }

    /// A statement SQL `PREPARE` defines, once the message running it completes
    /// (`certain`: an Execute, else a Query, which may stop before it).
    pub fn prepared(&mut self, def: &Arc<StatementDef>, certain: bool, c: &Confirmed) {
        if self.skipping {
            return;
        }
        let mut slot = Slot::Def(Arc::clone(def));
        if !certain {
            slot = slot.union(&self.statement(&def.name, c));
        }
        self.statements.set(&def.name, slot, &c.statements);
    }

    /// A cursor SQL `DECLARE` defines (as for [`Prediction::prepared`]).
    pub fn declared(&mut self, name: &Name, def: &Arc<PortalDef>, certain: bool, c: &Confirmed) {
        if self.skipping {
            return;
        }
        let mut slot = Slot::Def(Arc::clone(def));
        if !certain {
            slot = slot.union(&self.portal(name, c));
        }
        self.portals.set(name, slot, &c.portals);
    }

    /// Sync: the group ends (each name may hold any of its group values) and so does
    /// the skip.
    pub fn sync(&mut self) {
        self.statements.end_group();
        self.portals.end_group();
        self.skipping = false;
    }
}
