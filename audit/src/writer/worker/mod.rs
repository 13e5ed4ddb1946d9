//! The writer thread: batches queued events into one write (and one fsync), assigns
//! `seq` and the chain hash `prev`, acknowledges, rotates, checkpoints, and recovers
//! from write errors by itself.
//!
//! Loop: wait for one message (or for the next time-based duty: an interval checkpoint,
//! an age rotation), drain whatever else is queued (up to a cap; a caller's batch
//! message is taken whole, so its events stay contiguous), serialize the batch
//! into one reused buffer — hashing each line as it is serialized, so each line's `prev`
//! is the hash of the line before it — `write_all` it, `sync_data` in fsync mode, then
//! ack every event of the batch. When a write fails the whole batch is acknowledged with
//! [`AuditError::Unavailable`], the file is dropped, and the next batch reopens it and
//! re-reads its end, so numbering and the chain continue from what is really in the
//! file, without duplicates.
//!
//! # Layout
//!
//! `mod.rs` holds the writer's state ([`Worker`]) and opens it; each file below adds one
//! job to it:
//!
//! - `cut_back`: at open, the log checked against its checkpoints (a log cut back while
//!   jitgate was stopped is refused unless acknowledged), then a `start` checkpoint.
//! - `batch`: building a batch (`seq`, `prev`, one buffer), writing it and
//!   acknowledging it; the inline fast path.
//! - `duties`: rotation, retention and checkpoints, and when the next time-based one
//!   is due.
//! - `thread`: the writer thread's loop, and closing.

mod batch;
mod cut_back;
mod duties;
pub(super) mod thread;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, Notify};

use super::checkpointer::Checkpointer;
use super::housekeeping::Housekeeper;
use super::live::{ChainEnd, LiveFile};
use super::{Ack, AuditConfig, Durability, Retain};
use crate::chain::LineHash;
use crate::error::AuditError;
use crate::fileset::Naming;
use crate::writer_lock::WriterLock;

/// Most events written by one `write_all`; bounds ack latency of the first event.
const MAX_BATCH_EVENTS: usize = 1024;
/// A batch stops growing past this many bytes (large SQL texts).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

pub(super) struct Worker {
    naming: Naming,
    durability: Durability,
    rotate_size: Option<u64>,
    rotate_age: Option<Duration>,
    retain: Retain,
    compress: bool,
    /// `None` after a failure: reopened before the next batch.
    live: Option<LiveFile>,
    /// `seq` of the next event that will be written.
    next_seq: u64,
    /// Hash of the last line known to be in the set.
    chain: LineHash,
    /// Hash of the last line serialized into the current batch.
    batch_hash: LineHash,
    /// The oldest `seq` the set is meant to hold (checkpoints record it).
    set_first_seq: Option<u64>,
    /// No rotation attempt before this (after a failed one).
    rotation_retry: Option<SystemTime>,
    /// Why the last batch failed; cleared by the next successful one.
    last_error: Option<String>,
    buf: Vec<u8>,
    acks: Vec<(Ack, u64)>,
    closers: Vec<oneshot::Sender<Result<(), AuditError>>>,
    checkpoints: Option<Checkpointer>,
    housekeeper: Option<Housekeeper>,
    /// The writer was closed: nothing more is written.
    finished: bool,
    /// The time-based duty the writer thread is sleeping until (`None`: it waits for
    /// the queue only). An inline write that makes an earlier duty due wakes it.
    armed: Option<Instant>,
    /// Wakes the writer thread without a queued message.
    wake: Arc<Notify>,
    /// This writer's lock on the log, held until the writer thread ends (`None`: a pipe
    /// or device, or finished).
    writer_lock: Option<WriterLock>,
}

impl Worker {
    /// Opens the live file (and the checkpoints file), resuming where the set ends.
    pub(super) fn open(cfg: &AuditConfig) -> Result<Worker, AuditError> {
        let naming = Naming::new(&cfg.path);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuditError::Io { path, source }
        };
        // Before anything is read: a second writer must not even cut a torn tail.
        let writer_lock = WriterLock::acquire(&naming)?;
        let (live, end) = LiveFile::open(&naming, cfg.durability).map_err(io_err(&cfg.path))?;
        let checkpoints = match &cfg.signing_key {
            Some(key) => {
                let path = naming.checkpoints();
                Some(
                    Checkpointer::open(
                        path.clone(),
                        key.clone(),
                        cfg.durability,
                        cfg.checkpoint_every,
                        cfg.checkpoint_interval,
                    )
                    .map_err(io_err(&path))?,
                )
            }
            None => None,
        };
        let oldest_closed = naming
            .closed_files()
            .map_err(io_err(&naming.dir))?
            .first()
            .and_then(|f| f.first_seq);
        let set_first_seq = checkpoints
            .as_ref()
            .and_then(Checkpointer::first_seq)
            .or(oldest_closed)
            .or(live.first_seq);
        let housekeeper = if cfg.compress || cfg.retain != Retain::All {
            Some(Housekeeper::start(naming.clone(), cfg.compress).map_err(io_err(&naming.dir))?)
        } else {
            None
        };
        let mut worker = Worker {
            naming,
            durability: cfg.durability,
            rotate_size: cfg.rotate_size,
            rotate_age: cfg.rotate_age,
            retain: cfg.retain,
            compress: cfg.compress,
            live: Some(live),
            next_seq: 1,
            chain: LineHash::GENESIS,
            batch_hash: LineHash::GENESIS,
            set_first_seq,
            rotation_retry: None,
            last_error: None,
            buf: Vec::with_capacity(64 * 1024),
            acks: Vec::with_capacity(MAX_BATCH_EVENTS),
            closers: Vec::new(),
            checkpoints,
            housekeeper,
            finished: false,
            armed: None,
            wake: Arc::new(Notify::new()),
            writer_lock,
        };
        worker.resume_after(end);
        worker.check_against_checkpoints(cfg, end)?;
        Ok(worker)
    }

    /// Starts copying checkpoints to `witness` (nothing without a signing key).
    pub(super) fn attach_witness(
        &mut self,
        witness: Arc<dyn crate::witness::Witness>,
    ) -> Result<(), AuditError> {
        let path = self.naming.checkpoints();
        match self.checkpoints.as_mut() {
            Some(cp) => cp
                .attach_witness(witness)
                .map_err(|source| AuditError::Io { path, source }),
            None => Ok(()),
        }
    }

    /// Whether the live file is a regular file (not a pipe or device).
    pub(super) fn writes_to_regular_file(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.regular)
    }

    /// `seq` of the last event in the log.
    fn last_seq(&self) -> Option<u64> {
        self.next_seq.checked_sub(1).filter(|&s| s > 0)
    }

    /// Continues numbering and the chain after what is in the set.
    fn resume_after(&mut self, end: ChainEnd) {
        if let Some(last) = end.last_seq {
            self.next_seq = self.next_seq.max(last.saturating_add(1));
        }
        if let Some(hash) = end.last_hash {
            self.chain = hash;
        }
        self.batch_hash = self.chain;
    }

    fn describe(&self, action: &str, e: &std::io::Error) -> String {
        format!(
            "{action} {} failed: {e} ({:?}); queries are refused until it can be written",
            self.naming.live.display(),
            e.kind()
        )
    }
}

pub(super) fn lock(worker: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    // A panic while holding the lock leaves the state as consistent as any failed
    // batch: the next batch re-opens and re-reads the file end.
    worker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
