//! The client → server side of the relay: each client batch decoded by the tracker,
//! audited in slices and forwarded, with what the server would ignore left out and
//! refused statements replaced.

use bytes::Bytes;

use super::*;

/// One slice of a client batch, as the tracker saw it (see [`Relay::look`]).
struct Slice {
    /// Frames the server would ignore (left out: `None`) or must get in another form (a
    /// refusal's substitute).
    edits: Vec<(usize, Option<Bytes>)>,
    /// Where an Execute must wait (`frames.len()`: none does).
    stop: usize,
    /// Where the slice ends.
    to: usize,
}

// Offsets into a chunk come from its own frame list (`on_client_bytes` records only
// whole frames), so the `get`s below always find their bytes; they are `get`s so that
// nothing on the client's path can panic.
impl Relay<'_> {
    /// Client bytes: audit every whole message that runs a query, then forward them.
    pub(super) async fn on_client_bytes(
        &mut self,
        enforcer: &mut Enforcer,
        events: &mut Vec<EventBody>,
        deferred: &mut Deferred<'_>,
    ) -> Result<(), End> {
        let inbuf = &mut self.client.inbuf;
        let mut consumed = 0;
        let mut quit = false;
        // Reused across batches: (tag, body start, frame end) of each whole frame.
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        while let Some(header) = peek_header(
            inbuf.get(consumed..).unwrap_or_default(),
            self.max_message_len,
        )
        .map_err(End::ClientProtocol)?
        {
            if inbuf.len() - consumed < header.len {
                inbuf.reserve(header.len - (inbuf.len() - consumed));
                break;
            }
            frames.push((header.tag, consumed + 5, consumed + header.len));
            consumed += header.len;
            if header.tag == tags::TERMINATE {
                quit = true;
                break;
            }
        }
        if consumed == 0 {
            self.frames = frames;
            return Ok(());
        }
        let result = self
            .on_client_frames(enforcer, events, deferred, &mut frames, consumed, quit)
            .await;
        self.frames = frames;
        result
    }

    /// The whole frames at the front of the client buffer: audit, then forward (or refuse).
    /// A large read buffer is left behind (see [`LARGE_INBUF`]).
    pub(super) async fn on_client_frames(
        &mut self,
        enforcer: &mut Enforcer,
        events: &mut Vec<EventBody>,
        deferred: &mut Deferred<'_>,
        frames: &mut Vec<(u8, usize, usize)>,
        consumed: usize,
        quit: bool,
    ) -> Result<(), End> {
        let mut chunk = self.take_chunk(consumed, quit);
        if self.refusal.discarding {
            // Out of line (boxed): a refused group is rare, the path below is not.
            if Box::pin(self.discard_refused(enforcer, &mut chunk, frames)).await? {
                return Ok(());
            }
        }
        // Audited and forwarded in slices: the events of one slice come to at most about
        // `max_audit_batch_bytes`, so a huge pipelined batch never has all its events in
        // memory at once.
        let mut from = 0;
        loop {
            let mark = self.tracker.mark();
            let Slice { edits, stop, to } = match self.look(&chunk, frames, from, events) {
                Ok(slice) => slice,
                Err(e) => {
                    // Nothing of this slice is forwarded, so nothing of it is recorded.
                    self.tracker.rollback(mark);
                    events.clear();
                    return Err(e);
                }
            };
            let mut quit = quit && to == frames.len();
            if stop < frames.len() {
                self.hold_back(&mut chunk, frames, stop);
                quit = false;
            }
            if let Err(e) = self.write_queries(enforcer, events, deferred).await? {
                self.tracker.rollback(mark);
                // Out of line (boxed), as the refused group above.
                let refused = frames.get(from..).unwrap_or_default();
                return Box::pin(self.refuse_batch(enforcer, refused, e)).await;
            }
            // The clock, not only the timer: nothing is forwarded past the grant. Asked
            // once the statements are in the log, since the write may take a while:
            // statements that came after the deadline are then in the log, recorded as
            // never run.
            if let Some(end) = enforcer.due() {
                self.abandon(mark, deferred);
                return Err(end);
            }
            // The slice's bytes: from its first frame to its last, or to the end of what
            // is left of the chunk. The client's Terminate stays here: the session's end
            // decides whether the upstream connection is closed (Terminate) or reset and
            // parked for reuse.
            let begin = frames.get(from).map_or(chunk.len(), |f| f.1 - 5);
            let upto = match (quit, frames.last()) {
                (true, Some(&(_, body_start, _))) => body_start - 5,
                _ => frames.get(to).map_or(chunk.len(), |f| f.1 - 5),
            };
            if edits.is_empty() && !self.waiting {
                if upto > begin {
                    let upstream = &mut *self.upstream;
                    let bytes = chunk.get(begin..upto).unwrap_or_default();
                    guarded!(enforcer, write_flush(upstream, bytes))?.map_err(End::UpstreamIo)?;
                }
            } else {
                let out = self.edited(&chunk, frames, &edits, begin, upto);
                let upstream = &mut *self.upstream;
                guarded!(enforcer, write_flush(upstream, &out))?.map_err(End::UpstreamIo)?;
            }
            if quit {
                return Err(End::ClientQuit { clean: true });
            }
            if to >= frames.len() {
                return Ok(());
            }
            from = to;
        }
    }

    /// The first `consumed` bytes of the client buffer, whole frames; what follows (part
    /// of a message at most) stays, in a fresh buffer when the old one grew large (it is
    /// freed once this batch and what is in flight from it are done).
    fn take_chunk(&mut self, consumed: usize, quit: bool) -> Bytes {
        let inbuf = &mut self.client.inbuf;
        let large = inbuf.capacity() > LARGE_INBUF;
        let chunk = inbuf.split_to(consumed).freeze();
        if quit && inbuf.has_remaining() {
            inbuf.clear();
        }
        if large {
            let mut fresh = BytesMut::with_capacity(FRESH_INBUF.max(inbuf.len()));
            fresh.extend_from_slice(inbuf);
            *inbuf = fresh;
        }
        self.tracker.set_copy_retained(large);
        chunk
    }

    /// The tracker's look at the frames from `from` on, up to the end of a slice: the
    /// events to write (appended to `events`), the frames to leave out or replace, where
    /// an Execute must wait (`stop`) and where the slice ends (`to`): at most about
    /// `max_audit_batch_bytes` of events.
    fn look(
        &mut self,
        chunk: &Bytes,
        frames: &[(u8, usize, usize)],
        from: usize,
        events: &mut Vec<EventBody>,
    ) -> Result<Slice, End> {
        let mut budget = AuditBudget::new(self.max_audit_batch_bytes);
        let mut slice = Slice {
            edits: Vec::new(),
            stop: frames.len(),
            to: frames.len(),
        };
        for (i, &(tag, start, end)) in frames.iter().enumerate().skip(from) {
            let before = events.len();
            let step = self
                .tracker
                .on_client(tag, chunk.slice(start..end), events)
                .map_err(|e| match e {
                    Halt::Protocol(e) => End::ClientProtocol(e),
                    Halt::Limit(limit) => End::Limit(limit),
                    Halt::Unfollowed => End::Unfollowed,
                })?;
            match step {
                Step::Forward => {}
                Step::Drop => slice.edits.push((i, None)),
                Step::Replace(frame) => slice.edits.push((i, Some(frame))),
                Step::Wait => {
                    slice.stop = i;
                    slice.to = i;
                    break;
                }
            }
            let added = events.get(before..).unwrap_or_default();
            if budget.add(added) && i + 1 < frames.len() {
                slice.to = i + 1;
                break;
            }
        }
        Ok(slice)
    }

    /// An Execute must wait (see [`Step::Wait`]): it and what follows it go back in
    /// front of the client buffer.
    #[cold]
    #[inline(never)]
    pub(super) fn hold_back(
        &mut self,
        chunk: &mut bytes::Bytes,
        frames: &mut Vec<(u8, usize, usize)>,
        stop: usize,
    ) {
        let offset = frames.get(stop).map_or(chunk.len(), |f| f.1 - 5);
        let inbuf = &mut self.client.inbuf;
        let rest = chunk.get(offset..).unwrap_or_default();
        let mut held = BytesMut::with_capacity(rest.len() + inbuf.len());
        held.extend_from_slice(rest);
        held.extend_from_slice(inbuf);
        *inbuf = held;
        chunk.truncate(offset);
        frames.truncate(stop);
        self.waiting = true;
    }

    /// The grant ended while the audit log took the slice's statements: they are in the
    /// log, and are recorded as never run.
    #[cold]
    #[inline(never)]
    pub(super) fn abandon(&mut self, mark: Mark, deferred: &mut Deferred<'_>) {
        let mut skipped = Vec::new();
        self.tracker.abandon(mark, &mut skipped);
        self.defer(&mut skipped, deferred);
    }

    /// The bytes of `chunk[begin..upto]` as the server must get them: frames it would
    /// ignore left out, refused ones replaced, and — when an Execute waits — a Flush of
    /// our own behind them.
    #[inline(never)]
    pub(super) fn edited(
        &mut self,
        chunk: &[u8],
        frames: &[(u8, usize, usize)],
        edits: &[(usize, Option<bytes::Bytes>)],
        begin: usize,
        upto: usize,
    ) -> BytesMut {
        let mut out = BytesMut::with_capacity(upto - begin + tags::FLUSH_MESSAGE.len());
        let mut at = begin;
        for (i, replacement) in edits {
            let Some(&(_, body_start, end)) = frames.get(*i) else {
                continue;
            };
            out.extend_from_slice(chunk.get(at..body_start - 5).unwrap_or_default());
            if let Some(frame) = replacement {
                out.extend_from_slice(frame);
            }
            at = end;
        }
        out.extend_from_slice(chunk.get(at..upto).unwrap_or_default());
        if self.waiting {
            // Have the server send the answers the waiting Execute needs now, not at the
            // client's next Sync (which is behind the Execute).
            out.extend_from_slice(&tags::FLUSH_MESSAGE);
            self.tracker.flush_sent();
        }
        out
    }

    /// Writes the batch's events (its `query` events) behind the deferred outcomes, in one
    /// write; the batch may be forwarded only when this is `Ok(Ok(()))`. A batch without
    /// events leaves the outcomes waiting. The outcomes are gone either way (written, or
    /// refused with the queries: the log is failing).
    pub(super) async fn write_queries(
        &mut self,
        enforcer: &mut Enforcer,
        events: &mut Vec<EventBody>,
        deferred: &mut Deferred<'_>,
    ) -> Result<Result<(), AuditError>, End> {
        if events.is_empty() {
            return Ok(Ok(()));
        }
        let outcomes = deferred.events.len();
        let meta = self.meta;
        deferred
            .events
            .extend(events.drain(..).map(|body| meta.event(body)));
        match guarded!(enforcer, self.audit.write_batch(&mut deferred.events)) {
            Ok(Ok(_)) => Ok(Ok(())),
            Ok(Err(e)) => {
                if outcomes > 0 {
                    outcomes_lost(&e, outcomes);
                }
                Ok(Err(e))
            }
            Err(end) => {
                // Not handed to the writer: the statements will not run, so only the
                // outcomes are left for `run` to write.
                deferred.events.truncate(outcomes);
                Err(end)
            }
        }
    }
}
