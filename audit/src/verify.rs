//! `jitgate audit verify`: checks that a log set is exactly what jitgate wrote.
//!
//! Checked, in this order:
//!
//! 1. The checkpoints file: every line parses, names the given public key and carries a
//!    valid signature; each chains to the previous one (`prev`), and `last_seq` never
//!    goes backwards. Without a public key signatures cannot be checked, which is itself
//!    reported as a problem (a forger could have written them).
//! 2. Every line of every file of the set, oldest first: it ends with `\n` (only the
//!    very last line of the live file may be torn by a crash: a warning), it has `seq`
//!    and `prev`, `seq` is exactly one more than the line before, and `prev` is the
//!    SHA-256 of the line before (across file boundaries too). A closed file must
//!    start with the `seq` its name says. The first line of the set chains to
//!    [`LineHash::GENESIS`] when it is `seq` 1; a later start is accepted only where a
//!    checkpoint says retention moved the start there.
//! 3. Every checkpointed `seq` present in the set hashes to the checkpoint's
//!    `last_hash`; no checkpoint covers more than the log holds (cut-off tail).
//!
//! Verification stops at the first problem in the log lines (what follows a break
//! cannot be trusted to mean anything) and reports it with its file, line and `seq`.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::chain::LineHash;
use crate::checkpoint::{self, CheckpointDefect};
use crate::error::AuditError;
use crate::fileset::{self, file_name, LogFile};
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

/// A checkpoint as far as coverage checks need it.
#[derive(Clone, Debug)]
struct Covered {
    hash: LineHash,
    line: u64,
    /// Checkpoints naming this `seq` (an `events` and a `rotation` one may coincide).
    count: u64,
}

/// What the checkpoints file says, once checked.
#[derive(Default)]
struct Checkpoints {
    by_seq: HashMap<u64, Covered>,
    /// Where the set is meant to start (from the last valid checkpoint).
    first_seq: Option<u64>,
    /// The highest `last_seq` and the line of that checkpoint.
    max: Option<(u64, u64, String)>,
    /// The witness's highest checkpoint: `last_seq`, `first_seq`, when it was written.
    witness_max: Option<(u64, u64, jiff::Timestamp)>,
}

/// Checkpoints copied off the log's host, to check the log against.
#[derive(Clone, Debug)]
pub struct WitnessCheckpoints {
    /// Where they come from, for messages (e.g. `PostgreSQL grant store, log host:/path`).
    pub source: String,
    /// The stored checkpoint lines (without `\n`), in any order.
    pub lines: Vec<Vec<u8>>,
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

/// Only what the chain check needs of an event line.
#[derive(Deserialize)]
struct ChainFields {
    seq: u64,
    #[serde(default)]
    prev: Option<LineHash>,
}

/// Verifies the log set whose live file is `live` (and its checkpoints file), with
/// `key` for checkpoint signatures. Errs only when there is no log at all; everything
/// found wrong is in [`VerifyReport::problems`].
pub fn verify(live: &Path, key: Option<&PublicKey>) -> Result<VerifyReport, AuditError> {
    verify_with(live, key, None)
}

/// [`verify`], also checking the log against checkpoints kept by a witness off the log's
/// host: a witness checkpoint the log does not hold means the tail was cut, even when the
/// local checkpoints file was cut back with it.
pub fn verify_with(
    live: &Path,
    key: Option<&PublicKey>,
    witness: Option<&WitnessCheckpoints>,
) -> Result<VerifyReport, AuditError> {
    let cp_path = fileset::checkpoints_path(live);
    let mut report = VerifyReport {
        live: live.to_path_buf(),
        key: key.copied(),
        ..VerifyReport::default()
    };
    // Checkpoints first: they only ever cover lines already in the log, so reading the
    // log after them never finds a checkpoint ahead of it on a running jitgate.
    let mut checkpoints = read_checkpoints(&cp_path, key, &mut report);
    if let Some(witness) = witness {
        add_witness(&mut checkpoints, witness, key, &mut report);
    }
    // The live file is opened before the closed ones are listed, and a closed file that
    // is that same file (a rotation in between) is skipped, so a rotation while
    // verifying neither hides nor repeats lines.
    let mut live_file = match File::open(live) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(AuditError::Io {
                path: live.to_path_buf(),
                source,
            })
        }
    };
    let live_id = live_file.as_ref().and_then(fileset::file_id);
    let mut files = fileset::Naming::new(live)
        .closed_files()
        .map_err(|source| AuditError::Io {
            path: live.parent().unwrap_or(Path::new(".")).to_path_buf(),
            source,
        })?;
    if live_id.is_some() {
        files.retain(|f| {
            File::open(&f.path)
                .ok()
                .and_then(|opened| fileset::file_id(&opened))
                != live_id
        });
    }
    if live_file.is_some() {
        files.push(LogFile {
            path: live.to_path_buf(),
            first_seq: None,
            compressed: false,
        });
    }
    if files.is_empty() {
        return Err(AuditError::Io {
            path: live.to_path_buf(),
            source: io::ErrorKind::NotFound.into(),
        });
    }
    let mut walk = Walk {
        report: &mut report,
        checkpoints: &checkpoints,
        prev_hash: None,
        prev_seq: None,
        problem: None,
    };
    for (i, file) in files.iter().enumerate() {
        let at_end = i + 1 == files.len();
        let opened = if file.is_live() {
            live_file.take()
        } else {
            None
        };
        walk.file(file, opened, at_end);
        if walk.problem.is_some() {
            break;
        }
    }
    let problem = walk.problem.take();
    let last_seen = walk.prev_seq;
    match problem {
        Some(p) => report.problems.insert(0, p),
        None => check_cut_off(&checkpoints, last_seen, &files, &cp_path, &mut report),
    }
    Ok(report)
}

