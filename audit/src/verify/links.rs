//! The checks of one log line against the line before: it is a chained event, its `seq`
//! follows (or a signed `log_cut_acknowledged` explains the gap), its `prev` is the hash
//! of the line before, the first line of the set starts the chain or where retention
//! left it, and a checkpointed line hashes to what its checkpoint signed.

use std::path::Path;

use serde::Deserialize;

use super::checkpoints::Checkpoints;
use super::report::{FileSummary, Problem, ProblemKind, VerifyReport};
use crate::chain::LineHash;
use crate::fileset::LogFile;

/// Only what the chain check needs of an event line.
#[derive(Deserialize)]
struct ChainFields {
    seq: u64,
    #[serde(default)]
    prev: Option<LineHash>,
}

/// The fields of a `log_cut_acknowledged` event that explain a gap in `seq`.
#[derive(Deserialize)]
struct AckFields<'a> {
    kind: &'a str,
    #[serde(default)]
    lost_from: Option<u64>,
    #[serde(default)]
    lost_to: Option<u64>,
    #[serde(default)]
    ts: Option<&'a str>,
    #[serde(default)]
    acknowledged_by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Where a line is: its file and 1-based line number.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) path: &'a Path,
    pub(super) line: u64,
}

impl At<'_> {
    fn problem(self, kind: ProblemKind, seq: Option<u64>, detail: String) -> Problem {
        Problem::new(kind, self.path, Some(self.line), seq, detail)
    }
}

/// The chain of lines checked so far.
pub(super) struct Links<'a> {
    report: &'a mut VerifyReport,
    checkpoints: &'a Checkpoints,
    /// Hash of the line before (`None` before the first line of the set).
    prev_hash: Option<LineHash>,
    /// `seq` of the line before.
    prev_seq: Option<u64>,
}

impl<'a> Links<'a> {
    pub(super) fn new(report: &'a mut VerifyReport, checkpoints: &'a Checkpoints) -> Links<'a> {
        Links {
            report,
            checkpoints,
            prev_hash: None,
            prev_seq: None,
        }
    }

    /// What verification found so far.
    pub(super) fn report(&mut self) -> &mut VerifyReport {
        self.report
    }

    /// `seq` of the last line that passed.
    pub(super) fn last_seq(&self) -> Option<u64> {
        self.prev_seq
    }

    /// The `seq` the next line should have.
    pub(super) fn next_seq(&self) -> Option<u64> {
        self.prev_seq.map(|s| s + 1)
    }

    /// Checks one line of `file` (`summary`: what that file held so far).
    pub(super) fn line(
        &mut self,
        line: &[u8],
        at: At<'_>,
        file: &LogFile,
        summary: &mut FileSummary,
    ) -> Result<(), Problem> {
        let expected = self.next_seq();
        let (seq, prev) = chain_fields(line, at, expected)?;
        let first_of_file = summary.seqs.is_none();
        if first_of_file {
            named_for(file, seq, at)?;
        }
        match (expected, self.prev_hash) {
            (Some(expected), Some(prev_hash)) => {
                let acknowledged = seq > expected && self.acknowledged_gap(line, expected, seq);
                if seq != expected && !acknowledged {
                    let (kind, detail) = out_of_sequence(seq, expected, first_of_file);
                    return Err(at.problem(kind, Some(expected), detail));
                }
                if prev != prev_hash {
                    let before = expected - 1;
                    let detail = broken_link(before, first_of_file);
                    return Err(at.problem(ProblemKind::ChainBroken, Some(before), detail));
                }
            }
            _ => self.first_line_of_set(seq, prev, at)?,
        }
        let hash = LineHash::of_line(line);
        self.matches_checkpoint(seq, hash, at)?;
        self.prev_hash = Some(hash);
        self.prev_seq = Some(seq);
        self.report.events += 1;
        summary.seqs = Some((summary.seqs.map_or(seq, |s| s.0), seq));
        self.report.seqs = Some((self.report.seqs.map_or(seq, |s| s.0), seq));
        Ok(())
    }

    /// Whether the line is a signed `log_cut_acknowledged` event explaining exactly the
    /// gap `expected..seq`. Parsed only at a gap, so intact logs pay nothing for it.
    fn acknowledged_gap(&mut self, line: &[u8], expected: u64, seq: u64) -> bool {
        let Ok(ack) = serde_json::from_slice::<AckFields>(line) else {
            return false;
        };
        if ack.kind != "log_cut_acknowledged"
            || ack.lost_from != Some(expected)
            || ack.lost_to != Some(seq - 1)
        {
            return false;
        }
        // Anyone can write such a line; only one a signed checkpoint covers is jitgate's
        // (the hash itself is compared with the checkpoint right after).
        if !self.checkpoints.by_seq.contains_key(&seq) {
            return false;
        }
        self.report.acknowledged.push(format!(
            "events {expected}..{} were lost (the log was cut back while jitgate was stopped); \
             acknowledged at seq {seq}{}{}{}",
            seq - 1,
            ack.ts.map(|t| format!(" on {t}")).unwrap_or_default(),
            ack.acknowledged_by
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            ack.reason.map(|r| format!(": {r}")).unwrap_or_default(),
        ));
        true
    }

    /// The first line of the whole set: chained to genesis, or a start that retention
    /// explains.
    fn first_line_of_set(&mut self, seq: u64, prev: LineHash, at: At<'_>) -> Result<(), Problem> {
        if seq == 1 {
            if prev != LineHash::GENESIS {
                let detail = "seq 1 does not chain to the genesis hash (64 zeros): the start of \
                              the log was replaced";
                return Err(at.problem(ProblemKind::ChainBroken, Some(1), detail.into()));
            }
            self.report.from_genesis = true;
            return Ok(());
        }
        match self.checkpoints.first_seq {
            Some(first) if first < seq => {
                let detail = format!(
                    "the log starts at seq {seq}, but the last checkpoint says it holds events \
                     from seq {first}: the oldest file(s), seq {first}..{}, are missing",
                    seq - 1
                );
                return Err(at.problem(ProblemKind::Files, Some(first), detail));
            }
            Some(_) => self.report.warnings.push(format!(
                "the log starts at seq {seq}: older files were deleted by retention (as the \
                 checkpoints record); the chain is checked from there"
            )),
            None => self.report.warnings.push(format!(
                "the log starts at seq {seq}, not 1: older files are not present (retention?) \
                 and without checkpoints it cannot be told whether that is intended"
            )),
        }
        Ok(())
    }

    /// A checkpointed line must hash to what its checkpoint signed.
    fn matches_checkpoint(&mut self, seq: u64, hash: LineHash, at: At<'_>) -> Result<(), Problem> {
        let Some(covered) = self.checkpoints.by_seq.get(&seq) else {
            return Ok(());
        };
        if covered.hash != hash {
            let after = self
                .checkpoints
                .by_seq
                .keys()
                .filter(|&&s| s < seq && s >= self.report.seqs.map_or(0, |r| r.0))
                .max()
                .copied();
            let detail = format!(
                "the line does not match signed checkpoint {} (checkpoints line {}): the log \
                 was rewritten at or before seq {seq}{}",
                covered.hash.short(),
                covered.line,
                after
                    .map(|a| format!(" (and after seq {a}, covered by an earlier checkpoint)"))
                    .unwrap_or_default()
            );
            return Err(at.problem(ProblemKind::CheckpointMismatch, Some(seq), detail));
        }
        self.report.checkpoints_matched += covered.count;
        Ok(())
    }
}

