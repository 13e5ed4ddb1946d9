//! The files of one audit log: the live file, the closed (rotated) ones, and the
//! checkpoints file beside them.
//!
//! For a live file `DIR/audit.jsonl` the set is, oldest first:
//!
//! - `DIR/audit.000000000001.jsonl`, `DIR/audit.000000052341.jsonl[.zst]`, …: closed
//!   files, named after the `seq` of their first event (zero-padded to 12 digits so
//!   `ls` lists them in order; larger numbers simply have more digits), `.zst` once
//!   compressed;
//! - `DIR/audit.jsonl`: the live file jitgate appends to.
//!
//! `DIR/audit.checkpoints.jsonl` holds the signed checkpoints; `DIR/audit.lock` is the
//! writer lock's file (it holds the pid of the last writer; the lock is what counts). A live file without an
//! extension (`DIR/audit`) gives `DIR/audit.000000000001` and `DIR/audit.checkpoints.jsonl`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::AuditError;

/// Read buffer for log files (plain or decompressed).
const READ_BUFFER: usize = 256 * 1024;
/// Suffix of compressed closed files.
pub(crate) const ZST: &str = ".zst";
/// Suffix of a compressed file being written (removed or renamed when done).
pub(crate) const TMP: &str = ".tmp";

/// One file of a log set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFile {
    /// Where it is.
    pub path: PathBuf,
    /// `seq` of its first event, from its name; `None` for the live file.
    pub first_seq: Option<u64>,
    /// zstd-compressed (`.zst`).
    pub compressed: bool,
}

impl LogFile {
    /// The live file at `path`.
    pub(crate) fn live(path: &Path) -> LogFile {
        LogFile {
            path: path.to_path_buf(),
            first_seq: None,
            compressed: false,
        }
    }

    /// Whether this is the live file (the one jitgate appends to).
    pub fn is_live(&self) -> bool {
        self.first_seq.is_none()
    }

    /// The file name, for messages.
    pub fn name(&self) -> String {
        file_name(&self.path)
    }
}

/// The files of the log whose live file is `live`: closed files by ascending first
/// `seq`, then the live file if it exists. When both a plain and a compressed copy of a
/// closed file exist (compression was interrupted), the plain one is listed. Errs only
/// when the directory cannot be read.
pub fn log_files(live: &Path) -> Result<Vec<LogFile>, AuditError> {
    let naming = Naming::new(live);
    let mut files = naming.closed_files().map_err(|source| AuditError::Io {
        path: naming.dir.clone(),
        source,
    })?;
    if live.exists() {
        files.push(LogFile::live(live));
    }
    Ok(files)
}

/// Where the signed checkpoints of the log whose live file is `live` are kept.
pub fn checkpoints_path(live: &Path) -> PathBuf {
    Naming::new(live).checkpoints()
}

/// The base name of `path`, lossily as text.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// How the files of one set are named.
#[derive(Clone, Debug)]
pub(crate) struct Naming {
    pub(crate) live: PathBuf,
    pub(crate) dir: PathBuf,
    stem: String,
    /// `.jsonl` (with the dot), or empty.
    ext: String,
}

impl Naming {
    pub(crate) fn new(live: &Path) -> Naming {
        let dir = match live.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let text = |s: Option<&OsStr>| s.map(|s| s.to_string_lossy().into_owned());
        let (stem, ext) = match (text(live.file_stem()), text(live.extension())) {
            (Some(stem), Some(ext)) => (stem, format!(".{ext}")),
            (Some(stem), None) => (stem, String::new()),
            (None, _) => ("audit".to_owned(), String::new()),
        };
        Naming {
            live: live.to_path_buf(),
            dir,
            stem,
            ext,
        }
    }

    /// The name a file closed with first `seq` gets.
    pub(crate) fn closed(&self, first_seq: u64, compressed: bool) -> PathBuf {
        let zst = if compressed { ZST } else { "" };
        self.dir
            .join(format!("{}.{first_seq:012}{}{zst}", self.stem, self.ext))
    }

