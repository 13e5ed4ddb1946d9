//! The names the server holds, as its answers have confirmed them: a definition is
//! added when ParseComplete / BindComplete arrives for it, removed at CloseComplete,
//! and portals go when the server says the transaction ended. A Bind the server refused
//! after it had created the portal leaves that portal behind (see
//! [`Confirmed::bind_failed`]). SQL that defines or drops names (`PREPARE`, `DECLARE`,
//! `DEALLOCATE`, `CLOSE`, `DISCARD ALL`) takes effect at its CommandComplete
//! ([`Confirmed::apply`]); a cursor declared `WITH HOLD` outlives the transaction.

use std::sync::Arc;

use super::defs::{PortalDef, StatementDef};
use super::effects::{Created, Effect};
use super::names::Name;
use super::names::Names;
use super::sqlnames::Parsed;

#[derive(Debug, Default)]
pub struct Confirmed {
    pub statements: Names<Arc<StatementDef>>,
    pub portals: Names<Arc<PortalDef>>,
    /// Portals in `portals` that a refused Bind left behind: the server runs nothing
    /// under them (see [`Confirmed::bind_failed`]).
    failed: Names<()>,
    /// Portals in `portals` that are holdable cursors (kept when a transaction ends).
    holdable: usize,
    /// Bytes the named statements and portals keep (`size()`), for the session's
    /// limit; apart, so that a transaction's end, which drops portals, never walks the
    /// statements.
    statement_bytes: usize,
    portal_bytes: usize,
}

/// What a named definition counts towards the retained bytes (the unnamed ones are
/// replaced as they go, and are not counted, as for the count limits).
/// Sizes are computed only for named definitions: the unnamed ones pass on every
/// transaction of the extended protocol.
fn counted(name: &[u8], size: impl FnOnce() -> usize) -> usize {
    if name.is_empty() {
        0
    } else {
        size()
    }
}

impl Confirmed {
    /// BindComplete: `name` holds `def`.
    pub fn bound(&mut self, name: Name, def: Arc<PortalDef>) {
        self.failed.remove(&name);
        self.insert_portal(name, def);
    }

    fn insert_portal(&mut self, name: Name, def: Arc<PortalDef>) {
        self.holdable += usize::from(def.holdable);
        self.portal_bytes += counted(&name, || def.size());
        let counted_name = name.clone();
        if let Some(old) = self.portals.insert(name, def) {
            self.holdable -= usize::from(old.holdable);
            self.portal_bytes -= counted(&counted_name, || old.size());
        }
    }

    fn remove_portal(&mut self, name: &[u8]) {
        self.failed.remove(name);
        if let Some(old) = self.portals.remove(name) {
            self.holdable -= usize::from(old.holdable);
            self.portal_bytes -= counted(name, || old.size());
        }
    }

    /// ParseComplete (or SQL `PREPARE`): `name` holds `def`.
    pub fn define_statement(&mut self, name: Name, def: Arc<StatementDef>) {
        self.statement_bytes += counted(&name, || def.size());
        let counted_name = name.clone();
        if let Some(old) = self.statements.insert(name, def) {
            self.statement_bytes -= counted(&counted_name, || old.size());
        }
    }

    /// CloseComplete, SQL `DEALLOCATE`, a simple Query or failed Parse (unnamed).
    pub fn drop_statement(&mut self, name: &[u8]) {
        if let Some(old) = self.statements.remove(name) {
            self.statement_bytes -= counted(name, || old.size());
        }
    }

    /// Every named statement goes (`DEALLOCATE ALL`, `DISCARD ALL`); the unnamed one
    /// is not among the prepared statements SQL can reach.
    fn drop_named_statements(&mut self) {
        self.statements.retain(true, |_| false);
        self.statement_bytes = 0;
    }

    /// Bytes the named definitions keep.
    pub fn retained_bytes(&self) -> usize {
        self.statement_bytes + self.portal_bytes
    }

