//! Throughput of the audit log readers (`jitgate audit search/sessions/replay/export`)
//! over a generated, hash-chained log of 1 GiB (set `JITGATE_BENCH_LOG_MB` for another
//! size), reported by criterion in bytes of log per second.
//!
//! The log is a realistic mix: interleaved sessions of 200 identities on 10 targets,
//! pgbench-like simple queries, extended queries with parameters, longer ORM statements,
//! a few truncated statements, errors, COPYs, role changes, grant events. It is written
//! once into a temporary directory and stays in the page cache, so the figures are the
//! scanners' CPU cost, not the disk's.
//!
//! Run: `cargo bench -p jitgate-audit --bench scan`.

// A benchmark, like a test: a failure to set up should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jiff::{SignedDuration, Timestamp};
use jitgate_audit::chain::LineHash;
use jitgate_audit::query::{self, ExportFormat, Filter};
use jitgate_audit::{
    CopyDirection, EndReason, Event, EventBody, Param, ParamFormat, Protocol, SettingChange,
};
use uuid::Uuid;

/// A small deterministic PRNG (xorshift64*), so every run generates the same log.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, per_10k: u64) -> bool {
        self.below(10_000) < per_10k
    }
}

struct Session {
    id: Uuid,
    identity: String,
    target: String,
    role: &'static str,
    grant: Uuid,
    next_query: u64,
    /// The query waiting for its result: (query_id, is an error, is a COPY).
    pending: Option<(u64, bool, bool)>,
    left: u64,
}

struct Generator {
    rng: Rng,
    out: BufWriter<File>,
    prev: LineHash,
    seq: u64,
    now: Timestamp,
    written: u64,
    line: Vec<u8>,
    /// A session in the middle of the log, for the replay benchmark.
    sample: Option<Uuid>,
}

impl Generator {
    fn emit(&mut self, s: Option<&Session>, body: EventBody) {
        let mut e = Event::new(body);
        if let Some(s) = s {
            e = e
                .with_session(s.id)
                .with_identity(s.identity.clone())
                .with_target(s.target.clone())
                .with_role(s.role)
                .with_grant(s.grant);
        }
        self.emit_event(e);
    }

    /// Stamps (time, seq, chain) and writes one event.
    fn emit_event(&mut self, mut e: Event) {
        self.seq += 1;
        self.now += SignedDuration::from_micros(1 + self.rng.below(200) as i64);
        e = e.with_ts(self.now);
        e.seq = self.seq;
        e.prev = Some(self.prev);
        self.line.clear();
        serde_json::to_writer(&mut self.line, &e).unwrap();
        self.prev = LineHash::of_line(&self.line);
        self.line.push(b'\n');
        self.out.write_all(&self.line).unwrap();
        self.written += self.line.len() as u64;
    }

    fn new_session(&mut self) -> Session {
        let who = self.rng.below(200);
        let target = format!("t{}", self.rng.below(10));
        let grant = Uuid::now_v7();
        let s = Session {
            id: Uuid::now_v7(),
            identity: format!("user{who}"),
            target,
            role: if self.rng.chance(3000) { "rw" } else { "ro" },
            grant,
            next_query: 0,
            pending: None,
            left: 20 + self.rng.below(400),
        };
        if self.rng.chance(2000) {
            let mut e = Event::new(EventBody::GrantIssued {
                not_before: self.now,
                expires_at: self.now + SignedDuration::from_hours(1),
                reason: format!("INC-{} investigate slow checkout", self.rng.below(99_999)),
                issued_by: "oncall-lead".into(),
            });
            e = e
                .with_identity(s.identity.clone())
                .with_target(s.target.clone())
                .with_role(s.role)
                .with_grant(grant);
            self.emit_event(e);
        }
        let port = 40_000 + self.rng.below(20_000);
        let (a, b) = (self.rng.below(255), self.rng.below(255));
        let pid = 10_000 + self.rng.below(50_000) as i32;
        let deadline = self.now + SignedDuration::from_hours(1);
        self.emit(
            Some(&s),
            EventBody::SessionStart {
                client_addr: format!("10.0.{a}.{b}:{port}"),
                tls: true,
                application_name: Some("psql".into()),
                deadline,
                upstream_pid: Some(pid),
                upstream_reused: false,
            },
        );
        s
    }