/// The line's `seq` and `prev`, or why it is not a chained event (`expected`: the `seq`
/// it should have had).
fn chain_fields(
    line: &[u8],
    at: At<'_>,
    expected: Option<u64>,
) -> Result<(u64, LineHash), Problem> {
    let fields = serde_json::from_slice::<ChainFields>(line).map_err(|e| {
        let detail = if line.trim_ascii().is_empty() {
            "blank line: not an event (lines were inserted or the file damaged)".to_owned()
        } else {
            format!("not an audit event ({e}): edited or damaged")
        };
        at.problem(ProblemKind::Malformed, expected, detail)
    })?;
    let Some(prev) = fields.prev else {
        let detail = "no prev field: the line is not hash-chained (edited, or written by a \
                      jitgate from before hash chaining)";
        return Err(at.problem(ProblemKind::Malformed, Some(fields.seq), detail.into()));
    };
    Ok((fields.seq, prev))
}

/// A closed file must start with the `seq` its name says.
fn named_for(file: &LogFile, seq: u64, at: At<'_>) -> Result<(), Problem> {
    let Some(named) = file.first_seq.filter(|&n| n != seq) else {
        return Ok(());
    };
    let detail = format!(
        "the file is named for seq {named} but starts with seq {seq}: files were swapped or \
         renamed"
    );
    Err(at.problem(ProblemKind::Files, Some(named.min(seq)), detail))
}

/// What a `seq` other than `expected` means.
fn out_of_sequence(seq: u64, expected: u64, first_of_file: bool) -> (ProblemKind, String) {
    if seq > expected && first_of_file {
        (
            ProblemKind::Files,
            format!(
                "the file starts with seq {seq} but the previous file ended at seq {}: the \
                 file(s) holding seq {expected}..{} are missing",
                expected - 1,
                seq - 1
            ),
        )
    } else if seq > expected {
        (
            ProblemKind::Sequence,
            format!(
                "seq {seq} follows seq {}: events {expected}..{} were deleted or moved",
                expected - 1,
                seq - 1
            ),
        )
    } else {
        (
            ProblemKind::Sequence,
            format!(
                "seq {seq} follows seq {}: an event was inserted, repeated or moved",
                expected - 1
            ),
        )
    }
}

/// What a `prev` that is not the hash of the line before (`seq` `before`) means.
fn broken_link(before: u64, first_of_file: bool) -> String {
    if first_of_file {
        format!(
            "prev does not match the last line of the previous file (seq {before}): a file was \
             replaced or swapped, or seq {before} was edited"
        )
    } else {
        format!(
            "prev does not match the hash of the line before: seq {before} was edited, or an \
             event was inserted, removed or moved here"
        )
    }
}