    /// The writer lock's file (see `crate::writer_lock`).
    pub(crate) fn lock(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.stem))
    }

    pub(crate) fn checkpoints(&self) -> PathBuf {
        self.dir.join(format!("{}.checkpoints.jsonl", self.stem))
    }

    /// `(first seq, compressed)` when `name` is a closed file of this set.
    pub(crate) fn parse_closed(&self, name: &str) -> Option<(u64, bool)> {
        let rest = name.strip_prefix(&self.stem)?.strip_prefix('.')?;
        let (rest, compressed) = match rest.strip_suffix(ZST) {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let digits = rest.strip_suffix(self.ext.as_str())?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(|seq| (seq, compressed))
    }

    /// Closed files by first seq (plain preferred over compressed for the same seq).
    pub(crate) fn closed_files(&self) -> io::Result<Vec<LogFile>> {
        let mut files: Vec<LogFile> = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some((seq, compressed)) = name.to_str().and_then(|n| self.parse_closed(n)) else {
                continue;
            };
            files.push(LogFile {
                path: entry.path(),
                first_seq: Some(seq),
                compressed,
            });
        }
        files.sort_by_key(|f| (f.first_seq, f.compressed));
        files.dedup_by_key(|f| f.first_seq);
        Ok(files)
    }
}

/// A buffered reader over a log file's lines, decompressing `.zst` files.
pub(crate) fn reader(file: File, compressed: bool) -> io::Result<Box<dyn BufRead + Send>> {
    if compressed {
        let decoder = zstd::stream::read::Decoder::new(file)?;
        Ok(Box::new(BufReader::with_capacity(READ_BUFFER, decoder)))
    } else {
        Ok(Box::new(BufReader::with_capacity(READ_BUFFER, file)))
    }
}

/// Opens a listed file for reading. A plain closed file that vanished because it was
/// compressed meanwhile is opened as its `.zst` instead. `Ok(None)`: the file is gone
/// (removed by retention since it was listed).
pub(crate) fn open(file: &LogFile) -> io::Result<Option<(File, LogFile)>> {
    match File::open(&file.path) {
        Ok(f) => Ok(Some((f, file.clone()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !file.compressed && !file.is_live() => {
            let mut zst = file.path.clone().into_os_string();
            zst.push(ZST);
            let zst = PathBuf::from(zst);
            match File::open(&zst) {
                Ok(f) => Ok(Some((
                    f,
                    LogFile {
                        path: zst,
                        first_seq: file.first_seq,
                        compressed: true,
                    },
                ))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Identity of an open file (device, inode), to recognise the same file under two names
/// while a rotation happens.
pub(crate) fn file_id(file: &File) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        let n = Naming::new(&live);
        assert_eq!(
            n.closed(1, false),
            dir.path().join("audit.000000000001.jsonl")
        );
        assert_eq!(
            n.closed(52341, true),
            dir.path().join("audit.000000052341.jsonl.zst")
        );
        assert_eq!(n.checkpoints(), dir.path().join("audit.checkpoints.jsonl"));
        assert_eq!(n.parse_closed("audit.000000000007.jsonl"), Some((7, false)));
        assert_eq!(
            n.parse_closed("audit.1234567890123.jsonl.zst"),
            Some((1234567890123, true))
        );
        for not_ours in [
            "audit.jsonl",
            "audit.checkpoints.jsonl",
            "audit.000000000007.jsonl.zst.tmp",
            "audit..jsonl",
            "other.000000000007.jsonl",
            "audit.00x.jsonl",
        ] {
            assert_eq!(n.parse_closed(not_ours), None, "{not_ours}");
        }
        for name in [
            "audit.000000001001.jsonl.zst",
            "audit.000000000001.jsonl",
            "audit.000000001001.jsonl",
            "audit.000000000501.jsonl.zst",
            "audit.checkpoints.jsonl",
            "audit.jsonl",
            "unrelated.txt",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let files = log_files(&live).unwrap();
        let listed: Vec<_> = files.iter().map(LogFile::name).collect();
        assert_eq!(
            listed,
            [
                "audit.000000000001.jsonl",
                "audit.000000000501.jsonl.zst",
                "audit.000000001001.jsonl",
                "audit.jsonl"
            ]
        );
        assert!(files[3].is_live());
        assert_eq!(files[1].first_seq, Some(501));
        assert!(files[1].compressed);
    }

    #[test]
    fn live_file_without_extension() {
        let n = Naming::new(Path::new("/var/log/jitgate/audit"));
        assert_eq!(
            n.closed(3, false),
            Path::new("/var/log/jitgate/audit.000000000003")
        );
        assert_eq!(n.parse_closed("audit.000000000003.zst"), Some((3, true)));
        assert_eq!(
            n.checkpoints(),
            Path::new("/var/log/jitgate/audit.checkpoints.jsonl")
        );
        let n = Naming::new(Path::new("audit.jsonl"));
        assert_eq!(n.dir, Path::new("."));
    }
}
