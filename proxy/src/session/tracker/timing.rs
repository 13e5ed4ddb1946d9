//! A quick timing loop of the tracker alone (not a test: `#[ignore]`d, run by hand in a
//! release build with `cargo test --release -p jitgate-proxy --lib tracker::timing --
//! --ignored --nocapture`): one pgbench-like transaction per iteration, client messages
//! in one small batch buffer, and the server's replies — the per-statement path whose
//! cost BENCHMARKS.md budgets.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::Tracker;
use crate::protocol::tags;

fn frame(b: &mut BytesMut, tag: u8, body: &[u8]) -> (u8, usize, usize) {
    let start = b.len() + 5;
    b.put_u8(tag);
    b.put_i32(body.len() as i32 + 4);
    b.put_slice(body);
    (tag, start, b.len())
}

fn cstr(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(s);
    v.push(0);
}

/// (batch, frames) of one transaction: `-M extended` (Parse of the unnamed statement
/// each time) or `-M prepared` (Bind of a named statement parsed once).
fn transaction(extended: bool) -> (Bytes, Vec<(u8, usize, usize)>) {
    let mut b = BytesMut::new();
    let mut frames = Vec::new();
    let statement: &[u8] = if extended { b"" } else { b"P_1" };
    if extended {
        let mut p = Vec::new();
        cstr(&mut p, b"");
        cstr(
            &mut p,
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        );
        p.extend_from_slice(&0i16.to_be_bytes());
        frames.push(frame(&mut b, tags::PARSE, &p));
    }
    let mut bind = Vec::new();
    cstr(&mut bind, b"");
    cstr(&mut bind, statement);
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&5i32.to_be_bytes());
    bind.extend_from_slice(b"12345");
    bind.extend_from_slice(&0i16.to_be_bytes());
    frames.push(frame(&mut b, tags::BIND, &bind));
    let mut exec = Vec::new();
    cstr(&mut exec, b"");
    exec.extend_from_slice(&0i32.to_be_bytes());
    frames.push(frame(&mut b, tags::EXECUTE, &exec));
    frames.push(frame(&mut b, tags::SYNC, &[]));
    (b.freeze(), frames)
}

fn run(extended: bool, n: u32) -> f64 {
    let mut t = Tracker::default();
    let mut events = Vec::new();
    let mut out = Vec::new();
    if !extended {
        let mut p = Vec::new();
        cstr(&mut p, b"P_1");
        cstr(
            &mut p,
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        );
        p.extend_from_slice(&0i16.to_be_bytes());
        t.on_client(tags::PARSE, Bytes::from(p), &mut events)
            .unwrap();
        t.on_client(tags::SYNC, Bytes::new(), &mut events).unwrap();
        t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
        t.on_server(tags::READY_FOR_QUERY, b"I", &mut out);
    }
    let start = Instant::now();
    for _ in 0..n {
        // A fresh buffer per transaction, as the relay's batches are.
        let (wire, frames) = transaction(extended);
        let batch = Bytes::copy_from_slice(&wire);
        for &(tag, s, e) in &frames {
            t.on_client(tag, batch.slice(s..e), &mut events).unwrap();
        }
        if extended {
            t.on_server(tags::PARSE_COMPLETE, b"", &mut out);
        }
        t.on_server(tags::BIND_COMPLETE, b"", &mut out);
        t.on_server_header(tags::DATA_ROW, 11, &mut out);
        t.on_server(tags::COMMAND_COMPLETE, b"SELECT 1\0", &mut out);
        t.on_server(tags::READY_FOR_QUERY, b"I", &mut out);
        std::hint::black_box(&events);
        events.clear();
        out.clear();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

#[test]
#[ignore = "a timing loop, run by hand in a release build"]
fn tracker_per_transaction() {
    // Fewer iterations for a run under valgrind (instruction counts, exact).
    let env = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, n) = (env("TIMING_ROUNDS", 5), env("TIMING_N", 200_000));
    for round in 0..rounds {
        // TIMING_ONLY=extended|prepared: one of the two (for instruction counts).
        let only = std::env::var("TIMING_ONLY").unwrap_or_default();
        let ext = if only == "prepared" {
            0.0
        } else {
            run(true, n)
        };
        let prep = if only == "extended" {
            0.0
        } else {
            run(false, n)
        };
        eprintln!("round {round}: extended {ext:.3} us/txn, prepared {prep:.3} us/txn");
    }
}