    /// Recounts the portals' bytes after some were dropped together.
    fn recount_portals(&mut self) {
        self.portal_bytes = self.portals.named().map(|(_, d)| d.size()).sum();
    }

    /// A Bind the server refused after it had created its portal (PostgreSQL 15
    /// `exec_bind_message`: converting a parameter, planning, starting the portal): the
    /// portal stays, empty (an Execute of it answers EmptyQueryResponse and logs
    /// nothing) or failed with the Bind's statement (an Execute of it is logged with
    /// that text, then refused). It lasts as long as the transaction: in a transaction
    /// block, until the block ends — the error's own abort drops it only in an implicit
    /// transaction, which the ReadyForQuery `I` after it then shows. `def` is the
    /// portal the Bind would have made: its text is what the server logs for it.
    pub fn bind_failed(&mut self, name: Name, def: Arc<PortalDef>) {
        self.failed.insert(name.clone(), ());
        self.insert_portal(name, def);
    }

    /// Whether the portal under `name` is one a refused Bind left behind.
    pub fn is_failed_portal(&self, name: &[u8]) -> bool {
        self.failed.contains(name)
    }

    /// CloseComplete for a portal.
    pub fn portal_closed(&mut self, name: &[u8]) {
        self.remove_portal(name);
    }

    /// The transaction ended (ReadyForQuery `I`, COMMIT, ROLLBACK): the server dropped
    /// every portal but holdable cursors (portals made by the protocol never are). A
    /// holdable cursor declared in a transaction that rolled back is gone too; it is
    /// kept here, which is safe: whatever runs under its name runs it or nothing.
    pub fn transaction_ended(&mut self) {
        self.failed.clear();
        if self.holdable == 0 {
            self.portals.clear();
            self.portal_bytes = 0;
        } else {
            self.portals.retain(true, |p| p.holdable);
            self.recount_portals();
        }
    }

    /// A statement that defines or drops names completed: `running` is the portal that
    /// ran it (an Execute's; `None` for a simple Query, whose unnamed portal goes anyway).
    pub fn apply(&mut self, effect: &Effect, running: Option<&[u8]>) {
        match &effect.created {
            Created::Statement(def) => self.define_statement(def.name.clone(), Arc::clone(def)),
            Created::Cursor(name, def) => {
                self.failed.remove(name);
                self.insert_portal(name.clone(), Arc::clone(def));
            }
            Created::Nothing => match &effect.parsed {
                Parsed::Deallocate(name) => self.drop_statement(name),
                Parsed::DeallocateAll => self.drop_named_statements(),
                Parsed::Close(name) => self.remove_portal(name),
                Parsed::CloseAll => self.close_all(running),
                Parsed::DiscardAll => {
                    self.close_all(running);
                    self.drop_named_statements();
                }
                _ => {}
            },
        }
    }

    /// Every portal but the one running (the server does not drop an active portal).
    fn close_all(&mut self, running: Option<&[u8]>) {
        let keep = running.and_then(|r| self.portals.remove_entry(r));
        self.portals.clear();
        self.failed.clear();
        self.holdable = 0;
        self.portal_bytes = 0;
        if let Some((name, def)) = keep {
            self.insert_portal(name, def);
        }
    }

    /// Named statements and portals held (for the session's limits).
    pub fn named(&self) -> (usize, usize) {
        (self.statements.named_len(), self.portals.named_len())
    }

    /// A simple Query ran: it dropped the unnamed statement first, and each statement
    /// it ran replaced and then dropped the unnamed portal (`ran_one`: it completed at
    /// least one statement; one that failed before running — empty, syntax or analysis
    /// error, failed transaction — made no portal and left the old one).
    pub fn simple_query(&mut self, ran_one: bool) {
        self.drop_statement(b"");
        if ran_one {
            self.portal_closed(b"");
        }
    }
}
