//! What the server holds under a name — a prepared statement or a portal — and what the
//! tracker can know of a name before the server has answered: one definition for
//! certain, one definition or nothing, or several candidates ([`Slot`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use jitgate_audit::{ContentRules, Param, ParamFormat, SettingChange};

use super::names::{key, Name};
use super::sqlnames::Parsed;
use crate::guard::Refusal;
use crate::protocol::frontend::{self, Bind};
use crate::protocol::ProtocolError;

/// A Bind message read with its portal and statement names keyed (see [`key`]).
pub fn keyed_bind(body: Bytes) -> Result<Bind, ProtocolError> {
    let mut b = frontend::parse_bind(body)?;
    b.portal = key(b.portal);
    b.statement = key(b.statement);
    Ok(b)
}

/// Bytes kept past the batch they came in: copied out of the read buffer when `copy`,
/// so that a small name or text does not keep a whole (possibly huge) buffer alive.
/// Empty bytes never pin anything.
pub fn retained(bytes: Bytes, copy: bool) -> Bytes {
    if copy && !bytes.is_empty() {
        Bytes::copy_from_slice(&bytes)
    } else {
        bytes
    }
}

/// A prepared statement as a Parse message defined it.
#[derive(Debug)]
pub struct StatementDef {
    /// Its name (retained: a copy for named statements, see [`retained`]).
    pub name: Name,
    /// The text as recorded (for a refused statement: with its passwords masked).
    pub sql: Bytes,
    pub param_types: Vec<u32>,
    /// Looked up once at Parse: a statement may be executed many times.
    pub setting: Option<SettingChange>,
    /// The guard refused it: the server holds a substitute under its name whose every
    /// execution fails with 42501 (`guard/substitute.rs`).
    pub refused: Option<Refusal>,
    /// What running it does to names, when it is SQL `PREPARE`, `DECLARE`, `DEALLOCATE`,
    /// `CLOSE` or `DISCARD ALL` (see `sqlnames.rs`).
    pub names: Option<Parsed>,
}

/// What a definition costs beyond its variable fields (allocation, map entry), for
/// `session_limits.max_retained_bytes`.
const DEF_OVERHEAD: usize = 96;

impl StatementDef {
    /// About how many bytes it keeps.
    pub fn size(&self) -> usize {
        DEF_OVERHEAD + self.name.len() + self.sql.len() + 4 * self.param_types.len()
    }

    /// A statement defined by SQL `PREPARE`. Its text is the whole text that ran the
    /// `PREPARE` (the server keeps and logs the source text, not the inner statement).
    pub fn prepared(name: Name, source: Bytes) -> StatementDef {
        StatementDef {
            name,
            sql: source,
            param_types: Vec::new(),
            setting: None,
            refused: None,
            names: None,
        }
    }
}

/// A portal: the statement it was bound from and its parameters as recorded.
#[derive(Debug)]
pub struct PortalDef {
    pub statement_name: Name,
    /// `None` when the tracker does not know the statement (defined with SQL `PREPARE`,
    /// which the protocol does not show).
    pub statement: Option<Arc<StatementDef>>,
    pub params: Vec<Param>,
    /// The `query_id` of the `query` event that recorded `params` (the portal's first
    /// execution); 0 until then. Later executions point at it (`params_from`).
    recorded_in: AtomicU64,
    /// A cursor declared `WITH HOLD`: it outlives the transaction (portals made by the
    /// protocol never do).
    pub holdable: bool,
}

fn format_of(code: i16) -> ParamFormat {
    if code == 1 {
        ParamFormat::Binary
    } else {
        ParamFormat::Text
    }
}

impl PortalDef {
    /// About how many bytes it keeps: its recorded parameters, and the text of the
    /// statement it was bound from (which it keeps alive even once that is closed).
    pub fn size(&self) -> usize {
        DEF_OVERHEAD
            + self.statement_name.len()
            + self.statement.as_ref().map_or(0, |s| s.sql.len())
            + self
                .params
                .iter()
                .map(|p| 48 + p.value.as_ref().map_or(0, String::len))
                .sum::<usize>()
    }

