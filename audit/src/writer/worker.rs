//! The writer thread: batches queued events into one write (and one fsync), assigns
//! `seq`, acknowledges, and recovers from write errors by itself.
//!
//! Loop: block for one message, drain whatever else is queued (up to a cap), serialize
//! the batch into one reused buffer, `write_all` it, `sync_data` in fsync mode, then ack
//! every event of the batch. When a write fails the whole batch is acknowledged with
//! [`AuditError::Unavailable`], the file is dropped, and the next batch reopens it and
//! re-reads its end, so numbering continues without duplicates and a torn fragment is
//! closed off with a newline before new lines are appended.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use super::{Ack, Durability, Msg};
use crate::error::AuditError;
use crate::event::Event;
use crate::logfile::{self, LogEnd};

/// Most events written by one `write_all`; bounds ack latency of the first event.
const MAX_BATCH_EVENTS: usize = 1024;
/// A batch stops growing past this many bytes (large SQL texts).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Buffer capacity kept between batches; larger ones are shrunk back after use.
const KEEP_BUFFER_BYTES: usize = 256 * 1024;

pub(super) struct Worker {
    path: PathBuf,
    durability: Durability,
    /// `None` after a failure: reopened before the next batch.
    file: Option<File>,
    /// `seq` of the next event that will be written.
    next_seq: u64,
    /// The file ends in a torn line; the next write starts with `\n`.
    needs_newline: bool,
    /// Why the last batch failed; cleared by the next successful one.
    last_error: Option<String>,
    buf: Vec<u8>,
    acks: Vec<(Ack, u64)>,
    closers: Vec<oneshot::Sender<Result<(), AuditError>>>,
}

impl Worker {
    pub(super) fn new(path: PathBuf, durability: Durability, file: File, end: LogEnd) -> Worker {
        let mut worker = Worker {
            path,
            durability,
            file: Some(file),
            next_seq: 1,
            needs_newline: false,
            last_error: None,
            buf: Vec::with_capacity(64 * 1024),
            acks: Vec::with_capacity(MAX_BATCH_EVENTS),
            closers: Vec::new(),
        };
        worker.resume_after(end);
        worker
    }

    /// Runs until the channel is closed (by `Close`) or every sender is gone, then syncs
    /// and answers the closers.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(first) = rx.blocking_recv() {
            let opened = self.ensure_open();
            self.take(first, &mut rx);
            while self.acks.len() < MAX_BATCH_EVENTS && self.buf.len() < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg, &mut rx),
                    Err(_) => break,
                }
            }
            self.flush(opened);
        }
        let result = self.finish();
        for closer in self.closers.drain(..) {
            let _ = closer.send(result.clone().map_err(AuditError::Unavailable));
        }
    }

    /// Continues numbering after what is in the file and terminates a torn tail.
    fn resume_after(&mut self, end: LogEnd) {
        if let Some(last) = end.last_seq {
            self.next_seq = self.next_seq.max(last.saturating_add(1));
        }
        self.needs_newline = end.torn;
    }

    /// Reopens the file after a failure (it may have been replaced, or the disk
    /// remounted). The error text is what every event of the batch is refused with.
    fn ensure_open(&mut self) -> Result<(), String> {
        if self.file.is_some() {
            return Ok(());
        }
        let reopened = logfile::open_append(&self.path)
            .and_then(|(file, _)| logfile::scan_end(&file).map(|end| (file, end)));
        match reopened {
            Ok((file, end)) => {
                self.file = Some(file);
                self.resume_after(end);
                Ok(())
            }
            Err(e) => Err(self.describe("opening", &e)),
        }
    }

    /// Adds one message to the current batch.
    fn take(&mut self, msg: Msg, rx: &mut mpsc::Receiver<Msg>) {
        match msg {
            Msg::Event(event, ack) => self.serialize(event, ack),
            Msg::Close(closer) => {
                // Senders now fail fast; what is already queued is still drained.
                rx.close();
                self.closers.extend(closer);
            }
        }
    }

    fn serialize(&mut self, mut event: Event, ack: Ack) {
        if self.buf.is_empty() && self.needs_newline {
            self.buf.push(b'\n');
        }
        let start = self.buf.len();
        event.seq = self.next_seq + self.acks.len() as u64;
        match serde_json::to_writer(&mut self.buf, &event) {
            Ok(()) => {
                self.buf.push(b'\n');
                self.acks.push((ack, event.seq));
            }
            Err(e) => {
                self.buf.truncate(start);
                tracing::error!(error = %e, kind = event.kind(), "audit event could not be serialized");
                let _ = ack.send(Err(AuditError::Unavailable(format!(
                    "a {} event could not be serialized: {e}",
                    event.kind()
                ))));
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
                self.next_seq += self.acks.len() as u64;
                self.needs_newline = false;
                if self.last_error.take().is_some() {
                    tracing::info!(path = %self.path.display(), "audit log writable again");
                }
                for (ack, seq) in self.acks.drain(..) {
                    let _ = ack.send(Ok(seq));
                }
            }
            Err(reason) => {
                tracing::error!(
                    path = %self.path.display(),
                    events = self.acks.len(),
                    %reason,
                    "audit log not writable; refusing the batch"
                );
                // Forget the handle: the next batch reopens and re-reads the file end.
                self.file = None;
                for (ack, _) in self.acks.drain(..) {
                    let _ = ack.send(Err(AuditError::Unavailable(reason.clone())));
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
        let Some(file) = self.file.as_mut() else {
            return Err(format!("{} is not open", self.path.display()));
        };
        let written = file
            .write_all(&self.buf)
            .and_then(|()| match self.durability {
                Durability::Write => Ok(()),
                Durability::Fsync => file.sync_data(),
            });
        written.map_err(|e| self.describe("writing", &e))
    }

    /// Final sync on close; reports a failure the closers should know about.
    fn finish(&mut self) -> Result<(), String> {
        match self.file.as_ref() {
            // Pipes and devices cannot be synced (EINVAL); there is nothing to make durable.
            Some(file) if !file.metadata().is_ok_and(|m| m.is_file()) => Ok(()),
            Some(file) => file.sync_all().map_err(|e| self.describe("syncing", &e)),
            None => Err(self.last_error.clone().unwrap_or_else(|| {
                format!(
                    "{} was not writable when the writer closed",
                    self.path.display()
                )
            })),
        }
    }

    fn describe(&self, action: &str, e: &std::io::Error) -> String {
        format!(
            "{action} {} failed: {e} ({:?}); queries are refused until it can be written",
            self.path.display(),
            e.kind()
        )
    }
}
