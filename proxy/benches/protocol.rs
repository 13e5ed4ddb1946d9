//! Criterion microbenches of the relay's hot path, through the public protocol API:
//! splitting client frames, decoding the messages audit needs (Query, Parse, Bind), and
//! walking server output with the relay's streaming `BackendScanner`.
//!
//! Run: `cargo bench -p jitgate-proxy --bench protocol`.

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jitgate_proxy::protocol::backend::{parse_command_complete, parse_ready_for_query};
use jitgate_proxy::protocol::frontend::{parse_bind, parse_parse, parse_query};
use jitgate_proxy::protocol::scan::BackendScanner;
use jitgate_proxy::protocol::{split_frame, tags};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

const MAX: usize = 64 * 1024 * 1024;
const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// What pgbench `-M prepared -S` sends per transaction: Bind, Execute, Sync.
fn prepared_txn() -> BytesMut {
    let mut buf = BytesMut::new();
    frontend::bind(
        "",
        "P0_1",
        Some(0),
        [&b"123456"[..]],
        |v, out| {
            out.put_slice(v);
            Ok::<_, Box<dyn std::error::Error + Sync + Send>>(IsNull::No)
        },
        Some(0),
        &mut buf,
    )
    .map_err(|_| "bind")
    .unwrap_or_default();
    frontend::execute("", 0, &mut buf).unwrap_or_default();
    frontend::sync(&mut buf);
    buf
}

/// The body of the first frame of `wire`.
fn first_body(wire: &[u8]) -> Bytes {
    let mut b = BytesMut::from(wire);
    match split_frame(&mut b, MAX) {
        Ok(Some(f)) => f.body,
        _ => Bytes::new(),
    }
}

/// The server's answer to one `-S` transaction: BindComplete, DataRow, CommandComplete,
/// ReadyForQuery.
fn small_result() -> Vec<u8> {
    let mut v = frame(tags::BIND_COMPLETE, b"");
    v.extend(frame(tags::DATA_ROW, b"\0\x01\0\0\0\x041234"));
    v.extend(frame(tags::COMMAND_COMPLETE, b"SELECT 1\0"));
    v.extend(frame(tags::READY_FOR_QUERY, b"I"));
    v
}

/// 100 rows of (int, int, int, char(84)): ~11 KB, the harness's large-result cell.
fn large_result() -> Vec<u8> {
    let mut v = frame(tags::BIND_COMPLETE, b"");
    for i in 0..100u32 {
        let mut row = Vec::new();
        row.extend_from_slice(&4i16.to_be_bytes());
        for col in [
            format!("{}", 500_000 + i),
            "5".into(),
            "0".into(),
            " ".repeat(84),
        ] {
            row.extend_from_slice(&(col.len() as i32).to_be_bytes());
            row.extend_from_slice(col.as_bytes());
        }
        v.extend(frame(tags::DATA_ROW, &row));
    }
    v.extend(frame(tags::COMMAND_COMPLETE, b"SELECT 100\0"));
    v.extend(frame(tags::READY_FOR_QUERY, b"I"));
    v
}

/// What the relay does with server output: walk the headers, decode only what completes a
/// query.
fn scan(chunk: &[u8]) -> (u64, usize) {
    let mut rows = 0;
    let mut data = 0;
    let mut scanner = BackendScanner::default();
    let scanned = scanner.feed(chunk, |m| match (m.tag, m.body) {
        (tags::DATA_ROW, _) => data += m.len,
        (tags::COMMAND_COMPLETE, Some(body)) => {
            rows += parse_command_complete(body)
                .and_then(|t| t.rows)
                .unwrap_or(0)
        }
        (tags::READY_FOR_QUERY, Some(body)) => {
            rows += u64::from(parse_ready_for_query(body).is_some())
        }
        _ => {}
    });
    assert!(scanned.is_ok());
    (rows, data)
}

fn client_side(c: &mut Criterion) {
    let txn = prepared_txn();
    let mut g = c.benchmark_group("client");
    g.throughput(Throughput::Bytes(txn.len() as u64));
    g.bench_function("split_frame Bind+Execute+Sync", |b| {
        b.iter_batched(
            || txn.clone(),
            |mut buf| {
                let mut n = 0;
                while let Ok(Some(f)) = split_frame(&mut buf, MAX) {
                    n += f.body.len();
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut q = BytesMut::new();
    frontend::query(
        "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;",
        &mut q,
    )
    .unwrap_or_default();
    let query = first_body(&q);
    let mut p = BytesMut::new();
    frontend::parse("P0_1", SELECT, [23], &mut p).unwrap_or_default();
    let parse = first_body(&p);
    let bind = first_body(&txn);

    let mut g = c.benchmark_group("decode");
    g.bench_function("parse_query", |b| {
        b.iter(|| parse_query(query.clone()).map(|q| q.sql.len()))
    });
    g.bench_function("parse_parse", |b| {
        b.iter(|| parse_parse(parse.clone()).map(|p| p.sql.len()))
    });
    g.bench_function("parse_bind 1 text param", |b| {
        b.iter(|| parse_bind(bind.clone()).map(|b| b.params.len()))
    });
    g.finish();
}

fn server_side(c: &mut Criterion) {
    let mut g = c.benchmark_group("server");
    for (name, chunk) in [
        ("scan -S answer", small_result()),
        ("scan 100-row answer", large_result()),
    ] {
        g.throughput(Throughput::Bytes(chunk.len() as u64));
        g.bench_function(name, |b| b.iter(|| scan(std::hint::black_box(&chunk))));
    }
    g.finish();
}

criterion_group!(benches, client_side, server_side);
criterion_main!(benches);
