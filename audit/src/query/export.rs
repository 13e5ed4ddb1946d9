//! `jitgate audit export` and the event side of `replay`: the events that match a
//! [`Filter`], as JSON Lines (the log's own lines, byte for byte) or CSV.
//!
//! Without `text`/`errors` every event that matches the context and time conditions is
//! exported (session starts and ends, queries, results, grant events…). With them, the
//! export holds the matching `query` events, each followed by its `query_result`.
//!
//! CSV has one fixed column per common field ([`CSV_COLUMNS`]) and a `details` column
//! with the event's remaining fields as JSON. Cells are quoted per RFC 4180. Because an
//! export is opened in spreadsheets and SQL text is written by whoever had access, a
//! cell starting with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'`
//! (OWASP's CSV-injection advice) so it is shown as text and never run as a formula; and
//! escaped bytes (U+0000 + two hex digits in the log) are written as `\xhh`. JSON Lines
//! is the lossless format.

use std::fmt::Write as _;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use uuid::Uuid;

use super::matcher::Matcher;
use super::{scan_log, Filter, Line, ScanStats};
use crate::error::AuditError;
use crate::escape::BYTE_ESCAPE;
use crate::event::Event;

/// Output format of [`export`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON event per line, as in the log.
    Jsonl,
    /// A header row and one row per event.
    Csv,
}

/// The CSV columns, in order. `details` holds the event's other fields as JSON.
pub const CSV_COLUMNS: &[&str] = &[
    "seq",
    "ts",
    "kind",
    "session_id",
    "identity",
    "target",
    "role",
    "grant_id",
    "query_id",
    "protocol",
    "statement",
    "portal",
    "sql",
    "truncated",
    "sql_len",
    "sql_sha256",
    "setting_change",
    "params",
    "params_from",
    "tag",
    "rows",
    "sqlstate",
    "message",
    "duration_us",
    "bytes",
    "details",
];

/// Fields that are not worth a CSV reader's attention (schema version, hash chain).
const CSV_SKIPPED: &[&str] = &["v", "prev"];

fn output_error(source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: PathBuf::from("(output)"),
        source,
    }
}

/// Writes the events of the log `path` that match `filter` to `out` in `format`.
/// A write error (a closed pipe) stops the export and is returned.
pub fn export(
    path: &Path,
    filter: &Filter,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<ScanStats, AuditError> {
    let mut rows = Rows {
        format,
        row: String::new(),
    };
    if format == ExportFormat::Csv {
        rows.header(out).map_err(output_error)?;
    }
    let m = Matcher::new(filter)?;
    let (stats, failed) = if m.is_query_search() {
        export_found(path, filter, &mut rows, out)?
    } else {
        export_matching(path, &m, &mut rows, out)?
    };
    if let Some(e) = failed {
        return Err(output_error(e));
    }
    out.flush().map_err(output_error)?;
    Ok(stats)
}

/// Events in the export's format, through one reused buffer.
struct Rows {
    format: ExportFormat,
    row: String,
}

impl Rows {
    /// The CSV header row.
    fn header(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        self.row.push_str(&CSV_COLUMNS.join(","));
        self.row.push_str("\r\n");
        out.write_all(self.row.as_bytes())
    }

    /// One event.
    fn event(&mut self, e: &Event, out: &mut dyn Write) -> std::io::Result<()> {
        self.row.clear();
        match self.format {
            ExportFormat::Jsonl => {
                self.row
                    .push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
                self.row.push('\n');
            }
            ExportFormat::Csv => csv_row(e, &mut self.row),
        }
        out.write_all(self.row.as_bytes())
    }
}

/// Goes on after a successful write; stops after a failed one, keeping its error.
fn written(result: std::io::Result<()>, failed: &mut Option<std::io::Error>) -> ControlFlow<()> {
    match result {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            *failed = Some(e);
            ControlFlow::Break(())
        }
    }
}

