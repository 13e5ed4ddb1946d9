//! Fast, filtered reading of an audit log for the people who read it: the engines behind
//! `jitgate audit sessions`, `search`, `export` and `replay`.
//!
//! A log can be gigabytes, and almost every line of it is irrelevant to a given
//! question. So each scan looks at the raw bytes of a line first — its `kind`, and
//! `memmem` needles for the identity/target/grant/session asked for, the timestamp
//! window, the `--text` regex run on the SQL bytes — and parses JSON only for the lines
//! that survive (plus the few `session_start`/`session_end` lines). The raw checks rely on
//! the compact form jitgate writes (see `raw`); a line not in that form is parsed and
//! re-encoded before being looked at, so it is never skipped for its formatting.
//!
//! Lines are read from every file of the log set (closed files oldest first, then the
//! live file, zstd-compressed files decompressed on the fly), as [`crate::read_events`]
//! does. A scan does not validate lines it skips; `jitgate audit verify` does that.
//!
//! # Layout
//!
//! - `lines`: splitting files into lines with one reused buffer.
//! - `raw`: reading single fields from a line's bytes.
//! - `matcher`: a [`Filter`] compiled for raw lines and parsed events.
//! - `search`: query events and their outcomes ([`search()`]).
//! - `sessions`: one row per session ([`sessions()`]).
//! - `export`: matching events as JSON Lines or CSV ([`export()`], [`session_events`]).

mod export;
mod lines;
mod matcher;
mod raw;
mod search;
mod sessions;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::Path;

use jiff::Timestamp;
use uuid::Uuid;

pub use export::{export, session_events, ExportFormat, CSV_COLUMNS};
pub use search::{search, Found};
pub use sessions::{sessions, SessionRow};

use crate::error::AuditError;
use crate::event::Event;

/// Which events a scan keeps. Every set condition must hold; unset ones match anything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Events of this identity.
    pub identity: Option<String>,
    /// Events on this target.
    pub target: Option<String>,
    /// Events under this grant.
    pub grant: Option<Uuid>,
    /// Events of this session.
    pub session: Option<Uuid>,
    /// At or after this time (for sessions: still open at or after it).
    pub since: Option<Timestamp>,
    /// Before this time (for sessions: started before it).
    pub until: Option<Timestamp>,
    /// Query events whose recorded SQL matches this regular expression (Rust `regex`
    /// syntax, unanchored; `(?i)` for case-insensitive).
    pub text: Option<String>,
    /// Query events whose outcome is an error.
    pub errors: bool,
}

/// What a scan read, for progress messages, throughput figures and exit codes.
#[derive(Debug, Default)]
pub struct ScanStats {
    /// Files read.
    pub files: u64,
    /// Lines looked at.
    pub lines: u64,
    /// Bytes of those lines (decompressed), newlines included.
    pub bytes: u64,
    /// Lines that were parsed as JSON (the rest were decided from their raw bytes).
    pub parsed: u64,
    /// Lines that were parsed and turned out not to be valid events.
    pub bad_lines: u64,
    /// The first [`MAX_REPORTED`] of those problems (and any I/O error), to show.
    pub problems: Vec<AuditError>,
}

/// How many problems a scan keeps in [`ScanStats::problems`].
pub const MAX_REPORTED: usize = 20;

impl ScanStats {
    fn problem(&mut self, error: AuditError) {
        if matches!(error, AuditError::Io { .. }) {
            // Not a line problem, but the caller must hear of it all the same.
        } else {
            self.bad_lines += 1;
        }
        if self.problems.len() < MAX_REPORTED {
            self.problems.push(error);
        }
    }
}

/// One line of the log, as handed to the scan engines.
pub(crate) struct Line<'a> {
    pub path: &'a Path,
    pub number: u64,
    pub bytes: &'a [u8],
}

impl Line<'_> {
    /// Parses the line into an event (counting it); `None` for a blank or bad line (the
    /// problem is recorded).
    pub(crate) fn parse(&self, stats: &mut ScanStats) -> Option<Event> {
        stats.parsed += 1;
        match crate::reader::parse_line(self.bytes, self.path, self.number)? {
            Ok(event) => Some(event),
            Err(e) => {
                stats.problem(e);
                None
            }
        }
    }

    /// The line in the compact form the raw checks rely on: itself when it already is
    /// (it has a `"kind":"` key), else parsed and re-encoded. `None` for a blank or bad
    /// line.
    pub(crate) fn canonical(
        &self,
        keys: &raw::Keys,
        stats: &mut ScanStats,
    ) -> Option<(raw::Kind, std::borrow::Cow<'_, [u8]>)> {
        if let Some(kind) = keys.kind(self.bytes) {
            return Some((kind, std::borrow::Cow::Borrowed(self.bytes)));
        }
        let event = self.parse(stats)?;
        let bytes = serde_json::to_vec(&event).ok()?;
        let kind = keys.kind(&bytes)?;
        Some((kind, std::borrow::Cow::Owned(bytes)))
    }
}

/// Opens one file of the set for reading (decompressing a `.zst`); `Ok(None)` when it
/// vanished since it was listed (retention).
fn open(file: &crate::fileset::LogFile) -> io::Result<Option<Box<dyn Read>>> {
    let (f, compressed) = match File::open(&file.path) {
        Ok(f) => (f, file.compressed),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !file.is_live() => {
            // Compressed since it was listed?
            let mut zst = file.path.clone().into_os_string();
            zst.push(".zst");
            match File::open(&zst) {
                Ok(f) => (f, true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if compressed {
        Ok(Some(Box::new(zstd::stream::read::Decoder::new(f)?)))
    } else {
        Ok(Some(Box::new(f)))
    }
}

/// Feeds every line of the log set of `path` to `f`, in order, counting into `stats`.
/// Errs when no file of the set exists; an I/O error on one file is recorded in `stats`
/// and reading goes on with the next.
pub(crate) fn scan_log<F>(path: &Path, stats: &mut ScanStats, mut f: F) -> Result<(), AuditError>
where
    F: FnMut(&Line<'_>, &mut ScanStats) -> ControlFlow<()>,
{
    let files = crate::reader::list_files(path)?;
    if files.is_empty() {
        return Err(AuditError::Io {
            path: path.to_path_buf(),
            source: io::ErrorKind::NotFound.into(),
        });
    }
    for file in &files {
        let reader = match open(file) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(source) => {
                stats.problem(AuditError::Io {
                    path: file.path.clone(),
                    source,
                });
                continue;
            }
        };
        stats.files += 1;
        let mut stop = false;
        let result = lines::for_each_line(reader, 1, !file.is_live(), |number, bytes| {
            stats.lines += 1;
            stats.bytes += bytes.len() as u64 + 1;
            let line = Line {
                path: &file.path,
                number,
                bytes,
            };
            let flow = f(&line, stats);
            stop = flow.is_break();
            flow
        });
        if let Err(source) = result {
            stats.problem(AuditError::Io {
                path: file.path.clone(),
                source,
            });
        }
        if stop {
            break;
        }
    }
    Ok(())
}
