//! A differential test no one can tune to: random, seeded sequences of frontend messages
//! go through jitgate on a raw socket, and the statements PostgreSQL's own log says it
//! executed are compared, in order, with text and parameters, against the session's
//! audit `query` events.
//!
//! # Sequences
//! A seeded generator (`differential/gen.rs`) builds each sequence: simple and extended
//! queries, Describe, Close, Sync, Flush, function calls, COPY in both directions (with
//! Sync, Flush, CopyFail and stray messages inside), transactions, failing SQL, unknown,
//! duplicate and non-UTF-8 names. It is sent in one write or cut into several at random
//! byte offsets, followed by a terminator (`differential/exchange.rs`) that brings any
//! session back to a known state and marks the end of the answers. Many sequences share
//! a connection; a FATAL ends it and the next sequence gets a new one.
//!
//! # Ground truth
//! This binary runs its own cluster ([`common::logging_cluster`]) with
//! `log_statement=all`, `log_parameter_max_length=-1`, `log_line_prefix='%m [%p] '` and
//! connection logging. The session is tied to its backend through the `upstream_pid` of
//! its `session_start`; upstream connections are never reused, so one backend is one
//! session. The server log's statements are `statement: <sql>` (simple Query),
//! `execute [fetch from] <statement>[/<portal>]: <sql>` with `DETAIL: parameters: $1 =
//! '…'` (extended Execute) and `fastpath function call: "<name>" (OID <n>)`
//! (FunctionCall); see `differential/serverlog.rs` for how lines are read.
//!
//! # What is compared
//! Every audit `query` event of the session, in order, except those its `query_result`
//! says the server did not run or does not log. The exclusions are decided from the
//! audit's recorded outcome only, never from what the test sent, and each was checked
//! against PostgreSQL 15.18 (the test [`exclusion_rules_match_the_server`] repeats the
//! check on every run); see `differential/rules.rs`:
//! - `skipped: true`: the audit says the server never ran it — except a statement
//!   jitgate's guard refused (`jitgate refused …`, or 25P02 when the substitute met a
//!   failed transaction): the server ran and logged the substitute `DO $jitgate$ …` in
//!   its place, and that is what it is compared with (`rules.rs :: guard_refused`).
//! - simple Query with SQLSTATE `42601`: `exec_simple_query` runs the raw parser
//!   (`pg_parse_query`) before the `log_statement` check, so a syntax error is raised
//!   before anything is logged; the text appears only as `STATEMENT:` after the `ERROR:`.
//!   An empty or comment-only simple Query, by contrast, *is* logged (`statement: `):
//!   `check_log_statement` returns true for any list under `log_statement=all`.
//! - extended Execute with neither tag nor SQLSTATE (EmptyQueryResponse):
//!   `exec_execute_message` answers a portal without a command (empty or comment-only
//!   SQL) before it logs.
//! - extended Execute with SQLSTATE `34000` or `22021`: `exec_execute_message` reads the
//!   portal name (`pq_getmsgstring`, which rejects bytes that are not valid UTF-8 with
//!   22021) and looks it up (`GetPortalByName`, 34000 `portal "…" does not exist` when
//!   missing) before it logs (a `CLOSE` or `FETCH` of a missing cursor run by Execute
//!   fails with 34000 `cursor "…" does not exist` after it was logged, and stays). An
//!   Execute in a failed transaction is logged and then refused (25P02), so it stays.
//! - FunctionCall with SQLSTATE `25P02` or `42883`: `HandleFunctionRequest` refuses a
//!   call in a failed transaction, and `fetch_fp_info` a missing function, before the
//!   `fastpath function call` line. A call with bad arguments is logged first and stays.
//!
//! The statements must be equal, with one exception: an Execute refused in a failed
//! transaction (25P02, or 55000 for a portal a failed statement left) is compared
//! without parameters, and on its portal name only when the log shows an empty text. In an aborted transaction `errdetail_params` leaves the
//! parameters out (it calls no type output function there), and a COPY that fails
//! inside a transaction block leaves its unnamed portal until ROLLBACK: an Execute of
//! `""` finds it and the server logs `execute <unnamed>: ` with its source text, by then
//! empty, before refusing it.
//!
//! An outcome pinned on the wrong query must not hide a statement, so every exclusion
//! but the two the server leaves no trace of (skipped, empty) must be confirmed by the
//! server log: an `ERROR:` of the backend with the audit's message, taken in order, and
//! for a simple query the `STATEMENT:` the server printed with it equal to the audited
//! text. An unconfirmed exclusion fails the test like a differing statement.
//!
//! Only which statements ran, in what order, with what text, names and parameters is
//! compared; rows, tags and error details of statements that ran are not.
//!
//! Text parameters are compared exactly (the log quotes them with `'` doubled); binary
//! parameters are only ever int4 (4 bytes), decoded from the audit's base64. The server
//! logs a parameter through its type's output function, so the generator sends text
//! values only for `text` and canonical `int4` values.
//!
//! # Running
//! The normal `cargo test --test differential` runs a fixed seed. Environment variables:
//! - `JITGATE_DIFF_SEED`: the generator's seed (decimal or `0x…`), default
//!   [`diff::settings::DEFAULT_SEED`].
//! - `JITGATE_DIFF_SEQUENCES`: sequences sent through jitgate (default 2000).
//! - `JITGATE_DIFF_PER_CONNECTION`: sequences per connection (default 25).
//! - `JITGATE_DIFF_FINDINGS`: distinct minimal failures to collect before the test
//!   fails (default 1; more keeps going after a failure to find others).
//! - `JITGATE_DIFF_DIRECT_SEQUENCES`: sequences sent straight to PostgreSQL to check the
//!   test's own reading of answers and of the log (default 300).
//! - `JITGATE_DIFF_DUMP`: a file to write every generated sequence to, numbered (to find
//!   the sequence behind a query text in jitgate's own log).
//!
//! A failure prints the seed, the sequence's number and a minimal sequence (shrunk by
//! delta debugging, each candidate on a fresh connection), one message per line, with
//! the server's answers and both sides of the comparison.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
#[path = "differential/mod.rs"]
mod diff;
mod harness;
mod rawclient;