fn read_checkpoints(
    path: &Path,
    key: Option<&PublicKey>,
    report: &mut VerifyReport,
) -> Checkpoints {
    let mut out = Checkpoints::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && key.is_some() => {
            report.problems.push(no_checkpoints(path, "is missing"));
            return out;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.warnings.push(format!(
                "no checkpoints file ({}): checkpoints are written only when audit.signing_key_file \
                 is set. Only the hash chain was checked; a cut-off tail or a log rewritten with \
                 a recomputed chain cannot be detected without them",
                path.display()
            ));
            return out;
        }
        Err(e) => {
            report.problems.push(Problem {
                kind: ProblemKind::Unreadable,
                file: path.to_path_buf(),
                line: None,
                seq: None,
                detail: format!("cannot read the checkpoints file: {e}"),
            });
            return out;
        }
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut prev = LineHash::GENESIS;
    let mut last_seq = 0u64;
    let problem = |line: u64, seq: Option<u64>, kind: ProblemKind, detail: String| Problem {
        kind,
        file: path.to_path_buf(),
        line: Some(line),
        seq,
        detail,
    };
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                report.problems.push(Problem {
                    kind: ProblemKind::Unreadable,
                    file: path.to_path_buf(),
                    line: Some(line_no + 1),
                    seq: None,
                    detail: format!("read error: {e}"),
                });
                break;
            }
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            report.warnings.push(format!(
                "{} line {line_no}: torn last checkpoint ({} bytes without a newline; a crash \
                 cut it short) — ignored",
                path.display(),
                buf.len()
            ));
            break;
        }
        let line = &buf[..buf.len() - 1];
        report.checkpoints += 1;
        let cp = match checkpoint::parse_and_check(line, key) {
            Ok(cp) => cp,
            Err(defect) => {
                let detail = match defect {
                    CheckpointDefect::Malformed(why) => format!("not a valid checkpoint: {why}"),
                    CheckpointDefect::WrongKey { named } => format!(
                        "signed by key {named}, not by the given public key {}: forged, or \
                         verify with the key that was in use then",
                        key.map(PublicKey::to_hex).unwrap_or_default()
                    ),
                    CheckpointDefect::BadSignature => {
                        "invalid signature: the checkpoint was edited or forged".to_owned()
                    }
                };
                report
                    .problems
                    .push(problem(line_no, None, ProblemKind::BadCheckpoint, detail));
                break;
            }
        };
        if key.is_some() {
            report.checkpoints_signed += 1;
        }
        if cp.prev != prev {
            report.problems.push(problem(
                line_no,
                Some(cp.last_seq),
                ProblemKind::BadCheckpoint,
                "prev is not the hash of the checkpoint before: checkpoints were deleted, \
                 inserted or reordered"
                    .to_owned(),
            ));
            break;
        }
        if cp.last_seq < last_seq {
            report.problems.push(problem(
                line_no,
                Some(cp.last_seq),
                ProblemKind::BadCheckpoint,
                format!(
                    "covers seq {} after a checkpoint that covered seq {last_seq}: checkpoints \
                     out of order",
                    cp.last_seq
                ),
            ));
            break;
        }
        prev = LineHash::of_line(line);
        last_seq = cp.last_seq;
        out.first_seq = Some(cp.first_seq);
        out.max = Some((cp.last_seq, line_no, cp.file.clone()));
        if cp.last_seq == 0 {
            // A `start` checkpoint of an empty log: covers nothing, matches trivially.
            report.checkpoints_matched += 1;
            continue;
        }
        let covered = out.by_seq.entry(cp.last_seq).or_insert(Covered {
            hash: cp.last_hash,
            line: line_no,
            count: 0,
        });
        if covered.hash != cp.last_hash {
            report.problems.push(problem(
                line_no,
                Some(cp.last_seq),
                ProblemKind::BadCheckpoint,
                format!(
                    "disagrees with checkpoints line {} about the hash of seq {}",
                    covered.line, cp.last_seq
                ),
            ));
            break;
        }
        covered.count += 1;
    }
    if key.is_some() && report.checkpoints == 0 {
        report
            .problems
            .push(no_checkpoints(path, "holds no checkpoint"));
    }
    if key.is_none() && report.checkpoints > 0 {
        report.problems.push(Problem {
            kind: ProblemKind::Unsigned,
            file: path.to_path_buf(),
            line: None,
            seq: None,
            detail: format!(
                "{} checkpoint(s) present but their signatures were NOT checked: no public key \
                 (pass --public-key FILE, or the config naming audit.signing_key_file)",
                report.checkpoints
            ),
        });
    }
    report.last_checkpointed = out.max.as_ref().map(|m| m.0);
    out
}

