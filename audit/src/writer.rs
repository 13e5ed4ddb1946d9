//! The audit writer handle: sessions hand it events and wait for the acknowledgement.
//!
//! In [`Durability::Write`] mode a caller appends its event itself when the log is free
//! (one `write(2)` under the log's lock, no thread hand-off: the fast path). Otherwise
//! events travel over a bounded channel (back-pressure, never dropped) to one dedicated OS
//! thread that batches them into a single write (and one fsync in [`Durability::Fsync`]
//! mode, i.e. group commit); see the `worker` module. On a session thread (a runtime
//! built with [`gather::install`]) the inline appends of all its sessions in one turn of
//! the runtime are written together, in one `write(2)` when it goes idle. All paths
//! share one log state, so `seq` and the hash chain stay a single sequence. `write`
//! resolves only once the event is in the log, so a session that awaits it before
//! forwarding a query fails closed: if the log cannot be written, the query is not run.
//!
//! [`AuditWriter::write_batch`] records several events of one caller together: they get
//! consecutive `seq`s in their order and go into the file in one `write(2)` (inline), or
//! travel as one message and land in one batch of the thread (queued), so they succeed or
//! fail together. A session uses it to write the outcomes of its previous statements
//! with the `query` events of its next one: one `write(2)` per transaction.
//!
//! The writer thread also chains every line to the previous one (`live`), rotates the
//! live file by size and age (`live`), signs checkpoints (`checkpointer`), and hands
//! closed files to a housekeeping thread that compresses them and applies retention
//! (`housekeeping`), so neither ever delays an event.

mod checkpointer;
pub mod gather;
mod housekeeping;
mod live;
mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::AuditError;
use crate::event::Event;
use crate::keys::SigningKey;

/// How far an event must have travelled before `write` reports success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Handed to the OS (`write(2)` returned): survives a jitgate crash, not a power loss.
    #[default]
    Write,
    /// On stable storage (`fdatasync(2)` returned): survives a power loss. One fsync
    /// covers every event of a batch, so throughput stays high under load.
    Fsync,
}

/// Settings of the audit writer.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The JSON Lines file to append to (created with mode 0600, parents with 0700).
    pub path: PathBuf,
    /// When an event counts as written.
    pub durability: Durability,
    /// Events that may wait for the writer thread before `write` callers are made to
    /// wait (back-pressure). Default 8192.
    pub queue_capacity: usize,
    /// How long `write` waits for queue space plus the acknowledgement before giving up
    /// with [`AuditError::Stalled`]. Default 5 s.
    pub stall_timeout: Duration,
    /// Close the live file once it holds this many bytes (`None`: never by size).
    /// Default 256 MiB.
    pub rotate_size: Option<u64>,
    /// Close the live file once its first event is this old (`None`: never by age).
    pub rotate_age: Option<Duration>,
    /// Which closed files to keep. Default: all.
    pub retain: Retain,
    /// Compress closed files with zstd (`.zst`), off the writer thread.
    pub compress: bool,
    /// Signs checkpoints; `None`: no checkpoints are written.
    pub signing_key: Option<SigningKey>,
    /// A checkpoint after this many events. Default 1000.
    pub checkpoint_every: u64,
    /// A checkpoint when this much time passed since the last one and events are not
    /// yet covered. Default 10 s.
    pub checkpoint_interval: Duration,
    /// Open a log that was cut back (see [`crate::error::CutBack`]) by recording this
    /// acknowledgement in it; without it such a log is refused. When set and the log is
    /// not cut back, opening fails with [`AuditError::NothingToAcknowledge`] and writes
    /// nothing.
    pub acknowledge_cut: Option<CutAcknowledgement>,
    /// The newest checkpoint a witness off the host holds (read before opening): when it
    /// covers more than the log holds, the log was cut back together with the local
    /// checkpoints file, and opening is refused like any cut-back log.
    pub witnessed: Option<WitnessedCheckpoint>,
}

/// The newest checkpoint a witness holds for this log (signature already checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessedCheckpoint {
    /// Its `last_seq`.
    pub last_seq: u64,
    /// When it was written.
    pub ts: jiff::Timestamp,
    /// Which witness holds it, for messages.
    pub source: String,
}

/// An operator's acknowledgement that a log lost events while jitgate was stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutAcknowledgement {
    /// Why it is accepted.
    pub reason: String,
    /// Who acknowledged it.
    pub by: String,
}

/// Retention of closed log files, applied each time a file is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Retain {
    /// Keep every file (the default: deleting audit data is the operator's decision).
    #[default]
    All,
    /// Keep the newest N closed files (the live file is not counted).
    Files(usize),
    /// Delete closed files last written longer ago than this.
    Age(Duration),
}

