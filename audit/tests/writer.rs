//! The writer: concurrency, seq continuity, torn tails, write errors, fsync, close.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use jitgate_audit::*;

fn query(task: u64, i: u64) -> Event {
    Event::new(EventBody::Query {
        query_id: i,
        protocol: Protocol::Simple,
        sql: format!("SELECT {i} -- from task {task}"),
        statement: None,
        portal: None,
        params: vec![],
        function_oid: None,
        truncated: false,
        sql_len: None,
        sql_sha256: None,
        setting_change: None,
    })
    .with_identity(format!("task{task}"))
}

fn read_all(path: &Path) -> Vec<Event> {
    read_events(path).unwrap().map(|e| e.unwrap()).collect()
}

fn assert_seqs(events: &[Event], expected: std::ops::RangeInclusive<u64>) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, expected.collect::<Vec<_>>());
}

async fn write_n(writer: &AuditWriter, task: u64, n: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        seqs.push(writer.write(query(task, i)).await.unwrap());
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_every_event_exactly_once_in_seq_order() {
    const TASKS: u64 = 50;
    const PER_TASK: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/audit.jsonl");
    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
    assert_eq!(writer.path(), Some(path.as_path()));

    let mut handles = Vec::new();
    for task in 0..TASKS {
        let writer = writer.clone();
        handles.push(tokio::spawn(async move {
            (task, write_n(&writer, task, PER_TASK).await)
        }));
    }
    let mut acked = std::collections::HashMap::new();
    for h in handles {
        let (task, seqs) = h.await.unwrap();
        // Each task awaited each write, so its events got increasing positions.
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "task {task}: {seqs:?}"
        );
        for (i, seq) in seqs.into_iter().enumerate() {
            assert!(
                acked.insert(seq, (task, i as u64)).is_none(),
                "seq {seq} acked twice"
            );
        }
    }
    guard.close().await.unwrap();

    let events = read_all(&path);
    assert_seqs(&events, 1..=TASKS * PER_TASK);
    let mut seen = HashSet::new();
    for e in &events {
        let EventBody::Query { query_id, .. } = e.body else {
            panic!("{e:?}")
        };
        let task: u64 = e.identity.as_deref().unwrap()[4..].parse().unwrap();
        assert!(seen.insert((task, query_id)), "duplicate {task}/{query_id}");
        // The seq the caller was given is the seq in the file.
        assert_eq!(acked[&e.seq], (task, query_id));
    }
    assert_eq!(seen.len() as u64, TASKS * PER_TASK);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn reopening_continues_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    for round in 0..3u64 {
        let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
        let seqs = write_n(&writer, round, 3).await;
        assert_eq!(seqs, vec![round * 3 + 1, round * 3 + 2, round * 3 + 3]);
        guard.close().await.unwrap();
    }
    assert_seqs(&read_all(&path), 1..=9);
}

