//! Reading audit logs: all events of a log set ([`read_events`]) or following a live log
//! ([`tail`]).
//!
//! A log is a set of files (see [`crate::fileset`]): the closed, rotated files (plain or
//! zstd-compressed) oldest first, then the live file. Both functions take the live
//! file's path and read the whole set in order. Lines are read as bytes and parsed one by
//! one, so a damaged line is reported with its file and line number and reading
//! continues with the next one. Blank lines are skipped (they still count for line
//! numbers). An unterminated last line of the live file is not an event yet (jitgate may
//! be writing it, or a crash cut it short) and is not reported; `jitgate audit verify`
//! reports torn lines.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::AuditError;
use crate::event::{Event, SCHEMA_VERSION};
use crate::fileset::{self, LogFile, Naming};
use crate::logfile;

/// How often [`tail`] looks for appended lines when following.
pub const TAIL_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// An opened file of the set, ready to be read line by line.
struct Source {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    live: bool,
}

/// Opens every file of the set of `live`: closed files in order, then the live file.
/// The live file is opened first and a closed file that is the same file (renamed by a
/// rotation in between) is skipped, so a concurrent rotation neither loses nor repeats
/// lines. Errs when no file of the set exists.
fn open_set(live: &Path, include_live: bool) -> Result<(Vec<Source>, Option<File>), AuditError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    let live_file = match File::open(live) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(live)(e)),
    };
    let live_id = live_file.as_ref().and_then(fileset::file_id);
    let naming = Naming::new(live);
    let closed = naming.closed_files().map_err(io_err(&naming.dir))?;
    let mut sources = Vec::with_capacity(closed.len() + 1);
    for listed in &closed {
        let Some((file, found)) = fileset::open(listed).map_err(io_err(&listed.path))? else {
            continue;
        };
        if live_id.is_some() && fileset::file_id(&file) == live_id {
            continue;
        }
        sources.push(Source {
            reader: fileset::reader(file, found.compressed).map_err(io_err(&found.path))?,
            path: found.path,
            live: false,
        });
    }
    let Some(live_file) = live_file else {
        if sources.is_empty() {
            return Err(io_err(live)(std::io::ErrorKind::NotFound.into()));
        }
        return Ok((sources, None));
    };
    if !include_live {
        return Ok((sources, Some(live_file)));
    }
    let reader = fileset::reader(live_file, false).map_err(io_err(live))?;
    sources.push(Source {
        path: live.to_path_buf(),
        reader,
        live: true,
    });
    Ok((sources, None))
}

/// Opens the log set whose live file is `path` and iterates over its events in order
/// (closed files oldest first, then the live file). Each item is an event or the reason
/// its line could not be read (naming the file and line number); iteration continues
/// after a bad line, and after an I/O error continues with the next file. Errs when no
/// file of the set exists.
pub fn read_events(path: &Path) -> Result<Events, AuditError> {
    let (sources, _) = open_set(path, true)?;
    Ok(Events::new(sources))
}

/// The files [`read_events`] reads for the live file `path`, in order.
pub fn list_files(path: &Path) -> Result<Vec<LogFile>, AuditError> {
    fileset::log_files(path)
}

/// Iterator returned by [`read_events`].
pub struct Events {
    sources: VecDeque<Source>,
    line: u64,
    buf: Vec<u8>,
}

impl Events {
    fn new(sources: Vec<Source>) -> Events {
        Events {
            sources: sources.into(),
            line: 0,
            buf: Vec::new(),
        }
    }

    fn next_file(&mut self) {
        self.sources.pop_front();
        self.line = 0;
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field(
                "files",
                &self.sources.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("line", &self.line)
            .finish()
    }
}

impl Iterator for Events {
    type Item = Result<Event, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let source = self.sources.front_mut()?;
            self.buf.clear();
            match source.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.next_file(),
                Ok(_) => {
                    self.line += 1;
                    if self.buf.last() != Some(&b'\n') && source.live {
                        // The live file's unterminated tail: not (yet) an event.
                        self.next_file();
                        continue;
                    }
                    if let Some(event) = parse_line(&self.buf, &source.path, self.line) {
                        return Some(event);
                    }
                }
                Err(source_err) => {
                    let path = source.path.clone();
                    self.next_file();
                    return Some(Err(AuditError::Io {
                        path,
                        source: source_err,
                    }));
                }
            }
        }
    }
}

/// Parses one line (with or without its `\n`) of the file `path`; `None` for a blank
/// line.
pub fn parse_line(bytes: &[u8], path: &Path, line: u64) -> Option<Result<Event, AuditError>> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice::<Event>(trimmed)
            .map_err(|source| AuditError::Parse {
                path: path.to_path_buf(),
                line,
                source,
            })
            .and_then(|event| {
                if event.v > SCHEMA_VERSION {
                    Err(AuditError::UnsupportedVersion {
                        path: path.to_path_buf(),
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

/// Feeds events of the log set whose live file is `path` to `out`: from the beginning
/// (`from_start`: every closed file, then the live file) or only those appended from now
/// on. With `follow`, keeps polling every [`TAIL_POLL_INTERVAL`] for appended lines until
/// `out` returns `Break` or the future is dropped (cancelled); it also notices when the
/// live file is replaced (rotation) or truncated and goes on with the new content. Only
/// newline-terminated lines are parsed: a partially written last line waits until it is
/// complete (and is ignored without `follow`). When not starting from the beginning, line
/// numbers in errors count from the first line tailed.
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
    let std_file = if from_start {
        let (closed, live) = open_set(path, false)?;
        for item in Events::new(closed) {
            if out(item).is_break() {
                return Ok(());
            }
        }
        match live {
            Some(file) => file,
            // The live file is missing (a rotation is under way): wait for it.
            None => File::open(path).map_err(io_err)?,
        }
    } else {
        File::open(path).map_err(io_err)?
    };
    let start = if from_start {
        0
    } else {
        logfile::complete_len(&std_file).map_err(io_err)?
    };
    let mut file = tokio::fs::File::from_std(std_file);
    file.seek(SeekFrom::Start(start)).await.map_err(io_err)?;
    let mut offset = start;
    let mut lines = LineSplitter::new(path);
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
            lines = LineSplitter::new(path);
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
struct LineSplitter {
    path: PathBuf,
    pending: Vec<u8>,
    line: u64,
}

impl LineSplitter {
    fn new(path: &Path) -> LineSplitter {
        LineSplitter {
            path: path.to_path_buf(),
            pending: Vec::new(),
            line: 0,
        }
    }

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
            if let Some(item) = parse_line(&self.pending[consumed..end], &self.path, self.line) {
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
