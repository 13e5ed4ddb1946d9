//! Reading the PostgreSQL server log (stderr format, `log_line_prefix = '%m [%p] '`) as
//! it grows: entries per backend pid, and the statements each backend executed.
//!
//! Format facts relied on (PostgreSQL 15, `elog.c`): every entry is written with one
//! `write(2)`, so its lines are contiguous; each of its parts (`LOG:`, `DETAIL:`,
//! `ERROR:`, `STATEMENT:`, …) starts a line with the prefix; a newline inside a message
//! is followed by an inserted tab (`append_with_tabs`), so a line starting with a tab
//! continues the previous one. With `log_connections`/`log_disconnections`, a backend's
//! first line is `connection received: …` and its last `disconnection: …`.
//!
//! Statements (`log_statement = all`, `postgres.c`/`fastpath.c`):
//! `statement: <sql>` (simple Query), `execute <stmt>[/<portal>]: <sql>` and
//! `execute fetch from …` (extended Execute, followed by `DETAIL:  parameters: $1 =
//! '…', $2 = NULL` when the portal has parameters), `fastpath function call: "<name>"
//! (OID <n>)` (FunctionCall).

use std::collections::HashMap;
use std::path::PathBuf;

use super::stmt::Stmt;
use super::tail::Tail;

/// One log entry part: `LOG`, `DETAIL`, `ERROR`, … and its message (continuation
/// lines joined with `\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub level: String,
    pub message: String,
}

/// One backend's entries since its `connection received`.
#[derive(Default, Debug)]
pub struct Backend {
    pub entries: Vec<Entry>,
    /// Its `disconnection:` line was seen: nothing more will come.
    pub ended: bool,
}

/// The server log, read incrementally.
pub struct ServerLog {
    tail: Tail,
    backends: HashMap<i32, Backend>,
    /// Where a continuation line goes: the pid of the last entry read.
    last: Option<i32>,
}

/// Splits `2026-12-07 13:21:10.151 UTC [7481] LOG:  text` into (pid, level, text).
fn split_line(line: &str) -> Option<(i32, &str, &str)> {
    let open = line.find(" [")?;
    let rest = &line[open + 2..];
    let close = rest.find("] ")?;
    let pid = rest[..close].parse().ok()?;
    let rest = &rest[close + 2..];
    let colon = rest.find(":  ")?;
    let level = &rest[..colon];
    if level.is_empty()
        || !level
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return None;
    }
    Some((pid, level, &rest[colon + 3..]))
}

impl ServerLog {
    /// Starts reading at the log's current end: earlier lines are not looked at.
    pub fn open_at_end(path: PathBuf) -> ServerLog {
        ServerLog {
            tail: Tail::at_end(path),
            backends: HashMap::new(),
            last: None,
        }
    }

    /// Reads what was appended since the last call.
    pub fn poll(&mut self) {
        let complete = self.tail.poll();
        if complete.is_empty() {
            return;
        }
        for line in complete[..complete.len() - 1].split(|b| *b == b'\n') {
            self.line(&String::from_utf8_lossy(line));
        }
    }

    fn line(&mut self, line: &str) {
        if let Some(cont) = line.strip_prefix('\t') {
            if let Some(pid) = self.last {
                if let Some(e) = self
                    .backends
                    .get_mut(&pid)
                    .and_then(|b| b.entries.last_mut())
                {
                    e.message.push('\n');
                    e.message.push_str(cont);
                }
            }
            return;
        }
        let Some((pid, level, text)) = split_line(line) else {
            self.last = None;
            return;
        };
        self.last = Some(pid);
        if level == "LOG" && text.starts_with("connection received:") {
            self.backends.insert(pid, Backend::default());
        }
        let backend = self.backends.entry(pid).or_default();
        if level == "LOG" && text.starts_with("disconnection:") {
            backend.ended = true;
        }
        backend.entries.push(Entry {
            level: level.to_string(),
            message: text.to_string(),
        });
    }

    pub fn backend(&self, pid: i32) -> Option<&Backend> {
        self.backends.get(&pid)
    }

    /// Forgets a backend whose log was used (keeps memory flat over long runs).
    pub fn forget(&mut self, pid: i32) {
        self.backends.remove(&pid);
    }
}