#[tokio::test]
async fn torn_last_line_is_cut_off_and_not_glued_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
    write_n(&writer, 0, 2).await;
    guard.close().await.unwrap();
    let intact = std::fs::read(&path).unwrap();
    // A crash in the middle of a line.
    let mut content = intact.clone();
    content.extend_from_slice(br#"{"v":1,"seq":3,"ts":"2026-11-27T2"#);
    std::fs::write(&path, &content).unwrap();

    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
    // The fragment was never acknowledged: it is gone, the file is as it was.
    assert_eq!(std::fs::read(&path).unwrap(), intact);
    assert_eq!(write_n(&writer, 1, 2).await, vec![3, 4]);
    guard.close().await.unwrap();

    let events = read_all(&path);
    assert_seqs(&events, 1..=4);
    assert_eq!(events[2].identity.as_deref(), Some("task1"));
    let report = verify(&path, None).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn write_errors_fail_closed_and_the_writer_recovers() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipping: no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();

    for i in 0..3 {
        let err = writer.write(query(0, i)).await.unwrap_err();
        let AuditError::Unavailable(msg) = &err else {
            panic!("{err:?}")
        };
        let text = err.to_string();
        assert!(
            text.starts_with("audit log unavailable: writing "),
            "{text}"
        );
        assert!(msg.contains("audit.jsonl"), "{msg}");
        assert!(
            msg.contains("StorageFull") || msg.contains("No space left"),
            "{msg}"
        );
    }

    // The disk "comes back": the path now names a writable file.
    let good = dir.path().join("new.jsonl");
    std::fs::write(&good, b"").unwrap();
    std::fs::rename(&good, &path).unwrap();
    assert_eq!(writer.write(query(1, 0)).await.unwrap(), 1);
    assert_eq!(writer.write(query(1, 1)).await.unwrap(), 2);
    guard.close().await.unwrap();
    let events = read_all(&path);
    assert_seqs(&events, 1..=2);
    assert!(events
        .iter()
        .all(|e| e.identity.as_deref() == Some("task1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_mode_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/audit.jsonl");
    let mut cfg = AuditConfig::new(&path);
    cfg.durability = Durability::Fsync;
    cfg.queue_capacity = 16; // forces back-pressure as well
    let (writer, guard) = AuditWriter::start(cfg).unwrap();
    let mut handles = Vec::new();
    for task in 0..10 {
        let writer = writer.clone();
        handles.push(tokio::spawn(
            async move { write_n(&writer, task, 50).await },
        ));
    }
    for h in handles {
        assert_eq!(h.await.unwrap().len(), 50);
    }
    guard.close().await.unwrap();
    assert_seqs(&read_all(&path), 1..=500);
}

#[tokio::test]
async fn close_flushes_queued_events_then_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
    // Queue events without waiting for their acks, then close.
    let pending: Vec<_> = (0..100)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(query(0, i)).await })
        })
        .collect();
    // Let every spawned write send its event. The current-thread scheduler polls at most
    // 61 tasks (its event interval) before it comes back to this task, and a task
    // woken by its ack is polled again, so a few yields are needed, not one.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    guard.close().await.unwrap();
    let mut written = 0;
    for p in pending {
        match p.await.unwrap() {
            Ok(_) => written += 1,
            Err(AuditError::WriterGone) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    // The spawned writes were queued before Close (current-thread runtime: they ran
    // during the yields), so all were written; everything acknowledged is in the file.
    assert_eq!(written, 100);
    assert_seqs(&read_all(&path), 1..=100);
    assert!(matches!(
        writer.write(query(1, 0)).await,
        Err(AuditError::WriterGone)
    ));
}

#[tokio::test]
async fn a_writer_that_cannot_write_in_time_reports_a_stall() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.fifo");
    let status = std::process::Command::new("mkfifo").arg(&path).status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("skipping: mkfifo unavailable");
        return;
    }
    let mut cfg = AuditConfig::new(&path);
    cfg.stall_timeout = Duration::from_millis(300);
    let (writer, guard) = AuditWriter::start(cfg).unwrap();
    // Nobody reads the pipe: a line larger than the pipe buffer blocks the writer thread.
    let mut big = query(0, 0);
    if let EventBody::Query { sql, .. } = &mut big.body {
        *sql = "x".repeat(1 << 20);
    }
    let err = writer.write(big).await.unwrap_err();
    assert!(
        matches!(err, AuditError::Stalled(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.to_string().contains("stalled"), "{err}");

    // Drain the pipe so the thread can finish.
    let reader_path = path.clone();
    let drain = std::thread::spawn(move || {
        let mut f = std::fs::File::open(reader_path).unwrap();
        std::io::copy(&mut f, &mut std::io::sink()).unwrap()
    });
    tokio::time::timeout(Duration::from_secs(30), guard.close())
        .await
        .unwrap()
        .unwrap();
    assert!(drain.join().unwrap() > 1 << 20);
}

#[tokio::test]
async fn disabled_writer_discards() {
    let writer = AuditWriter::disabled();
    assert!(!writer.is_enabled());
    assert_eq!(writer.path(), None);
    assert_eq!(writer.write(query(0, 0)).await.unwrap(), 0);
}

#[test]
fn start_fails_when_the_log_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let err = AuditWriter::start(AuditConfig::new(file.join("audit.jsonl"))).unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("plain"), "{err}");
}