/// The problem of a configured key without checkpoints.
fn no_checkpoints(path: &Path, what: &str) -> Problem {
    Problem {
        kind: ProblemKind::NoCheckpoints,
        file: path.to_path_buf(),
        line: None,
        seq: None,
        detail: format!(
            "a signing key is configured but the checkpoints file {what}: jitgate writes a \
             signed checkpoint as soon as it opens the log, so the checkpoints were deleted or \
             emptied, and a cut-off tail or a rewritten log cannot be ruled out (check against \
             a copy of the checkpoints, or with --witness)"
        ),
    }
}

/// Checks the witness's checkpoints (signature, agreement with the local ones) and adds
/// them to what the log is checked against.
fn add_witness(
    out: &mut Checkpoints,
    witness: &WitnessCheckpoints,
    key: Option<&PublicKey>,
    report: &mut VerifyReport,
) {
    let file = PathBuf::from(&witness.source);
    let problem = |seq: Option<u64>, detail: String| Problem {
        kind: ProblemKind::Witness,
        file: file.clone(),
        line: None,
        seq,
        detail,
    };
    if key.is_none() {
        report.problems.push(problem(
            None,
            "the witness's checkpoints cannot be checked without a public key (pass \
             --public-key FILE)"
                .into(),
        ));
        return;
    }
    for line in &witness.lines {
        let cp = match checkpoint::parse_and_check(line, key) {
            Ok(cp) => cp,
            Err(defect) => {
                report.problems.push(problem(
                    None,
                    format!("a checkpoint held by the witness is not valid: {defect:?}"),
                ));
                return;
            }
        };
        if cp.last_seq > 0 {
            let covered = out.by_seq.entry(cp.last_seq).or_insert(Covered {
                hash: cp.last_hash,
                line: 0,
                count: 0,
            });
            if covered.hash != cp.last_hash {
                report.problems.push(problem(
                    Some(cp.last_seq),
                    format!(
                        "the witness's checkpoint of seq {} disagrees with the checkpoints file \
                         about that line's hash: one of them was rewritten",
                        cp.last_seq
                    ),
                ));
                return;
            }
        }
        if out.witness_max.is_none_or(|(max, _, _)| cp.last_seq > max) {
            out.witness_max = Some((cp.last_seq, cp.first_seq, cp.ts));
        }
    }
    report.witness = Some((
        witness.source.clone(),
        witness.lines.len() as u64,
        out.witness_max.map(|m| m.0),
    ));
}

