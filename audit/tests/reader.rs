//! Reading logs: line-numbered errors, tail with and without follow.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use jitgate_audit::*;

fn line(e: &Event) -> String {
    serde_json::to_string(e).unwrap() + "\n"
}

fn numbered(n: u64) -> Event {
    let mut e = common::every_kind()[1].clone();
    e.seq = n;
    e
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn read_events_names_the_bad_line_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let future = line(&numbered(6)).replace("\"v\":1,", "\"v\":99,");
    let content = [
        line(&numbered(1)),
        line(&numbered(2)),
        "{\"v\":1,\"seq\":3,\"kind\":\"query\"\n".to_owned(),
        "\n".to_owned(),
        line(&numbered(5)),
        future,
        "{\"v\":1,\"seq\":7,\"ts\":\"2026".to_owned(),
    ]
    .concat();
    std::fs::write(&path, content).unwrap();

    let items: Vec<_> = read_events(&path).unwrap().collect();
    // The torn last line of the live file is not an event (yet) and is not reported.
    assert_eq!(items.len(), 5, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().seq, 1);
    assert_eq!(items[1].as_ref().unwrap().seq, 2);
    let err = items[2].as_ref().unwrap_err();
    assert!(matches!(err, AuditError::Parse { line: 3, .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("audit log {} line 3: ", path.display())),
        "{err}"
    );
    assert_eq!(items[3].as_ref().unwrap().seq, 5);
    assert!(matches!(
        items[4],
        Err(AuditError::UnsupportedVersion {
            line: 6,
            version: 99,
            supported: 1,
            ..
        })
    ));

    let missing = read_events(&dir.path().join("nope.jsonl")).unwrap_err();
    assert!(matches!(missing, AuditError::Io { .. }), "{missing:?}");
}

#[tokio::test]
async fn tail_without_follow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let content = [
        line(&numbered(1)),
        line(&numbered(2)),
        "garbage\n".into(),
        "{\"v\":1,\"se".into(),
    ]
    .concat();
    std::fs::write(&path, content).unwrap();

    let mut seen = Vec::new();
    tail(&path, false, true, |item| {
        seen.push(item.map(|e| e.seq).map_err(|e| e.to_string()));
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    // The partial last line is not an event (yet) and is not reported.
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[..2], [Ok(1), Ok(2)]);
    assert!(seen[2]
        .as_ref()
        .unwrap_err()
        .ends_with("line 3: not a valid audit event: expected value at line 1 column 1"));

    let mut from_end = 0;
    tail(&path, false, false, |_| {
        from_end += 1;
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    assert_eq!(from_end, 0);

    // Break stops early.
    let mut first = Vec::new();
    tail(&path, false, true, |item| {
        first.push(item.unwrap().seq);
        ControlFlow::Break(())
    })
    .await
    .unwrap();
    assert_eq!(first, vec![1]);
}

#[tokio::test]
async fn tail_follow_sees_appends_partial_lines_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // Existing content, ending in a line that is still being written.
    let partial = line(&numbered(3));
    let (head, rest) = partial.split_at(20);
    std::fs::write(
        &path,
        [line(&numbered(1)), line(&numbered(2)), head.to_owned()].concat(),
    )
    .unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tail_path = path.clone();
    let follower = tokio::spawn(async move {
        tail(&tail_path, true, true, move |item| {
            let seq = item.unwrap().seq;
            let _ = tx.send(seq);
            if seq == 11 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
    });

    // Seeing the existing events proves the follower runs; the partial line waits.
    assert_eq!(next(&mut rx).await, 1);
    assert_eq!(next(&mut rx).await, 2);
    // Completing the partial line delivers it.
    append(&path, rest.as_bytes());
    assert_eq!(next(&mut rx).await, 3);
    append(&path, line(&numbered(4)).as_bytes());
    assert_eq!(next(&mut rx).await, 4);

    // Rotation: the path now names a new file.
    std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
    std::fs::write(&path, line(&numbered(10))).unwrap();
    assert_eq!(next(&mut rx).await, 10);
    append(&path, line(&numbered(11)).as_bytes());
    assert_eq!(next(&mut rx).await, 11);

    tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tail_follows_a_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
    writer.write(numbered(0)).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tail_path = path.clone();
    let follower = tokio::spawn(async move {
        tail(&tail_path, true, true, move |item| {
            let seq = item.unwrap().seq;
            let _ = tx.send(seq);
            if seq == 50 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
    });
    for _ in 1..50 {
        writer.write(numbered(0)).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 50 {
        let seq = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(seq);
    }
    assert_eq!(got, (1..=50).collect::<Vec<_>>());
    follower.await.unwrap().unwrap();
    guard.close().await.unwrap();
}
