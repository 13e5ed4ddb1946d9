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
//!    [`LineHash::GENESIS`](crate::chain::LineHash::GENESIS) when it is `seq` 1; a later start is accepted only where a
//!    checkpoint says retention moved the start there.
//! 3. Every checkpointed `seq` present in the set hashes to the checkpoint's
//!    `last_hash`; no checkpoint covers more than the log holds (cut-off tail).
//!
//! Verification stops at the first problem in the log lines (what follows a break
//! cannot be trusted to mean anything) and reports it with its file, line and `seq`.
//!
//! # Layout
//!
//! `mod.rs` runs the three steps; the files below it, from the bottom up:
//!
//! - `report`: [`VerifyReport`], [`Problem`], [`ProblemKind`]: what is found.
//! - `lines`: a file's lines, a complete line told from a torn tail.
//! - `checkpoints`: step 1, the checkpoints file read and checked.
//! - `witness`: [`WitnessCheckpoints`], the witness's checkpoints added to step 1's.
//! - `set`: the files of the set, listed and opened.
//! - `links`: one log line checked against the line before and the checkpoints.
//! - `walk`: step 2, every line of every file through `links`.
//! - `cut_off`: step 3, checkpoints that cover more than the log holds.

mod checkpoints;
mod cut_off;
mod lines;
mod links;
mod report;
mod set;
mod walk;
mod witness;

use std::path::Path;

pub use report::{FileSummary, Problem, ProblemKind, VerifyReport};
pub use witness::WitnessCheckpoints;

use crate::error::AuditError;
use crate::fileset;
use crate::keys::PublicKey;
use links::Links;

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
    let mut checkpoints = checkpoints::read(&cp_path, key, &mut report);
    if let Some(witness) = witness {
        witness::add(&mut checkpoints, witness, key, &mut report);
    }
    let set = set::list(live)?;
    let mut links = Links::new(&mut report, &checkpoints);
    let walked = walk::walk(&mut links, &set.files, set.live);
    let last_seen = links.last_seq();
    match walked {
        Err(problem) => report.problems.insert(0, problem),
        Ok(()) => cut_off::check(&checkpoints, last_seen, &set.files, &cp_path, &mut report),
    }
    Ok(report)
}
