//! The audit log's writer lock: one writer per log at a time.
//!
//! Every writer of a log — `jitgate serve` for as long as it has the log open, and each
//! CLI command that appends to it (`jitgate audit acknowledge-truncation`) — holds an
//! exclusive advisory lock (`flock(2)`) on the lock file beside the live file
//! (`DIR/audit.lock` for `DIR/audit.jsonl`, see [`crate::fileset`]) from before it reads
//! the log's end until it is closed. A second writer is refused with
//! [`AuditError::InUse`] before it reads or writes anything, so two writers can never
//! interleave their `seq`s and hash chains, and an acknowledgement can never be written
//! under a running server's feet.
//!
//! Readers (`verify`, `search`, `replay`, `export`, `tail`) take no lock: appends are
//! whole lines, and they read what is there.
//!
//! The lock belongs to the open file, so the kernel releases it when the holder closes it
//! or dies (no stale locks after a crash); the file itself stays, holding the pid of the
//! last holder for the message a refused writer shows. A log that is a pipe or a device
//! has no lock: its "log" cannot be re-read or acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::error::AuditError;
use crate::fileset::Naming;
use crate::logfile;

/// A held writer lock; released when dropped.
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the lock of the log `naming` names, without waiting. `Ok(None)` when the
    /// live file exists and is not a regular file (a pipe or device: nothing to lock).
    pub(crate) fn acquire(naming: &Naming) -> Result<Option<WriterLock>, AuditError> {
        let live = &naming.live;
        if std::fs::metadata(live).is_ok_and(|m| !m.is_file()) {
            return Ok(None);
        }
        let path = naming.lock();
        let io_err = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        logfile::create_parent(&path).map_err(io_err)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&path).map_err(io_err)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(AuditError::InUse {
                    path: live.clone(),
                    pid: holder_pid(&mut file),
                });
            }
            Err(e) => return Err(io_err(e.into())),
        }
        record_pid(&mut file).map_err(io_err)?;
        Ok(Some(WriterLock { _file: file }))
    }
}

/// Leaves this process's pid in the lock file, for the message of a refused writer.
fn record_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

/// The pid the lock's holder left in the file, when it is readable (it may not have
/// written it yet).
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Where the lock of the log whose live file is `live` is kept.
pub fn lock_path(live: &Path) -> PathBuf {
    Naming::new(live).lock()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("sub/audit.jsonl");
        let naming = Naming::new(&live);
        let first = WriterLock::acquire(&naming).unwrap().unwrap();
        assert_eq!(lock_path(&live), dir.path().join("sub/audit.lock"));
        match WriterLock::acquire(&naming) {
            Err(AuditError::InUse { path, pid }) => {
                assert_eq!(path, live);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        let _again = WriterLock::acquire(&naming).unwrap().unwrap();
    }

    #[test]
    fn a_log_that_is_a_device_is_not_locked() {
        let naming = Naming::new(Path::new("/dev/null"));
        assert!(WriterLock::acquire(&naming).unwrap().is_none());
    }
}
