//! The writer: concurrency, seq continuity, torn tails, write errors, fsync, close,
//! batches.
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
        params_from: None,
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

/// `n` events of one caller's batch, told apart by `identity` and numbered by `query_id`.
fn batch(task: u64, n: u64) -> Vec<Event> {
    (0..n).map(|i| query(task, i)).collect()
}

/// Writes batches of 1..=7 events and returns (last seq, size) of each.
async fn write_batches(writer: &AuditWriter, task: u64, batches: u64) -> Vec<(u64, u64)> {
    let mut written = Vec::new();
    for b in 0..batches {
        let n = 1 + (task + b) % 7;
        let mut events = batch(task, n);
        let last = writer.write_batch(&mut events).await.unwrap();
        assert!(events.is_empty(), "write_batch drains the vec");
        written.push((last, n));
    }
    written
}

#[tokio::test]
async fn a_batch_lands_as_consecutive_seqs_in_order_and_chains() {
    for durability in [Durability::Write, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut cfg = AuditConfig::new(&path);
        cfg.durability = durability;
        let (writer, guard) = AuditWriter::start(cfg).unwrap();
        assert_eq!(writer.write(query(0, 0)).await.unwrap(), 1);
        let mut events = batch(1, 5);
        assert_eq!(writer.write_batch(&mut events).await.unwrap(), 6);
        assert!(events.is_empty());
        assert_eq!(writer.write(query(2, 0)).await.unwrap(), 7);
        guard.close().await.unwrap();

        let events = read_all(&path);
        assert_seqs(&events, 1..=7);
        let batched: Vec<(Option<&str>, u64)> = events[1..6]
            .iter()
            .map(|e| match e.body {
                EventBody::Query { query_id, .. } => (e.identity.as_deref(), query_id),
                _ => panic!("{e:?}"),
            })
            .collect();
        let expected: Vec<_> = (0..5).map(|i| (Some("task1"), i)).collect();
        assert_eq!(batched, expected, "{durability:?}");
        let report = verify(&path, None).unwrap();
        assert!(report.is_ok(), "{durability:?}: {:?}", report.problems);
        assert_eq!(writer.health().failed_writes, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_stay_contiguous() {
    const TASKS: u64 = 20;
    const BATCHES: u64 = 40;
    // `Write` mixes inline writes and (when the log is busy) queued ones; `Fsync` queues all.
    for durability in [Durability::Write, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut cfg = AuditConfig::new(&path);
        cfg.durability = durability;
        cfg.queue_capacity = 8; // back-pressure too
        let (writer, guard) = AuditWriter::start(cfg).unwrap();
        let handles: Vec<_> = (0..TASKS)
            .map(|task| {
                let writer = writer.clone();
                tokio::spawn(async move { (task, write_batches(&writer, task, BATCHES).await) })
            })
            .collect();
        let mut acked = Vec::new();
        for h in handles {
            acked.push(h.await.unwrap());
        }
        guard.close().await.unwrap();

        let events = read_all(&path);
        let total: u64 = acked.iter().flat_map(|(_, b)| b).map(|(_, n)| n).sum();
        assert_seqs(&events, 1..=total);
        for (task, batches) in acked {
            for (last, n) in batches {
                // The batch's events are the n lines ending at its seq, in order.
                let end = usize::try_from(last).unwrap();
                let lines = &events[end - usize::try_from(n).unwrap()..end];
                for (i, e) in lines.iter().enumerate() {
                    let EventBody::Query { query_id, .. } = e.body else {
                        panic!("{e:?}")
                    };
                    let who = e.identity.clone();
                    assert_eq!((who, query_id), (Some(format!("task{task}")), i as u64));
                }
            }
        }
        let report = verify(&path, None).unwrap();
        assert!(report.is_ok(), "{durability:?}: {:?}", report.problems);
    }
}

#[tokio::test]
async fn an_empty_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
    assert_eq!(writer.write(query(0, 0)).await.unwrap(), 1);
    let before = std::fs::read(&path).unwrap();
    assert_eq!(writer.write_batch(&mut Vec::new()).await.unwrap(), 0);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // No seq was used up.
    assert_eq!(writer.write(query(0, 1)).await.unwrap(), 2);
    guard.close().await.unwrap();
    assert_seqs(&read_all(&path), 1..=2);

    let disabled = AuditWriter::disabled();
    let mut events = batch(0, 3);
    assert_eq!(disabled.write_batch(&mut events).await.unwrap(), 0);
    assert!(events.is_empty());
}

/// A batch the log cannot take: an error, the vec drained, every event counted.
async fn assert_batch_refused(writer: &AuditWriter, events: &mut Vec<Event>) {
    let failed_before = writer.health().failed_writes;
    let n = events.len() as u64;
    let err = writer.write_batch(events).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(_)), "{err:?}");
    assert!(events.is_empty());
    let health = writer.health();
    assert!(!health.healthy);
    assert_eq!(health.failed_writes, failed_before + n);
}

