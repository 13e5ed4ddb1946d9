//! Opening the log file for appending, and finding where a previous run left off.
//!
//! On open the writer must continue the `seq` numbering after the last event already in
//! the file, chain its first line to the last line there (its hash), and must not glue
//! its first line onto a torn fragment (a line a crash or a full disk cut short,
//! recognisable by the missing trailing newline). Only the end of the file is read,
//! backwards in chunks, so opening a large log stays cheap.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::SystemTime;

use jiff::Timestamp;
use serde::Deserialize;

use crate::chain::LineHash;

/// How far back each read goes while looking for line boundaries.
const CHUNK: u64 = 64 * 1024;

/// What the end of an existing log looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogEnd {
    /// `seq` of the last complete line that parses as an event (`None`: no such line).
    pub last_seq: Option<u64>,
    /// Hash of the last complete line, whatever it holds (`None`: no complete line);
    /// the next line written chains to it.
    pub last_hash: Option<LineHash>,
    /// The file is non-empty and does not end with `\n`: the next write must start a
    /// new line first.
    pub torn: bool,
    /// Byte offset just past the last `\n` (0 when there is none).
    pub complete_len: u64,
}

/// Opens (creating the directory with 0700 and the file with 0600 if needed) the log
/// for appending and reading. Returns whether the file was created by this call, so the
/// caller can make the new directory entry durable.
pub(crate) fn open_append(path: &Path) -> io::Result<(File, bool)> {
    create_parent(path)?;
    let mut opts = OpenOptions::new();
    opts.read(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.clone().create_new(true).open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let file = opts.open(path)?;
            warn_if_readable_by_others(path, &file);
            Ok((file, false))
        }
        Err(e) => Err(e),
    }
}

/// Creates `path`'s directory (mode 0700) when it does not exist yet.
pub(crate) fn create_parent(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir)?;
        }
    }
    Ok(())
}

/// Audit logs hold SQL and parameter values; an existing file readable by group/others
/// is worth a warning (we do not chmod files we did not create).
fn warn_if_readable_by_others(path: &Path, file: &File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = file.metadata() {
            let mode = meta.permissions().mode();
            if meta.is_file() && mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "audit log is accessible by group/others; consider chmod 600"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, file);
}

/// Finds the last event `seq` and whether the file ends in a torn line. Non-regular
/// files (pipes, devices) have no readable history and report an empty end.
pub(crate) fn scan_end(file: &File) -> io::Result<LogEnd> {
    let meta = file.metadata()?;
    let len = meta.len();
    if !meta.is_file() || len == 0 {
        return Ok(LogEnd {
            last_seq: None,
            last_hash: None,
            torn: false,
            complete_len: 0,
        });
    }
    let mut reader = file;
    let mut last = [0u8; 1];
    read_exact_at(&mut reader, len - 1, &mut last)?;
    let torn = last[0] != b'\n';

    let Some(last_nl) = rfind_newline(&mut reader, len)? else {
        return Ok(LogEnd {
            last_seq: None,
            last_hash: None,
            torn,
            complete_len: 0,
        });
    };
    let complete_len = last_nl + 1;
    let mut line_end = last_nl;
    let mut skipped = 0u64;
    let mut last_hash = None;
    let last_seq = loop {
        let prev_nl = rfind_newline(&mut reader, line_end)?;
        let line_start = prev_nl.map_or(0, |p| p + 1);
        let mut line = vec![0u8; usize::try_from(line_end - line_start).unwrap_or(0)];
        read_exact_at(&mut reader, line_start, &mut line)?;
        if last_hash.is_none() {
            last_hash = Some(LineHash::of_line(&line));
        }
        if !line.is_empty() {
            match serde_json::from_slice::<SeqOnly>(&line) {
                Ok(s) => break Some(s.seq),
                Err(_) => skipped += 1,
            }
        }
        match prev_nl {
            Some(p) => line_end = p,
            None => break None,
        }
    };
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "audit log ends with lines that are not audit events; continuing after the last valid one"
        );
    }
    Ok(LogEnd {
        last_seq,
        last_hash,
        torn,
        complete_len,
    })
}

/// Cuts a torn fragment off the end of the file (it never was an acknowledged event:
/// events are acknowledged only after their whole batch was written). Returns how many
/// bytes were removed.
pub(crate) fn cut_torn_tail(file: &File, end: &LogEnd) -> io::Result<u64> {
    if !end.torn {
        return Ok(0);
    }
    let len = file.metadata()?.len();
    file.set_len(end.complete_len)?;
    Ok(len.saturating_sub(end.complete_len))
}

/// What the first line of a log file says: where it starts and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileStart {
    /// `seq` of the first line, if it parses.
    pub first_seq: Option<u64>,
    /// `ts` of the first line, if it parses.
    pub started: Option<SystemTime>,
}

/// Reads the first line of `file` (from its start, whatever the current position).
pub(crate) fn file_start(file: &File) -> io::Result<FileStart> {
    #[derive(Deserialize)]
    struct First {
        seq: u64,
        #[serde(with = "crate::time::micros")]
        ts: Timestamp,
    }
    let mut reader = file;
    reader.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    BufReader::new(reader).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Ok(FileStart::default());
    }
    Ok(
        match serde_json::from_slice::<First>(line.trim_ascii_end()) {
            Ok(first) => FileStart {
                first_seq: Some(first.seq),
                started: Some(SystemTime::from(first.ts)),
            },
            Err(_) => FileStart::default(),
        },
    )
}

