//! What running a statement of `sqlnames.rs` does to the names, made concrete before it
//! is forwarded: the definitions a `PREPARE` or `DECLARE` will create are built then (with
//! the text and parameters the server will keep), so that the prediction and, once the
//! server confirms, the confirmed state hold the same definition (definitions are
//! compared by identity, see `defs::Slot`).

use std::sync::Arc;

use bytes::Bytes;
use jitgate_audit::Param;

use super::defs::{PortalDef, StatementDef};
use super::names::Name;
use super::sqlnames::Parsed;

/// One statement's effect on the names: what its parse says it does, with the
/// definition it creates (built once, before it is forwarded).
#[derive(Debug)]
pub struct Effect {
    pub parsed: Parsed,
    pub created: Created,
}

/// The definition a `PREPARE` or `DECLARE` creates.
#[derive(Debug)]
pub enum Created {
    Nothing,
    Statement(Arc<StatementDef>),
    Cursor(Name, Arc<PortalDef>),
}

impl Effect {
    /// The effect of `parsed`, run from the text `source` with `params` (a Parse's
    /// statement run by Execute; none for a simple Query).
    pub fn of(parsed: &Parsed, source: &Bytes, params: &[Param]) -> Effect {
        let created = match parsed {
            Parsed::Prepare(name) => Created::Statement(Arc::new(StatementDef::prepared(
                name.clone(),
                source.clone(),
            ))),
            Parsed::Declare { name, hold } => Created::Cursor(
                name.clone(),
                Arc::new(PortalDef::cursor(source.clone(), params.to_vec(), *hold)),
            ),
            _ => Created::Nothing,
        };
        Effect {
            parsed: parsed.clone(),
            created,
        }
    }
}

/// The effects of the statements of one Query (or the one statement of an Execute), in
/// order, and how many the server has completed.
#[derive(Debug)]
pub struct Effects {
    pub list: Vec<Effect>,
    pub done: usize,
}

impl Effects {
    /// The effects of `parsed`, run from `source` with `params`.
    pub fn new(parsed: &[Parsed], source: &Bytes, params: &[Param]) -> Box<Effects> {
        Box::new(Effects {
            list: parsed
                .iter()
                .map(|p| Effect::of(p, source, params))
                .collect(),
            done: 0,
        })
    }

    /// The next statement completed: its effect (`None`: more statements completed than
    /// the parse found).
    pub fn next(&mut self) -> Option<&Effect> {
        let e = self.list.get(self.done);
        self.done += 1;
        e
    }
}
