//! What verification finds: the [`VerifyReport`], its [`Problem`]s and their
//! [`ProblemKind`]s. Plain data, read by every other part of `verify`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::keys::PublicKey;

/// What kind of damage was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A line is not a chained audit event (not JSON, no `seq`, no `prev`, blank).
    Malformed,
    /// A line ends without `\n` somewhere other than the end of the live file.
    Torn,
    /// `seq` does not follow the line before: events deleted (gap), inserted or
    /// reordered (repeat or step back).
    Sequence,
    /// `prev` is not the hash of the line before: a line was edited, inserted, deleted
    /// or moved.
    ChainBroken,
    /// A closed file is missing, or files were swapped or renamed (a closed file's name
    /// does not match its first `seq`, or the set starts later than it should).
    Files,
    /// A file could not be read (I/O or decompression error).
    Unreadable,
    /// A checkpointed line's hash differs from the signed checkpoint: the log was
    /// rewritten (chain recomputed) at or before that `seq`.
    CheckpointMismatch,
    /// A checkpoint covers events the log no longer holds: the tail was cut off.
    CutOff,
    /// A checkpoint line is malformed, its signature is invalid, it names another key,
    /// or the checkpoints' own chain is broken: checkpoints were forged or edited.
    BadCheckpoint,
    /// Checkpoints exist but no public key was given, so their signatures were not
    /// checked.
    Unsigned,
    /// A signing key is configured but the checkpoints file is missing or holds no
    /// checkpoint: they were deleted, and with them the proof of where the log ended.
    NoCheckpoints,
    /// The witness could not be read, or holds a checkpoint that is not valid.
    Witness,
}

/// The first problem of one kind of check, located as precisely as possible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The file it is in (a log file or the checkpoints file).
    pub file: PathBuf,
    /// 1-based line in that file, when known.
    pub line: Option<u64>,
    /// The first `seq` that is bad (missing, edited, out of order, not covered…).
    pub seq: Option<u64>,
    /// Explanation for a human.
    pub detail: String,
}

impl Problem {
    /// A problem of `kind` in `file`, at `line` and `seq` when known.
    pub(super) fn new(
        kind: ProblemKind,
        file: &Path,
        line: Option<u64>,
        seq: Option<u64>,
        detail: String,
    ) -> Problem {
        Problem {
            kind,
            file: file.to_path_buf(),
            line,
            seq,
            detail,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(seq) = self.seq {
            write!(f, "seq {seq}: ")?;
        }
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// One file of the set as verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSummary {
    /// The file.
    pub path: PathBuf,
    /// First and last `seq` found in it (`None` when it holds no event).
    pub seqs: Option<(u64, u64)>,
    /// Whether it is zstd-compressed.
    pub compressed: bool,
}

/// Everything verification found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// The live file the set was found from.
    pub live: PathBuf,
    /// The files read, in order.
    pub files: Vec<FileSummary>,
    /// Events whose chain link was checked.
    pub events: u64,
    /// First and last `seq` of the set (as far as verification got).
    pub seqs: Option<(u64, u64)>,
    /// Whether the set starts at the beginning of the chain (seq 1, genesis `prev`).
    pub from_genesis: bool,
    /// Checkpoint lines in the checkpoints file.
    pub checkpoints: u64,
    /// Checkpoints whose signature was checked and valid.
    pub checkpoints_signed: u64,
    /// Checkpoints whose covered line was found and matched.
    pub checkpoints_matched: u64,
    /// Checkpoints covering events before the set's start (deleted by retention).
    pub checkpoints_retired: u64,
    /// Highest `seq` a valid checkpoint covers.
    pub last_checkpointed: Option<u64>,
    /// The public key used for signatures.
    pub key: Option<PublicKey>,
    /// Notes that do not make the log bad (a torn tail, no checkpoints configured…).
    pub warnings: Vec<String>,
    /// Losses an operator acknowledged (`log_cut_acknowledged` events): the log passes,
    /// and these say which events are gone and when that was accepted.
    pub acknowledged: Vec<String>,
    /// What the witness held, when one was given: its name, the number of its
    /// checkpoints and the highest `seq` they cover.
    pub witness: Option<(String, u64, Option<u64>)>,
    /// What is wrong; empty for a good log.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// No problem found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}
