//! The exclusion rules: which audited queries the server log is not expected to show,
//! decided from the audit's recorded outcome only, and — where the server leaves a
//! trace — confirmed by the server log's own `ERROR:` entries, so that an outcome the
//! audit pinned on the wrong query cannot hide a statement. The server behaviour behind
//! each rule is in the test's header (`differential.rs`).

use jitgate_audit::Protocol;

use super::auditlog::Query;
use super::serverlog::LogError;
use super::stmt::Stmt;

/// Why an audited query is absent from the server log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `skipped: true`.
    Skipped,
    /// A simple Query that failed with 42601.
    SimpleSyntaxError,
    /// An Execute answered by EmptyQueryResponse (no tag, no SQLSTATE, no message: a
    /// statement the session ended under has a message saying so).
    EmptyExecute,
    /// An Execute refused with 34000 or 22021.
    ExecuteRefused,
    /// A FunctionCall refused with 25P02 or 42883.
    FunctionRefused,
}

impl Rule {
    pub fn text(self) -> &'static str {
        match self {
            Rule::Skipped => "skipped: the server never ran it",
            Rule::SimpleSyntaxError => {
                "simple query with a syntax error (42601): refused before logging"
            }
            Rule::EmptyExecute => {
                "empty query (EmptyQueryResponse): Execute returns before logging"
            }
            Rule::ExecuteRefused => {
                "Execute of a missing (34000) or non-UTF-8 (22021) portal: refused before logging"
            }
            Rule::FunctionRefused => {
                "function call in a failed transaction (25P02) or of no function (42883): \
                 refused before logging"
            }
        }
    }
}

/// The rule that leaves `q` out of the expected statements, if any.
/// What a statement refused by jitgate's guard is compared as: the server ran
/// jitgate's substitute (`DO $jitgate$ … RAISE …`) in its place — as a simple Query for a
/// refused Query or FunctionCall, as the same prepared statement for a refused Parse —
/// and logged it like any statement.
pub const GUARD_SUBSTITUTE: &str = "<jitgate guard substitute>";

/// Whether the server log's SQL is jitgate's substitute for a refused statement.
pub fn is_guard_substitute(sql: &str) -> bool {
    sql.starts_with("DO $jitgate$")
}

/// Whether the audit says jitgate's guard refused `q` and the server ran the substitute:
/// `skipped` with jitgate's refusal, or with 25P02 (the substitute reached a failed
/// transaction; a statement that is not refused is never `skipped` with 25P02).
pub fn guard_refused(q: &Query) -> bool {
    q.outcome.as_ref().is_some_and(|o| {
        let message = o.message.as_deref().unwrap_or_default();
        o.skipped
            && (message.starts_with("jitgate refused")
                || (o.sqlstate.as_deref() == Some("25P02") && !shielded(message)))
    })
}

/// Whether the audit says jitgate's crash shield kept an Execute from the server (it
/// sent a Parse the server refuses with 25P02 and does not log: nothing to compare).
fn shielded(message: &str) -> bool {
    message.starts_with("not executed: jitgate did not forward")
}

pub fn exclusion(q: &Query) -> Option<Rule> {
    let outcome = q.outcome.as_ref()?;
    if guard_refused(q) {
        return None;
    }
    let state = outcome.sqlstate.as_deref();
    if outcome.skipped {
        return Some(Rule::Skipped);
    }
    match q.protocol {
        Protocol::Simple if state == Some("42601") => Some(Rule::SimpleSyntaxError),
        Protocol::Extended
            if outcome.tag.is_none() && state.is_none() && outcome.message.is_none() =>
        {
            Some(Rule::EmptyExecute)
        }
        // 34000 from the portal lookup (`portal "…" does not exist`), not from a
        // statement that ran and failed (`CLOSE`/`FETCH` of a missing cursor: `cursor
        // "…" does not exist`, logged first).
        Protocol::Extended
            if state == Some("22021")
                || (state == Some("34000")
                    && outcome
                        .message
                        .as_deref()
                        .is_some_and(|m| m.starts_with("portal "))) =>
        {
            Some(Rule::ExecuteRefused)
        }
        Protocol::FunctionCall if matches!(state, Some("25P02" | "42883")) => {
            Some(Rule::FunctionRefused)
        }
        _ => None,
    }
}

/// Whether `q` is an Execute the server logged and then refused without running
/// anything: the transaction had failed (25P02), or the portal is one a failed
/// statement left behind (55000, `PortalRun`: "portal cannot be run" — a simple query
/// that failed while running inside a transaction block replaces the unnamed portal
/// with its own, failed one).
pub fn refused_in_failed_transaction(q: &Query) -> bool {
    q.protocol == Protocol::Extended
        && q.outcome.as_ref().is_some_and(|o| {
            (!o.skipped || guard_refused(q))
                && matches!(o.sqlstate.as_deref(), Some("25P02" | "55000"))
        })
}

/// Whether a logged statement is the audited one. They must be equal, except for an
/// Execute refused in a failed transaction (25P02, or 55000 for a failed portal), which
/// is logged before it is refused, but:
/// - without parameters: `errdetail_params` calls no type output function in an aborted
///   transaction, so the `parameters:` DETAIL is left out;
/// - with an empty text when the portal is the unnamed one a simple query (a COPY, a
///   ROLLBACK TO a savepoint that does not exist) left behind by failing inside a
///   transaction block: it survives until ROLLBACK, an Execute of `""` finds it, and its
///   source text is empty by then.
///
/// Nothing runs either way. Such an Execute is compared on its portal, and on its
/// statement and text when the log has a text (an empty one is the simple query's
/// portal: no audit can know its text, and the server's `<unnamed>` there names no
/// prepared statement).
pub fn agrees(logged: &Stmt, audited: &Stmt, refused: bool) -> bool {
    match (logged, audited) {
        (
            Stmt::Extended {
                statement,
                portal,
                sql,
                params,
            },
            Stmt::Extended {
                statement: s,
                portal: p,
                sql: q,
                ..
            },
        ) if refused && params.is_empty() => {
            portal == p && (sql.is_empty() || (statement == s && sql == q))
        }
        _ => logged == audited,
    }
}