/// The line-by-line walk over the log files.
struct Walk<'a> {
    report: &'a mut VerifyReport,
    checkpoints: &'a Checkpoints,
    /// Hash of the line before (`None` before the first line of the set).
    prev_hash: Option<LineHash>,
    /// `seq` of the line before.
    prev_seq: Option<u64>,
    problem: Option<Problem>,
}

impl Walk<'_> {
    fn fail(
        &mut self,
        kind: ProblemKind,
        file: &Path,
        line: Option<u64>,
        seq: Option<u64>,
        detail: String,
    ) {
        self.problem = Some(Problem {
            kind,
            file: file.to_path_buf(),
            line,
            seq,
            detail,
        });
    }

    /// Checks every line of one file (`opened`: the file, when already open).
    fn file(&mut self, listed: &LogFile, opened: Option<File>, at_end: bool) {
        let found = match opened {
            Some(file) => Ok(Some((file, listed.clone()))),
            None => fileset::open(listed),
        };
        let opened = found.and_then(|found| match found {
            Some((file, found)) => {
                fileset::reader(file, found.compressed).map(|r| Some((r, found)))
            }
            None => Ok(None),
        });
        let (mut reader, found) = match opened {
            Ok(Some(opened)) => opened,
            Ok(None) => {
                let detail = "disappeared while verifying (rotation or retention running?)";
                return self.fail(
                    ProblemKind::Unreadable,
                    &listed.path,
                    None,
                    None,
                    detail.into(),
                );
            }
            Err(e) => {
                let detail = format!("cannot open: {e}");
                return self.fail(ProblemKind::Unreadable, &listed.path, None, None, detail);
            }
        };
        let path = found.path.clone();
        let mut summary = FileSummary {
            path: path.clone(),
            seqs: None,
            compressed: found.compressed,
        };
        let mut buf = Vec::with_capacity(4096);
        let mut line_no = 0u64;
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    let detail = format!("read error after line {line_no}: {e}");
                    let next = self.prev_seq.map(|s| s + 1);
                    self.fail(
                        ProblemKind::Unreadable,
                        &path,
                        Some(line_no + 1),
                        next,
                        detail,
                    );
                    break;
                }
            }
            line_no += 1;
            if buf.last() != Some(&b'\n') {
                let next = self.prev_seq.map(|s| s + 1);
                if found.is_live() && at_end {
                    self.report.warnings.push(format!(
                        "{} line {line_no}: torn last line ({} bytes without a newline): a crash \
                         cut it short; it is not an event and jitgate removes it on its next start",
                        path.display(),
                        buf.len()
                    ));
                } else {
                    self.fail(
                        ProblemKind::Torn,
                        &path,
                        Some(line_no),
                        next,
                        format!(
                            "line without a newline ({} bytes) that is not at the end of the live \
                             file: the file was truncated or damaged",
                            buf.len()
                        ),
                    );
                }
                break;
            }
            let line = &buf[..buf.len() - 1];
            if !self.line(line, &path, line_no, &found, &mut summary) {
                break;
            }
        }
        if self.problem.is_none() && summary.seqs.is_none() && !found.is_live() {
            self.fail(
                ProblemKind::Files,
                &path,
                None,
                listed.first_seq,
                "closed file holds no event".into(),
            );
        }
        self.report.files.push(summary);
    }

    /// Checks one line; false after a problem.
    fn line(
        &mut self,
        line: &[u8],
        path: &Path,
        line_no: u64,
        file: &LogFile,
        summary: &mut FileSummary,
    ) -> bool {
        let expected = self.prev_seq.map(|s| s + 1);
        let fields = match serde_json::from_slice::<ChainFields>(line) {
            Ok(f) => f,
            Err(e) => {
                let detail = if line.trim_ascii().is_empty() {
                    "blank line: not an event (lines were inserted or the file damaged)".to_owned()
                } else {
                    format!("not an audit event ({e}): edited or damaged")
                };
                self.fail(
                    ProblemKind::Malformed,
                    path,
                    Some(line_no),
                    expected,
                    detail,
                );
                return false;
            }
        };
        let seq = fields.seq;
        let Some(prev) = fields.prev else {
            let detail = "no prev field: the line is not hash-chained (edited, or written by a \
                          jitgate from before hash chaining)";
            self.fail(
                ProblemKind::Malformed,
                path,
                Some(line_no),
                Some(seq),
                detail.into(),
            );
            return false;
        };
        let first_of_file = summary.seqs.is_none();
        if first_of_file {
            if let Some(named) = file.first_seq.filter(|&n| n != seq) {
                let detail = format!(
                    "the file is named for seq {named} but starts with seq {seq}: files were \
                     swapped or renamed"
                );
                self.fail(
                    ProblemKind::Files,
                    path,
                    Some(line_no),
                    Some(named.min(seq)),
                    detail,
                );
                return false;
            }
        }
        match (expected, self.prev_hash) {
            (Some(expected), Some(prev_hash)) => {
                if seq > expected && self.acknowledged_gap(line, expected, seq) {
                    // An acknowledged loss: the chain continues from the line before.
                } else if seq != expected {
                    let (kind, detail) = if seq > expected && first_of_file {
                        (
                            ProblemKind::Files,
                            format!(
                                "the file starts with seq {seq} but the previous file ended at seq \
                                 {}: the file(s) holding seq {expected}..{} are missing",
                                expected - 1,
                                seq - 1
                            ),
                        )
                    } else if seq > expected {
                        (
                            ProblemKind::Sequence,
                            format!(
                                "seq {seq} follows seq {}: events {expected}..{} were deleted or \
                                 moved",
                                expected - 1,
                                seq - 1
                            ),
                        )
                    } else {
                        (
                            ProblemKind::Sequence,
                            format!(
                                "seq {seq} follows seq {}: an event was inserted, repeated or \
                                 moved",
                                expected - 1
                            ),
                        )
                    };
                    self.fail(kind, path, Some(line_no), Some(expected), detail);
                    return false;
                }
                if prev != prev_hash {
                    let before = expected - 1;
                    let detail = if first_of_file {
                        format!(
                            "prev does not match the last line of the previous file (seq {before}): \
                             a file was replaced or swapped, or seq {before} was edited"
                        )
                    } else {
                        format!(
                            "prev does not match the hash of the line before: seq {before} was \
                             edited, or an event was inserted, removed or moved here"
                        )
                    };
                    self.fail(
                        ProblemKind::ChainBroken,
                        path,
                        Some(line_no),
                        Some(before),
                        detail,
                    );
                    return false;
                }
            }
            _ => {
                if !self.first_line_of_set(seq, prev, path, line_no) {
                    return false;
                }
            }
        }
        let hash = LineHash::of_line(line);
        if let Some(covered) = self.checkpoints.by_seq.get(&seq) {
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
                self.fail(
                    ProblemKind::CheckpointMismatch,
                    path,
                    Some(line_no),
                    Some(seq),
                    detail,
                );
                return false;
            }
            self.report.checkpoints_matched += covered.count;
        }
        self.prev_hash = Some(hash);
        self.prev_seq = Some(seq);
        self.report.events += 1;
        summary.seqs = Some((summary.seqs.map_or(seq, |s| s.0), seq));
        self.report.seqs = Some((self.report.seqs.map_or(seq, |s| s.0), seq));
        true
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
    fn first_line_of_set(&mut self, seq: u64, prev: LineHash, path: &Path, line_no: u64) -> bool {
        if seq == 1 {
            if prev != LineHash::GENESIS {
                let detail =
                    "seq 1 does not chain to the genesis hash (64 zeros): the start of the \
                              log was replaced";
                self.fail(
                    ProblemKind::ChainBroken,
                    path,
                    Some(line_no),
                    Some(1),
                    detail.into(),
                );
                return false;
            }
            self.report.from_genesis = true;
            return true;
        }
        match self.checkpoints.first_seq {
            Some(first) if first < seq => {
                let detail = format!(
                    "the log starts at seq {seq}, but the last checkpoint says it holds events \
                     from seq {first}: the oldest file(s), seq {first}..{}, are missing",
                    seq - 1
                );
                self.fail(ProblemKind::Files, path, Some(line_no), Some(first), detail);
                false
            }
            Some(_) => {
                self.report.warnings.push(format!(
                    "the log starts at seq {seq}: older files were deleted by retention (as the \
                     checkpoints record); the chain is checked from there"
                ));
                true
            }
            None => {
                self.report.warnings.push(format!(
                    "the log starts at seq {seq}, not 1: older files are not present (retention?) \
                     and without checkpoints it cannot be told whether that is intended"
                ));
                true
            }
        }
    }
}