/// The end of a log read as a stream (a compressed closed file): the hash and `seq` of
/// its last complete line. Reads everything.
pub(crate) fn stream_end(mut reader: impl BufRead) -> io::Result<LogEnd> {
    let mut line = Vec::new();
    let mut end = LogEnd {
        last_seq: None,
        last_hash: None,
        torn: false,
        complete_len: 0,
    };
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(end);
        }
        if line.last() != Some(&b'\n') {
            end.torn = true;
            return Ok(end);
        }
        end.complete_len += n as u64;
        let content = &line[..line.len() - 1];
        end.last_hash = Some(LineHash::of_line(content));
        if let Ok(s) = serde_json::from_slice::<SeqOnly>(content) {
            end.last_seq = Some(s.seq);
        }
    }
}

/// The last complete line of the file (without its `\n`), if any.
pub(crate) fn last_line(file: &File) -> io::Result<Option<Vec<u8>>> {
    let len = file.metadata()?.len();
    let mut reader = file;
    let Some(end) = rfind_newline(&mut reader, len)? else {
        return Ok(None);
    };
    let start = rfind_newline(&mut reader, end)?.map_or(0, |p| p + 1);
    let mut line = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
    read_exact_at(&mut reader, start, &mut line)?;
    Ok(Some(line))
}

/// Offset just past the last `\n` of the file, i.e. where the next complete line starts.
pub(crate) fn complete_len(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut reader = file;
    Ok(rfind_newline(&mut reader, len)?.map_or(0, |p| p + 1))
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Position of the last `\n` strictly before `before`, searching backwards in chunks.
fn rfind_newline(reader: &mut &File, before: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; usize::try_from(CHUNK.min(before)).unwrap_or(0)];
    let mut end = before;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..usize::try_from(end - start).unwrap_or(0)];
        read_exact_at(reader, start, chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

fn read_exact_at(reader: &mut &File, pos: u64, buf: &mut [u8]) -> io::Result<()> {
    reader.seek(SeekFrom::Start(pos))?;
    reader.read_exact(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn end_of(content: &[u8]) -> LogEnd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, content).unwrap();
        let (file, created) = open_append(&path).unwrap();
        assert!(!created);
        scan_end(&file).unwrap()
    }

    #[test]
    fn empty_and_fresh_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/a.jsonl");
        let (mut file, created) = open_append(&path).unwrap();
        assert!(created);
        assert_eq!(
            scan_end(&file).unwrap(),
            LogEnd {
                last_seq: None,
                last_hash: None,
                torn: false,
                complete_len: 0
            }
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        file.write_all(b"{\"seq\":7}\n").unwrap();
        assert_eq!(scan_end(&file).unwrap().last_seq, Some(7));
    }

    #[test]
    fn finds_last_seq_and_torn_tail() {
        let e = end_of(b"{\"seq\":1}\n{\"seq\":2,\"x\":[1]}\n{\"seq\":3,\"tr");
        assert_eq!(
            e,
            LogEnd {
                last_seq: Some(2),
                last_hash: Some(LineHash::of_line(b"{\"seq\":2,\"x\":[1]}")),
                torn: true,
                complete_len: 28
            }
        );
        let e = end_of(b"{\"seq\":1}\n{\"seq\":2}\n");
        assert_eq!(
            e,
            LogEnd {
                last_seq: Some(2),
                last_hash: Some(LineHash::of_line(b"{\"seq\":2}")),
                torn: false,
                complete_len: 20
            }
        );
        let e = end_of(b"no newline at all");
        assert_eq!(
            e,
            LogEnd {
                last_seq: None,
                last_hash: None,
                torn: true,
                complete_len: 0
            }
        );
    }

    #[test]
    fn skips_garbage_and_blank_lines_at_the_end() {
        let e = end_of(b"{\"seq\":4}\ngarbage\n\n{\"seq\":5,\"tor\n");
        assert_eq!(e.last_seq, Some(4));
        // The chain continues from the last line, whatever it holds.
        assert_eq!(e.last_hash, Some(LineHash::of_line(b"{\"seq\":5,\"tor")));
        assert!(!e.torn);
    }

    #[test]
    fn torn_tail_is_cut_and_ends_are_found_in_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(
            &path,
            b"{\"seq\":1,\"ts\":\"2026-11-27T23:38:17Z\"}\n{\"seq\":2}\n{\"seq\":3,",
        )
        .unwrap();
        let (file, _) = open_append(&path).unwrap();
        let end = scan_end(&file).unwrap();
        assert_eq!(cut_torn_tail(&file, &end).unwrap(), 9);
        assert_eq!(std::fs::read(&path).unwrap().last(), Some(&b'\n'));
        assert_eq!(last_line(&file).unwrap().unwrap(), b"{\"seq\":2}");
        let start = file_start(&file).unwrap();
        assert_eq!(start.first_seq, Some(1));
        assert!(start.started.is_some());
        let streamed =
            stream_end(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
        assert_eq!(streamed.last_seq, Some(2));
        assert_eq!(streamed.last_hash, scan_end(&file).unwrap().last_hash);
    }

    #[test]
    fn lines_longer_than_a_chunk() {
        let big = "x".repeat(3 * CHUNK as usize);
        let content = format!("{{\"seq\":8,\"sql\":\"{big}\"}}\n{{\"seq\":9,\"sql\":\"{big}\"}}\n");
        assert_eq!(end_of(content.as_bytes()).last_seq, Some(9));
    }
}