/// Whether a logged error is the one the audit recorded: the same primary message (the
/// log may add ` at character N`), and for a simple query the `STATEMENT:` is its text.
fn matches(error: &LogError, message: &str, sql: Option<&str>) -> bool {
    let same_message = error.message == message
        || error
            .message
            .strip_prefix(message)
            .is_some_and(|rest| rest.starts_with(" at character "));
    same_message && sql.is_none_or(|sql| error.statement.as_deref() == Some(sql))
}

/// Whether the server log confirms that `q` was refused as the audit says. Errors are
/// taken in order: `next` is the first of `errors` not yet matched, moved past a match.
/// Rules the server leaves no trace for (skipped, empty) are taken as they are.
pub fn confirmed(rule: Rule, q: &Query, errors: &[LogError], next: &mut usize) -> bool {
    if matches!(rule, Rule::Skipped | Rule::EmptyExecute) {
        return true;
    }
    let Some(message) = q.outcome.as_ref().and_then(|o| o.message.as_deref()) else {
        return false;
    };
    let sql = (rule == Rule::SimpleSyntaxError).then_some(q.sql.as_str());
    match errors[*next..]
        .iter()
        .position(|e| matches(e, message, sql))
    {
        Some(i) => {
            *next += i + 1;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::auditlog::Outcome;
    use super::*;

    fn query(protocol: Protocol, sql: &str, state: &str, message: &str) -> Query {
        Query {
            query_id: 1,
            protocol,
            sql: sql.into(),
            statement: None,
            portal: None,
            params: vec![],
            function_oid: None,
            outcome: Some(Outcome {
                tag: None,
                sqlstate: Some(state.into()),
                message: Some(message.into()),
                skipped: false,
            }),
        }
    }

    fn error(message: &str, statement: Option<&str>) -> LogError {
        LogError {
            message: message.into(),
            statement: statement.map(String::from),
        }
    }

    /// A syntax error is confirmed only by the error the server logged for that very
    /// text: one pinned on another query is not.
    #[test]
    fn confirmation_needs_the_same_error_and_text() {
        let errors = [
            error(
                "syntax error at or near \"SELEC\" at character 1",
                Some("SELEC 1"),
            ),
            error("portal \"p\" does not exist", None),
        ];
        let own = query(
            Protocol::Simple,
            "SELEC 1",
            "42601",
            "syntax error at or near \"SELEC\"",
        );
        let pinned = query(
            Protocol::Simple,
            "SELECT 2",
            "42601",
            "syntax error at or near \"SELEC\"",
        );
        assert_eq!(exclusion(&own), Some(Rule::SimpleSyntaxError));
        let mut next = 0;
        assert!(!confirmed(
            Rule::SimpleSyntaxError,
            &pinned,
            &errors,
            &mut next
        ));
        assert!(confirmed(Rule::SimpleSyntaxError, &own, &errors, &mut next));
        assert_eq!(next, 1);
        // Errors are used once, in order.
        assert!(!confirmed(
            Rule::SimpleSyntaxError,
            &own,
            &errors,
            &mut next
        ));
        let portal = query(
            Protocol::Extended,
            "",
            "34000",
            "portal \"p\" does not exist",
        );
        assert_eq!(exclusion(&portal), Some(Rule::ExecuteRefused));
        assert!(confirmed(Rule::ExecuteRefused, &portal, &errors, &mut next));
        // A statement that ran and failed with 34000 (CLOSE of a missing cursor) stays.
        let cursor = query(
            Protocol::Extended,
            "CLOSE c",
            "34000",
            "cursor \"c\" does not exist",
        );
        assert_eq!(exclusion(&cursor), None);
        // A failure after logging (e.g. division by zero) excludes nothing.
        let ran = query(
            Protocol::Extended,
            "SELECT 1/0",
            "22012",
            "division by zero",
        );
        assert_eq!(exclusion(&ran), None);
    }

    fn execute(statement: &str, sql: &str, params: &[&str]) -> Stmt {
        Stmt::Extended {
            statement: statement.into(),
            portal: String::new(),
            sql: sql.into(),
            params: params.iter().map(|p| Some(p.to_string())).collect(),
        }
    }

    /// An Execute refused in a failed transaction is logged without parameters, and
    /// with an empty text for a simple query's leftover portal.
    #[test]
    fn refused_executes_compare_without_what_the_log_leaves_out() {
        let audited = execute("s1", "SELECT $1", &["x"]);
        assert!(agrees(&execute("s1", "SELECT $1", &[]), &audited, true));
        assert!(!agrees(&execute("s1", "SELECT $1", &[]), &audited, false));
        assert!(!agrees(&execute("s2", "SELECT $1", &[]), &audited, true));
        assert!(!agrees(&execute("s1", "SELECT 2", &[]), &audited, true));
        assert!(agrees(&execute("", "", &[]), &audited, true));
        assert!(!agrees(&execute("s1", "SELECT $1", &["y"]), &audited, true));
    }
}
