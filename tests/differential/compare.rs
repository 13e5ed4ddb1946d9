//! The comparison: the statements the server log says a backend executed, in order,
//! against the session's audit `query` events, in order, less those the audit itself
//! says the server did not run or did not log ([`super::rules`]); and every such
//! exclusion that the server leaves a trace of must be confirmed by its log.

use std::fmt;

use jitgate_audit::Protocol;

use super::auditlog::Query;
use super::rules::{
    agrees, confirmed, exclusion, guard_refused, is_guard_substitute,
    refused_in_failed_transaction, Rule, GUARD_SUBSTITUTE,
};
use super::serverlog::LogError;
use super::stmt::{param_as_logged, Stmt};

/// The audited query as the server would log it.
pub fn as_stmt(q: &Query) -> Stmt {
    if guard_refused(q) {
        return match q.protocol {
            Protocol::Simple | Protocol::FunctionCall => Stmt::Simple(GUARD_SUBSTITUTE.into()),
            Protocol::Extended => Stmt::Extended {
                statement: q.statement.clone().unwrap_or_default(),
                portal: q.portal.clone().unwrap_or_default(),
                sql: GUARD_SUBSTITUTE.into(),
                params: q.params.iter().map(param_as_logged).collect(),
            },
        };
    }
    match q.protocol {
        Protocol::Simple => Stmt::Simple(q.sql.clone()),
        Protocol::FunctionCall => Stmt::Function(q.function_oid.unwrap_or(0)),
        Protocol::Extended => Stmt::Extended {
            statement: q
                .statement
                .clone()
                .unwrap_or_else(|| "<not recorded>".into()),
            portal: q.portal.clone().unwrap_or_else(|| "<not recorded>".into()),
            sql: q.sql.clone(),
            params: q.params.iter().map(param_as_logged).collect(),
        },
    }
}

