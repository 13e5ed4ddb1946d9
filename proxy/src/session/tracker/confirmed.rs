//! The names the server holds, as its answers have confirmed them: a definition is
//! added when ParseComplete / BindComplete arrives for it, removed at CloseComplete,
//! and portals go when the server says the transaction ended. A Bind the server refused
//! after it had created the portal leaves that portal behind (see
//! [`Confirmed::bind_failed`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::defs::{Name, PortalDef, StatementDef};

#[derive(Debug, Default)]
pub struct Confirmed {
    pub statements: HashMap<Name, Arc<StatementDef>>,
    pub portals: HashMap<Name, Arc<PortalDef>>,
    /// Portals in `portals` that a refused Bind left behind: the server runs nothing
    /// under them (see [`Confirmed::bind_failed`]).
    failed: HashSet<Name>,
}

impl Confirmed {
    /// BindComplete: `name` holds `def`.
    pub fn bound(&mut self, name: Name, def: Arc<PortalDef>) {
        self.failed.remove(&name);
        self.portals.insert(name, def);
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
        self.failed.insert(name.clone());
        self.portals.insert(name, def);
    }

    /// Whether the portal under `name` is one a refused Bind left behind.
    pub fn is_failed_portal(&self, name: &[u8]) -> bool {
        self.failed.contains(name)
    }

    /// CloseComplete for a portal.
    pub fn portal_closed(&mut self, name: &[u8]) {
        self.failed.remove(name);
        self.portals.remove(name);
    }

    /// The transaction ended (ReadyForQuery `I`, COMMIT, ROLLBACK): the server dropped
    /// every portal (portals made by the protocol are never holdable).
    pub fn transaction_ended(&mut self) {
        self.portals.clear();
        self.failed.clear();
    }

    /// A simple Query ran: it dropped the unnamed statement first, and each statement
    /// it ran replaced and then dropped the unnamed portal (`ran_one`: it completed at
    /// least one statement; one that failed before running — empty, syntax or analysis
    /// error, failed transaction — made no portal and left the old one).
    pub fn simple_query(&mut self, ran_one: bool) {
        self.statements.remove(&b""[..]);
        if ran_one {
            self.portal_closed(b"");
        }
    }
}
