//! The names the server holds, as its answers have confirmed them: a definition is
//! added when ParseComplete / BindComplete arrives for it, removed at CloseComplete,
//! and portals go when the server says the transaction ended.

use std::collections::HashMap;
use std::sync::Arc;

use super::defs::{Name, PortalDef, StatementDef};

#[derive(Debug, Default)]
pub struct Confirmed {
    pub statements: HashMap<Name, Arc<StatementDef>>,
    pub portals: HashMap<Name, Arc<PortalDef>>,
}

impl Confirmed {
    /// The transaction ended (ReadyForQuery `I`, COMMIT, ROLLBACK): the server dropped
    /// every portal (portals made by the protocol are never holdable).
    pub fn transaction_ended(&mut self) {
        self.portals.clear();
    }

    /// A simple Query ran: it dropped the unnamed statement first, and each statement
    /// it ran replaced and then dropped the unnamed portal (`ran_one`: it completed at
    /// least one statement; one that failed before running — empty, syntax or analysis
    /// error, failed transaction — made no portal and left the old one).
    pub fn simple_query(&mut self, ran_one: bool) {
        self.statements.remove(&b""[..]);
        if ran_one {
            self.portals.remove(&b""[..]);
        }
    }
}