/// The recorded outcome in a few words, e.g. `34000: portal "x" does not exist`.
fn outcome_text(q: &Query) -> String {
    let Some(o) = &q.outcome else {
        return "no query_result".into();
    };
    let what = match (&o.sqlstate, &o.tag) {
        (Some(state), _) => state.clone(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => "no tag".into(),
    };
    let skipped = if o.skipped { "skipped, " } else { "" };
    match &o.message {
        Some(m) => format!("{skipped}{what}: {m}"),
        None => format!("{skipped}{what}"),
    }
}

/// An audited query left out of the expected statements.
pub struct Excluded {
    pub query_id: u64,
    pub stmt: Stmt,
    pub rule: Rule,
    pub outcome: String,
    /// The server log shows the refusal the audit records (or the rule leaves no trace).
    pub confirmed: bool,
}

/// The two sides of one connection and where they first differ.
pub struct Mismatch {
    /// Index of the first difference in both statement lists (their common length when
    /// they agree and only an exclusion is unconfirmed).
    pub at: usize,
    pub log: Vec<Stmt>,
    /// Audited queries expected in the log: (query_id, statement, refused in a failed
    /// transaction — see [`agrees`]).
    pub audit: Vec<(u64, Stmt, bool)>,
    pub excluded: Vec<Excluded>,
}

/// Compares the logged statements and errors with the audited `queries`; `None` when
/// they agree.
pub fn compare(log: Vec<Stmt>, errors: &[LogError], queries: &[Query]) -> Option<Mismatch> {
    let log: Vec<Stmt> = log.into_iter().map(substitute_as_audited).collect();
    let mut audit = Vec::new();
    let mut excluded = Vec::new();
    let mut next_error = 0;
    for q in queries {
        match exclusion(q) {
            Some(rule) => excluded.push(Excluded {
                query_id: q.query_id,
                stmt: as_stmt(q),
                rule,
                outcome: outcome_text(q),
                confirmed: confirmed(rule, q, errors, &mut next_error),
            }),
            None => audit.push((q.query_id, as_stmt(q), refused_in_failed_transaction(q))),
        }
    }
    let same = log.len() == audit.len()
        && log
            .iter()
            .zip(&audit)
            .all(|(l, (_, a, refused))| agrees(l, a, *refused));
    if same && excluded.iter().all(|e| e.confirmed) {
        return None;
    }
    let at = log
        .iter()
        .zip(&audit)
        .position(|(l, (_, a, refused))| !agrees(l, a, *refused))
        .unwrap_or(log.len().min(audit.len()));
    Some(Mismatch {
        at,
        log,
        audit,
        excluded,
    })
}

/// A logged substitute of jitgate's guard, in the form [`as_stmt`] gives a refused query.
fn substitute_as_audited(s: Stmt) -> Stmt {
    match s {
        Stmt::Simple(sql) if is_guard_substitute(&sql) => Stmt::Simple(GUARD_SUBSTITUTE.into()),
        Stmt::Extended {
            statement,
            portal,
            sql,
            params,
        } if is_guard_substitute(&sql) => Stmt::Extended {
            statement,
            portal,
            sql: GUARD_SUBSTITUTE.into(),
            params,
        },
        other => other,
    }
}

fn is_marker(s: &Stmt) -> bool {
    matches!(s, Stmt::Simple(sql) if sql.contains("jitgate-diff-mark-"))
}

impl Mismatch {
    fn statements_differ(&self) -> bool {
        self.at < self.log.len().max(self.audit.len())
    }

    fn first_unconfirmed(&self) -> Option<&Excluded> {
        self.excluded.iter().find(|e| !e.confirmed)
    }

    /// Number of terminator markers run before the difference: the index (on its
    /// connection) of the sequence the difference belongs to.
    pub fn sequence_index(&self) -> usize {
        if self.statements_differ() {
            return self.log[..self.at.min(self.log.len())]
                .iter()
                .filter(|s| is_marker(s))
                .count();
        }
        let before = self.first_unconfirmed().map_or(u64::MAX, |e| e.query_id);
        self.audit
            .iter()
            .filter(|(id, s, _)| *id < before && is_marker(s))
            .count()
    }

    /// The statements at the first difference, or the first unconfirmed exclusion
    /// (marker numbers blanked): shrinking keeps to candidates that fail at the same
    /// place, so it homes in on this difference rather than on any other one.
    pub fn signature(&self) -> String {
        let text = if self.statements_differ() {
            format!(
                "log {} / audit {}",
                self.log
                    .get(self.at)
                    .map_or("(nothing)".into(), |s| s.to_string()),
                self.audit
                    .get(self.at)
                    .map_or("(nothing)".into(), |(_, s, _)| s.to_string())
            )
        } else {
            let e = self.first_unconfirmed().expect("a mismatch has a cause");
            format!("unconfirmed {} ({})", e.stmt, e.outcome)
        };
        match text.find("jitgate-diff-mark-") {
            Some(i) => {
                let tail = text[i + 18..].trim_start_matches(|c: char| c.is_ascii_digit());
                format!("{}jitgate-diff-mark-N{tail}", &text[..i])
            }
            None => text,
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = |i: usize| {
            if self.statements_differ() && i == self.at {
                ">>"
            } else {
                "  "
            }
        };
        writeln!(f, "server log (what PostgreSQL executed, in order):")?;
        for (i, s) in self.log.iter().enumerate() {
            writeln!(f, "  {} {:>3}. {s}", mark(i), i + 1)?;
        }
        if self.statements_differ() && self.at >= self.log.len() {
            writeln!(f, "  >> (nothing more)")?;
        }
        writeln!(f, "audit (query events expected in the log, in order):")?;
        for (i, (id, s, _)) in self.audit.iter().enumerate() {
            writeln!(f, "  {} {:>3}. [query_id {id}] {s}", mark(i), i + 1)?;
        }
        if self.statements_differ() && self.at >= self.audit.len() {
            writeln!(f, "  >> (nothing more)")?;
        }
        if !self.excluded.is_empty() {
            writeln!(f, "audit query events left out by the exclusion rules:")?;
            for e in &self.excluded {
                let flag = if e.confirmed { "  " } else { ">>" };
                writeln!(f, "  {flag}      [query_id {}] {}", e.query_id, e.stmt)?;
                writeln!(f, "              ({}) -- {}", e.outcome, e.rule.text())?;
                if !e.confirmed {
                    writeln!(
                        f,
                        "              NOT CONFIRMED: the server log has no such error here"
                    )?;
                }
            }
        }
        if self.statements_differ() {
            write!(f, "first difference at #{}", self.at + 1)
        } else {
            write!(f, "the statements agree, but an exclusion is not confirmed")
        }
    }
}
