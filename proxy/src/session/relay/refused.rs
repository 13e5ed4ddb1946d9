//! Client batches the relay refuses because the audit log did not take their events:
//! nothing of them is forwarded; jitgate answers their messages in the server's stead up
//! to the Sync that ends a refused extended group (`refuse.rs`), or the session ends.

use super::*;

impl Relay<'_> {
    /// Still inside a refused extended group: answers the messages up to its Sync for
    /// the server, and leaves `chunk` and `frames` with what follows. True when nothing
    /// follows.
    pub(super) async fn discard_refused(
        &mut self,
        enforcer: &mut Enforcer,
        chunk: &mut bytes::Bytes,
        frames: &mut Vec<(u8, usize, usize)>,
    ) -> Result<bool, End> {
        let upto = frames
            .iter()
            .position(|f| f.0 == tags::SYNC)
            .map_or(frames.len(), |i| i + 1);
        let error = refuse::audit_unavailable("an earlier message of this group was refused");
        let answered = frames.get(..upto).unwrap_or_default();
        self.answer_refused(enforcer, answered.iter().map(|f| f.0), &error)
            .await?;
        if upto == frames.len() {
            return Ok(true);
        }
        let offset = frames.get(upto).map_or(chunk.len(), |f| f.1 - 5);
        *chunk = chunk.slice(offset..);
        frames.drain(..upto);
        for f in frames.iter_mut() {
            f.1 -= offset;
            f.2 -= offset;
        }
        Ok(false)
    }

    /// The audit log refused this batch: it is not forwarded; the client is told, or —
    /// inside a transaction, or while earlier statements are still being answered — the
    /// session ends (see `refuse`).
    pub(super) async fn refuse_batch(
        &mut self,
        enforcer: &mut Enforcer,
        frames: &[(u8, usize, usize)],
        error: AuditError,
    ) -> Result<(), End> {
        if self.refusal.tx_status != tags::TX_IDLE && self.refusal.tx_status != tags::TX_FAILED {
            return Err(End::Audit(error));
        }
        if self.tracker.in_flight() {
            // A pipelining client: earlier statements are still being answered, and an
            // answer of ours now would reach it before theirs (and be taken for theirs).
            return Err(End::Audit(error));
        }
        tracing::error!(error = %error, "audit log unavailable: refusing the client's statements");
        let pg_error = refuse::audit_unavailable(&error.to_string());
        self.answer_refused(enforcer, frames.iter().map(|f| f.0), &pg_error)
            .await
    }

    /// Answers refused messages in the server's stead (`refuse::respond`) and sends the
    /// answers to the client; a Terminate among them ends the session.
    pub(super) async fn answer_refused(
        &mut self,
        enforcer: &mut Enforcer,
        frame_tags: impl Iterator<Item = u8>,
        error: &PgError,
    ) -> Result<(), End> {
        let mut out = BytesMut::new();
        let quit = refuse::respond(&mut self.refusal, frame_tags, error, &mut out);
        let client = &mut *self.client;
        guarded!(enforcer, client.write_own(&out))?.map_err(End::ClientIo)?;
        if quit {
            return Err(End::ClientQuit { clean: true });
        }
        Ok(())
    }
}
