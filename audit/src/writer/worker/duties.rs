//! The writer's duties besides writing: closing the live file when it is big or old
//! enough (rotation) and handing closed files to housekeeping (compression, retention),
//! signing checkpoints, and telling when the next time-based duty is due.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::Worker;
use crate::checkpoint::CheckpointReason;
use crate::fileset;
use crate::writer::housekeeping::Job;
use crate::writer::Retain;

/// After a failed rotation, the next attempt waits this long (the live file keeps
/// growing meanwhile; nothing is lost).
const ROTATION_RETRY: Duration = Duration::from_secs(60);

impl Worker {
    /// Wakes the writer thread when an inline write made a time-based duty due earlier
    /// than the one it sleeps until (the thread never sees inline writes otherwise).
    pub(super) fn rearm(&mut self) {
        if self.checkpoints.is_none() && self.rotate_age.is_none() {
            return;
        }
        if let Some(due) = self.deadline() {
            if self.armed.is_none_or(|armed| due < armed) {
                self.armed = Some(due);
                self.wake.notify_one();
            }
        }
    }

    /// The earliest time-based duty: an interval checkpoint or an age rotation.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let checkpoint = match (&self.checkpoints, self.last_seq()) {
            (Some(cp), Some(last)) => cp.deadline(last),
            _ => None,
        };
        let rotation = self
            .live
            .as_ref()
            .and_then(|l| l.age_deadline(self.rotate_age))
            .map(|at| self.rotation_retry.map_or(at, |retry| at.max(retry)))
            .map(|at| {
                let wait = at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                Instant::now() + wait
            });
        match (checkpoint, rotation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes the live file when it is big or old enough.
    pub(super) fn maybe_rotate(&mut self) {
        let now = SystemTime::now();
        if self.rotation_retry.is_some_and(|t| now < t) {
            return;
        }
        let due = self
            .live
            .as_ref()
            .is_some_and(|l| l.rotation_due(self.rotate_size, self.rotate_age, now));
        if !due {
            return;
        }
        let Some(live) = self.live.take() else {
            return;
        };
        match live.rotate(&self.naming) {
            Ok((closed, reopened)) => {
                self.rotation_retry = None;
                tracing::info!(closed = %closed.display(), "rotated the audit log");
                match reopened {
                    Ok(live) => self.live = Some(live),
                    Err(e) => tracing::error!(
                        path = %self.naming.live.display(),
                        error = %e,
                        "could not create the new live audit log after rotating; retrying with the next event"
                    ),
                }
                self.after_rotation(&closed);
            }
            Err((live, e)) => {
                self.live = Some(live);
                self.rotation_retry = Some(now + ROTATION_RETRY);
                tracing::error!(
                    path = %self.naming.live.display(),
                    error = %e,
                    "could not rotate the audit log; it keeps growing, next attempt in {ROTATION_RETRY:?}"
                );
            }
        }
    }

    /// Checkpoint, compression and retention for a just-closed file.
    fn after_rotation(&mut self, closed: &Path) {
        let keep_from = self.retention_cut();
        if let Some(keep_from) = keep_from {
            self.set_first_seq = Some(self.set_first_seq.map_or(keep_from, |s| s.max(keep_from)));
        }
        // Written before anything is deleted: the checkpoint says where the set now
        // starts, so files missing beyond that are reported by verify.
        if let Some(last) = self.last_seq() {
            self.write_checkpoint(CheckpointReason::Rotation, fileset::file_name(closed), last);
        }
        if let Some(hk) = &self.housekeeper {
            if self.compress {
                hk.send(Job::Compress(closed.to_path_buf()));
            }
            if let Some(keep_from) = keep_from {
                hk.send(Job::DeleteBefore(keep_from));
            }
        }
    }

    /// The first `seq` of the oldest closed file retention keeps, when older files are
    /// to be deleted.
    fn retention_cut(&self) -> Option<u64> {
        let files = match self.naming.closed_files() {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(error = %e, "cannot list audit log files; retention skipped");
                return None;
            }
        };
        let live_first = self
            .live
            .as_ref()
            .and_then(|l| l.first_seq)
            .unwrap_or(self.next_seq);
        let first_of = |i: usize| files.get(i).and_then(|f| f.first_seq).unwrap_or(live_first);
        let cut = match self.retain {
            Retain::All => return None,
            Retain::Files(keep) if files.len() <= keep => return None,
            Retain::Files(keep) => files.len() - keep,
            Retain::Age(age) => {
                let now = SystemTime::now();
                let old = |f: &fileset::LogFile| {
                    std::fs::metadata(&f.path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age))
                };
                let cut = files.iter().take_while(|f| old(f)).count();
                if cut == 0 {
                    return None;
                }
                cut
            }
        };
        Some(first_of(cut))
    }

    pub(super) fn maybe_checkpoint(&mut self) {
        let (Some(cp), Some(last)) = (&self.checkpoints, self.last_seq()) else {
            return;
        };
        if let Some(reason) = cp.due(last, Instant::now()) {
            let file = fileset::file_name(&self.naming.live);
            self.write_checkpoint(reason, file, last);
        }
    }

    pub(super) fn write_checkpoint(
        &mut self,
        reason: CheckpointReason,
        file: String,
        last_seq: u64,
    ) {
        let first_seq = self.set_first_seq.unwrap_or(1);
        let chain = self.chain;
        if let Some(cp) = self.checkpoints.as_mut() {
            cp.write(reason, file, first_seq, last_seq, chain);
        }
    }
}