use std::time::Instant;

use diff::complaints::Complaints;
use diff::exchange::Ending;
use diff::gen::Generator;
use diff::msg::Msg;
use diff::report::Finding;
use diff::runner::Runner;
use diff::sequence::Sequence;
use diff::settings::Settings;
use diff::setup::setup;
use diff::shrink::minimize;
use diff::stmt::Stmt;

fn generate(seed: u64, count: usize, abs_oid: u32) -> Vec<Sequence> {
    let mut gen = Generator::new(seed, abs_oid);
    (0..count).map(|_| gen.sequence()).collect()
}

/// Through jitgate, the audit's statements are the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_records_exactly_what_the_server_ran() {
    // jitgate's own warnings are shown with a failure, and the tracker's (a reply that
    // matches nothing, a recorded text the server's answers contradict) fail the test.
    let complaints = Complaints::install();
    let mut complained: Vec<String> = Vec::new();
    let settings = Settings::from_env();
    let world = setup("diff").await;
    let seqs = generate(settings.seed, settings.sequences, world.abs_oid);
    if let Ok(path) = std::env::var("JITGATE_DIFF_DUMP") {
        let text: String = seqs
            .iter()
            .enumerate()
            .map(|(i, s)| format!("#{i}\n{s}\n"))
            .collect();
        if let Err(e) = std::fs::write(&path, text) {
            panic!("writing the sequences to {path}: {e}");
        }
    }
    let mut runner = Runner::new(
        world.proxy.clone(),
        world.env.cluster.log_path(),
        Some(world.env.audit_path()),
    );
    let started = Instant::now();
    let mut findings: Vec<Finding> = Vec::new();
    let mut connections = 0;
    let mut i = 0;
    while i < seqs.len() {
        let end = (i + settings.per_connection).min(seqs.len());
        let before = complaints.len();
        let run = runner.run_connection(&seqs[i..end]).await;
        connections += 1;
        // The session has ended (the runner waited for it): its complaints are in.
        let lines = complaints.lines();
        if lines.len() > before {
            complained.push(complaint_report(&lines[before..], &seqs, i..i + run.ran));
        }
        let Some(failure) = run.failure else {
            i += run.ran;
            continue;
        };
        let k = failure.sequence_index().min(run.ran.saturating_sub(1));
        eprintln!(
            "differential: sequence {} fails ({}); shrinking",
            i + k,
            failure.class()
        );
        let shrunk = minimize(&mut runner, &seqs[i..=i + k], &failure).await;
        let finding = Finding {
            seed: settings.seed,
            number: i + k,
            on_connection: k,
            original: seqs[i + k].clone(),
            original_failure: failure,
            shrunk,
        };
        eprintln!("{finding}");
        if !findings.iter().any(|f| f.shape() == finding.shape()) {
            findings.push(finding);
        }
        if findings.len() >= settings.findings {
            break;
        }
        i += k + 1;
    }
    eprintln!(
        "differential: {} of {} sequences run, on {connections} connections, in {:.1?} (seed {})",
        i.min(seqs.len()),
        seqs.len(),
        started.elapsed(),
        settings.seed
    );
    let crashes = server_crashes(&world.env.cluster.log_path());
    world.env.stop().await;
    assert!(
        crashes.is_empty(),
        "the server crashed (seed {}); what the crashed backend ran last:\n{}",
        settings.seed,
        crashes.join("\n\n")
    );
    if !findings.is_empty() {
        let report: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
        panic!(
            "{} distinct failure(s); the audit does not record what the server ran:\n\n{}",
            findings.len(),
            report.join("\n")
        );
    }
    assert!(
        complained.is_empty(),
        "jitgate's tracker complained {} time(s) (seed {}); its model of the server is off:\n\n{}",
        complaints.len(),
        settings.seed,
        complained.join("\n")
    );
}

