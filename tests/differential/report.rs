//! What a failing run prints: the seed, the sequence's number, and the minimal sequence
//! with the server's answers and the two sides of the comparison.

use std::fmt;

use super::runner::Failure;
use super::sequence::Sequence;
use super::shrink::Shrunk;

/// One failure found, shrunk.
pub struct Finding {
    pub seed: u64,
    /// Number of the failing sequence in the run (0-based).
    pub number: usize,
    /// Its index on its connection.
    pub on_connection: usize,
    pub original: Sequence,
    pub original_failure: Failure,
    pub shrunk: Shrunk,
}

impl Finding {
    /// The minimal sequence with its `/*qN*/` tags and marker numbers blanked: two
    /// findings with the same shape are the same finding.
    pub fn shape(&self) -> String {
        let text = match &self.shrunk.minimal {
            Some((seq, _, _)) => seq.msgs.iter().map(|m| format!("{m}\n")).collect(),
            None => String::from("(not reproduced)"),
        };
        let mut out = String::new();
        let mut digits = false;
        for c in text.chars() {
            if c.is_ascii_digit() {
                if !digits {
                    out.push('#');
                }
                digits = true;
            } else {
                digits = false;
                out.push(c);
            }
        }
        out
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== seed {} (JITGATE_DIFF_SEED={}), sequence {} (#{} on its connection): {}",
            self.seed,
            self.seed,
            self.number,
            self.on_connection,
            self.original_failure.class()
        )?;
        match &self.shrunk.minimal {
            None => {
                writeln!(
                    f,
                    "did not fail again on a fresh connection (alone or after the earlier \
                     sequences of its connection); the sequence as generated:"
                )?;
                write!(f, "{}", self.original)?;
                writeln!(f, "its failure:\n{}", self.original_failure)
            }
            Some((seq, failure, answers)) => {
                write!(f, "minimal sequence after {} runs", self.shrunk.runs)?;
                if !self.shrunk.same_difference {
                    write!(f, " (fails in the same class, not at the same statements)")?;
                }
                if self.shrunk.history > 0 {
                    write!(
                        f,
                        " (needed the {} earlier sequences of its connection)",
                        self.shrunk.history
                    )?;
                }
                writeln!(
                    f,
                    ", each run on a fresh connection and followed by the terminator \
                     (CopyFail, Sync, Query ROLLBACK /*reset*/, Close of every valid name, \
                     Sync, marker Query):"
                )?;
                write!(f, "{seq}")?;
                writeln!(f, "answers: {}", answers.join(" "))?;
                writeln!(f, "{failure}")
            }
        }
    }
}
