//! Criterion microbenches of audit encoding: turning the events a session writes for every
//! query (`query`, `query_result`, with their `prev` hash set as in the log) into a JSON
//! line, with the serde derive (serde_json) and with the writer's encoder
//! (`jitgate_audit::line`, which must produce the same bytes). The hash chain and the
//! file write are not included.
//!
//! The events are built from JSON text so the bench keeps compiling as optional fields are
//! added to the schema. Run: `cargo bench -p jitgate-audit --bench encode`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jitgate_audit::{line, Event, LineHash, Param, ParamFormat};

/// What pgbench `-M prepared -S` produces per transaction: a `query` event with one text
/// parameter …
const QUERY: &str = r#"{"v":1,"seq":0,"ts":"2026-11-27T23:38:19.123456Z","session_id":"0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b","identity":"alice","target":"prod","role":"readonly","grant_id":"0193a2b4-0000-7000-8000-000000000001","kind":"query","query_id":2,"protocol":"extended","sql":"SELECT abalance FROM pgbench_accounts WHERE aid = $1;","statement":"P0_1","portal":"","params":[{"format":"text","type_oid":23,"value":"123456"}]}"#;
/// … and a `query_result` event.
const RESULT: &str = r#"{"v":1,"seq":0,"ts":"2026-11-27T23:38:19.123789Z","session_id":"0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b","identity":"alice","target":"prod","role":"readonly","grant_id":"0193a2b4-0000-7000-8000-000000000001","kind":"query_result","query_id":2,"tag":"SELECT 1","rows":1,"duration_us":57}"#;

fn encode(c: &mut Criterion) {
    let events: Vec<(&str, Event)> = [("query", QUERY), ("query_result", RESULT)]
        .into_iter()
        .filter_map(|(name, json)| match serde_json::from_str::<Event>(json) {
            Ok(mut e) => {
                e.prev = Some(LineHash::of_line(b"the previous line"));
                Some((name, e))
            }
            Err(err) => {
                eprintln!("encode bench: {name} event no longer matches the schema: {err}");
                None
            }
        })
        .collect();
    let mut g = c.benchmark_group("audit encode");
    let mut line = Vec::with_capacity(1024);
    for (name, event) in &events {
        let len = serde_json::to_vec(event).map_or(0, |v| v.len() + 1);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{name} event → JSON line"), |b| {
            b.iter(|| {
                line.clear();
                let ok = serde_json::to_writer(&mut line, event).is_ok();
                line.push(b'\n');
                (ok, line.len())
            })
        });
        g.bench_function(
            format!("{name} event → log line (writer's encoder)"),
            |b| {
                b.iter(|| {
                    line.clear();
                    let ok = line::encode(event, &mut line).is_ok();
                    line.push(b'\n');
                    (ok, line.len())
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("audit param");
    g.bench_function("text bind parameter → Param", |b| {
        b.iter(|| Param::from_wire(ParamFormat::Text, Some(23), Some(b"123456")))
    });
    g.bench_function("binary bind parameter → Param (base64)", |b| {
        b.iter(|| {
            Param::from_wire(
                ParamFormat::Binary,
                Some(17),
                Some(&[0u8, 1, 2, 255, 7, 9, 11, 13]),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
