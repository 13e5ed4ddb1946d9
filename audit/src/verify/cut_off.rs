//! Step 3 of verification: no checkpoint (local or the witness's) covers more than the
//! log holds; a cut-off tail is reported where the missing events were.

use std::path::Path;

use super::checkpoints::Checkpoints;
use super::report::{Problem, ProblemKind, VerifyReport};
use crate::fileset::{file_name, LogFile};

/// Checkpoints covering more than the log holds (`last_seen`: its last `seq`), and
/// checkpoints of files retention removed.
pub(super) fn check(
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
    let cut = witness_ahead(checkpoints, last_seen, cp_path, report)
        .or_else(|| checkpoint_ahead(checkpoints, last_seen, files, cp_path, report));
    if let Some(problem) = cut {
        report.problems.insert(0, problem);
    }
}

/// `last_seen` for messages.
fn log_end(last_seen: Option<u64>) -> String {
    last_seen.map_or_else(|| "(none)".to_owned(), |l| l.to_string())
}

/// The witness covers more than the log and the local checkpoints file: both were cut
/// back together.
fn witness_ahead(
    checkpoints: &Checkpoints,
    last_seen: Option<u64>,
    cp_path: &Path,
    report: &VerifyReport,
) -> Option<Problem> {
    let (max_seq, first_seq, ts) = checkpoints.witness_max?;
    let local = checkpoints.max.as_ref().map_or(0, |m| m.0);
    if max_seq <= local || last_seen.is_some_and(|last| last >= max_seq) || max_seq < first_seq {
        return None;
    }
    let missing_from = last_seen.map_or(1, |l| l + 1);
    let detail = format!(
        "the log ends at seq {}, but the witness ({}) holds a signed checkpoint written {} \
         covering up to seq {max_seq}, and {} stops at seq {local}: events \
         {missing_from}..{max_seq} were cut off, and the checkpoints file was cut back with them",
        log_end(last_seen),
        report.witness.as_ref().map_or("witness", |w| w.0.as_str()),
        crate::time::display_micros(&ts),
        file_name(cp_path),
    );
    let (kind, seq) = (ProblemKind::CutOff, Some(missing_from));
    Some(Problem::new(kind, &report.live, None, seq, detail))
}

/// The last local checkpoint covers more than the log holds.
fn checkpoint_ahead(
    checkpoints: &Checkpoints,
    last_seen: Option<u64>,
    files: &[LogFile],
    cp_path: &Path,
    report: &VerifyReport,
) -> Option<Problem> {
    let (max_seq, line, file) = checkpoints.max.as_ref()?;
    if last_seen.is_some_and(|last| last >= *max_seq) {
        return None;
    }
    // Everything it covers was deleted by retention (the set now starts later).
    if checkpoints.first_seq.is_some_and(|first| *max_seq < first) {
        return None;
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
    let detail = format!(
        "the log ends at seq {}, but signed checkpoint {}:{line} covers up to seq {max_seq} \
         (file {file}): events {missing_from}..{max_seq} were cut off",
        log_end(last_seen),
        file_name(cp_path),
    );
    let (kind, seq) = (ProblemKind::CutOff, Some(missing_from));
    Some(Problem::new(kind, &log_file, None, seq, detail))
}
