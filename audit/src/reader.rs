//! Reading audit logs: all events of a file ([`read_events`]) or following a live log
//! ([`tail`]).
//!
//! Lines are read as bytes and parsed one by one, so a damaged line is reported with its
//! line number and reading continues with the next one. Blank lines are skipped (they
//! still count for line numbers).

use std::fs::File;
use std::io::{BufRead, BufReader, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::AuditError;
use crate::event::{Event, SCHEMA_VERSION};
use crate::logfile;

/// How often [`tail`] looks for appended lines when following.
pub const TAIL_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Opens `path` and iterates over its events in file order. Each item is an event or
/// the reason its line could not be read (naming the line number); iteration continues
/// after a bad line, and stops after an I/O error. A torn last line is reported as a
/// parse error.
pub fn read_events(path: &Path) -> Result<Events, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(Events {
        reader: BufReader::with_capacity(256 * 1024, file),
        path: path.to_owned(),
        line: 0,
        buf: Vec::new(),
        failed: false,
    })
}

/// Iterator returned by [`read_events`].
#[derive(Debug)]
pub struct Events {
    reader: BufReader<File>,
    path: PathBuf,
    line: u64,
    buf: Vec<u8>,
    /// An I/O error was reported; further reads would likely repeat it forever.
    failed: bool,
}

impl Iterator for Events {
    type Item = Result<Event, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {
                    self.line += 1;
                    if let Some(event) = parse_line(&self.buf, self.line) {
                        return Some(event);
                    }
                }
                Err(source) => {
                    self.failed = true;
                    return Some(Err(AuditError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
        }
        None
    }
}

/// Parses one line (with or without its `\n`); `None` for a blank line.
pub fn parse_line(bytes: &[u8], line: u64) -> Option<Result<Event, AuditError>> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice::<Event>(trimmed)
            .map_err(|source| AuditError::Parse { line, source })
            .and_then(|event| {
                if event.v > SCHEMA_VERSION {
                    Err(AuditError::UnsupportedVersion {
                        line,
                        version: event.v,
                        supported: SCHEMA_VERSION,
                    })
                } else {
                    Ok(event)
                }
            }),
    )
}

/// Feeds events of `path` to `out`: from the beginning (`from_start`) or only those
/// appended from now on. With `follow`, keeps polling every [`TAIL_POLL_INTERVAL`] for
/// appended lines until `out` returns `Break` or the future is dropped (cancelled); it
/// also notices when the file is replaced (rotation) or truncated and starts over on
/// the new content. Only newline-terminated lines are parsed: a partially written last
/// line waits until it is complete (and is ignored without `follow`). When not starting
/// from the beginning, line numbers in errors count from the first line tailed.
pub async fn tail<F>(
    path: &Path,
    follow: bool,
    from_start: bool,
    mut out: F,
) -> Result<(), AuditError>
where
    F: FnMut(Result<Event, AuditError>) -> ControlFlow<()>,
{
    let io_err = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let std_file = File::open(path).map_err(io_err)?;
    let start = if from_start {
        0
    } else {
        logfile::complete_len(&std_file).map_err(io_err)?
    };
    let mut file = tokio::fs::File::from_std(std_file);
    file.seek(SeekFrom::Start(start)).await.map_err(io_err)?;
    let mut offset = start;
    let mut lines = LineSplitter::default();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk).await.map_err(io_err)?;
        if n > 0 {
            offset += n as u64;
            if lines.push(&chunk[..n], &mut out).is_break() {
                return Ok(());
            }
            continue;
        }
        if !follow {
            return Ok(());
        }
        if let Some(replacement) = replaced_or_truncated(path, &file, offset).await {
            // Lines a writer appended to the old file just before rotating it.
            loop {
                let n = file.read(&mut chunk).await.map_err(io_err)?;
                if n == 0 {
                    break;
                }
                if lines.push(&chunk[..n], &mut out).is_break() {
                    return Ok(());
                }
            }
            file = replacement;
            offset = 0;
            lines = LineSplitter::default();
            continue;
        }
        tokio::time::sleep(TAIL_POLL_INTERVAL).await;
    }
}

/// At EOF while following: the file to continue with, if `path` now names a different
/// file (rotated) or ours shrank below what was read (truncated).
async fn replaced_or_truncated(
    path: &Path,
    file: &tokio::fs::File,
    offset: u64,
) -> Option<tokio::fs::File> {
    let current = file.metadata().await.ok()?;
    let at_path = tokio::fs::metadata(path).await.ok()?;
    #[cfg(unix)]
    let replaced = {
        use std::os::unix::fs::MetadataExt;
        (current.dev(), current.ino()) != (at_path.dev(), at_path.ino())
    };
    #[cfg(not(unix))]
    let replaced = false;
    if replaced || current.len() < offset {
        tokio::fs::File::open(path).await.ok()
    } else {
        None
    }
}

/// Splits a byte stream into lines, keeping an incomplete last line for later.
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
    line: u64,
}

impl LineSplitter {
    fn push<F>(&mut self, data: &[u8], out: &mut F) -> ControlFlow<()>
    where
        F: FnMut(Result<Event, AuditError>) -> ControlFlow<()>,
    {
        self.pending.extend_from_slice(data);
        let mut consumed = 0;
        let mut flow = ControlFlow::Continue(());
        while let Some(nl) = self.pending[consumed..].iter().position(|&b| b == b'\n') {
            let end = consumed + nl;
            self.line += 1;
            if let Some(item) = parse_line(&self.pending[consumed..end], self.line) {
                flow = out(item);
            }
            consumed = end + 1;
            if flow.is_break() {
                break;
            }
        }
        self.pending.drain(..consumed);
        flow
    }
}
