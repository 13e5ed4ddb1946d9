//! Shrinking a failing sequence to a minimal one: each candidate runs alone on a fresh
//! connection (then the terminator), and is kept when it fails the same way: with the
//! same statements at the first difference ([`Failure::signature`]), or — when the
//! sequence alone fails, but differently — with a failure of the same class. First the
//! writes are joined into one, then messages are dropped by delta debugging (ddmin:
//! halves, quarters, … down to single messages, until no single message can go), then
//! the survivors are simplified (no row limit, no result or parameter formats).
//!
//! A failure that does not come back on a fresh connection is retried with the earlier
//! sequences of its connection in front (flattened into one sequence with their
//! terminators), since a tracker's state can carry over.

use super::exchange::terminator;
use super::msg::Msg;
use super::runner::{Failure, Runner};
use super::sequence::Sequence;

/// Most candidate runs one shrink may make.
const BUDGET: usize = 400;

/// The result of shrinking.
pub struct Shrunk {
    /// The smallest failing sequence found, with its failure and the server's answers;
    /// `None` when the failure did not come back on a fresh connection.
    pub minimal: Option<(Sequence, Failure, Vec<String>)>,
    /// Earlier sequences of the connection that had to be put in front (0 = none).
    pub history: usize,
    /// The minimal sequence differs at the same statements as the original failure
    /// (otherwise it fails in the same class only).
    pub same_difference: bool,
    /// Candidate runs made.
    pub runs: usize,
}

struct Shrinker<'a> {
    runner: &'a mut Runner,
    /// The failure to keep: a signature, or a class when `by_class`.
    keep: String,
    by_class: bool,
    runs: usize,
    best: Option<(Failure, Vec<String>)>,
}

impl Shrinker<'_> {
    /// Whether `seq` still fails the way we shrink for (remembering how).
    async fn fails(&mut self, seq: &Sequence) -> bool {
        if self.runs >= BUDGET {
            return false;
        }
        self.runs += 1;
        let run = self.runner.run_connection(std::slice::from_ref(seq)).await;
        match run.failure {
            Some(f) if self.keeps(&f) => {
                let answers = run
                    .exchanges
                    .into_iter()
                    .flat_map(|e| e.responses)
                    .collect();
                self.best = Some((f, answers));
                true
            }
            _ => false,
        }
    }

    fn keeps(&self, f: &Failure) -> bool {
        if self.by_class {
            f.class() == self.keep
        } else {
            f.signature() == self.keep
        }
    }

    async fn ddmin(&mut self, mut seq: Sequence) -> Sequence {
        let mut n = 2;
        while seq.msgs.len() >= 2 {
            let len = seq.msgs.len();
            let chunk = len.div_ceil(n);
            let mut smaller = None;
            for start in (0..len).step_by(chunk) {
                let mut cand = seq.clone();
                cand.msgs.drain(start..(start + chunk).min(len));
                if self.fails(&cand).await {
                    smaller = Some(cand);
                    break;
                }
            }
            match smaller {
                Some(cand) => {
                    seq = cand;
                    n = (n - 1).max(2);
                }
                None if n >= len => break,
                None => n = (n * 2).min(len),
            }
        }
        seq
    }

    /// Simpler variants of each message, kept where the failure stays.
    async fn simplify(&mut self, mut seq: Sequence) -> Sequence {
        for i in 0..seq.msgs.len() {
            let simpler = match &seq.msgs[i] {
                Msg::Execute { portal, max_rows } if *max_rows != 0 => Some(Msg::Execute {
                    portal: portal.clone(),
                    max_rows: 0,
                }),
                Msg::Bind {
                    portal,
                    statement,
                    formats,
                    params,
                    result_formats,
                } if !result_formats.is_empty() => Some(Msg::Bind {
                    portal: portal.clone(),
                    statement: statement.clone(),
                    formats: formats.clone(),
                    params: params.clone(),
                    result_formats: Vec::new(),
                }),
                Msg::Parse { name, sql, types } if !types.is_empty() => Some(Msg::Parse {
                    name: name.clone(),
                    sql: sql.clone(),
                    types: Vec::new(),
                }),
                _ => None,
            };
            if let Some(m) = simpler {
                let mut cand = seq.clone();
                cand.msgs[i] = m;
                if self.fails(&cand).await {
                    seq = cand;
                }
            }
        }
        seq
    }

    async fn shrink(&mut self, mut seq: Sequence) -> Sequence {
        if seq.pieces > 1 {
            let mut one = seq.clone();
            one.pieces = 1;
            if self.fails(&one).await {
                seq = one;
            }
        }
        let seq = self.ddmin(seq).await;
        self.simplify(seq).await
    }
}

/// One sequence made of `earlier` (each followed by its terminator) and then `last`, as
/// one write.
fn flatten(earlier: &[Sequence], last: &Sequence) -> Sequence {
    let mut msgs = Vec::new();
    for (j, s) in earlier.iter().enumerate() {
        msgs.extend(s.msgs.iter().cloned());
        // Marker numbers far from the connection's own, so they never end the read.
        msgs.extend(terminator(1_000_000 + j as u64));
    }
    msgs.extend(last.msgs.iter().cloned());
    Sequence {
        msgs,
        pieces: 1,
        cut_seed: last.cut_seed,
    }
}

/// Shrinks the last of `history` (the earlier ones ran before it on its connection),
/// which failed with `failure`.
pub async fn minimize(runner: &mut Runner, history: &[Sequence], failure: &Failure) -> Shrunk {
    let (last, earlier) = history.split_last().expect("a failing sequence");
    let mut s = Shrinker {
        runner,
        keep: failure.signature(),
        by_class: false,
        runs: 0,
        best: None,
    };
    let flat = flatten(earlier, last);
    let mut used_history = 0;
    let mut start = None;
    for by_class in [false, true] {
        s.by_class = by_class;
        s.keep = if by_class {
            failure.class().to_string()
        } else {
            failure.signature()
        };
        if s.fails(last).await {
            start = Some(last.clone());
        } else if !earlier.is_empty() && s.fails(&flat).await {
            used_history = earlier.len();
            start = Some(flat.clone());
        }
        if start.is_some() {
            break;
        }
    }
    let minimal = match start {
        None => None,
        Some(seq) => {
            let seq = s.shrink(seq).await;
            // `best` is set by every run that failed, and `seq` changes only then: it is
            // the failure of `seq`.
            s.best.take().map(|(f, answers)| (seq, f, answers))
        }
    };
    Shrunk {
        minimal,
        history: used_history,
        same_difference: !s.by_class,
        runs: s.runs,
    }
}