impl AuditConfig {
    /// Default queue capacity: absorbs bursts from many sessions without blocking them.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
    /// Default stall timeout: long enough for a slow disk, short enough that a hung
    /// disk refuses queries visibly instead of freezing sessions.
    pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `rotate_size`: files small enough to copy and compress comfortably.
    pub const DEFAULT_ROTATE_SIZE: u64 = 256 * 1024 * 1024;
    /// Default `checkpoint_every`.
    pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
    /// Default `checkpoint_interval`.
    pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

    /// A config for `path` with the defaults above and [`Durability::Write`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            durability: Durability::default(),
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            stall_timeout: Self::DEFAULT_STALL_TIMEOUT,
            rotate_size: Some(Self::DEFAULT_ROTATE_SIZE),
            rotate_age: None,
            retain: Retain::All,
            compress: false,
            signing_key: None,
            checkpoint_every: Self::DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: Self::DEFAULT_CHECKPOINT_INTERVAL,
            acknowledge_cut: None,
            witnessed: None,
        }
    }
}

/// How the writer answers one event: over its channel (queued events), or not at all —
/// an event written inline by its caller, who reads the outcome from the worker, or an
/// event of a batch other than its last, whose ack answers for the whole batch.
enum Ack {
    Channel(oneshot::Sender<Result<u64, AuditError>>),
    Silent,
}

impl Ack {
    fn send(self, result: Result<u64, AuditError>) {
        if let Ack::Channel(tx) = self {
            // The caller may have given up (stall timeout); nothing else to tell.
            let _ = tx.send(result);
        }
    }
}

/// What travels to the writer thread.
// Nearly every message is an `Event`; boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Msg {
    /// Write this event, then acknowledge.
    Event(Event, Ack),
    /// Write these events in one batch, in this order with consecutive `seq`s, then
    /// acknowledge with the `seq` of the last (all are written, or none is).
    Batch(Vec<Event>, Ack),
    /// Stop accepting, write what is queued, sync, report.
    Close(Option<oneshot::Sender<Result<(), AuditError>>>),
}

/// Cheap, cloneable handle for recording events; one per session is fine.
#[derive(Clone)]
pub struct AuditWriter {
    /// `None` for [`AuditWriter::disabled`].
    inner: Option<Arc<Shared>>,
}

struct Shared {
    tx: mpsc::Sender<Msg>,
    path: PathBuf,
    stall_timeout: Duration,
    /// The log state, shared by the writer thread and inline writers.
    worker: Arc<Mutex<worker::Worker>>,
    /// `Write` durability to a regular file: callers write their event themselves when
    /// the log is free (no thread hand-off); `Fsync` always goes through the thread
    /// (group commit), and so does a log that is a pipe or device.
    inline: bool,
    /// Set by `WriterGuard::close`: later writes fail with `WriterGone`.
    closed: Arc<AtomicBool>,
    /// Events refused since start (a metric for operators; see `AuditHealth`).
    failed_writes: AtomicU64,
    /// Whether the last write succeeded.
    healthy: AtomicBool,
}

/// What operators and health probes learn about the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHealth {
    /// Events are being recorded (false only for the benchmark-only disabled writer).
    pub enabled: bool,
    /// The last write succeeded: queries are being forwarded.
    pub healthy: bool,
    /// Events refused since start: each refused `query` is a statement that was not
    /// run; a refused batch of N events counts N.
    pub failed_writes: u64,
}

/// Attempts at taking the log for an inline write before queueing the event instead.
const INLINE_ATTEMPTS: usize = 3;

/// The events of one `write` (an event, without a `Vec`) or `write_batch` (the caller's
/// vec, drained only at the moment it is handed over) call.
trait Payload {
    /// Appends the events on the caller's thread; see [`worker::Worker::write_inline`].
    fn write_inline(self, worker: &mut worker::Worker) -> Result<u64, AuditError>;
    /// The message that carries the events to the writer thread.
    fn into_msg(self, ack: Ack) -> Msg;
    /// Moves the events to the end of `out` (gathered writes); says how many.
    fn append_to(self, out: &mut Vec<Event>) -> usize;
}

impl Payload for Event {
    fn write_inline(self, worker: &mut worker::Worker) -> Result<u64, AuditError> {
        worker.write_inline(std::iter::once(self))
    }

    fn into_msg(self, ack: Ack) -> Msg {
        Msg::Event(self, ack)
    }

    fn append_to(self, out: &mut Vec<Event>) -> usize {
        out.push(self);
        1
    }
}

impl Payload for &mut Vec<Event> {
    fn write_inline(self, worker: &mut worker::Worker) -> Result<u64, AuditError> {
        worker.write_inline(self.drain(..))
    }