/// For each backend crash in the server log (`server process (PID n) was terminated by
/// signal`), the last lines that backend logged: a crash restarts every backend, which
/// the comparison would otherwise only see as incomplete logs.
fn server_crashes(log: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .filter_map(|l| {
            let pid = l.split("server process (PID ").nth(1)?.split(')').next()?;
            if !l.contains("was terminated by signal") {
                return None;
            }
            let tag = format!("[{pid}]");
            let own: Vec<&str> = lines.iter().copied().filter(|x| x.contains(&tag)).collect();
            let tail = own[own.len().saturating_sub(12)..].join("\n");
            Some(format!("{l}\n{tail}"))
        })
        .collect()
}

/// The tracker's complaints during the sequences `range` of one connection, with the
/// sequences whose `/*qN*/` tags they name (all of the connection's when none).
fn complaint_report(lines: &[String], seqs: &[Sequence], range: std::ops::Range<usize>) -> String {
    let mut out = format!(
        "during sequences {}..{} (one connection):\n",
        range.start, range.end
    );
    for line in lines {
        out.push_str(&format!("  {line}\n"));
    }
    let tags: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.match_indices("/*q").map(move |(at, _)| &l[at..]))
        .filter_map(|t| t.find("*/").map(|end| &t[..end + 2]))
        .collect();
    for n in range.clone() {
        let text = seqs[n].to_string();
        if tags.is_empty() || tags.iter().any(|t| text.contains(t)) {
            out.push_str(&format!("#{n}\n{text}"));
        }
    }
    out
}

