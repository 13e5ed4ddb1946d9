//! The writer thread: waits for a message or the next time-based duty, drains the
//! queue into one batch, writes it; at the end, syncs, writes the shutdown checkpoint and
//! answers the closers.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, Notify};

use super::{lock, Worker, MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
use crate::checkpoint::CheckpointReason;
use crate::error::AuditError;
use crate::fileset;
use crate::writer::Msg;

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

/// The writer thread: runs until the channel is closed (by `Close`) or every sender is
/// gone, then syncs, writes the shutdown checkpoint and answers the closers. The log's
/// lock is held while a batch is written, never while waiting for the queue.
pub(in crate::writer) fn run(worker: &Mutex<Worker>, mut rx: mpsc::Receiver<Msg>) {
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

impl Worker {
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
}