/// With `text`/`errors`: the matching `query` events, each followed by its result (the
/// scan of [`search()`](super::search())). Returns the write error that stopped it, if
/// one did.
fn export_found(
    path: &Path,
    filter: &Filter,
    rows: &mut Rows,
    out: &mut dyn Write,
) -> Result<(ScanStats, Option<std::io::Error>), AuditError> {
    let mut failed = None;
    let stats = super::search(path, filter, |found| {
        let r = rows
            .event(&found.query, out)
            .and_then(|()| found.result.as_ref().map_or(Ok(()), |r| rows.event(r, out)));
        written(r, &mut failed)
    })?;
    Ok((stats, failed))
}

/// Without `text`/`errors`: every event matching the context and time conditions; JSON
/// Lines as the log's own bytes when the raw checks decided. Returns the write error
/// that stopped it, if one did.
fn export_matching(
    path: &Path,
    m: &Matcher,
    rows: &mut Rows,
    out: &mut dyn Write,
) -> Result<(ScanStats, Option<std::io::Error>), AuditError> {
    let mut stats = ScanStats::default();
    let mut failed = None;
    scan_log(path, &mut stats, |line, stats| {
        let Some(event_line) = matching_line(m, line, stats) else {
            return ControlFlow::Continue(());
        };
        let r = match (rows.format, &event_line) {
            (ExportFormat::Jsonl, MatchedLine::Raw(bytes)) => {
                out.write_all(bytes).and_then(|()| out.write_all(b"\n"))
            }
            (_, MatchedLine::Parsed(e)) => rows.event(e, out),
            (ExportFormat::Csv, MatchedLine::Raw(bytes)) => {
                let parsed = Line {
                    path: line.path,
                    number: line.number,
                    bytes,
                };
                match parsed.parse(stats) {
                    Some(e) => rows.event(&e, out),
                    None => Ok(()),
                }
            }
        };
        written(r, &mut failed)
    })?;
    Ok((stats, failed))
}

/// A line that passed the filter: its bytes when the raw checks decided, or the event
/// when it had to be parsed to decide.
enum MatchedLine<'a> {
    Raw(std::borrow::Cow<'a, [u8]>),
    Parsed(Box<Event>),
}

/// The context/time conditions on one line, parsing only when the raw checks cannot
/// decide (a timestamp not in the writer's form).
fn matching_line<'a>(
    m: &Matcher,
    line: &'a Line<'_>,
    stats: &mut ScanStats,
) -> Option<MatchedLine<'a>> {
    let (_, bytes) = line.canonical(&m.keys, stats)?;
    if !m.context_raw(&bytes) {
        return None;
    }
    match m.time_raw(&bytes) {
        Some(true) => Some(MatchedLine::Raw(bytes)),
        Some(false) => None,
        None => {
            let parsed = Line {
                path: line.path,
                number: line.number,
                bytes: &bytes,
            };
            let e = parsed.parse(stats)?;
            m.context_event(&e)
                .then(|| MatchedLine::Parsed(Box::new(e)))
        }
    }
}

/// Every event of `session` in the log `path`, in log order (what `replay` renders).
pub fn session_events(path: &Path, session: Uuid) -> Result<(Vec<Event>, ScanStats), AuditError> {
    let filter = Filter {
        session: Some(session),
        ..Filter::default()
    };
    let m = Matcher::new(&filter)?;
    let mut stats = ScanStats::default();
    let mut events = Vec::new();
    scan_log(path, &mut stats, |line, stats| {
        match matching_line(&m, line, stats) {
            Some(MatchedLine::Parsed(e)) => events.push(*e),
            Some(MatchedLine::Raw(bytes)) => {
                let parsed = Line {
                    path: line.path,
                    number: line.number,
                    bytes: &bytes,
                };
                if let Some(e) = parsed.parse(stats) {
                    events.push(e);
                }
            }
            None => {}
        }
        ControlFlow::Continue(())
    })?;
    Ok((events, stats))
}

