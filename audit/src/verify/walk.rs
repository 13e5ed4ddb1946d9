//! Step 2 of verification: every line of every file of the set, oldest first, through
//! [`Links`]. Only the very last line of the live file may be torn (a crash: a warning).

use std::fs::File;
use std::io::BufRead;

use super::lines::{Lines, Next};
use super::links::{At, Links};
use super::report::{FileSummary, Problem, ProblemKind};
use super::set;
use crate::fileset::LogFile;

/// Checks `files` in order (`live`: the live file, already open) up to the first problem.
pub(super) fn walk(
    links: &mut Links<'_>,
    files: &[LogFile],
    mut live: Option<File>,
) -> Result<(), Problem> {
    for (i, file) in files.iter().enumerate() {
        let at_end = i + 1 == files.len();
        let opened = if file.is_live() { live.take() } else { None };
        self::file(links, file, opened, at_end)?;
    }
    Ok(())
}

/// Checks every line of one file (`opened`: the file, when already open); the file goes
/// into the report's list whenever it could be opened.
fn file(
    links: &mut Links<'_>,
    listed: &LogFile,
    opened: Option<File>,
    at_end: bool,
) -> Result<(), Problem> {
    let unreadable =
        |detail: String| Problem::new(ProblemKind::Unreadable, &listed.path, None, None, detail);
    let (reader, found) = match set::open(listed, opened) {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            let detail = "disappeared while verifying (rotation or retention running?)";
            return Err(unreadable(detail.into()));
        }
        Err(e) => return Err(unreadable(format!("cannot open: {e}"))),
    };
    let mut summary = FileSummary {
        path: found.path.clone(),
        seqs: None,
        compressed: found.compressed,
    };
    let checked = lines(links, reader, &found, at_end, &mut summary).and_then(|()| {
        if summary.seqs.is_none() && !found.is_live() {
            let detail = "closed file holds no event".to_owned();
            let seq = listed.first_seq;
            return Err(Problem::new(
                ProblemKind::Files,
                &found.path,
                None,
                seq,
                detail,
            ));
        }
        Ok(())
    });
    links.report().files.push(summary);
    checked
}

/// Checks the lines of `found` up to the first problem.
fn lines(
    links: &mut Links<'_>,
    reader: impl BufRead,
    found: &LogFile,
    at_end: bool,
    summary: &mut FileSummary,
) -> Result<(), Problem> {
    let path = found.path.as_path();
    let mut lines = Lines::new(reader);
    loop {
        let read = lines.next_line().map_err(|(line_no, e)| {
            let detail = format!("read error after line {}: {e}", line_no - 1);
            let (kind, seq) = (ProblemKind::Unreadable, links.next_seq());
            Problem::new(kind, path, Some(line_no), seq, detail)
        })?;
        match read {
            Next::End => return Ok(()),
            Next::Torn(line_no, len) if found.is_live() && at_end => {
                links.report().warnings.push(format!(
                    "{} line {line_no}: torn last line ({len} bytes without a newline): a crash \
                     cut it short; it is not an event and jitgate removes it on its next start",
                    path.display(),
                ));
                return Ok(());
            }
            Next::Torn(line_no, len) => {
                let detail = format!(
                    "line without a newline ({len} bytes) that is not at the end of the live \
                     file: the file was truncated or damaged"
                );
                let seq = links.next_seq();
                return Err(Problem::new(
                    ProblemKind::Torn,
                    path,
                    Some(line_no),
                    seq,
                    detail,
                ));
            }
            Next::Line(line_no, line) => {
                let at = At {
                    path,
                    line: line_no,
                };
                links.line(line, at, found, summary)?;
            }
        }
    }
}
