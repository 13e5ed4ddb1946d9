//! One batch: events numbered (`seq`), chained (`prev`) and encoded into one reused
//! buffer, written with one `write_all` (and one `sync_data` in fsync mode), then every
//! event acknowledged together; on the writer thread, or on the caller's (inline).

use std::time::SystemTime;

use tokio::sync::mpsc;

use super::Worker;
use crate::chain::LineHash;
use crate::error::AuditError;
use crate::event::Event;
use crate::writer::live::LiveFile;
use crate::writer::{Ack, Durability, Msg};

/// Buffer capacity kept between batches; larger ones are shrunk back after use.
const KEEP_BUFFER_BYTES: usize = 256 * 1024;

impl Worker {
    /// Appends events on the caller's thread (the inline fast path) — one event, or a
    /// caller's batch, in one `write(2)` — and says whether they are in the log, with the
    /// `seq` of the last, exactly as an acknowledgement from the thread would.
    pub(in crate::writer) fn write_inline(
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

    /// Reopens the live file after a failure (it may have been replaced, or the disk
    /// remounted). The error text is what every event of the batch is refused with.
    pub(super) fn ensure_open(&mut self) -> Result<(), String> {
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
    pub(super) fn take(&mut self, msg: Msg, rx: &mut mpsc::Receiver<Msg>) {
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
    pub(super) fn serialize(
        &mut self,
        events: impl IntoIterator<Item = Event>,
        ack: Ack,
    ) -> Option<u64> {
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
    pub(super) fn flush(&mut self, opened: Result<(), String>) {
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
}
