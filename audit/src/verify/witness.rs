//! The witness's checkpoints, kept off the log's host: checked (signature, agreement
//! with the local checkpoints file) and added to what the log is checked against, so a
//! log cut back together with its checkpoints file is still caught.

use std::path::PathBuf;

use super::checkpoints::{Checkpoints, Covered};
use super::report::{Problem, ProblemKind, VerifyReport};
use crate::checkpoint;
use crate::keys::PublicKey;

/// Checkpoints copied off the log's host, to check the log against.
#[derive(Clone, Debug)]
pub struct WitnessCheckpoints {
    /// Where they come from, for messages (e.g. `PostgreSQL grant store, log host:/path`).
    pub source: String,
    /// The stored checkpoint lines (without `\n`), in any order.
    pub lines: Vec<Vec<u8>>,
}

/// Checks the witness's checkpoints (signature, agreement with the local ones) and adds
/// them to what the log is checked against.
pub(super) fn add(
    out: &mut Checkpoints,
    witness: &WitnessCheckpoints,
    key: Option<&PublicKey>,
    report: &mut VerifyReport,
) {
    let file = PathBuf::from(&witness.source);
    let problem = |seq: Option<u64>, detail: String| {
        Problem::new(ProblemKind::Witness, &file, None, seq, detail)
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