    /// The portal a Bind creates from `statement`, its values recorded under `rules`
    /// (typed by the statement's parameter types where the client gave them).
    pub fn bound(
        rules: &ContentRules,
        bind: &Bind,
        statement: Option<Arc<StatementDef>>,
    ) -> PortalDef {
        let types: &[u32] = statement.as_deref().map_or(&[], |s| &s.param_types);
        let params = bind
            .params
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let oid = types.get(i).copied().filter(|o| *o != 0);
                rules.param(format_of(bind.param_format(i)), oid, v.as_deref())
            })
            .collect();
        // The statement's own (retained) name when it is known: no copy per Bind.
        let statement_name = match &statement {
            Some(s) => s.name.clone(),
            None => retained(bind.statement.clone(), true),
        };
        PortalDef {
            statement_name,
            statement,
            params,
            recorded_in: AtomicU64::new(0),
            holdable: false,
        }
    }

    /// A cursor defined by SQL `DECLARE`: the server runs it under no statement name and
    /// logs the whole text that declared it (`source`), with the parameters that text
    /// was run with.
    pub fn cursor(source: Bytes, params: Vec<Param>, holdable: bool) -> PortalDef {
        PortalDef {
            statement_name: Name::new(),
            statement: Some(Arc::new(StatementDef::prepared(Name::new(), source))),
            params,
            recorded_in: AtomicU64::new(0),
            holdable,
        }
    }

    /// The query whose event recorded the parameters, if one did after `floor` (events
    /// up to `floor` may not be in the log: see `Tracker::rollback`). The first
    /// execution after that records them (`None`, and `query_id` is remembered).
    pub fn params_recorded(&self, query_id: u64, floor: u64) -> Option<u64> {
        let at = self.recorded_in.load(Ordering::Relaxed);
        if at > floor {
            return Some(at);
        }
        self.recorded_in.store(query_id, Ordering::Relaxed);
        None
    }
}

/// Function-call arguments recorded under `rules` (one format code for all, one per
/// argument, or none = text).
pub fn function_args(rules: &ContentRules, formats: &[i16], args: &[Option<Bytes>]) -> Vec<Param> {
    args.iter()
        .enumerate()
        .map(|(i, v)| {
            let code = match formats.len() {
                0 => 0,
                1 => formats.first().copied().unwrap_or(0),
                _ => formats.get(i).copied().unwrap_or(0),
            };
            rules.param(format_of(code), None, v.as_deref())
        })
        .collect()
}

/// What a name holds at some point of the server's message stream, as far as the
/// tracker can tell before the server has answered the messages in front of it.
///
/// Whether a definition is there for certain or only perhaps does not matter to the
/// audit: the server runs nothing under a name that holds nothing (the message fails,
/// and is recorded with the server's error), so "this definition or nothing" is as good
/// as "this definition".
#[derive(Debug)]
pub enum Slot<T> {
    /// Nothing is defined under the name.
    Absent,
    /// Whatever runs under the name runs this definition (the name may also hold
    /// nothing: an earlier message that defined it may have failed).
    Def(Arc<T>),
    /// Two different definitions are possible: only the server's answers can tell.
    Ambiguous,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        match self {
            Slot::Absent => Slot::Absent,
            Slot::Def(d) => Slot::Def(Arc::clone(d)),
            Slot::Ambiguous => Slot::Ambiguous,
        }
    }
}

impl<T> Slot<T> {
    /// The confirmed value of a name.
    pub fn of(def: Option<&Arc<T>>) -> Slot<T> {
        def.map_or(Slot::Absent, |d| Slot::Def(Arc::clone(d)))
    }

    /// The definition whatever runs under the name runs, when there is one.
    pub fn def(&self) -> Option<&Arc<T>> {
        match self {
            Slot::Def(d) => Some(d),
            _ => None,
        }
    }

    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Slot::Ambiguous)
    }

    /// Either of `self` and `other` (the possible values of a name after messages that
    /// may or may not have run). Each Parse and Bind is its own definition, even with
    /// the same text: definitions are compared by identity.
    pub fn union(&self, other: &Slot<T>) -> Slot<T> {
        match (self, other) {
            (Slot::Absent, x) | (x, Slot::Absent) => x.clone(),
            (Slot::Def(a), Slot::Def(b)) if Arc::ptr_eq(a, b) => self.clone(),
            _ => Slot::Ambiguous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_keeps_one_definition_and_flags_two() {
        let a = Arc::new(1);
        let def_a = Slot::Def(Arc::clone(&a));
        let none: Slot<i32> = Slot::Absent;
        assert!(def_a.union(&def_a).def().is_some());
        assert!(def_a.union(&none).def().is_some());
        assert!(none.union(&def_a).def().is_some());
        assert!(matches!(none.union(&none), Slot::Absent));
        // Equal values in two allocations are two definitions.
        assert!(def_a.union(&Slot::Def(Arc::new(1))).is_ambiguous());
        assert!(Slot::<i32>::Ambiguous.union(&none).is_ambiguous());
        assert!(none.union(&Slot::Ambiguous).is_ambiguous());
    }
}