/// Appends the CSV row of `e` (with `\r\n`) to `row`.
pub(crate) fn csv_row(e: &Event, row: &mut String) {
    let mut fields = match serde_json::to_value(e) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for skipped in CSV_SKIPPED {
        fields.remove(*skipped);
    }
    for (i, column) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            row.push(',');
        }
        let cell = if *column == "details" {
            if fields.is_empty() {
                String::new()
            } else {
                Value::Object(std::mem::take(&mut fields)).to_string()
            }
        } else {
            match fields.remove(*column) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s,
                Some(Value::Bool(b)) => b.to_string(),
                Some(other) => other.to_string(),
            }
        };
        push_cell(row, &cell);
    }
    row.push_str("\r\n");
}

/// One CSV cell: escaped bytes as `\xhh`, formula-looking text made inert, quoted when
/// needed.
fn push_cell(row: &mut String, cell: &str) {
    let mut text = String::with_capacity(cell.len() + 2);
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        text.push('\'');
    }
    let mut chars = cell.chars();
    while let Some(c) = chars.next() {
        if c == BYTE_ESCAPE {
            text.push_str("\\x");
            text.extend(chars.by_ref().take(2));
        } else {
            text.push(c);
        }
    }
    if text.contains([',', '"', '\n', '\r']) {
        row.push('"');
        let _ = write!(row, "{}", text.replace('"', "\"\""));
        row.push('"');
    } else {
        row.push_str(&text);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::event::{EventBody, Protocol};
    use crate::param::{Param, ParamFormat};

    fn cells(row: &str) -> Vec<String> {
        // A small RFC 4180 reader, enough to check what push_cell wrote.
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = row.trim_end_matches("\r\n").chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                (true, '"') => quoted = false,
                (false, '"') => quoted = true,
                (false, ',') => out.push(std::mem::take(&mut cur)),
                (_, c) => cur.push(c),
            }
        }
        out.push(cur);
        out
    }

    #[test]
    fn csv_cells_are_quoted_and_made_inert() {
        let mut row = String::new();
        push_cell(&mut row, "plain");
        row.push(',');
        push_cell(&mut row, "a,\"b\"\nc");
        row.push(',');
        push_cell(&mut row, "=HYPERLINK(\"x\")");
        row.push(',');
        push_cell(&mut row, "-- comment\nselect 1");
        row.push(',');
        push_cell(&mut row, "bad \u{0}ff byte");
        assert_eq!(
            cells(&row),
            vec![
                "plain",
                "a,\"b\"\nc",
                "'=HYPERLINK(\"x\")",
                "'-- comment\nselect 1",
                "bad \\xff byte"
            ]
        );
    }

    #[test]
    fn csv_rows_have_every_column() {
        let e = Event::new(EventBody::Query {
            query_id: 3,
            protocol: Protocol::Extended,
            sql: "select $1, 'x,y'".into(),
            truncated: false,
            sql_len: None,
            sql_sha256: None,
            setting_change: None,
            statement: Some(String::new()),
            portal: Some(String::new()),
            params: vec![Param::from_wire(ParamFormat::Text, Some(23), Some(b"42"))],
            function_oid: None,
            params_from: None,
        })
        .with_identity("alice");
        let mut row = String::new();
        csv_row(&e, &mut row);
        let c = cells(&row);
        assert_eq!(c.len(), CSV_COLUMNS.len());
        let col = |name: &str| &c[CSV_COLUMNS.iter().position(|n| *n == name).unwrap()];
        assert_eq!(col("kind"), "query");
        assert_eq!(col("identity"), "alice");
        assert_eq!(col("query_id"), "3");
        assert_eq!(col("sql"), "select $1, 'x,y'");
        assert_eq!(
            col("params"),
            r#"[{"format":"text","type_oid":23,"value":"42"}]"#
        );
        assert_eq!(col("details"), "");
    }
}
