//! `jitgate audit sessions`, `search` and `export`: questions asked of the audit log
//! ("who ran what, under which grant, with what result"), answered by the fast scans of
//! `jitgate_audit::query` straight from the log files (no server needed).
//!
//! As with `tail` and `replay`, a line that cannot be read is reported on stderr and the
//! command exits 1 after printing what it found, so a damaged log never passes silently.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{bail, Context, Result};
use jitgate_audit::query::{self, ExportFormat, Filter, ScanStats, SessionRow};

use super::audit::log_path;
use super::table;
use super::{AuditExportCmd, AuditFilterArgs, AuditSearchCmd, AuditSessionsCmd, ExportFormatArg};

fn filter(args: AuditFilterArgs, text: Option<String>, errors: bool) -> Filter {
    Filter {
        identity: args.identity,
        target: args.target,
        grant: args.grant,
        session: args.session,
        since: args.since,
        until: args.until,
        text,
        errors,
    }
}

/// Reports unreadable lines and I/O problems; errs when there were any.
fn finish(stats: &ScanStats, path: &Path) -> Result<()> {
    for problem in &stats.problems {
        eprintln!("warning: {problem}");
    }
    let shown = stats.problems.len() as u64;
    let total = stats.bad_lines.max(shown);
    if total > shown {
        eprintln!("warning: … and {} more", total - shown);
    }
    if total > 0 {
        bail!(
            "{total} problem(s) reading the audit log {} (see the warnings above)",
            path.display()
        );
    }
    Ok(())
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".to_owned())
}

/// `jitgate audit sessions`.
pub fn sessions(config_path: &Path, cmd: AuditSessionsCmd) -> Result<()> {
    let path = log_path(config_path, cmd.file)?;
    let (rows, stats) = query::sessions(&path, &filter(cmd.filter, None, cmd.errors))?;
    if cmd.json {
        jitgate::outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        eprintln!("no sessions match");
    } else {
        jitgate::out!("{}", sessions_table(&rows));
    }
    finish(&stats, &path)
}

fn sessions_table(rows: &[SessionRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.session_id.to_string(),
                opt(&r.identity),
                opt(&r.target),
                opt(&r.role),
                r.grant_id.map_or_else(|| "-".to_owned(), |g| g.to_string()),
                opt(&r.client_addr),
                r.start.map_or_else(|| "-".to_owned(), table::time),
                r.end.map_or_else(|| "(open)".to_owned(), table::time),
                r.end_reason
                    .map_or_else(|| "-".to_owned(), |e| e.as_str().to_owned()),
                r.queries.to_string(),
                r.errors.to_string(),
                clean_cell(&opt(&r.grant_reason)),
            ]
        })
        .collect();
    table::render(
        &[
            "SESSION", "IDENTITY", "TARGET", "ROLE", "GRANT", "CLIENT", "START", "END", "ENDED",
            "QUERIES", "ERRORS", "REASON",
        ],
        &cells,
    )
}

/// A free-text cell on one line, without control characters.
fn clean_cell(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `jitgate audit search`.
pub fn search(config_path: &Path, cmd: AuditSearchCmd) -> Result<()> {
    let path = log_path(config_path, cmd.file)?;
    let filter = filter(cmd.filter, cmd.text, cmd.errors);
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let mut shown = 0u64;
    let limit = cmd.limit.unwrap_or(u64::MAX);
    let mut closed = false;
    let stats = query::search(&path, &filter, |found| {
        let line = if cmd.json {
            serde_json::json!({ "query": found.query, "result": found.result }).to_string()
        } else {
            found.summary()
        };
        if writeln!(stdout, "{line}").is_err() {
            // A closed stdout (`| head`) ends the search quietly.
            closed = true;
            return ControlFlow::Break(());
        }
        shown += 1;
        if shown >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if !closed {
        let _ = stdout.flush();
    }
    drop(stdout);
    if shown == 0 && !cmd.json {
        eprintln!("no queries match");
    }
    finish(&stats, &path)
}

/// `jitgate audit export`.
pub fn export(config_path: &Path, cmd: AuditExportCmd) -> Result<()> {
    let path = log_path(config_path, cmd.file)?;
    let filter = filter(cmd.filter, cmd.text, cmd.errors);
    let format = match cmd.format {
        ExportFormatArg::Jsonl => ExportFormat::Jsonl,
        ExportFormatArg::Csv => ExportFormat::Csv,
    };
    let stats = match &cmd.output {
        Some(out_path) => {
            let file = File::create(out_path)
                .with_context(|| format!("cannot create {}", out_path.display()))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            query::export(&path, &filter, format, &mut out)?
        }
        None => {
            let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            match query::export(&path, &filter, format, &mut out) {
                Ok(stats) => stats,
                // A closed stdout (`| head`): the reader chose to stop.
                Err(jitgate_audit::AuditError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    finish(&stats, &path)
}
