//! Opening a log against its checkpoints: with a signing key, a log that ends before its
//! last signed checkpoint (or the witness's) was cut back while jitgate was stopped and
//! is refused, unless an operator's acknowledgement is to be written into it; then a
//! `start` checkpoint is signed over what the log holds.

use super::Worker;
use crate::chain::LineHash;
use crate::checkpoint::CheckpointReason;
use crate::error::{AuditError, CutBack};
use crate::event::{Event, EventBody};
use crate::fileset;
use crate::writer::checkpointer::Checkpointer;
use crate::writer::live::ChainEnd;
use crate::writer::{Ack, AuditConfig};

impl Worker {
    /// With a signing key: refuses a log that ends before its last checkpoint (cut back
    /// while jitgate was stopped) unless `cfg.acknowledge_cut` records the loss, then
    /// signs a `start` checkpoint over what the log holds now. Without one: nothing.
    pub(super) fn check_against_checkpoints(
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
        let found = Box::new(CutBack {
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
        let event = Event::new(EventBody::LogCutAcknowledged {
            lost_from: lost.map(|l| l.0),
            lost_to: lost.map(|l| l.1),
            checkpoint_ts: checkpoint.map(|c| c.1),
            reason: ack.reason.clone(),
            acknowledged_by: ack.by.clone(),
        });
        self.serialize(std::iter::once(event), Ack::Silent);
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
}
