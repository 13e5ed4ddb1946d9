//! The throughput matrix of BENCHMARK.md: cells (workloads) × targets × rounds, with the
//! target order rotated every round so no target always runs first or last (a variant
//! `Pv` always right next to P, see [`order`]), and the proxy process's CPU time read
//! around every run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::pgbench::{self, Conn, Script, Workload};
use crate::procs;

/// A target: where pgbench connects, and which process to charge CPU to.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: &'static str,
    pub port: u16,
    /// The proxy's pid (none for D: Postgres is many processes).
    pub pid: Option<u32>,
    /// `Some(kind)`: runs only the cells of that kind (Pe, ephemeral users, runs only
    /// the connection storms: its per-statement path is P's).
    pub only: Option<Kind>,
}

impl Target {
    /// Whether this target runs `cell`.
    pub fn runs(&self, cell: &Cell) -> bool {
        self.only.is_none_or(|k| k == cell.kind)
    }
}

/// What a cell measures, for the report's grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `-S`, the BENCHMARK.md grid.
    SelectOnly,
    /// ~100 rows / ~10 KB per query.
    Large,
    /// `-N`, TPC-B-like writes.
    Writes,
    /// `-C -S`: a new SCRAM login per transaction.
    Storm,
}

/// One workload of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    pub name: String,
    pub kind: Kind,
    pub workload: Workload,
}

fn cell(
    kind: Kind,
    name: String,
    script: Script,
    mode: &'static str,
    clients: u32,
    tls: bool,
) -> Cell {
    let threads = if clients == 1 { 1 } else { 2 };
    Cell {
        name,
        kind,
        workload: Workload {
            script,
            mode,
            clients,
            threads,
            connect_each: kind == Kind::Storm,
            tls,
        },
    }
}