/// Straight to PostgreSQL, every sequence is answered up to its terminator's marker, or
/// the server ends the connection with a FATAL, and the server log shows each marker:
/// the test's reading of answers and of the log holds for everything it generates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sequence_is_read_to_its_end_directly_from_postgresql() {
    let settings = Settings::from_env();
    let world = setup("diffdirect").await;
    let seqs = generate(settings.seed, settings.direct_sequences, world.abs_oid);
    let mut runner = Runner::new(world.direct.clone(), world.env.cluster.log_path(), None);
    let mut i = 0;
    let mut closed = 0;
    while i < seqs.len() {
        let end = (i + settings.per_connection).min(seqs.len());
        let run = runner.run_connection(&seqs[i..end]).await;
        if let Some(f) = &run.failure {
            panic!("sequence {}: {f}\n{}", i + f.sequence_index(), seqs[i]);
        }
        let mut answered = 0;
        for (j, ex) in run.exchanges.iter().enumerate() {
            match &ex.ending {
                Ending::Answered => answered += 1,
                Ending::Closed(Some(fatal)) if fatal.ends_with(":08P01") => closed += 1,
                other => panic!(
                    "sequence {}: ended {other:?}; answers {:?}\n{}",
                    i + j,
                    ex.responses,
                    seqs[i + j]
                ),
            }
        }
        let markers = run
            .logged
            .iter()
            .filter(|s| matches!(s, Stmt::Simple(sql) if sql.contains("jitgate-diff-mark-")))
            .count();
        assert_eq!(
            markers, answered,
            "markers in the server log, sequences {i}.."
        );
        i += run.ran;
    }
    eprintln!(
        "direct: {} sequences, {closed} ended by the server",
        seqs.len()
    );
    world.env.stop().await;
}

fn one(msgs: Vec<Msg>) -> Sequence {
    Sequence {
        msgs,
        pieces: 1,
        cut_seed: 0,
    }
}

fn simple(sql: &str) -> Stmt {
    Stmt::Simple(sql.into())
}