    fn into_msg(self, ack: Ack) -> Msg {
        Msg::Batch(std::mem::take(self), ack)
    }

    fn append_to(self, out: &mut Vec<Event>) -> usize {
        let count = self.len();
        out.append(self);
        count
    }
}

impl AuditWriter {
    /// Opens (creating parent dir + file, append mode, 0600) the log, continues `seq`
    /// and the hash chain after its last event (in the live file, or the newest closed
    /// file of the set), opens the checkpoints file when a signing key is set, and starts
    /// the writer on a dedicated OS thread. Fails if a file cannot be opened, so a
    /// misconfigured path stops startup.
    pub fn start(cfg: AuditConfig) -> Result<(AuditWriter, WriterGuard), AuditError> {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let worker = worker::Worker::open(&cfg)?;
        // Inline writes only to a regular file: a write(2) there returns promptly. A
        // pipe or device may block indefinitely, and then only the thread path's stall
        // timeout turns that into refusals instead of a frozen caller.
        let inline = cfg.durability == Durability::Write && worker.writes_to_regular_file();
        let worker = Arc::new(Mutex::new(worker));
        let thread_worker = Arc::clone(&worker);
        let closed = Arc::new(AtomicBool::new(false));
        let io_err = |source| AuditError::Io {
            path: cfg.path.clone(),
            source,
        };
        let thread = std::thread::Builder::new()
            .name("jitgate-audit".into())
            .spawn(move || worker::thread::run(&thread_worker, rx))
            .map_err(io_err)?;
        let writer = AuditWriter {
            inner: Some(Arc::new(Shared {
                tx: tx.clone(),
                path: cfg.path,
                stall_timeout: cfg.stall_timeout,
                worker,
                inline,
                closed: Arc::clone(&closed),
                failed_writes: AtomicU64::new(0),
                healthy: AtomicBool::new(true),
            })),
        };
        let guard = WriterGuard {
            tx: Some(tx),
            thread: Some(thread),
            closed,
        };
        Ok((writer, guard))
    }

    /// Copies every checkpoint from now on (starting with the last one written) to
    /// `witness`, from a thread of its own: the writer never waits for it. Does nothing
    /// without a signing key (no checkpoints) or on a disabled writer.
    pub fn attach_witness(
        &self,
        witness: Arc<dyn crate::witness::Witness>,
    ) -> Result<(), AuditError> {
        match &self.inner {
            Some(shared) => worker::lock(&shared.worker).attach_witness(witness),
            None => Ok(()),
        }
    }

    /// Resolves once the event is written to the OS ([`Durability::Write`]) or fsynced
    /// ([`Durability::Fsync`]), with the `seq` it was given. Errs when the log cannot be
    /// written, the writer is gone, or no ack arrives within the stall timeout. The
    /// caller (a session) must not forward the query when this errs (fail closed).
    ///
    /// After a `Stalled` error the event may still be written later; after an
    /// `Unavailable` error it may already be in the log (e.g. the disk filled up in the
    /// middle of a batch). An `Ok` event is always in the log.
    pub async fn write(&self, event: Event) -> Result<u64, AuditError> {
        self.record(1, event).await
    }

    /// Writes all of `events` together, draining the vec: they get consecutive `seq`s in
    /// their order, nothing else comes between them, and on the inline fast path they
    /// cost one `write(2)`. Resolves like [`AuditWriter::write`], with the `seq` of the
    /// last event; `Ok` means every one of them is in the log, an error that none of them
    /// may be counted on (the same caveats as for `write`). An empty vec is `Ok(0)`,
    /// without any I/O.
    ///
    /// `events` is empty when this resolves. If the future is dropped before the events
    /// were handed over (written inline, or queued for the writer thread), they are still
    /// in `events`; once handed over they are written (or refused) regardless.
    pub async fn write_batch(&self, events: &mut Vec<Event>) -> Result<u64, AuditError> {
        if events.is_empty() {
            return Ok(0);
        }
        let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let result = self.record(count, &mut *events).await;
        // Not handed over (writer gone, stall while queueing, disabled writer): dropped.
        events.clear();
        result
    }

    /// Writes `events` (`count` of them) and keeps the health accounting.
    async fn record(&self, count: u64, events: impl Payload) -> Result<u64, AuditError> {
        let Some(shared) = &self.inner else {
            return Ok(0);
        };
        let result = Self::write_to(shared, events).await;
        let ok = result.is_ok();
        if !ok {
            shared.failed_writes.fetch_add(count, Ordering::Relaxed);
        }
        if shared.healthy.load(Ordering::Relaxed) != ok {
            shared.healthy.store(ok, Ordering::Relaxed);
        }
        result
    }

