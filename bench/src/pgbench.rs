//! Running `pgbench` against one target and reading what it reports: throughput from its
//! summary, and per-transaction latencies from its `-l` log files (for p50/p99).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::stats;

/// Connection details shared by every pgbench run against a target.
#[derive(Debug, Clone)]
pub struct Conn {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
}

/// What one run does (besides where it connects).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `-S` select-only, `-N` writes, or a custom script file.
    pub script: Script,
    /// `-M`.
    pub mode: &'static str,
    pub clients: u32,
    pub threads: u32,
    /// `-C`: a new connection per transaction.
    pub connect_each: bool,
    /// `PGSSLMODE=require` instead of `disable`.
    pub tls: bool,
}

/// Which transaction script.
#[derive(Debug, Clone, PartialEq)]
pub enum Script {
    SelectOnly,
    SimpleUpdate,
    File(PathBuf),
}

/// One run's numbers.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub tps: f64,
    pub transactions: u64,
    /// From the `-l` log, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The common environment: password, TLS mode, no GSS encryption attempt, nothing
/// inherited that could change the session.
fn env(cmd: &mut tokio::process::Command, conn: &Conn, tls: bool) {
    cmd.env("PGPASSWORD", &conn.password)
        .env("PGSSLMODE", if tls { "require" } else { "disable" })
        .env("PGGSSENCMODE", "disable")
        .env_remove("PGOPTIONS")
        .env_remove("PGSERVICE")
        .env_remove("PGHOST")
        .env_remove("PGPORT");
}

fn conn_args(conn: &Conn) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        conn.port.to_string(),
        "-U".into(),
        conn.user.clone(),
    ]
}

/// `pgbench -i -s SCALE` (through `conn`, normally the direct target).
pub async fn init(conn: &Conn, scale: u32) -> Result<()> {
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.args(["-i", "-q", "-s", &scale.to_string()])
        .args(conn_args(conn))
        .arg(&conn.dbname);
    env(&mut cmd, conn, false);
    let out = cmd.output().await.context("running pgbench -i")?;
    if !out.status.success() {
        bail!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs `workload` for `seconds` against `conn`; per-transaction logs go to
/// `log_dir/<tag>*` and are removed after reading.
pub async fn run(
    conn: &Conn,
    workload: &Workload,
    seconds: u32,
    log_dir: &Path,
    tag: &str,
) -> Result<Outcome> {
    let prefix = log_dir.join(tag);
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.arg("-n");
    match &workload.script {
        Script::SelectOnly => {
            cmd.arg("-S");
        }
        Script::SimpleUpdate => {
            cmd.arg("-N");
        }
        Script::File(path) => {
            cmd.arg("-f").arg(path);
        }
    }
    if workload.connect_each {
        cmd.arg("-C");
    }
    cmd.args(["-M", workload.mode])
        .args(["-c", &workload.clients.to_string()])
        .args(["-j", &workload.threads.to_string()])
        .args(["-T", &seconds.to_string()])
        .arg("-l")
        .arg(format!("--log-prefix={}", prefix.display()))
        .args(conn_args(conn))
        .arg(&conn.dbname)
        .current_dir(log_dir)
        .stdin(Stdio::null());
    env(&mut cmd, conn, workload.tls);
    let out = cmd.output().await.context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let latencies = read_logs(log_dir, tag)?;
    if !out.status.success() {
        bail!(
            "pgbench failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n"),
            stdout
        );
    }
    let (tps, transactions) =
        parse_summary(&stdout).with_context(|| format!("reading pgbench's summary:\n{stdout}"))?;
    let mut lat = latencies;
    Ok(Outcome {
        tps,
        transactions,
        p50_ms: stats::percentile(&mut lat, 50.0).map_or(f64::NAN, |us| us as f64 / 1000.0),
        p99_ms: stats::percentile(&mut lat, 99.0).map_or(f64::NAN, |us| us as f64 / 1000.0),
    })
}

/// Latencies (µs, the 3rd field) of every log file `tag.*` in `dir`; deletes the files.
fn read_logs(dir: &Path, tag: &str) -> Result<Vec<u64>> {
    let mut all = Vec::new();
    let start = format!("{tag}.");
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&start) {
            continue;
        }
        let text = fs::read_to_string(entry.path())?;
        all.extend(parse_log(&text));
        fs::remove_file(entry.path())?;
    }
    Ok(all)
}

/// pgbench `-l` lines: `client_id transaction_no time script_no time_epoch time_us`;
/// `time` is the latency in µs (or `skipped`/`failed`, which are left out).
fn parse_log(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.lines()
        .filter_map(|l| l.split_ascii_whitespace().nth(2)?.parse().ok())
}

/// `(tps, transactions)` from pgbench's summary.
fn parse_summary(stdout: &str) -> Option<(f64, u64)> {
    let mut tps = None;
    let mut txns = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("tps = ") {
            tps = rest.split_whitespace().next()?.parse().ok();
        }
        if let Some(rest) = line.strip_prefix("number of transactions actually processed: ") {
            txns = rest.split('/').next()?.trim().parse().ok();
        }
    }
    Some((tps?, txns?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: prepared
number of clients: 16
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 861234
number of failed transactions: 0 (0.000%)
latency average = 0.185 ms
initial connection time = 25.121 ms
tps = 86123.456789 (without initial connection time)
";

    #[test]
    fn summary() {
        assert_eq!(parse_summary(SUMMARY), Some((86123.456789, 861234)));
        assert_eq!(parse_summary("tps = 5 (x)\n"), None);
    }

    #[test]
    fn log_lines() {
        let log =
            "0 1 180 0 1700000000 123456\n1 7 skipped 0 1700000000 1\n3 2 2500 0 1700000000 5\n";
        assert_eq!(parse_log(log).collect::<Vec<_>>(), vec![180, 2500]);
    }
}