/// The server behaviour each exclusion rule relies on, checked on the real server: what
/// it logs, and what it refuses before logging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_rules_match_the_server() {
    let world = setup("diffrules").await;
    let mut runner = Runner::new(world.direct.clone(), world.env.cluster.log_path(), None);
    let parse = |name: &[u8], sql: &str| Msg::Parse {
        name: name.to_vec(),
        sql: sql.into(),
        types: vec![],
    };
    let bind = |portal: &[u8], statement: &[u8]| Msg::Bind {
        portal: portal.to_vec(),
        statement: statement.to_vec(),
        formats: vec![],
        params: vec![],
        result_formats: vec![],
    };
    let execute = |portal: &[u8]| Msg::Execute {
        portal: portal.to_vec(),
        max_rows: 0,
    };
    let abs = |arg: &[u8]| Msg::FunctionCall {
        oid: world.abs_oid,
        formats: vec![],
        args: vec![Some(arg.to_vec())],
    };
    let seq = one(vec![
        // Logged: empty simple queries; not logged: a syntax error.
        Msg::Query(String::new()),
        Msg::Query("/*c*/".into()),
        Msg::Query("SELEC 1 /*r1*/".into()),
        // Not logged: extended empty query, missing and non-UTF-8 portals.
        parse(b"", " /*r2*/ "),
        bind(b"", b""),
        execute(b""),
        Msg::Sync,
        execute(b"nope"),
        Msg::Sync,
        execute(b"p\xff"),
        Msg::Sync,
        // Not logged: a missing function; logged: a call with a bad argument.
        Msg::FunctionCall {
            oid: u32::MAX - 1,
            formats: vec![],
            args: vec![],
        },
        abs(b"x"),
        // In a failed transaction: a simple query and an Execute are logged (the
        // Execute without its parameters), then refused; a function call is refused
        // before logging.
        Msg::Query("BEGIN; SELECT 1/0 /*r3*/".into()),
        abs(b"1"),
        Msg::Query("SELECT 4 /*r4*/".into()),
        Msg::Query("ROLLBACK".into()),
        Msg::Query("BEGIN".into()),
        parse(b"s1", "SELECT $1::text /*r5*/"),
        Msg::Bind {
            portal: b"p1".to_vec(),
            statement: b"s1".to_vec(),
            formats: vec![],
            params: vec![Some(b"x".to_vec())],
            result_formats: vec![],
        },
        Msg::Sync,
        Msg::Query("SELECT 1/0".into()),
        execute(b"p1"),
        Msg::Sync,
        Msg::Query("ROLLBACK".into()),
        // A COPY that fails in a transaction block leaves the unnamed portal behind: an
        // Execute of it is logged with an empty text, then refused.
        Msg::Query("BEGIN".into()),
        Msg::Query("COPY t FROM STDIN /*r6*/".into()),
        Msg::CopyData(b"two\tcolumns\n".to_vec()),
        Msg::CopyDone,
        execute(b""),
        Msg::Sync,
        Msg::Query("ROLLBACK".into()),
    ]);
    let run = runner.run_connection(&[seq]).await;
    assert!(run.failure.is_none());
    assert_eq!(run.exchanges[0].ending, Ending::Answered);
    let extended = |sql: &str| Stmt::Extended {
        statement: "s1".into(),
        portal: "p1".into(),
        sql: sql.into(),
        params: vec![],
    };
    let mut want = vec![
        simple(""),
        simple("/*c*/"),
        Stmt::Function(world.abs_oid),
        simple("BEGIN; SELECT 1/0 /*r3*/"),
        simple("SELECT 4 /*r4*/"),
        simple("ROLLBACK"),
        simple("BEGIN"),
        simple("SELECT 1/0"),
        extended("SELECT $1::text /*r5*/"),
        simple("ROLLBACK"),
        simple("BEGIN"),
        simple("COPY t FROM STDIN /*r6*/"),
        Stmt::Extended {
            statement: String::new(),
            portal: String::new(),
            sql: String::new(),
            params: vec![],
        },
        simple("ROLLBACK"),
    ];
    // The terminator.
    want.push(simple("ROLLBACK /*reset*/"));
    want.push(simple("DELETE FROM t; SELECT 'jitgate-diff-mark-1'"));
    assert_eq!(run.logged, want);
    // The refusals the rules rely on leave these errors (with the statement text for a
    // simple query), which the comparison uses to confirm each exclusion.
    let errors: Vec<(String, Option<String>)> = run
        .errors
        .into_iter()
        .map(|e| (e.message, e.statement))
        .collect();
    let refused =
        |message: &str, statement: Option<&str>| (message.to_string(), statement.map(String::from));
    for want in [
        refused(
            "syntax error at or near \"SELEC\" at character 1",
            Some("SELEC 1 /*r1*/"),
        ),
        refused("portal \"nope\" does not exist", None),
        refused("invalid byte sequence for encoding \"UTF8\": 0xff", None),
        refused(
            &format!("function with OID {} does not exist", u32::MAX - 1),
            None,
        ),
        refused(
            "current transaction is aborted, commands ignored until end of transaction block",
            None,
        ),
    ] {
        assert!(errors.contains(&want), "{want:?} in {errors:#?}");
    }
    world.env.stop().await;
}

/// A case of [`a_refused_bind_leaves_the_portal_the_tracker_expects`]: the portal, the
/// SQL of the statement `s2` when the refused Bind uses it, that Bind, its error, and the
/// answer to an Execute of the portal after the Sync.
type RefusedBind = (
    &'static [u8],
    Option<&'static str>,
    Msg,
    &'static str,
    &'static str,
);