#[tokio::test]
async fn a_batch_on_a_broken_log_fails_whole_and_the_writer_recovers() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipping: no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    // A device: every event goes through the writer thread.
    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
    assert_batch_refused(&writer, &mut batch(0, 3)).await;

    let good = dir.path().join("new.jsonl");
    std::fs::write(&good, b"").unwrap();
    std::fs::rename(&good, &path).unwrap();
    assert_eq!(writer.write_batch(&mut batch(1, 2)).await.unwrap(), 2);
    assert!(writer.health().healthy);
    guard.close().await.unwrap();
    assert_seqs(&read_all(&path), 1..=2);
}

/// Unmounts (lazily: the writer thread may still hold the file) on drop, also on panic.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0)
            .status();
    }
}

#[tokio::test]
async fn a_batch_on_a_full_disk_fails_inline_and_the_writer_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _unmount = Unmount(dir.path());
    let path = dir.path().join("audit.jsonl");
    // A regular file: `write_batch` appends inline, on this thread.
    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
    assert_eq!(writer.write_batch(&mut batch(0, 2)).await.unwrap(), 2);
    let filler = dir.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 128 * 1024]);
    // Larger than what is left of the log's last page.
    let mut big = batch(1, 4);
    for e in &mut big {
        if let EventBody::Query { sql, .. } = &mut e.body {
            *sql = "x".repeat(2048);
        }
    }
    assert_batch_refused(&writer, &mut big).await;

    std::fs::remove_file(&filler).unwrap();
    let last = writer.write_batch(&mut batch(2, 3)).await.unwrap();
    assert!(writer.health().healthy);
    guard.close().await.unwrap();
    // A part of the refused batch may have reached the file (never acknowledged);
    // whatever is there, numbering and chain continue from it.
    let events = read_all(&path);
    assert_eq!(events.last().map(|e| e.seq), Some(last));
    assert_seqs(&events, 1..=last);
    let tail: Vec<_> = events[events.len() - 3..]
        .iter()
        .map(|e| e.identity.as_deref())
        .collect();
    assert_eq!(tail, [Some("task2"); 3]);
    let report = verify(&path, None).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// A witness in memory: fails while `down`, blocks while `held`.
#[derive(Default)]
struct MemWitness {
    lines: std::sync::Mutex<Vec<WitnessLine>>,
    down: std::sync::atomic::AtomicBool,
    held: std::sync::Mutex<bool>,
    release: std::sync::Condvar,
    calls: std::sync::atomic::AtomicU64,
}

impl Witness for MemWitness {
    fn name(&self) -> String {
        "memory".into()
    }
    fn store(&self, lines: &[WitnessLine]) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.release.wait(held).unwrap();
        }
        if self.down.load(Ordering::SeqCst) {
            return Err("connection refused".into());
        }
        let mut stored = self.lines.lock().unwrap();
        for l in lines {
            if !stored.contains(l) {
                stored.push(l.clone());
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_reach_the_witness_without_slowing_the_writer_even_when_it_is_down_or_stuck() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut cfg = AuditConfig::new(&path);
    let key = SigningKey::generate();
    cfg.signing_key = Some(key.clone());
    cfg.checkpoint_every = 10;
    cfg.checkpoint_interval = Duration::from_secs(3600);
    let witness = std::sync::Arc::new(MemWitness::default());
    let (writer, guard) = AuditWriter::start(cfg).unwrap();
    // Stuck: every store call blocks. Writing goes on regardless.
    *witness.held.lock().unwrap() = true;
    writer.attach_witness(witness.clone()).unwrap();
    let started = std::time::Instant::now();
    write_n(&writer, 1, 100).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "writes waited for the witness: {:?}",
        started.elapsed()
    );
    // Down: calls fail and are retried.
    witness.down.store(true, Ordering::SeqCst);
    *witness.held.lock().unwrap() = false;
    witness.release.notify_all();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while witness.calls.load(Ordering::SeqCst) < 3 {
        assert!(std::time::Instant::now() < deadline, "no retries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write_n(&writer, 2, 15).await;
    // Back: everything queued arrives, the shutdown checkpoint too.
    witness.down.store(false, Ordering::SeqCst);
    guard.close().await.unwrap();
    let stored = witness.lines.lock().unwrap().clone();
    let local: Vec<Vec<u8>> = std::fs::read_to_string(checkpoints_path(&path))
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let stored_lines: Vec<Vec<u8>> = stored.iter().map(|l| l.line.clone()).collect();
    // The start checkpoint was written before the witness was attached: the witness got
    // it as the last one then; every later one followed.
    assert_eq!(
        stored_lines, local,
        "witness holds every checkpoint, in order"
    );
    assert_eq!(stored.last().unwrap().last_seq, 115);
    let witnessed = WitnessCheckpoints {
        source: "memory".into(),
        lines: stored_lines,
    };
    let report = verify_with(&path, Some(&key.public()), Some(&witnessed)).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}
