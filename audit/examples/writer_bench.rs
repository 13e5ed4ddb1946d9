//! Writer throughput: many concurrent sessions recording `query` events as fast as the
//! writer acknowledges them, in `write` and `fsync` durability.
//!
//! `cargo run --release -p jitgate-audit --example writer_bench [-- EVENTS [TASKS]]`
//! prints events/s per mode, and what the hash chain costs per line (one SHA-256 of
//! each line on the writer thread). It writes into a temporary directory on the current
//! disk.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use jitgate_audit::{
    AuditConfig, AuditWriter, Durability, Event, EventBody, Param, ParamFormat, Protocol,
};

fn event(task: u64, i: u64) -> Event {
    Event::new(EventBody::Query {
        query_id: i,
        protocol: Protocol::Extended,
        sql: "SELECT abalance FROM pgbench_accounts WHERE aid = $1".into(),
        statement: Some(String::new()),
        portal: Some(String::new()),
        params: vec![Param::from_wire(
            ParamFormat::Text,
            Some(23),
            Some(b"48213"),
        )],
        function_oid: None,
        params_from: None,
        truncated: false,
        sql_len: None,
        sql_sha256: None,
        setting_change: None,
    })
    .with_session(uuid::Uuid::now_v7())
    .with_identity(format!("bench{task}"))
    .with_target("prod")
    .with_role("readonly")
    .with_grant(uuid::Uuid::now_v7())
}

async fn run(durability: Durability, events: u64, tasks: u64) -> (f64, tempfile::TempDir) {
    let dir = tempfile::tempdir_in(".").unwrap();
    let mut cfg = AuditConfig::new(dir.path().join("audit.jsonl"));
    cfg.durability = durability;
    let (writer, guard) = AuditWriter::start(cfg).unwrap();
    let per_task = events / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    writer.write(event(t, i)).await.unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed();
    guard.close().await.unwrap();
    ((per_task * tasks) as f64 / elapsed.as_secs_f64(), dir)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(400_000);
    let tasks: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    for (name, durability) in [("write", Durability::Write), ("fsync", Durability::Fsync)] {
        let n = if durability == Durability::Fsync {
            events / 4
        } else {
            events
        };
        let mut rates: Vec<f64> = Vec::new();
        let mut last = None;
        for _ in 0..3 {
            let (rate, dir) = run(durability, n, tasks).await;
            rates.push(rate);
            last = Some(dir);
        }
        if let Some(dir) = last.filter(|_| durability == Durability::Write) {
            let live = dir.path().join("audit.jsonl");
            let bytes: u64 = jitgate_audit::log_files(&live)
                .unwrap()
                .iter()
                .map(|f| std::fs::metadata(&f.path).unwrap().len())
                .sum();
            let start = Instant::now();
            let report = jitgate_audit::verify(&live, None).unwrap();
            let secs = start.elapsed().as_secs_f64();
            assert!(report.is_ok(), "{:?}", report.problems);
            println!(
                "verify: {} events, {:.0} MB in {secs:.2} s: {:.0} MB/s",
                report.events,
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / secs
            );
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "{name:>5}: {n} events, {tasks} tasks: median {:.0} events/s (runs: {})",
            rates[1],
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut line = serde_json::to_vec(&event(7, 7)).unwrap();
    line.extend_from_slice(
        b",\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\"",
    );
    let rounds = 1_000_000u32;
    let start = Instant::now();
    let mut last = jitgate_audit::LineHash::GENESIS;
    for i in 0..rounds {
        line[0] = i as u8;
        last = jitgate_audit::LineHash::of_line(std::hint::black_box(&line));
    }
    let per_line = start.elapsed() / rounds;
    println!(
        "chain: SHA-256 of a {}-byte line takes {per_line:?} ({})",
        line.len(),
        last.short()
    );
}