/// The server behaviour the tracker's model of a refused Bind relies on
/// (`bind_created_portal` in the tracker's `replies.rs`), checked on the real server: in
/// a transaction block, a Bind refused before it creates its portal leaves the old one
/// (an Execute of it after the Sync is logged and refused, 25P02); a Bind refused later
/// leaves its own portal, empty (the Execute answers EmptyQueryResponse); outside a
/// block the error's abort drops every portal (34000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bind_leaves_the_portal_the_tracker_expects() {
    let world = setup("diffbind").await;
    let mut runner = Runner::new(world.direct.clone(), world.env.cluster.log_path(), None);
    let parse = |name: &[u8], sql: &str| Msg::Parse {
        name: name.to_vec(),
        sql: sql.into(),
        types: vec![],
    };
    let bind = |portal: &[u8], statement: &[u8], formats: &[i16], values: &[&[u8]]| Msg::Bind {
        portal: portal.to_vec(),
        statement: statement.to_vec(),
        formats: formats.to_vec(),
        params: values.iter().map(|v| Some(v.to_vec())).collect(),
        result_formats: vec![],
    };
    let execute = |portal: &[u8]| Msg::Execute {
        portal: portal.to_vec(),
        max_rows: 0,
    };
    let old = "E:25P02";
    let empty = "I";
    let cases: Vec<RefusedBind> = vec![
        (b"", None, bind(b"", b"nope", &[], &[]), "E:26000", old),
        (b"", None, bind(b"", b"s\xff", &[], &[]), "E:22021", old),
        (
            b"",
            Some("SELECT $1::int4"),
            bind(b"", b"s2", &[], &[]),
            "E:08P01",
            old,
        ),
        (
            b"p1",
            Some("SELECT 1 / 0"),
            bind(b"p1", b"s2", &[], &[]),
            "E:42P03",
            old,
        ),
        (
            b"",
            Some("SELECT $1::int4"),
            bind(b"", b"s2", &[], &[b"x1"]),
            "E:22P02",
            empty,
        ),
        (
            b"",
            Some("SELECT $1::text"),
            bind(b"", b"s2", &[], &[b"a\xffb"]),
            "E:22021",
            empty,
        ),
        (
            b"",
            Some("SELECT $1::int4"),
            bind(b"", b"s2", &[1], &[b"\0\0\x07"]),
            "E:08P01",
            empty,
        ),
        (
            b"",
            Some("SELECT 1 / 0"),
            bind(b"", b"s2", &[], &[]),
            "E:22012",
            empty,
        ),
    ];
    for (portal, sql, failing, error, answer) in cases {
        let mut msgs = vec![
            Msg::Query("BEGIN".into()),
            parse(b"s1", "SELECT 'old'"),
            bind(portal, b"s1", &[], &[]),
            Msg::Sync,
        ];
        let mut want = vec!["C", "Z:T", "1", "2", "Z:T"];
        if let Some(sql) = sql {
            msgs.push(parse(b"s2", sql));
            want.push("1");
        }
        msgs.extend([failing.clone(), Msg::Sync, execute(portal), Msg::Sync]);
        want.extend([error, "Z:E", answer, "Z:E"]);
        let run = runner.run_connection(&[one(msgs)]).await;
        assert!(run.failure.is_none());
        let got = &run.exchanges[0].responses;
        assert_eq!(got[..want.len()], want, "{failing}: {got:?}");
    }
    // Outside a transaction block.
    let run = runner
        .run_connection(&[one(vec![
            parse(b"s2", "SELECT 1 / 0"),
            bind(b"", b"s2", &[], &[]),
            Msg::Sync,
            execute(b""),
            Msg::Sync,
        ])])
        .await;
    let got = &run.exchanges[0].responses;
    assert_eq!(
        got[..5],
        ["1", "E:22012", "Z:I", "E:34000", "Z:I"],
        "{got:?}"
    );
    world.env.stop().await;
}