/// The cells: the full grid, or a smaller one for `--quick`.
pub fn cells(quick: bool, large_script: &Path) -> Vec<Cell> {
    let grid: &[(&'static str, u32)] = if quick {
        &[
            ("simple", 1),
            ("simple", 16),
            ("extended", 16),
            ("prepared", 16),
            ("prepared", 64),
        ]
    } else {
        &[
            ("simple", 1),
            ("simple", 16),
            ("simple", 64),
            ("extended", 1),
            ("extended", 16),
            ("extended", 64),
            ("prepared", 1),
            ("prepared", 16),
            ("prepared", 64),
        ]
    };
    let mut cells: Vec<Cell> = grid
        .iter()
        .map(|&(mode, c)| {
            cell(
                Kind::SelectOnly,
                format!("-S {mode} c{c}"),
                Script::SelectOnly,
                mode,
                c,
                false,
            )
        })
        .collect();
    cells.push(cell(
        Kind::Large,
        "100 rows prepared c16".into(),
        Script::File(PathBuf::from(large_script)),
        "prepared",
        16,
        false,
    ));
    cells.push(cell(
        Kind::Writes,
        "-N simple c16".into(),
        Script::SimpleUpdate,
        "simple",
        16,
        false,
    ));
    cells.push(cell(
        Kind::Storm,
        "-C -S c8 plain".into(),
        Script::SelectOnly,
        "simple",
        8,
        false,
    ));
    cells.push(cell(
        Kind::Storm,
        "-C -S c8 TLS".into(),
        Script::SelectOnly,
        "simple",
        8,
        true,
    ));
    cells
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub round: usize,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Proxy CPU (user + system) per transaction, µs.
    pub cpu_us: Option<f64>,
}

/// Everything the matrix measured.
#[derive(Debug, Default)]
pub struct Results {
    /// `(cell index, label)` → one sample per round.
    pub samples: HashMap<(usize, &'static str), Vec<Sample>>,
    pub failures: Vec<String>,
}

impl Results {
    /// The samples of a cell and target.
    pub fn get(&self, cell: usize, label: &str) -> &[Sample] {
        self.samples
            .iter()
            .find(|((c, l), _)| *c == cell && *l == label)
            .map_or(&[], |(_, v)| v.as_slice())
    }
}

/// `targets` rotated left by `round` (D R B P P0, R B P P0 D, …).
pub fn rotation<T: Clone>(targets: &[T], round: usize) -> Vec<T> {
    let mut v = targets.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

/// The order of `targets` in a round: rotated by `round`, then the variant `Pv` (when
/// there is one) moved right next to P — after it in even rounds, before it in odd ones.
/// P/Pv is how a change's cost is measured; on a shared machine the load of other
/// tenants changes over seconds, and with three other runs between them (as rotation
/// alone gives) that drift, not the change, decided a round's ratio.
pub fn order(targets: &[Target], round: usize) -> Vec<Target> {
    paired(rotation(targets, round), |t| t.label, round)
}

/// `v` with the element labelled `Pv` moved next to the one labelled `P` (after it when
/// `round` is even, before it when odd).
fn paired<T>(mut v: Vec<T>, label: impl Fn(&T) -> &str, round: usize) -> Vec<T> {
    let Some(from) = v.iter().position(|t| label(t) == "Pv") else {
        return v;
    };
    let pv = v.remove(from);
    match v.iter().position(|t| label(t) == "P") {
        Some(p) => v.insert(if round.is_multiple_of(2) { p + 1 } else { p }, pv),
        None => v.insert(from, pv),
    }
    v
}

/// Runs every cell against every target, `rounds` times.
pub async fn run(
    targets: &[Target],
    cells: &[Cell],
    rounds: usize,
    seconds: u32,
    conn: &Conn,
    log_dir: &Path,
) -> Results {
    let tck = procs::clock_ticks() as f64;
    let mut results = Results::default();
    let total: usize = rounds
        * cells
            .iter()
            .map(|c| targets.iter().filter(|t| t.runs(c)).count())
            .sum::<usize>();
    let started = Instant::now();
    let mut done = 0;
    for round in 0..rounds {
        for (ci, cell) in cells.iter().enumerate() {
            for target in order(targets, round) {
                if !target.runs(cell) {
                    continue;
                }
                done += 1;
                let conn = Conn {
                    port: target.port,
                    ..conn.clone()
                };
                let before = target.pid.and_then(procs::cpu_ticks);
                let tag = format!("r{round}c{ci}{}", target.label);
                let outcome = pgbench::run(&conn, &cell.workload, seconds, log_dir, &tag).await;
                let after = target.pid.and_then(procs::cpu_ticks);
                match outcome {
                    Ok(o) => {
                        let cpu_us = match (before, after) {
                            (Some(b), Some(a)) if o.transactions > 0 => Some(
                                (a.saturating_sub(b)) as f64 / tck * 1e6 / o.transactions as f64,
                            ),
                            _ => None,
                        };
                        eprintln!(
                            "  [{done}/{total} {:>4}s] round {} {:<22} {:<2} {:>9.0} tps  p99 {:>7.2} ms{}",
                            started.elapsed().as_secs(),
                            round + 1,
                            cell.name,
                            target.label,
                            o.tps,
                            o.p99_ms,
                            cpu_us.map_or(String::new(), |c| format!("  {c:.1} µs CPU/txn")),
                        );
                        results
                            .samples
                            .entry((ci, target.label))
                            .or_default()
                            .push(Sample {
                                round,
                                tps: o.tps,
                                p50_ms: o.p50_ms,
                                p99_ms: o.p99_ms,
                                cpu_us,
                            });
                    }
                    Err(e) => {
                        let msg =
                            format!("round {} {} {}: {e:#}", round + 1, cell.name, target.label);
                        eprintln!("  FAILED {msg}");
                        results.failures.push(msg);
                    }
                }
            }
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variant_runs_next_to_p_on_alternate_sides() {
        let t = ["D", "R", "B", "P", "P0", "Pv"];
        let at = |round| {
            let v = paired(rotation(&t, round), |s| s, round);
            let p = v.iter().position(|s| *s == "P").unwrap();
            let pv = v.iter().position(|s| *s == "Pv").unwrap();
            assert_eq!(v.len(), t.len());
            pv as isize - p as isize
        };
        for round in 0..12 {
            assert_eq!(
                at(round),
                if round.is_multiple_of(2) { 1 } else { -1 },
                "round {round}"
            );
        }
        // Without a variant, the rotation is left as it is.
        let plain = ["D", "R", "B", "P", "P0"];
        assert_eq!(paired(rotation(&plain, 2), |s| s, 2), rotation(&plain, 2));
    }

    #[test]
    fn rotation_moves_the_first_to_the_end() {
        let t = ["D", "R", "B", "P", "P0"];
        assert_eq!(rotation(&t, 0), t);
        assert_eq!(rotation(&t, 1), ["R", "B", "P", "P0", "D"]);
        assert_eq!(rotation(&t, 5), t);
        assert!(rotation::<u8>(&[], 3).is_empty());
    }

    #[test]
    fn quick_grid_is_smaller_and_threads_follow_clients() {
        let full = cells(false, Path::new("x.sql"));
        let quick = cells(true, Path::new("x.sql"));
        assert!(quick.len() < full.len());
        assert_eq!(
            full.iter().filter(|c| c.kind == Kind::SelectOnly).count(),
            9
        );
        for c in &full {
            let expected = if c.workload.clients == 1 { 1 } else { 2 };
            assert_eq!(c.workload.threads, expected, "{}", c.name);
            assert_eq!(c.workload.connect_each, c.kind == Kind::Storm);
        }
    }
}
