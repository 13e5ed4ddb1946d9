//! Step 1 of verification: the checkpoints file. Every line must parse, name the given
//! public key, carry a valid signature, chain to the checkpoint before (`prev`) and never
//! cover less than it (`last_seq`). What survives is what the log is checked against.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use super::lines::{Lines, Next};
use super::report::{Problem, ProblemKind, VerifyReport};
use crate::chain::LineHash;
use crate::checkpoint::{self, Checkpoint, CheckpointDefect};
use crate::keys::PublicKey;

/// A checkpoint as far as coverage checks need it.
#[derive(Clone, Debug)]
pub(super) struct Covered {
    pub(super) hash: LineHash,
    pub(super) line: u64,
    /// Checkpoints naming this `seq` (an `events` and a `rotation` one may coincide).
    pub(super) count: u64,
}

/// What the checkpoints file says, once checked.
#[derive(Default)]
pub(super) struct Checkpoints {
    pub(super) by_seq: HashMap<u64, Covered>,
    /// Where the set is meant to start (from the last valid checkpoint).
    pub(super) first_seq: Option<u64>,
    /// The highest `last_seq` and the line of that checkpoint.
    pub(super) max: Option<(u64, u64, String)>,
    /// The witness's highest checkpoint: `last_seq`, `first_seq`, when it was written.
    pub(super) witness_max: Option<(u64, u64, jiff::Timestamp)>,
}

/// Reads and checks the checkpoints file at `path`; what is wrong goes to `report`.
pub(super) fn read(path: &Path, key: Option<&PublicKey>, report: &mut VerifyReport) -> Checkpoints {
    let mut reading = Reading {
        path,
        key,
        prev: LineHash::GENESIS,
        last_seq: 0,
        out: Checkpoints::default(),
    };
    let Some(file) = open(path, key, report) else {
        return reading.out;
    };
    if let Err(problem) = reading.lines(file, report) {
        report.problems.push(problem);
    }
    if key.is_some() && report.checkpoints == 0 {
        report
            .problems
            .push(no_checkpoints(path, "holds no checkpoint"));
    }
    if key.is_none() && report.checkpoints > 0 {
        report.problems.push(Problem::new(
            ProblemKind::Unsigned,
            path,
            None,
            None,
            format!(
                "{} checkpoint(s) present but their signatures were NOT checked: no public key \
                 (pass --public-key FILE, or the config naming audit.signing_key_file)",
                report.checkpoints
            ),
        ));
    }
    report.last_checkpointed = reading.out.max.as_ref().map(|m| m.0);
    reading.out
}

/// The checkpoints file, or `None` (with the problem or warning in `report`) when there
/// is none to read.
fn open(path: &Path, key: Option<&PublicKey>, report: &mut VerifyReport) -> Option<File> {
    match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound && key.is_some() => {
            report.problems.push(no_checkpoints(path, "is missing"));
            None
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.warnings.push(format!(
                "no checkpoints file ({}): checkpoints are written only when audit.signing_key_file \
                 is set. Only the hash chain was checked; a cut-off tail or a log rewritten with \
                 a recomputed chain cannot be detected without them",
                path.display()
            ));
            None
        }
        Err(e) => {
            report.problems.push(Problem::new(
                ProblemKind::Unreadable,
                path,
                None,
                None,
                format!("cannot read the checkpoints file: {e}"),
            ));
            None
        }
    }
}

/// The problem of a configured key without checkpoints.
fn no_checkpoints(path: &Path, what: &str) -> Problem {
    Problem::new(
        ProblemKind::NoCheckpoints,
        path,
        None,
        None,
        format!(
            "a signing key is configured but the checkpoints file {what}: jitgate writes a \
             signed checkpoint as soon as it opens the log, so the checkpoints were deleted or \
             emptied, and a cut-off tail or a rewritten log cannot be ruled out (check against \
             a copy of the checkpoints, or with --witness)"
        ),
    )
}