    fn query(&mut self, s: &mut Session) {
        s.next_query += 1;
        let id = s.next_query;
        let r = self.rng.below(10_000);
        let aid = self.rng.below(100_000);
        let mut params = Vec::new();
        let (protocol, sql, truncated) = if r < 5_500 {
            let sql = match self.rng.below(3) {
                0 => format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"),
                1 => format!(
                    "UPDATE pgbench_accounts SET abalance = abalance + {} WHERE aid = {aid};",
                    self.rng.below(10_000) as i64 - 5_000
                ),
                _ => format!(
                    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({}, 1, {aid}, {}, CURRENT_TIMESTAMP);",
                    self.rng.below(10),
                    self.rng.below(5_000)
                ),
            };
            (Protocol::Simple, sql, false)
        } else if r < 8_500 {
            params.push(Param::from_wire(
                ParamFormat::Text,
                Some(23),
                Some(aid.to_string().as_bytes()),
            ));
            if self.rng.chance(5_000) {
                params.push(Param::from_wire(
                    ParamFormat::Binary,
                    Some(17),
                    Some(&aid.to_be_bytes()),
                ));
                params.push(Param::from_wire(
                    ParamFormat::Text,
                    Some(25),
                    Some(b"customer@example.com"),
                ));
            }
            (
                Protocol::Extended,
                "SELECT id, email, status, created_at FROM customers WHERE id = $1 AND tenant = $2 AND email = $3".into(),
                false,
            )
        } else if r < 9_400 {
            (
                Protocol::Simple,
                format!(
                    "SELECT o.id, o.status, o.total_cents, c.email, c.name, a.street, a.city, a.zip, \
                     p.sku, p.title, li.quantity, li.unit_price_cents FROM orders o JOIN customers c \
                     ON c.id = o.customer_id JOIN addresses a ON a.id = o.shipping_address_id JOIN \
                     line_items li ON li.order_id = o.id JOIN products p ON p.id = li.product_id WHERE \
                     o.created_at > now() - interval '7 days' AND c.id = {aid} AND o.status IN \
                     ('paid', 'shipped', 'refunded') ORDER BY o.created_at DESC LIMIT 50"
                ),
                false,
            )
        } else if r < 9_450 {
            (
                Protocol::Simple,
                format!(
                    "INSERT INTO events (payload) VALUES {}",
                    "('{\"k\":\"v\",\"n\":1}'), ".repeat(90)
                ),
                true,
            )
        } else if r < 9_500 {
            (Protocol::Simple, "SET ROLE reporting".into(), false)
        } else if r < 9_501 {
            (Protocol::Simple, format!("DROP TABLE scratch_{aid}"), false)
        } else if r < 9_600 {
            (
                Protocol::Simple,
                format!("COPY (SELECT * FROM pgbench_history WHERE aid = {aid}) TO STDOUT"),
                false,
            )
        } else {
            (
                Protocol::Simple,
                format!("SELECT * FROM missing_table_{} WHERE id = {aid}", aid % 7),
                false,
            )
        };
        let error = sql.starts_with("SELECT * FROM missing_table");
        let copy = sql.starts_with("COPY");
        let setting = sql.starts_with("SET ROLE").then_some(SettingChange::Role);
        let len = sql.len() as u64;
        self.emit(
            Some(s),
            EventBody::Query {
                query_id: id,
                protocol,
                sql: if truncated {
                    sql[..2048.min(sql.len())].to_owned()
                } else {
                    sql
                },
                truncated,
                sql_len: truncated.then_some(len),
                sql_sha256: truncated.then(|| jitgate_audit::sha256_hex(b"x")),
                setting_change: setting,
                statement: (protocol == Protocol::Extended).then(String::new),
                portal: (protocol == Protocol::Extended).then(String::new),
                params,
                function_oid: None,
                params_from: None,
            },
        );
        s.pending = Some((id, error, copy));
    }

    fn result(&mut self, s: &mut Session) {
        let Some((id, error, copy)) = s.pending.take() else {
            return;
        };
        if copy {
            let bytes = 4_000 + self.rng.below(100_000);
            let rows = self.rng.below(1_000);
            self.emit(
                Some(s),
                EventBody::Copy {
                    query_id: id,
                    direction: CopyDirection::Out,
                    bytes,
                    rows: Some(rows),
                },
            );
        }
        let body = if error {
            EventBody::QueryResult {
                query_id: id,
                tag: None,
                rows: None,
                sqlstate: Some("42P01".into()),
                message: Some("relation \"missing_table\" does not exist".into()),
                duration_us: 50 + self.rng.below(500),
                bytes: 0,
                skipped: false,
            }
        } else {
            let rows = self.rng.below(3);
            EventBody::QueryResult {
                query_id: id,
                tag: Some(if rows == 0 {
                    "UPDATE".into()
                } else {
                    "SELECT".into()
                }),
                rows: Some(rows),
                sqlstate: None,
                message: None,
                duration_us: 100 + self.rng.below(5_000),
                bytes: rows * 40,
                skipped: false,
            }
        };
        self.emit(Some(s), body);
    }
}

