//! Gathered writes on a session-thread runtime: held together, written in hand-over
//! order with each caller's `seq`, and given to the writer thread when the log is busy.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::event::EventBody;
use crate::reader::read_events;
use crate::writer::{AuditConfig, WriterGuard};

/// Event `i` of `caller` (the kind does not matter here).
fn event(caller: u64, i: u64) -> Event {
    Event::new(EventBody::AuthFailure {
        client_addr: format!("127.0.0.1:{i}"),
        reason: "test".into(),
    })
    .with_identity(format!("caller{caller}"))
}

/// A fresh log in a temporary directory (kept alive by the returned `TempDir`).
fn open_log() -> (tempfile::TempDir, PathBuf, AuditWriter, WriterGuard) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
    (dir, path, writer, guard)
}

/// A session-thread runtime: current-thread, with the park hook.
fn session_runtime() -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    install(&mut builder);
    builder.build().unwrap()
}

fn held() -> usize {
    GATHER.with(|g| {
        g.borrow()
            .as_ref()
            .map_or(0, |p| p.iter().map(|p| p.callers.len()).sum())
    })
}

/// `callers` tasks write a batch of 2 events each in one turn of the runtime; returns
/// what each was answered, and how many were held when the last one handed over.
async fn write_together(writer: &AuditWriter, callers: u64) -> (Vec<(u64, u64)>, usize) {
    // Gathering starts at the thread's first idle moment.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(active());
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let mut held_tx = Some(held_tx);
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let writer = writer.clone();
        let last = (caller + 1 == callers).then(|| held_tx.take().unwrap());
        tasks.push(tokio::spawn(async move {
            if let Some(tx) = last {
                let _ = tx.send(held());
            }
            let mut events = vec![event(caller, 0), event(caller, 1)];
            let seq = writer.write_batch(&mut events).await.unwrap();
            (caller, seq)
        }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        answered.push(task.await.unwrap());
    }
    (answered, held_rx.await.unwrap())
}

fn read_all(path: &Path) -> Vec<Event> {
    read_events(path).unwrap().map(|e| e.unwrap()).collect()
}

/// Each caller's two events are consecutive and its answer is the `seq` of its second.
fn assert_callers_consecutive(events: &[Event], answered: &[(u64, u64)]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    for &(caller, seq) in answered {
        let identity = format!("caller{caller}");
        let mine: Vec<u64> = events
            .iter()
            .filter(|e| e.identity.as_deref() == Some(identity.as_str()))
            .map(|e| e.seq)
            .collect();
        assert_eq!(mine, [seq - 1, seq], "caller {caller}");
    }
}

#[test]
fn writes_of_one_turn_are_held_together_and_answered_with_their_own_seq() {
    let (_dir, path, writer, guard) = open_log();
    let runtime = session_runtime();
    let (answered, held_before_last) = runtime.block_on(write_together(&writer, 8));
    // The first seven were waiting together when the eighth handed its events over.
    assert_eq!(held_before_last, 7);
    assert_callers_consecutive(&read_all(&path), &answered);
    runtime.block_on(guard.close()).unwrap();
}

#[test]
fn a_busy_log_sends_the_gathered_events_to_the_writer_thread() {
    let (_dir, path, writer, guard) = open_log();
    let shared = Arc::clone(writer.inner.as_ref().unwrap());
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    // Another thread holds the log well past the flush's wait (a slow write elsewhere).
    let holder = std::thread::spawn(move || {
        let _log = shared.worker.lock().unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    locked_rx.recv().unwrap();
    let runtime = session_runtime();
    let (answered, held_before_last) = runtime.block_on(write_together(&writer, 4));
    holder.join().unwrap();
    assert_eq!(held_before_last, 3);
    assert_callers_consecutive(&read_all(&path), &answered);
    runtime.block_on(guard.close()).unwrap();
}

#[test]
fn a_thread_without_the_hook_writes_at_once() {
    let (_dir, _path, writer, guard) = open_log();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!active());
        assert_eq!(writer.write(event(0, 0)).await.unwrap(), 1);
    });
    runtime.block_on(guard.close()).unwrap();
}
