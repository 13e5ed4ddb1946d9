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

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, Notify};

use super::checkpointer::Checkpointer;
use super::housekeeping::{Housekeeper, Job};
use super::live::{ChainEnd, LiveFile};
use super::{Ack, AuditConfig, Durability, Msg, Retain};
use crate::chain::LineHash;
use crate::checkpoint::CheckpointReason;
use crate::error::AuditError;
use crate::event::Event;
use crate::fileset::{self, Naming};
use crate::writer_lock::WriterLock;

/// Most events written by one `write_all`; bounds ack latency of the first event.
const MAX_BATCH_EVENTS: usize = 1024;
/// A batch stops growing past this many bytes (large SQL texts).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Buffer capacity kept between batches; larger ones are shrunk back after use.
const KEEP_BUFFER_BYTES: usize = 256 * 1024;
/// After a failed rotation, the next attempt waits this long (the live file keeps
/// growing meanwhile; nothing is lost).
const ROTATION_RETRY: Duration = Duration::from_secs(60);

/// What waiting for the queue produced.
// Short-lived, on the stack: boxing the message would cost an allocation per batch.
#[allow(clippy::large_enum_variant)]
enum Next {
    Msg(Msg),
    /// A time-based duty may be due.
    Tick,
    /// An inline write armed an earlier duty: only the deadline needs recomputing.
    Rearm,
    /// Every sender is gone, or the queue was closed and drained.
    Closed,
}

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

    /// With a signing key: refuses a log that ends before its last checkpoint (cut back
    /// while jitgate was stopped) unless `cfg.acknowledge_cut` records the loss, then
    /// signs a `start` checkpoint over what the log holds now. Without one: nothing.
    fn check_against_checkpoints(
        &mut self,
        cfg: &AuditConfig,
        end: ChainEnd,
    ) -> Result<(), AuditError> {
        let Some(cp) = self.checkpoints.as_ref() else {
            return match &cfg.acknowledge_cut {
                Some(_) => Err(AuditError::NothingToAcknowledge(
                    "no audit.signing_key_file is configured, so there are no checkpoints a \
                     cut-back log could be told from"
                        .into(),
                )),
                None => Ok(()),
            };
        };
        let log_end = end.last_seq.unwrap_or(0);
        let last = cp.last().map(|(c, _)| (c.last_seq, c.ts, c.last_hash));
        let source = self.naming.checkpoints().display().to_string();
        // A witness ahead of the local checkpoints: the log and its checkpoints file were
        // cut back together.
        if let Some(w) = cfg
            .witnessed
            .as_ref()
            .filter(|w| w.last_seq > log_end && last.is_none_or(|l| w.last_seq > l.0))
        {
            let cut = Some((w.last_seq, w.ts));
            return self.cut_back(cfg, end, cut, w.source.clone());
        }
        let cut = match last {
            Some((seq, ts, _)) if log_end < seq => Some(Some((seq, ts))),
            Some((seq, _, hash)) if seq > 0 && log_end == seq && end.last_hash != Some(hash) => {
                return Err(AuditError::Unavailable(format!(
                    "the last line of {} (seq {seq}) is not the line its last signed checkpoint \
                     covers: the log was rewritten while jitgate was stopped. Run `jitgate audit \
                     verify` and restore the log from a copy",
                    self.naming.live.display()
                )));
            }
            None if log_end > 0 => Some(None),
            _ => None,
        };
        match (cut, &cfg.acknowledge_cut) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(AuditError::NothingToAcknowledge(format!(
                    "{} ends at seq {log_end} and its last signed checkpoint covers seq {}: no \
                     event is missing",
                    self.naming.live.display(),
                    last.map_or(0, |l| l.0)
                )));
            }
            (Some(checkpoint), _) => return self.cut_back(cfg, end, checkpoint, source),
        }
        self.sign_start()
    }

    /// A cut-back log: refused, or (acknowledged) the acknowledgement is written and the
    /// log opened.
    fn cut_back(
        &mut self,
        cfg: &AuditConfig,
        end: ChainEnd,
        checkpoint: Option<(u64, jiff::Timestamp)>,
        source: String,
    ) -> Result<(), AuditError> {
        let found = Box::new(crate::error::CutBack {
            log: self.naming.live.clone(),
            checkpoints: source,
            log_ends_at: end.last_seq,
            checkpoint,
        });
        let Some(ack) = &cfg.acknowledge_cut else {
            return Err(AuditError::CutBack(found));
        };
        tracing::warn!(reason = %ack.reason, by = %ack.by, "{found}; acknowledged");
        let log_end = end.last_seq.unwrap_or(0);
        let lost = checkpoint.map(|(seq, _)| (log_end + 1, seq));
        if let Some((_, to)) = lost {
            // The lost events keep their numbers: the gap stays visible.
            self.next_seq = to + 1;
        }
        let event = Event::new(crate::event::EventBody::LogCutAcknowledged {
            lost_from: lost.map(|l| l.0),
            lost_to: lost.map(|l| l.1),
            checkpoint_ts: checkpoint.map(|c| c.1),
            reason: ack.reason.clone(),
            acknowledged_by: ack.by.clone(),
        });
        self.serialize(std::iter::once(event), super::Ack::Silent);
        self.flush(Ok(()));
        if let Some(e) = self.last_error.take() {
            return Err(AuditError::Unavailable(e));
        }
        self.sign_start()
    }

    /// Signs a `start` checkpoint over what the log holds now, unless the last
    /// checkpoint already covers it.
    fn sign_start(&mut self) -> Result<(), AuditError> {
        let last = self.last_seq().unwrap_or(0);
        if self.checkpoints.as_ref().and_then(Checkpointer::covered) == Some(last) {
            return Ok(());
        }
        let first_seq = self.set_first_seq.unwrap_or(1);
        let file = fileset::file_name(&self.naming.live);
        let chain = if last == 0 {
            LineHash::GENESIS
        } else {
            self.chain
        };
        let path = self.naming.checkpoints();
        if let Some(cp) = self.checkpoints.as_mut() {
            cp.try_write(CheckpointReason::Start, file, first_seq, last, chain)
                .map_err(|source| AuditError::Io { path, source })?;
        }
        Ok(())
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

    /// Appends events on the caller's thread (the inline fast path) — one event, or a
    /// caller's batch, in one `write(2)` — and says whether they are in the log, with the
    /// `seq` of the last, exactly as an acknowledgement from the thread would.
    pub(super) fn write_inline(
        &mut self,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<u64, AuditError> {
        if self.finished {
            return Err(AuditError::WriterGone);
        }
        let mut opened = self.ensure_open();
        if opened.is_ok() {
            self.maybe_rotate();
            opened = self.ensure_open();
        }
        let Some(seq) = self.serialize(events, Ack::Silent) else {
            return Err(AuditError::Unavailable(
                "an audit event could not be serialized".into(),
            ));
        };
        self.flush(opened);
        self.maybe_checkpoint();
        self.rearm();
        match &self.last_error {
            None => Ok(seq),
            Some(reason) => Err(AuditError::Unavailable(reason.clone())),
        }
    }

    /// Wakes the writer thread when an inline write made a time-based duty due earlier
    /// than the one it sleeps until (the thread never sees inline writes otherwise).
    fn rearm(&mut self) {
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
    fn deadline(&self) -> Option<Instant> {
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

    /// Reopens the live file after a failure (it may have been replaced, or the disk
    /// remounted). The error text is what every event of the batch is refused with.
    fn ensure_open(&mut self) -> Result<(), String> {
        if self.live.is_some() {
            return Ok(());
        }
        match LiveFile::open(&self.naming, self.durability) {
            Ok((live, end)) => {
                self.live = Some(live);
                self.resume_after(end);
                Ok(())
            }
            Err(e) => Err(self.describe("opening", &e)),
        }
    }

    /// Adds one message to the current batch.
    fn take(&mut self, msg: Msg, rx: &mut mpsc::Receiver<Msg>) {
        match msg {
            Msg::Event(event, ack) => {
                self.serialize(std::iter::once(event), ack);
            }
            Msg::Batch(events, ack) => {
                self.serialize(events, ack);
            }
            Msg::Close(closer) => {
                // Senders now fail fast; what is already queued is still drained.
                rx.close();
                self.closers.extend(closer);
            }
        }
    }

    /// Adds a caller's events to the current batch, all or none: when one cannot be
    /// serialized, those before it are taken out again and `ack` is refused. `ack`
    /// answers for the last event (one `write_all` writes them all, so they succeed or
    /// fail together). Returns the `seq` the last one will have, `None` when refused.
    /// No events: nothing is added, and `ack` gets `Ok(0)`.
    fn serialize(&mut self, events: impl IntoIterator<Item = Event>, ack: Ack) -> Option<u64> {
        let (buf_len, acks_len, hash) = (self.buf.len(), self.acks.len(), self.batch_hash);
        for mut event in events {
            let start = self.buf.len();
            event.seq = self.next_seq + self.acks.len() as u64;
            event.prev = Some(self.batch_hash);
            if let Err(e) = crate::line::encode(&event, &mut self.buf) {
                self.buf.truncate(buf_len);
                self.acks.truncate(acks_len);
                self.batch_hash = hash;
                tracing::error!(error = %e, kind = event.kind(), "audit event could not be serialized");
                ack.send(Err(AuditError::Unavailable(format!(
                    "a {} event could not be serialized: {e}",
                    event.kind()
                ))));
                return None;
            }
            self.batch_hash = LineHash::of_line(&self.buf[start..]);
            self.buf.push(b'\n');
            self.acks.push((Ack::Silent, event.seq));
        }
        match self.acks.get_mut(acks_len..).and_then(<[_]>::last_mut) {
            Some((last, seq)) => {
                *last = ack;
                Some(*seq)
            }
            None => {
                ack.send(Ok(0));
                Some(0)
            }
        }
    }

    /// Writes the batch (if the file is usable) and acknowledges every event in it.
    fn flush(&mut self, opened: Result<(), String>) {
        if self.acks.is_empty() {
            self.buf.clear();
            return;
        }
        match opened.and_then(|()| self.write_batch()) {
            Ok(()) => {
                let first = self.next_seq;
                self.next_seq += self.acks.len() as u64;
                self.chain = self.batch_hash;
                if self.set_first_seq.is_none() {
                    self.set_first_seq = Some(first);
                }
                if let Some(live) = self.live.as_mut() {
                    live.len += self.buf.len() as u64;
                    if live.first_seq.is_none() {
                        live.first_seq = Some(first);
                        live.started = Some(SystemTime::now());
                    }
                }
                if self.last_error.take().is_some() {
                    tracing::info!(path = %self.naming.live.display(), "audit log writable again");
                }
                for (ack, seq) in self.acks.drain(..) {
                    ack.send(Ok(seq));
                }
            }
            Err(reason) => {
                tracing::error!(
                    path = %self.naming.live.display(),
                    events = self.acks.len(),
                    %reason,
                    "audit log not writable; refusing the batch"
                );
                // Forget the handle: the next batch reopens and re-reads the file end.
                self.live = None;
                self.batch_hash = self.chain;
                for (ack, _) in self.acks.drain(..) {
                    ack.send(Err(AuditError::Unavailable(reason.clone())));
                }
                self.last_error = Some(reason);
            }
        }
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf.shrink_to(KEEP_BUFFER_BYTES);
        }
    }

    fn write_batch(&mut self) -> Result<(), String> {
        use std::io::Write;
        let Some(live) = self.live.as_mut() else {
            return Err(format!("{} is not open", self.naming.live.display()));
        };
        let file = &mut live.file;
        // Tests (built with the `failpoints` feature) stall or fail the write here.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("audit::write", |arg| Err(format!(
            "failpoint audit::write: {arg:?}"
        )));
        let written = file
            .write_all(&self.buf)
            .and_then(|()| match self.durability {
                Durability::Write => Ok(()),
                Durability::Fsync => file.sync_data(),
            });
        written.map_err(|e| self.describe("writing", &e))
    }

    /// Closes the live file when it is big or old enough.
    fn maybe_rotate(&mut self) {
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

    fn maybe_checkpoint(&mut self) {
        let (Some(cp), Some(last)) = (&self.checkpoints, self.last_seq()) else {
            return;
        };
        if let Some(reason) = cp.due(last, Instant::now()) {
            let file = fileset::file_name(&self.naming.live);
            self.write_checkpoint(reason, file, last);
        }
    }

    fn write_checkpoint(&mut self, reason: CheckpointReason, file: String, last_seq: u64) {
        let first_seq = self.set_first_seq.unwrap_or(1);
        let chain = self.chain;
        if let Some(cp) = self.checkpoints.as_mut() {
            cp.write(reason, file, first_seq, last_seq, chain);
        }
    }

    /// Final sync and shutdown checkpoint on close; reports a failure the closers
    /// should know about. Waits for the housekeeping thread's queued work.
    fn finish(&mut self) -> Result<(), String> {
        let result = match self.live.as_ref() {
            // Pipes and devices cannot be synced (EINVAL); there is nothing to make durable.
            Some(live) if !live.regular => Ok(()),
            Some(live) => live
                .file
                .sync_all()
                .map_err(|e| self.describe("syncing", &e)),
            None => Err(self.last_error.clone().unwrap_or_else(|| {
                format!(
                    "{} was not writable when the writer closed",
                    self.naming.live.display()
                )
            })),
        };
        if result.is_ok() {
            if let Some(last) = self.last_seq() {
                if self
                    .checkpoints
                    .as_ref()
                    .is_some_and(|cp| cp.has_pending(last))
                {
                    let file = fileset::file_name(&self.naming.live);
                    self.write_checkpoint(CheckpointReason::Shutdown, file, last);
                }
            }
        }
        if let Some(cp) = self.checkpoints.as_mut() {
            if let Err(e) = cp.sync() {
                tracing::error!(path = %cp.path().display(), error = %e, "could not sync the audit checkpoints file");
            }
        }
        if let Some(hk) = self.housekeeper.take() {
            hk.finish();
        }
        result
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

/// The writer thread: runs until the channel is closed (by `Close`) or every sender is
/// gone, then syncs, writes the shutdown checkpoint and answers the closers. The log's
/// lock is held while a batch is written, never while waiting for the queue.
pub(super) fn run(worker: &Mutex<Worker>, mut rx: mpsc::Receiver<Msg>) {
    let wake = Arc::clone(&lock(worker).wake);
    // Time-based duties need a timer while waiting for the queue.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "audit writer has no timer: interval checkpoints and age rotation happen only when events arrive");
        })
        .ok();
    loop {
        let deadline = {
            let mut w = lock(worker);
            w.armed = w.deadline();
            w.armed
        };
        let first = match next(&mut rx, deadline, timer.as_ref(), &wake) {
            Next::Msg(msg) => msg,
            Next::Tick => {
                let mut w = lock(worker);
                w.maybe_rotate();
                w.maybe_checkpoint();
                continue;
            }
            Next::Rearm => continue,
            Next::Closed => break,
        };
        let mut w = lock(worker);
        let mut opened = w.ensure_open();
        // A batch of events goes into a new file when the live one is full; a
        // lone `Close` does not rotate.
        if opened.is_ok() && !matches!(first, Msg::Close(..)) {
            w.maybe_rotate();
            opened = w.ensure_open();
        }
        w.take(first, &mut rx);
        while w.acks.len() < MAX_BATCH_EVENTS && w.buf.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(msg) => w.take(msg, &mut rx),
                Err(_) => break,
            }
        }
        w.flush(opened);
        w.maybe_checkpoint();
    }
    let mut w = lock(worker);
    let result = w.finish();
    // Inline writers still hold the state: release the files now (a reader waiting for
    // the end of a pipe sees it) and refuse anything later.
    w.live = None;
    w.checkpoints = None;
    // Everything is written and closed: the next writer (a restart) may take the log.
    w.writer_lock = None;
    w.finished = true;
    for closer in w.closers.drain(..) {
        let _ = closer.send(result.clone().map_err(AuditError::Unavailable));
    }
}

/// The next message, or a tick when a time-based duty comes due first.
fn next(
    rx: &mut mpsc::Receiver<Msg>,
    deadline: Option<Instant>,
    timer: Option<&tokio::runtime::Runtime>,
    wake: &Notify,
) -> Next {
    match rx.try_recv() {
        Ok(msg) => return Next::Msg(msg),
        Err(TryRecvError::Disconnected) => return Next::Closed,
        Err(TryRecvError::Empty) => {}
    }
    let Some(timer) = timer else {
        return rx.blocking_recv().map_or(Next::Closed, Next::Msg);
    };
    timer.block_on(async {
        let due = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = rx.recv() => msg.map_or(Next::Closed, Next::Msg),
            () = due => Next::Tick,
            // An inline write armed an earlier duty: recompute the deadline.
            () = wake.notified() => Next::Rearm,
        }
    })
}