/// Checkpoints covering more than the log holds, and checkpoints of removed files.
fn check_cut_off(
    checkpoints: &Checkpoints,
    last_seen: Option<u64>,
    files: &[LogFile],
    cp_path: &Path,
    report: &mut VerifyReport,
) {
    let start = report.seqs.map(|s| s.0);
    report.checkpoints_retired = checkpoints
        .by_seq
        .iter()
        .filter(|(&s, _)| start.is_some_and(|start| s < start))
        .map(|(_, c)| c.count)
        .sum();
    if let Some((max_seq, first_seq, ts)) = checkpoints.witness_max {
        let local = checkpoints.max.as_ref().map_or(0, |m| m.0);
        if max_seq > local && last_seen.is_none_or(|last| last < max_seq) && max_seq >= first_seq {
            let missing_from = last_seen.map_or(1, |l| l + 1);
            report.problems.insert(
                0,
                Problem {
                    kind: ProblemKind::CutOff,
                    file: report.live.clone(),
                    line: None,
                    seq: Some(missing_from),
                    detail: format!(
                        "the log ends at seq {}, but the witness ({}) holds a signed checkpoint \
                         written {} covering up to seq {max_seq}, and {} stops at seq {local}: \
                         events {missing_from}..{max_seq} were cut off, and the checkpoints file \
                         was cut back with them",
                        last_seen.map_or_else(|| "(none)".to_owned(), |l| l.to_string()),
                        report.witness.as_ref().map_or("witness", |w| w.0.as_str()),
                        crate::time::display_micros(&ts),
                        file_name(cp_path),
                    ),
                },
            );
            return;
        }
    }
    let Some((max_seq, line, file)) = &checkpoints.max else {
        return;
    };
    if last_seen.is_some_and(|last| last >= *max_seq) {
        return;
    }
    // Everything it covers was deleted by retention (the set now starts later).
    if checkpoints.first_seq.is_some_and(|first| *max_seq < first) {
        return;
    }
    // Where the missing events were: the file the checkpoint names (in the log's
    // directory, whether or not it still exists).
    let log_file = files
        .iter()
        .find(|f| f.name() == *file)
        .map(|f| f.path.clone())
        .unwrap_or_else(|| match report.live.parent() {
            Some(dir) => dir.join(file),
            None => report.live.clone(),
        });
    let missing_from = last_seen.map_or(1, |l| l + 1);
    report.problems.insert(
        0,
        Problem {
            kind: ProblemKind::CutOff,
            file: log_file,
            line: None,
            seq: Some(missing_from),
            detail: format!(
                "the log ends at seq {}, but signed checkpoint {}:{line} covers up to seq \
                 {max_seq} (file {file}): events {missing_from}..{max_seq} were cut off",
                last_seen.map_or_else(|| "(none)".to_owned(), |l| l.to_string()),
                file_name(cp_path),
            ),
        },
    );
}