    /// Health of the log for probes and metrics.
    pub fn health(&self) -> AuditHealth {
        match &self.inner {
            None => AuditHealth {
                enabled: false,
                healthy: true,
                failed_writes: 0,
            },
            Some(shared) => AuditHealth {
                enabled: true,
                healthy: shared.healthy.load(Ordering::Relaxed),
                failed_writes: shared.failed_writes.load(Ordering::Relaxed),
            },
        }
    }

    async fn write_to(shared: &Arc<Shared>, events: impl Payload) -> Result<u64, AuditError> {
        if shared.closed.load(Ordering::Acquire) {
            return Err(AuditError::WriterGone);
        }
        if !shared.inline {
            return Self::queue(shared, events).await;
        }
        // On a session thread: handed over now, written with what the thread's other
        // sessions write in the same turn of its runtime (see `gather`).
        if gather::active() {
            return gather::push(shared, events)
                .await
                .unwrap_or(Err(AuditError::WriterGone));
        }
        // Inline: when the log is free, append the events here and now — one write(2)
        // on this thread instead of two cross-thread wake-ups. The lock is only tried,
        // never waited for, so a stuck disk holds at most the one caller that is inside
        // write(2); everyone else queues and meets the stall timeout.
        let mut pending = Some(events);
        for attempt in 0..INLINE_ATTEMPTS {
            let written = match shared.worker.try_lock() {
                Ok(mut worker) => pending.take().map(|e| e.write_inline(&mut worker)),
                Err(TryLockError::Poisoned(poisoned)) => pending
                    .take()
                    .map(|e| e.write_inline(&mut poisoned.into_inner())),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(result) = written {
                return result;
            }
            if attempt + 1 < INLINE_ATTEMPTS {
                tokio::task::yield_now().await;
            }
        }
        match pending {
            Some(events) => Self::queue(shared, events).await,
            None => Err(AuditError::WriterGone),
        }
    }

    /// Sends the events to the writer thread and waits for its acknowledgement, both
    /// within the stall timeout.
    async fn queue(shared: &Shared, events: impl Payload) -> Result<u64, AuditError> {
        let (ack, acked) = oneshot::channel();
        let send_and_wait = async {
            // Space first, then the events: while waiting for space they stay with the
            // caller (see `write_batch`).
            let permit = shared
                .tx
                .reserve()
                .await
                .map_err(|_| AuditError::WriterGone)?;
            permit.send(events.into_msg(Ack::Channel(ack)));
            acked.await.map_err(|_| AuditError::WriterGone)?
        };
        tokio::time::timeout(shared.stall_timeout, send_and_wait)
            .await
            .map_err(|_| AuditError::Stalled(shared.stall_timeout))?
    }

    /// A writer that accepts and discards events (`write` returns `Ok(0)`); only for
    /// the "audit off" benchmark mode.
    pub fn disabled() -> AuditWriter {
        AuditWriter { inner: None }
    }

    /// The log file, or `None` for a disabled writer.
    pub fn path(&self) -> Option<&Path> {
        self.inner.as_deref().map(|s| s.path.as_path())
    }

    /// Whether events are actually recorded.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }
}

impl fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path() {
            Some(path) => f.debug_tuple("AuditWriter").field(&path).finish(),
            None => f.write_str("AuditWriter(disabled)"),
        }
    }
}

/// Owner of the writer thread. Call [`WriterGuard::close`] on shutdown so everything
/// queued reaches the disk; dropping it only asks the thread to stop, without waiting.
pub struct WriterGuard {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    closed: Arc<AtomicBool>,
}

impl WriterGuard {
    /// Stops accepting events (later `write`s fail with `WriterGone`), writes and fsyncs
    /// everything already queued, and joins the thread. Errs if the final flush/sync
    /// failed or the thread died. Wrap in a timeout if the disk may hang.
    pub async fn close(mut self) -> Result<(), AuditError> {
        self.closed.store(true, Ordering::Release);
        let (done, result) = oneshot::channel();
        let result = match self.tx.take() {
            Some(tx) if tx.send(Msg::Close(Some(done))).await.is_ok() => {
                result.await.unwrap_or(Err(AuditError::WriterGone))
            }
            _ => Err(AuditError::WriterGone),
        };
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                return Err(AuditError::WriterGone);
            }
        }
        result
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        if let Some(tx) = self.tx.take() {
            // Best effort: if the queue is full the thread stops once every handle is gone.
            let _ = tx.try_send(Msg::Close(None));
        }
    }
}

impl fmt::Debug for WriterGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterGuard").finish_non_exhaustive()
    }
}

/// Makes a newly created or renamed file's directory entry durable (needed for `Fsync`
/// to mean that the file itself survives a power loss).
pub(crate) fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