/// The checkpoints file as read so far.
struct Reading<'a> {
    path: &'a Path,
    key: Option<&'a PublicKey>,
    /// Hash of the checkpoint line before (genesis before the first).
    prev: LineHash,
    /// `last_seq` of the checkpoint before.
    last_seq: u64,
    out: Checkpoints,
}

impl Reading<'_> {
    /// Checks every line up to the first bad one (a torn last line is only a warning).
    fn lines(&mut self, file: File, report: &mut VerifyReport) -> Result<(), Problem> {
        let mut lines = Lines::new(BufReader::new(file));
        loop {
            let read = lines.next_line().map_err(|(line_no, e)| {
                let detail = format!("read error: {e}");
                Problem::new(
                    ProblemKind::Unreadable,
                    self.path,
                    Some(line_no),
                    None,
                    detail,
                )
            })?;
            match read {
                Next::End => return Ok(()),
                Next::Torn(line_no, len) => {
                    report.warnings.push(format!(
                        "{} line {line_no}: torn last checkpoint ({len} bytes without a newline; \
                         a crash cut it short) — ignored",
                        self.path.display(),
                    ));
                    return Ok(());
                }
                Next::Line(line_no, line) => {
                    report.checkpoints += 1;
                    self.line(line, line_no, report)?;
                }
            }
        }
    }

    /// Checks one checkpoint line and records what it covers.
    fn line(
        &mut self,
        line: &[u8],
        line_no: u64,
        report: &mut VerifyReport,
    ) -> Result<(), Problem> {
        let bad = |seq: Option<u64>, detail: String| {
            Problem::new(
                ProblemKind::BadCheckpoint,
                self.path,
                Some(line_no),
                seq,
                detail,
            )
        };
        let cp = checkpoint::parse_and_check(line, self.key)
            .map_err(|defect| bad(None, self.defect(defect)))?;
        if self.key.is_some() {
            report.checkpoints_signed += 1;
        }
        if cp.prev != self.prev {
            let detail = "prev is not the hash of the checkpoint before: checkpoints were \
                          deleted, inserted or reordered";
            return Err(bad(Some(cp.last_seq), detail.to_owned()));
        }
        if cp.last_seq < self.last_seq {
            let detail = format!(
                "covers seq {} after a checkpoint that covered seq {}: checkpoints out of order",
                cp.last_seq, self.last_seq
            );
            return Err(bad(Some(cp.last_seq), detail));
        }
        self.prev = LineHash::of_line(line);
        self.last_seq = cp.last_seq;
        self.out.first_seq = Some(cp.first_seq);
        self.out.max = Some((cp.last_seq, line_no, cp.file.clone()));
        if cp.last_seq == 0 {
            // A `start` checkpoint of an empty log: covers nothing, matches trivially.
            report.checkpoints_matched += 1;
            return Ok(());
        }
        self.cover(&cp, line_no)
            .map_err(|detail| bad(Some(cp.last_seq), detail))
    }

    /// Records that `cp` covers its `last_seq`; errs when an earlier checkpoint gave that
    /// line another hash.
    fn cover(&mut self, cp: &Checkpoint, line_no: u64) -> Result<(), String> {
        let covered = self.out.by_seq.entry(cp.last_seq).or_insert(Covered {
            hash: cp.last_hash,
            line: line_no,
            count: 0,
        });
        if covered.hash != cp.last_hash {
            return Err(format!(
                "disagrees with checkpoints line {} about the hash of seq {}",
                covered.line, cp.last_seq
            ));
        }
        covered.count += 1;
        Ok(())
    }

    /// Why a checkpoint line was refused, for a human.
    fn defect(&self, defect: CheckpointDefect) -> String {
        match defect {
            CheckpointDefect::Malformed(why) => format!("not a valid checkpoint: {why}"),
            CheckpointDefect::WrongKey { named } => format!(
                "signed by key {named}, not by the given public key {}: forged, or verify with \
                 the key that was in use then",
                self.key.map(PublicKey::to_hex).unwrap_or_default()
            ),
            CheckpointDefect::BadSignature => {
                "invalid signature: the checkpoint was edited or forged".to_owned()
            }
        }
    }
}
