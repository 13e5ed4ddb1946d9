//! The live file of a log set: opening it where the set ends, and closing it (rotation).
//!
//! Opening finds what the next line continues: the `seq` and line hash of the last
//! complete line of the live file, or, when the live file is empty (new, or just
//! rotated before a crash), of the newest closed file. A torn fragment at the end of the
//! live file is cut off first: it never was an acknowledged event (a batch is
//! acknowledged only after all of it was written), and a new line glued to it or a
//! broken line left in the middle would make the chain unverifiable.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{sync_parent_dir, Durability};
use crate::chain::LineHash;
use crate::fileset::{self, Naming};
use crate::logfile::{self, FileStart};

/// The open live file and what the writer knows about it.
#[derive(Debug)]
pub(super) struct LiveFile {
    pub(super) file: File,
    /// Bytes of complete lines in it.
    pub(super) len: u64,
    /// `seq` of its first line (names the file when it is closed).
    pub(super) first_seq: Option<u64>,
    /// When its first line was written (age rotation).
    pub(super) started: Option<SystemTime>,
    /// A regular file (not a pipe or device): only those are rotated.
    pub(super) regular: bool,
}

/// Where the log set ends: what the next line continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct ChainEnd {
    /// `seq` of the last event (`None`: the set has no event).
    pub(super) last_seq: Option<u64>,
    /// Hash of the last line (`None`: the set has no line).
    pub(super) last_hash: Option<LineHash>,
}

impl LiveFile {
    /// Opens (creating if needed) the live file, cuts a torn tail off, and finds where
    /// the set ends.
    pub(super) fn open(
        naming: &Naming,
        durability: Durability,
    ) -> io::Result<(LiveFile, ChainEnd)> {
        let (file, created) = logfile::open_append(&naming.live)?;
        if created && durability == Durability::Fsync {
            sync_parent_dir(&naming.live)?;
        }
        let regular = file.metadata()?.is_file();
        let end = logfile::scan_end(&file)?;
        let cut = logfile::cut_torn_tail(&file, &end)?;
        if cut > 0 {
            tracing::warn!(
                path = %naming.live.display(),
                bytes = cut,
                "audit log ended in a torn line (a crash or full disk cut it short); \
                 removed the fragment, which was never an acknowledged event"
            );
            if durability == Durability::Fsync {
                file.sync_data()?;
            }
        }
        let start = if end.complete_len > 0 {
            logfile::file_start(&file)?
        } else {
            FileStart::default()
        };
        let chain = match end.last_hash {
            Some(_) => ChainEnd {
                last_seq: end.last_seq,
                last_hash: end.last_hash,
            },
            None => newest_closed_end(naming)?,
        };
        let live = LiveFile {
            file,
            len: end.complete_len,
            first_seq: start.first_seq,
            started: start.started,
            regular,
        };
        Ok((live, chain))
    }

    /// Whether the file should be closed now.
    pub(super) fn rotation_due(
        &self,
        size: Option<u64>,
        age: Option<Duration>,
        now: SystemTime,
    ) -> bool {
        if !self.regular || self.len == 0 {
            return false;
        }
        size.is_some_and(|s| self.len >= s) || self.age_deadline(age).is_some_and(|at| now >= at)
    }

    /// When the file becomes old enough to be closed.
    pub(super) fn age_deadline(&self, age: Option<Duration>) -> Option<SystemTime> {
        if !self.regular || self.len == 0 {
            return None;
        }
        self.started?.checked_add(age?)
    }

    /// Closes this file: syncs it, renames it to its closed name (after its first
    /// `seq`), and opens a new, empty live file. Returns the closed file's path and
    /// the new live file; on an error before the rename, the file stays live (returned
    /// in the error).
    pub(super) fn rotate(
        self,
        naming: &Naming,
    ) -> Result<(PathBuf, io::Result<LiveFile>), (LiveFile, io::Error)> {
        let Some(first_seq) = self.first_seq else {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                "the first line of the live file is not an audit event, so the closed file \
                 cannot be named",
            );
            return Err((self, e));
        };
        if let Err(e) = self.file.sync_all() {
            return Err((self, e));
        }
        let closed = naming.closed(first_seq, false);
        if closed.exists() || naming.closed(first_seq, true).exists() {
            let e = io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", closed.display()),
            );
            return Err((self, e));
        }
        if let Err(e) = std::fs::rename(&naming.live, &closed) {
            return Err((self, e));
        }
        drop(self.file);
        let reopened = logfile::open_append(&naming.live).and_then(|(file, _)| {
            sync_parent_dir(&naming.live)?;
            Ok(LiveFile {
                file,
                len: 0,
                first_seq: None,
                started: None,
                regular: true,
            })
        });
        Ok((closed, reopened))
    }
}

/// The end of the newest closed file that holds a line (a compressed one is read
/// through).
fn newest_closed_end(naming: &Naming) -> io::Result<ChainEnd> {
    for listed in naming.closed_files()?.iter().rev() {
        let Some((file, found)) = fileset::open(listed)? else {
            continue;
        };
        let end = if found.compressed {
            logfile::stream_end(fileset::reader(file, true)?)?
        } else {
            logfile::scan_end(&file)?
        };
        if end.last_hash.is_some() {
            return Ok(ChainEnd {
                last_seq: end.last_seq,
                last_hash: end.last_hash,
            });
        }
    }
    Ok(ChainEnd::default())
}