/// An `ERROR:` entry and the `STATEMENT:` the server printed with it, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogError {
    pub message: String,
    pub statement: Option<String>,
}

/// A backend's errors, in order, from its entries.
pub fn errors(entries: &[Entry]) -> Vec<LogError> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.level != "ERROR" {
            continue;
        }
        let statement = entries[i + 1..]
            .iter()
            .take_while(|d| {
                matches!(
                    d.level.as_str(),
                    "DETAIL" | "HINT" | "CONTEXT" | "STATEMENT"
                )
            })
            .find(|d| d.level == "STATEMENT")
            .map(|d| d.message.clone());
        out.push(LogError {
            message: e.message.clone(),
            statement,
        });
    }
    out
}

/// The statements a backend executed, in order, from its entries.
pub fn statements(entries: &[Entry]) -> Vec<Stmt> {
    let mut out = Vec::new();
    let mut iter = entries.iter().peekable();
    while let Some(e) = iter.next() {
        if e.level != "LOG" {
            continue;
        }
        let detail = match iter.peek() {
            Some(d) if d.level == "DETAIL" && d.message.starts_with("parameters: ") => {
                Some(d.message["parameters: ".len()..].to_string())
            }
            _ => None,
        };
        if let Some(stmt) = Stmt::from_log(&e.message, detail.as_deref()) {
            if detail.is_some() {
                iter.next();
            }
            out.push(stmt);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &str) -> ServerLog {
        let mut log = ServerLog {
            tail: Tail::new(PathBuf::new(), 0),
            backends: HashMap::new(),
            last: None,
        };
        for l in lines.lines() {
            log.line(l);
        }
        log
    }

    /// Lines as PostgreSQL 15 wrote them in this setup (copied from a real log).
    #[test]
    fn entries_and_continuations_per_pid() {
        let log = feed(
            "2026-12-07 13:21:30.905 UTC [7674] LOG:  connection received: host=127.0.0.1 port=1\n\
             2026-12-07 13:21:31.209 UTC [7674] LOG:  execute a: SELECT $1::text /*q1*/\n\
             2026-12-07 13:21:31.209 UTC [9] LOG:  statement: SELECT 9\n\
             2026-12-07 13:21:31.209 UTC [7674] DETAIL:  parameters: $1 = 'it''s\n\
             \t\tx', $2 = NULL\n\
             2026-12-07 13:21:31.510 UTC [7674] LOG:  statement: SELECT 1\n\
             \t\t/*q2*/\n\
             2026-12-07 13:21:31.811 UTC [7674] LOG:  disconnection: session time: 0:00:00.906\n",
        );
        let b = log.backend(7674).unwrap();
        assert!(b.ended);
        assert_eq!(
            b.entries[2].message,
            "parameters: $1 = 'it''s\n\tx', $2 = NULL"
        );
        assert_eq!(b.entries[3].message, "statement: SELECT 1\n\t/*q2*/");
        let stmts = statements(&b.entries);
        assert_eq!(
            stmts,
            vec![
                Stmt::Extended {
                    statement: "a".into(),
                    portal: String::new(),
                    sql: "SELECT $1::text /*q1*/".into(),
                    params: vec![Some("it's\n\tx".into()), None],
                },
                Stmt::Simple("SELECT 1\n\t/*q2*/".into()),
            ]
        );
        assert_eq!(log.backend(9).unwrap().entries.len(), 1);
    }

    #[test]
    fn fetch_and_fastpath() {
        let log = feed(
            "2026-12-07 13:21:20.174 UTC [5] LOG:  execute <unnamed>/cur: SELECT 2\n\
             2026-12-07 13:21:20.174 UTC [5] LOG:  execute fetch from <unnamed>/cur: SELECT 2\n\
             2026-12-07 13:21:14.661 UTC [5] LOG:  fastpath function call: \"abs\" (OID 1397)\n\
             2026-12-07 13:21:14.661 UTC [5] LOG:  statement: \n",
        );
        let stmts = statements(&log.backend(5).unwrap().entries);
        let fetch = Stmt::Extended {
            statement: String::new(),
            portal: "cur".into(),
            sql: "SELECT 2".into(),
            params: vec![],
        };
        assert_eq!(
            stmts,
            vec![
                fetch.clone(),
                fetch,
                Stmt::Function(1397),
                Stmt::Simple(String::new())
            ]
        );
    }
}