/// Writes the log; returns its size in bytes, its number of events and a session to
/// replay.
fn generate(path: &Path, target_bytes: u64) -> (u64, u64, Uuid) {
    let mut g = Generator {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        out: BufWriter::with_capacity(1 << 20, File::create(path).unwrap()),
        prev: LineHash::GENESIS,
        seq: 0,
        now: "2026-11-01T00:00:00Z".parse().unwrap(),
        written: 0,
        line: Vec::with_capacity(4096),
        sample: None,
    };
    let mut sessions: Vec<Session> = Vec::new();
    for _ in 0..64 {
        let s = g.new_session();
        sessions.push(s);
    }
    while g.written < target_bytes {
        let i = g.rng.below(sessions.len() as u64) as usize;
        let mut s = std::mem::replace(
            &mut sessions[i],
            Session {
                id: Uuid::nil(),
                identity: String::new(),
                target: String::new(),
                role: "",
                grant: Uuid::nil(),
                next_query: 0,
                pending: None,
                left: 0,
            },
        );
        if s.pending.is_some() {
            g.result(&mut s);
        } else if s.left == 0 {
            let duration_ms = 1_000 + g.rng.below(100_000);
            g.emit(
                Some(&s),
                EventBody::SessionEnd {
                    reason: EndReason::ClientQuit,
                    detail: None,
                    late_ms: None,
                    queries: s.next_query,
                    duration_ms,
                    upstream_parked: false,
                    stopped: None,
                },
            );
            if g.sample.is_none() && g.written > target_bytes / 2 {
                g.sample = Some(s.id);
            }
            s = g.new_session();
        } else {
            s.left -= 1;
            g.query(&mut s);
        }
        sessions[i] = s;
    }
    g.out.flush().unwrap();
    let sample = g.sample.unwrap_or(sessions[0].id);
    (g.written, g.seq, sample)
}

fn bench(c: &mut Criterion) {
    let mb: u64 = std::env::var("JITGATE_BENCH_LOG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let started = std::time::Instant::now();
    let (size, events, sample) = generate(&log, mb * 1024 * 1024);
    eprintln!(
        "generated {:.0} MiB of audit log, {events} events (avg {} bytes/line), in {:.1?} ({})",
        size as f64 / (1024.0 * 1024.0),
        size / events.max(1),
        started.elapsed(),
        log.display()
    );

    let mut group = c.benchmark_group("audit_scan");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(size));

    let search = |filter: Filter| {
        let mut n = 0u64;
        query::search(&log, &filter, |f| {
            black_box(&f);
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        n
    };
    group.bench_function("search --text '(?i)drop\\s+table'", |b| {
        b.iter(|| {
            search(Filter {
                text: Some(r"(?i)drop\s+table".into()),
                ..Filter::default()
            })
        })
    });
    group.bench_function("search --errors", |b| {
        b.iter(|| {
            search(Filter {
                errors: true,
                ..Filter::default()
            })
        })
    });
    group.bench_function("search --identity user7", |b| {
        b.iter(|| {
            search(Filter {
                identity: Some("user7".into()),
                ..Filter::default()
            })
        })
    });
    group.bench_function("sessions", |b| {
        b.iter(|| query::sessions(&log, &Filter::default()).unwrap().0.len())
    });
    group.bench_function("replay --session", |b| {
        b.iter(|| query::session_events(&log, sample).unwrap().0.len())
    });
    group.bench_function("export --format jsonl --target t3", |b| {
        b.iter(|| {
            let filter = Filter {
                target: Some("t3".into()),
                ..Filter::default()
            };
            query::export(&log, &filter, ExportFormat::Jsonl, &mut std::io::sink()).unwrap()
        })
    });
    group.bench_function("baseline: read_events (parse every line)", |b| {
        b.iter(|| {
            jitgate_audit::read_events(&log)
                .unwrap()
                .filter(|e| e.is_ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
