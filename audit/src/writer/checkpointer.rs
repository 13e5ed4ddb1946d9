//! Writing signed checkpoints (see [`crate::checkpoint`]) from the writer thread.
//!
//! A checkpoint is due after `checkpoint_every` events or, when events are not yet
//! covered, after `checkpoint_interval`; the worker also asks for one at every rotation
//! and at shutdown. It only ever covers lines already written (and, in fsync mode,
//! synced), so a checkpoint never vouches for an event that is not in the log. A failure
//! to write one is logged and retried at the next occasion; it does not stop events
//! (the hash chain still protects them).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Durability;
use crate::chain::LineHash;
use crate::checkpoint::{self, Checkpoint, CheckpointFields, CheckpointReason};
use crate::keys::SigningKey;
use crate::logfile;
use crate::witness::{Witness, WitnessLine, WitnessQueue};

pub(super) struct Checkpointer {
    key: SigningKey,
    path: PathBuf,
    /// `None` after a write failure: reopened (and its end re-read) next time.
    file: Option<File>,
    durability: Durability,
    /// Hash of the last checkpoint line.
    prev: LineHash,
    /// `last_seq` of the last checkpoint.
    covered: Option<u64>,
    /// `first_seq` of the last checkpoint.
    first_seq: Option<u64>,
    /// The last checkpoint line (without `\n`), parsed: what the writer checks the log
    /// against when it opens, and what a witness is given.
    last: Option<(Checkpoint, Vec<u8>)>,
    /// Where checkpoints are copied off the host, when one is attached.
    witness: Option<WitnessQueue>,
    every: u64,
    interval: Duration,
    last_at: Instant,
}

impl Checkpointer {
    /// Opens (creating, 0600) the checkpoints file and continues its chain.
    pub(super) fn open(
        path: PathBuf,
        key: SigningKey,
        durability: Durability,
        every: u64,
        interval: Duration,
    ) -> io::Result<Checkpointer> {
        let mut cp = Checkpointer {
            key,
            path,
            file: None,
            durability,
            prev: LineHash::GENESIS,
            covered: None,
            first_seq: None,
            last: None,
            witness: None,
            every: every.max(1),
            interval,
            last_at: Instant::now(),
        };
        cp.reopen()?;
        Ok(cp)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let (file, created) = logfile::open_append(&self.path)?;
        if created && self.durability == Durability::Fsync {
            super::sync_parent_dir(&self.path)?;
        }
        let end = logfile::scan_end(&file)?;
        if logfile::cut_torn_tail(&file, &end)? > 0 {
            tracing::warn!(
                path = %self.path.display(),
                "audit checkpoints file ended in a torn line; removed the fragment"
            );
        }
        self.prev = end.last_hash.unwrap_or(LineHash::GENESIS);
        if let Some(line) = logfile::last_line(&file)? {
            if let Ok(last) = checkpoint::parse_and_check(&line, None) {
                self.covered = Some(last.last_seq);
                self.first_seq = Some(last.first_seq);
                self.last = Some((last, line));
            }
        }
        self.file = Some(file);
        Ok(())
    }

    /// The last checkpoint in the file (when its last line is one) and its stored bytes.
    pub(super) fn last(&self) -> Option<&(Checkpoint, Vec<u8>)> {
        self.last.as_ref()
    }

    /// `last_seq` of the last checkpoint.
    pub(super) fn covered(&self) -> Option<u64> {
        self.covered
    }

    /// `first_seq` of the last checkpoint written: where the set is meant to start.
    pub(super) fn first_seq(&self) -> Option<u64> {
        self.first_seq
    }

    /// Events written but not yet covered by a checkpoint.
    fn pending(&self, last_seq: u64) -> u64 {
        last_seq.saturating_sub(self.covered.unwrap_or(0))
    }

    /// Why a checkpoint is due now, if it is.
    pub(super) fn due(&self, last_seq: u64, now: Instant) -> Option<CheckpointReason> {
        let pending = self.pending(last_seq);
        if pending >= self.every {
            Some(CheckpointReason::Events)
        } else if pending > 0 && now >= self.last_at + self.interval {
            Some(CheckpointReason::Interval)
        } else {
            None
        }
    }

    /// Whether a checkpoint would cover anything new.
    pub(super) fn has_pending(&self, last_seq: u64) -> bool {
        self.pending(last_seq) > 0
    }

    /// When the next interval checkpoint is due, if events are waiting for one.
    pub(super) fn deadline(&self, last_seq: u64) -> Option<Instant> {
        (self.pending(last_seq) > 0).then(|| self.last_at + self.interval)
    }

    /// Writes one checkpoint (and syncs it in fsync mode). Errors are logged.
    pub(super) fn write(
        &mut self,
        reason: CheckpointReason,
        file: String,
        first_seq: u64,
        last_seq: u64,
        last_hash: LineHash,
    ) {
        if let Err(e) = self.try_write(reason, file, first_seq, last_seq, last_hash) {
            self.file = None;
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "could not write an audit checkpoint; will retry"
            );
        }
    }

    pub(super) fn try_write(
        &mut self,
        reason: CheckpointReason,
        file: String,
        first_seq: u64,
        last_seq: u64,
        last_hash: LineHash,
    ) -> io::Result<()> {
        self.last_at = Instant::now();
        if self.file.is_none() {
            self.reopen()?;
        }
        let fields = CheckpointFields {
            ts: crate::time::now_micros(),
            reason,
            file,
            first_seq,
            last_seq,
            last_hash,
            prev: self.prev,
        };
        let mut line = checkpoint::encode(&fields, &self.key).map_err(io::Error::other)?;
        let hash = LineHash::of_line(&line);
        // Checkpoints are rare: parsing the line just made is simpler than building the
        // struct twice, and is exactly what a reader of the file will see.
        let written = checkpoint::parse_and_check(&line, None)
            .map(|cp| (cp, line.clone()))
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        line.push(b'\n');
        let Some(out) = self.file.as_mut() else {
            return Err(io::Error::other("checkpoints file is not open"));
        };
        out.write_all(&line)?;
        if self.durability == Durability::Fsync {
            out.sync_data()?;
        }
        self.prev = hash;
        self.covered = Some(last_seq);
        self.first_seq = Some(first_seq);
        if let Some(witness) = &self.witness {
            witness.push(WitnessLine {
                last_seq,
                line: written.1.clone(),
            });
        }
        self.last = Some(written);
        Ok(())
    }

    /// Starts copying checkpoints to `witness`, beginning with the last one written
    /// (it covers everything before it).
    pub(super) fn attach_witness(&mut self, witness: Arc<dyn Witness>) -> io::Result<()> {
        let queue = WitnessQueue::start(witness)?;
        if let Some((cp, line)) = &self.last {
            queue.push(WitnessLine {
                last_seq: cp.last_seq,
                line: line.clone(),
            });
        }
        self.witness = Some(queue);
        Ok(())
    }

    /// Final sync on shutdown.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.sync_all(),
            None => Ok(()),
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}