/// Names defined with SQL and run through the protocol are audited with what the server
/// ran — its own log's `execute s1/p1: PREPARE …` and `execute <unnamed>/c1: DECLARE …`
/// — including a protocol name that SQL dropped and redefined in one Query pipelined
/// ahead of the Execute (the audit used to keep the old text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_defined_with_sql_are_audited_with_what_the_server_ran() {
    let world = setup("diffsqlnames").await;
    let mut runner = Runner::new(
        world.proxy.clone(),
        world.env.cluster.log_path(),
        Some(world.env.audit_path()),
    );
    let execute = |portal: &[u8]| Msg::Execute {
        portal: portal.to_vec(),
        max_rows: 0,
    };
    let bind = |portal: &[u8], statement: &[u8], value: &[u8]| Msg::Bind {
        portal: portal.to_vec(),
        statement: statement.to_vec(),
        formats: vec![],
        params: vec![Some(value.to_vec())],
        result_formats: vec![],
    };
    let redefine = "DEALLOCATE s1; PREPARE s1 AS INSERT INTO t VALUES ($1)";
    let msgs = vec![
        Msg::Parse {
            name: b"s1".to_vec(),
            sql: "SELECT $1::text".into(),
            types: vec![],
        },
        Msg::Sync,
        Msg::Query(redefine.into()),
        bind(b"p1", b"s1", b"evil"),
        execute(b"p1"),
        Msg::Sync,
        Msg::Query("DECLARE c1 CURSOR WITH HOLD FOR SELECT v FROM t".into()),
        execute(b"c1"),
        Msg::Sync,
    ];
    let run = runner.run_connection(&[one(msgs)]).await;
    if let Some(f) = &run.failure {
        panic!("{f}");
    }
    let ran: Vec<&Stmt> = run
        .logged
        .iter()
        .filter(|s| matches!(s, Stmt::Extended { portal, .. } if portal == "p1" || portal == "c1"))
        .collect();
    let want = [
        Stmt::Extended {
            statement: "s1".into(),
            portal: "p1".into(),
            sql: redefine.into(),
            params: vec![Some("evil".into())],
        },
        Stmt::Extended {
            statement: String::new(),
            portal: "c1".into(),
            sql: "DECLARE c1 CURSOR WITH HOLD FOR SELECT v FROM t".into(),
            params: vec![],
        },
    ];
    assert_eq!(ran, want.iter().collect::<Vec<_>>(), "the server's log");
    world.env.stop().await;
}

/// PostgreSQL 15.18 crashes (SIGSEGV; every backend is restarted) on an Execute of the
/// unnamed portal a simple query left when it failed in a transaction block, once a
/// longer message has reused that query's memory. Through jitgate the Execute never
/// reaches the server: the client gets 25P02 as it would have, the audit says why, and
/// the server keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_crash_the_server_with_a_failed_querys_portal() {
    let world = setup("diffcrash").await;
    let mut runner = Runner::new(
        world.proxy.clone(),
        world.env.cluster.log_path(),
        Some(world.env.audit_path()),
    );
    let long = format!("SELECT 1 /* {} */", "x".repeat(300));
    let msgs = vec![
        Msg::Query("BEGIN".into()),
        Msg::Query("COPY t FROM STDIN".into()),
        Msg::CopyFail("stop".into()),
        Msg::Query(long),
        Msg::Execute {
            portal: vec![],
            max_rows: 0,
        },
        Msg::Sync,
    ];
    let run = runner.run_connection(&[one(msgs)]).await;
    if let Some(f) = &run.failure {
        panic!("{f}");
    }
    let got = &run.exchanges[0].responses;
    assert_eq!(
        got[..9],
        ["C", "Z:T", "G", "E:57014", "Z:E", "E:25P02", "Z:E", "E:25P02", "Z:E"],
        "{got:?}"
    );
    let log = std::fs::read_to_string(world.env.cluster.log_path()).unwrap();
    assert!(
        !log.contains("terminated by signal"),
        "a backend crashed:\n{log}"
    );
    let audit = std::fs::read_to_string(world.env.audit_path()).unwrap();
    assert!(
        audit.contains("not executed: jitgate did not forward this Execute"),
        "the audit says why the Execute did not run"
    );
    world.env.stop().await;
}
