//! Tamper evidence: the hash chain, rotation (size, age), compression, retention and
//! signed checkpoints, and `verify` catching every kind of tampering while passing an
//! untouched log.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use jitgate_audit::*;

/// A small event whose text says which one it is.
fn event(i: u64) -> Event {
    Event::new(EventBody::AuthFailure {
        client_addr: "10.0.0.9:1111".into(),
        reason: format!("wrong password #{i:04}"),
    })
    .with_identity("mallory")
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    key: SigningKey,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        Fixture {
            _dir: dir,
            path,
            key: SigningKey::generate(),
        }
    }

    /// Rotation every ~25 events, a checkpoint every 10, signed.
    fn config(&self) -> AuditConfig {
        let mut cfg = AuditConfig::new(&self.path);
        // Lines differ by a byte or two (seq 9 vs 10 vs 100): close after exactly 25.
        cfg.rotate_size = Some(25 * line_len() - 30);
        cfg.signing_key = Some(self.key.clone());
        cfg.checkpoint_every = 10;
        cfg.checkpoint_interval = Duration::from_secs(3600);
        cfg
    }

    async fn write(&self, cfg: AuditConfig, range: std::ops::Range<u64>) {
        let (writer, guard) = AuditWriter::start(cfg).unwrap();
        for i in range {
            writer.write(event(i)).await.unwrap();
        }
        guard.close().await.unwrap();
    }

    /// 100 events: closed files 1..=25, 26..=50, 51..=75, live file 76..=100.
    async fn standard(compress: bool) -> Fixture {
        let f = Fixture::new();
        let mut cfg = f.config();
        cfg.compress = compress;
        f.write(cfg, 0..100).await;
        f
    }

    fn verify(&self) -> VerifyReport {
        verify(&self.path, Some(&self.key.public())).unwrap()
    }

    fn files(&self) -> Vec<LogFile> {
        log_files(&self.path).unwrap()
    }

    fn checkpoints(&self) -> PathBuf {
        checkpoints_path(&self.path)
    }

    /// The plain file holding `seq`, and the line's index in it.
    fn find(&self, seq: u64) -> (PathBuf, usize) {
        for file in self.files() {
            assert!(!file.compressed);
            for (i, line) in lines(&file.path).iter().enumerate() {
                if line.contains(&format!("\"seq\":{seq},")) {
                    return (file.path, i);
                }
            }
        }
        panic!("seq {seq} not found");
    }
}

/// Length of one stored line of `event` (they all have the same length).
fn line_len() -> u64 {
    let mut e = event(0);
    e.seq = 10;
    e.prev = Some(LineHash::GENESIS);
    serde_json::to_string(&e).unwrap().len() as u64 + 1
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut l = lines(path);
    f(&mut l);
    write_lines(path, &l);
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[track_caller]
fn assert_problem(report: &VerifyReport, kind: ProblemKind, seq: u64, file: &str) {
    let p = report
        .problems
        .first()
        .unwrap_or_else(|| panic!("no problem found; warnings {:?}", report.warnings));
    assert_eq!(p.kind, kind, "{p}");
    assert_eq!(p.seq, Some(seq), "{p}");
    assert_eq!(name(&p.file), file, "{p}");
    assert!(!report.is_ok());
}

#[tokio::test]
async fn untouched_rotated_compressed_log_verifies_and_reads_in_order() {
    let f = Fixture::standard(true).await;
    let files = f.files();
    let names: Vec<_> = files.iter().map(LogFile::name).collect();
    assert_eq!(
        names,
        [
            "audit.000000000001.jsonl.zst",
            "audit.000000000026.jsonl.zst",
            "audit.000000000051.jsonl.zst",
            "audit.jsonl"
        ]
    );
    // Nothing was left behind by compression.
    let leftovers: Vec<_> = std::fs::read_dir(f.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with("1.jsonl"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let events: Vec<Event> = read_events(&f.path).unwrap().map(Result::unwrap).collect();
    assert_eq!(events.len(), 100);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert!(
            matches!(&e.body, EventBody::AuthFailure { reason, .. } if *reason == format!("wrong password #{i:04}"))
        );
    }
    let mut tailed = Vec::new();
    tail(&f.path, false, true, |e| {
        tailed.push(e.unwrap().seq);
        std::ops::ControlFlow::Continue(())
    })
    .await
    .unwrap();
    assert_eq!(tailed, (1..=100).collect::<Vec<_>>());

    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.events, 100);
    assert_eq!(report.seqs, Some((1, 100)));
    assert!(report.from_genesis);
    assert_eq!(report.files.len(), 4);
    assert!(report.files[0].compressed);
    assert_eq!(report.files[1].seqs, Some((26, 50)));
    assert!(report.checkpoints >= 10, "{}", report.checkpoints);
    assert_eq!(report.checkpoints_signed, report.checkpoints);
    assert_eq!(report.checkpoints_matched, report.checkpoints);
    assert_eq!(report.last_checkpointed, Some(100));

    // Rotation checkpoints name the closed file and its last event; the last one is the
    // shutdown checkpoint.
    let cps: Vec<checkpoint::Checkpoint> = lines(&f.checkpoints())
        .iter()
        .map(|l| checkpoint::parse_and_check(l.as_bytes(), Some(&f.key.public())).unwrap())
        .collect();
    let rotation: Vec<_> = cps
        .iter()
        .filter(|c| c.reason == checkpoint::CheckpointReason::Rotation)
        .map(|c| (c.file.as_str(), c.last_seq))
        .collect();
    assert_eq!(
        rotation,
        [
            ("audit.000000000001.jsonl", 25),
            ("audit.000000000026.jsonl", 50),
            ("audit.000000000051.jsonl", 75),
        ]
    );
    assert!(cps
        .iter()
        .any(|c| c.reason == checkpoint::CheckpointReason::Events));
    assert!(cps.iter().all(|c| c.first_seq == 1));
}

#[tokio::test]
async fn every_line_chains_to_the_one_before_across_files() {
    let f = Fixture::standard(false).await;
    let mut prev = LineHash::GENESIS;
    for file in f.files() {
        for line in lines(&file.path) {
            let e: Event = serde_json::from_str(&line).unwrap();
            assert_eq!(e.prev, Some(prev), "seq {}", e.seq);
            prev = LineHash::of_line(line.as_bytes());
        }
    }
}

#[tokio::test]
async fn an_edited_byte_is_detected() {
    let f = Fixture::standard(false).await;
    let (file, i) = f.find(37);
    edit(&file, |l| {
        l[i] = l[i].replace("wrong password", "wrong passwore")
    });
    assert_problem(
        &f.verify(),
        ProblemKind::ChainBroken,
        37,
        "audit.000000000026.jsonl",
    );
}

#[tokio::test]
async fn an_edit_that_breaks_the_json_is_detected() {
    let f = Fixture::standard(false).await;
    let (file, i) = f.find(37);
    edit(&file, |l| l[i] = l[i].replacen('{', "[", 1));
    assert_problem(
        &f.verify(),
        ProblemKind::Malformed,
        37,
        "audit.000000000026.jsonl",
    );
}

#[tokio::test]
async fn an_edit_of_the_last_event_is_caught_by_the_checkpoint() {
    let f = Fixture::standard(false).await;
    let (file, i) = f.find(100);
    edit(&file, |l| l[i] = l[i].replace("mallory", "mallorz"));
    assert_problem(
        &f.verify(),
        ProblemKind::CheckpointMismatch,
        100,
        "audit.jsonl",
    );
}

#[tokio::test]
async fn a_deleted_event_is_detected() {
    let f = Fixture::standard(false).await;
    let (file, i) = f.find(37);
    edit(&file, |l| {
        l.remove(i);
    });
    let report = f.verify();
    assert_problem(
        &report,
        ProblemKind::Sequence,
        37,
        "audit.000000000026.jsonl",
    );
    assert!(
        report.problems[0].detail.contains("37..37"),
        "{}",
        report.problems[0]
    );
}

#[tokio::test]
async fn an_inserted_event_is_detected() {
    let f = Fixture::standard(false).await;
    let (file, i) = f.find(37);
    edit(&file, |l| {
        let copy = l[i].clone();
        l.insert(i + 1, copy);
    });
    assert_problem(
        &f.verify(),
        ProblemKind::Sequence,
        38,
        "audit.000000000026.jsonl",
    );
}

#[tokio::test]
async fn reordered_events_are_detected() {
    let f = Fixture::standard(false).await;
    let (file, i) = f.find(37);
    edit(&file, |l| l.swap(i, i + 1));
    assert_problem(
        &f.verify(),
        ProblemKind::Sequence,
        37,
        "audit.000000000026.jsonl",
    );
}

#[tokio::test]
async fn a_rewrite_with_a_recomputed_chain_is_caught_by_checkpoints() {
    let f = Fixture::standard(false).await;
    // The forger edits seq 37 and recomputes every later prev, so the chain is intact.
    let mut prev = LineHash::GENESIS;
    for file in f.files() {
        edit(&file.path, |lines| {
            for line in lines.iter_mut() {
                if line.contains("\"seq\":37,") {
                    *line = line.replace("mallory", "innocent");
                }
                let start = line.find("\"prev\":\"").unwrap() + 8;
                line.replace_range(start..start + 64, &prev.to_string());
                prev = LineHash::of_line(line.as_bytes());
            }
        });
    }
    let report = verify(&f.path, Some(&f.key.public())).unwrap();
    let p = &report.problems[0];
    assert_eq!(p.kind, ProblemKind::CheckpointMismatch, "{p}");
    // The first checkpoint at or after 37 is the first one that disagrees.
    let next_checkpoint = lines(&f.checkpoints())
        .iter()
        .map(|l| {
            checkpoint::parse_and_check(l.as_bytes(), None)
                .unwrap()
                .last_seq
        })
        .filter(|&s| s >= 37)
        .min()
        .unwrap();
    assert!(next_checkpoint <= 50);
    assert_eq!(p.seq, Some(next_checkpoint), "{p}");
}

#[tokio::test]
async fn a_cut_off_tail_is_detected() {
    let f = Fixture::standard(false).await;
    edit(&f.path, |l| l.truncate(l.len() - 5));
    let report = f.verify();
    assert_problem(&report, ProblemKind::CutOff, 96, "audit.jsonl");
    assert!(
        report.problems[0].detail.contains("96..100"),
        "{}",
        report.problems[0]
    );
}

#[tokio::test]
async fn a_missing_middle_file_is_detected() {
    let f = Fixture::standard(false).await;
    std::fs::remove_file(f.path.with_file_name("audit.000000000026.jsonl")).unwrap();
    assert_problem(
        &f.verify(),
        ProblemKind::Files,
        26,
        "audit.000000000051.jsonl",
    );
}

#[tokio::test]
async fn a_missing_oldest_file_is_detected() {
    let f = Fixture::standard(false).await;
    std::fs::remove_file(f.path.with_file_name("audit.000000000001.jsonl")).unwrap();
    assert_problem(
        &f.verify(),
        ProblemKind::Files,
        1,
        "audit.000000000026.jsonl",
    );
}

#[tokio::test]
async fn a_missing_live_file_is_a_cut_off_tail() {
    let f = Fixture::standard(false).await;
    std::fs::remove_file(&f.path).unwrap();
    assert_problem(&f.verify(), ProblemKind::CutOff, 76, "audit.jsonl");
}

#[tokio::test]
async fn swapped_files_are_detected() {
    let f = Fixture::standard(false).await;
    let a = f.path.with_file_name("audit.000000000026.jsonl");
    let b = f.path.with_file_name("audit.000000000051.jsonl");
    let tmp = f.path.with_file_name("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    let report = f.verify();
    assert_problem(&report, ProblemKind::Files, 26, "audit.000000000026.jsonl");
    assert!(
        report.problems[0].detail.contains("swapped"),
        "{}",
        report.problems[0]
    );
}

#[tokio::test]
async fn an_edit_inside_a_compressed_file_is_detected() {
    let f = Fixture::standard(true).await;
    let zst = f.path.with_file_name("audit.000000000026.jsonl.zst");
    let text =
        String::from_utf8(zstd::decode_all(std::fs::File::open(&zst).unwrap()).unwrap()).unwrap();
    let edited = text.replace("wrong password #0040", "wrong password #4040");
    assert_ne!(text, edited);
    std::fs::write(&zst, zstd::encode_all(edited.as_bytes(), 3).unwrap()).unwrap();
    assert_problem(
        &f.verify(),
        ProblemKind::ChainBroken,
        41,
        "audit.000000000026.jsonl.zst",
    );

    // A damaged compressed file is reported as unreadable, not skipped.
    std::fs::write(&zst, b"not zstd at all").unwrap();
    let report = f.verify();
    assert_eq!(
        report.problems[0].kind,
        ProblemKind::Unreadable,
        "{}",
        report.problems[0]
    );
}

#[tokio::test]
async fn a_torn_tail_is_tolerated_only_at_the_end_of_the_live_file() {
    let f = Fixture::standard(false).await;
    let mut live = std::fs::read(&f.path).unwrap();
    live.extend_from_slice(br#"{"v":1,"seq":101,"prev":"ab"#);
    std::fs::write(&f.path, &live).unwrap();
    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].contains("torn last line"),
        "{:?}",
        report.warnings
    );
    // jitgate's next start removes the fragment and continues the chain.
    f.write(f.config(), 100..101).await;
    let report = f.verify();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report:?}");
    assert_eq!(report.seqs, Some((1, 101)));

    // In a closed file a line without newline is damage.
    let closed = f.path.with_file_name("audit.000000000026.jsonl");
    let mut bytes = std::fs::read(&closed).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&closed, bytes).unwrap();
    assert_problem(
        &f.verify(),
        ProblemKind::Torn,
        50,
        "audit.000000000026.jsonl",
    );
}

#[tokio::test]
async fn forged_edited_or_deleted_checkpoints_are_detected() {
    let f = Fixture::standard(false).await;
    let original = lines(&f.checkpoints());

    // Edited: one digit of a covered seq.
    let mut edited = original.clone();
    edited[1] = edited[1].replacen("\"last_seq\":", "\"last_seq\":9", 1);
    write_lines(&f.checkpoints(), &edited);
    let report = f.verify();
    assert_eq!(report.problems[0].kind, ProblemKind::BadCheckpoint);
    assert_eq!(report.problems[0].line, Some(2));
    assert!(
        report.problems[0].detail.contains("invalid signature"),
        "{}",
        report.problems[0]
    );

    // Forged: signed with another key but naming ours.
    let forger = SigningKey::generate();
    let other = Fixture {
        _dir: tempfile::tempdir().unwrap(),
        path: PathBuf::new(),
        key: forger.clone(),
    };
    let forged_dir = tempfile::tempdir().unwrap();
    let mut cfg = other.config();
    cfg.path = forged_dir.path().join("audit.jsonl");
    other.write(cfg, 0..10).await;
    let forged = lines(&checkpoints_path(&forged_dir.path().join("audit.jsonl")))[0]
        .replace(&forger.public().to_hex(), &f.key.public().to_hex());
    let mut with_forgery = original.clone();
    with_forgery.push(forged);
    write_lines(&f.checkpoints(), &with_forgery);
    let report = f.verify();
    assert_eq!(report.problems[0].kind, ProblemKind::BadCheckpoint);
    assert_eq!(report.problems[0].line, Some(original.len() as u64 + 1));

    // Deleted: a checkpoint in the middle.
    let mut deleted = original.clone();
    deleted.remove(2);
    write_lines(&f.checkpoints(), &deleted);
    let report = f.verify();
    assert_eq!(report.problems[0].kind, ProblemKind::BadCheckpoint);
    assert!(report.problems[0]
        .detail
        .contains("deleted, inserted or reordered"));

    // The untouched file with the wrong public key: named key differs.
    write_lines(&f.checkpoints(), &original);
    let report = verify(&f.path, Some(&forger.public())).unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::BadCheckpoint);
    assert!(report.problems[0]
        .detail
        .contains("not by the given public key"));

    // No public key: the chain is fine, but unchecked signatures are a problem.
    let report = verify(&f.path, None).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].kind, ProblemKind::Unsigned);
    assert!(f.verify().is_ok());
}

#[tokio::test]
async fn without_a_signing_key_there_are_no_checkpoints_and_verify_says_so() {
    let f = Fixture::new();
    let mut cfg = f.config();
    cfg.signing_key = None;
    f.write(cfg, 0..30).await;
    assert!(!f.checkpoints().exists());
    let report = verify(&f.path, None).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.checkpoints, 0);
    assert!(
        report.warnings[0].contains("signing_key_file"),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn the_chain_continues_across_restarts_and_an_interrupted_rotation() {
    let f = Fixture::new();
    f.write(f.config(), 0..30).await;
    f.write(f.config(), 30..40).await;
    // A crash right after a rotation renamed the live file, before the new one existed.
    let first: Event = serde_json::from_str(&lines(&f.path)[0]).unwrap();
    assert_eq!(first.seq, 26);
    std::fs::rename(&f.path, f.path.with_file_name("audit.000000000026.jsonl")).unwrap();
    f.write(f.config(), 40..45).await;
    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.seqs, Some((1, 45)));
    assert!(report.from_genesis);
}

#[tokio::test]
async fn retention_keeps_the_newest_files_and_verify_knows_why_the_rest_is_gone() {
    let f = Fixture::new();
    let mut cfg = f.config();
    cfg.retain = Retain::Files(2);
    cfg.compress = true;
    f.write(cfg, 0..100).await;
    let names: Vec<_> = f.files().iter().map(LogFile::name).collect();
    assert_eq!(
        names,
        [
            "audit.000000000026.jsonl.zst",
            "audit.000000000051.jsonl.zst",
            "audit.jsonl"
        ]
    );
    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.seqs, Some((26, 100)));
    assert!(!report.from_genesis);
    assert!(report.checkpoints_retired > 0);
    assert!(
        report.warnings[0].contains("deleted by retention"),
        "{:?}",
        report.warnings
    );

    // Deleting one more by hand is not retention.
    std::fs::remove_file(f.path.with_file_name("audit.000000000026.jsonl.zst")).unwrap();
    assert_problem(
        &f.verify(),
        ProblemKind::Files,
        26,
        "audit.000000000051.jsonl.zst",
    );
}

#[tokio::test]
async fn retention_by_age_deletes_old_files() {
    let f = Fixture::new();
    // Age the first files, then close more: only those older than an hour go.
    f.write(f.config(), 0..60).await;
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    for file in f.files().iter().filter(|f| !f.is_live()) {
        std::fs::File::options()
            .write(true)
            .open(&file.path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let mut cfg = f.config();
    cfg.retain = Retain::Age(Duration::from_secs(3600));
    f.write(cfg, 60..80).await;
    let names: Vec<_> = f.files().iter().map(LogFile::name).collect();
    assert_eq!(names, ["audit.000000000051.jsonl", "audit.jsonl"]);
    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.seqs, Some((51, 80)));
}

#[tokio::test]
async fn age_rotation_and_interval_checkpoints_happen_without_new_events() {
    let f = Fixture::new();
    let mut cfg = f.config();
    cfg.rotate_size = None;
    cfg.rotate_age = Some(Duration::from_millis(300));
    cfg.checkpoint_every = 1000;
    cfg.checkpoint_interval = Duration::from_millis(200);
    let (writer, guard) = AuditWriter::start(cfg).unwrap();
    // Let the writer thread go idle first (no duty due yet): the inline writes below
    // must wake it, or its timers never start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        writer.write(event(i)).await.unwrap();
    }
    // Nothing else is written: the writer's own timers must act.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rotated = f.path.with_file_name("audit.000000000001.jsonl").exists();
        // The first line is the `start` checkpoint of the empty log.
        let checkpointed = lines(&f.checkpoints()).len() > 1;
        if rotated && checkpointed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rotated {rotated}, checkpointed {checkpointed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.write(event(3)).await.unwrap();
    guard.close().await.unwrap();
    let cps = lines(&f.checkpoints());
    assert!(
        cps[0].contains("\"reason\":\"start\"") && cps[0].contains("\"last_seq\":0,"),
        "{cps:?}"
    );
    assert!(
        cps[1].contains("\"reason\":\"interval\"") || cps[1].contains("\"reason\":\"rotation\""),
        "{cps:?}"
    );
    assert!(
        cps.last().unwrap().contains("\"reason\":\"shutdown\""),
        "{cps:?}"
    );
    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.seqs, Some((1, 4)));
    assert_eq!(report.files.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_being_written_rotated_and_compressed_verifies_at_any_moment() {
    let f = Fixture::new();
    let mut cfg = f.config();
    cfg.compress = true;
    cfg.rotate_size = Some(50 * line_len());
    let (writer, guard) = AuditWriter::start(cfg).unwrap();
    let writing = tokio::spawn(async move {
        for i in 0..500 {
            writer.write(event(i)).await.unwrap();
        }
    });
    let mut checks = 0;
    while !writing.is_finished() || checks == 0 {
        let path = f.path.clone();
        let key = f.key.public();
        let report = tokio::task::spawn_blocking(move || verify(&path, Some(&key)).unwrap())
            .await
            .unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        checks += 1;
    }
    writing.await.unwrap();
    guard.close().await.unwrap();
    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.seqs, Some((1, 500)));
    assert!(report.files.len() >= 10, "{:?}", report.files);
}

// ---- A log cut back is always caught (issue 17, item 5) ----

/// Shortens `path` to `len` bytes.
fn truncate_to(path: &Path, len: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Byte offset where the line of `seq` starts in `path`.
fn offset_of(path: &Path, seq: u64) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let at = text.find(&format!("\"seq\":{seq},")).unwrap();
    text[..at].rfind('\n').map_or(0, |nl| nl as u64 + 1)
}

#[tokio::test]
async fn with_a_key_a_missing_or_empty_checkpoints_file_fails_verify() {
    let f = Fixture::standard(false).await;
    std::fs::write(f.checkpoints(), "").unwrap();
    let report = f.verify();
    assert_eq!(
        report.problems[0].kind,
        ProblemKind::NoCheckpoints,
        "{:?}",
        report.problems
    );
    assert!(
        report.problems[0].detail.contains("holds no checkpoint"),
        "{}",
        report.problems[0]
    );
    std::fs::remove_file(f.checkpoints()).unwrap();
    let report = f.verify();
    assert_eq!(
        report.problems[0].kind,
        ProblemKind::NoCheckpoints,
        "{:?}",
        report.problems
    );
    assert!(
        report.problems[0].detail.contains("is missing"),
        "{}",
        report.problems[0]
    );
    // Without a key it stays a warning: nothing says checkpoints were ever written.
    assert!(verify(&f.path, None).unwrap().is_ok());
}

#[tokio::test]
async fn a_fresh_log_with_a_key_has_a_start_checkpoint_and_verifies() {
    let f = Fixture::new();
    f.write(f.config(), 0..0).await;
    let cps = lines(&f.checkpoints());
    assert_eq!(cps.len(), 1, "{cps:?}");
    assert!(cps[0].contains("\"reason\":\"start\""), "{cps:?}");
    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    // Opening again adds nothing: the start checkpoint still covers the log.
    f.write(f.config(), 0..0).await;
    assert_eq!(lines(&f.checkpoints()).len(), 1);
}

#[tokio::test]
async fn every_way_of_cutting_the_log_back_is_caught() {
    // The live file cut mid-line (inside seq 90).
    let f = Fixture::standard(false).await;
    truncate_to(&f.path, offset_of(&f.path, 90) + 20);
    let report = f.verify();
    assert_problem(&report, ProblemKind::CutOff, 90, "audit.jsonl");
    assert!(
        report.problems[0].detail.contains("90..100"),
        "{}",
        report.problems[0]
    );

    // The live file cut at a line boundary (before seq 90).
    let f = Fixture::standard(false).await;
    truncate_to(&f.path, offset_of(&f.path, 90));
    assert_problem(&f.verify(), ProblemKind::CutOff, 90, "audit.jsonl");

    // The newest closed file deleted after a rotation left the live file empty (as the
    // writer leaves it: the live file renamed to its closed name, a new empty one made).
    let f = Fixture::new();
    f.write(f.config(), 0..50).await;
    let newest = f.path.with_file_name("audit.000000000026.jsonl");
    std::fs::rename(&f.path, &newest).unwrap();
    std::fs::write(&f.path, "").unwrap();
    assert!(f.verify().is_ok());
    std::fs::remove_file(&newest).unwrap();
    let report = f.verify();
    assert_eq!(
        report.problems[0].kind,
        ProblemKind::CutOff,
        "{:?}",
        report.problems
    );
    assert_eq!(report.problems[0].seq, Some(26), "{}", report.problems[0]);
    let err = AuditWriter::start(f.config()).map(|_| ()).unwrap_err();
    assert!(
        err.to_string().contains("events 26..50 were removed"),
        "{err}"
    );

    // Log and checkpoints cut back consistently: undetectable offline, caught by a
    // witness that kept the checkpoints.
    let f = Fixture::standard(false).await;
    let witness = WitnessCheckpoints {
        source: "test witness".into(),
        lines: lines(&f.checkpoints())
            .into_iter()
            .map(String::into_bytes)
            .collect(),
    };
    truncate_to(&f.path, offset_of(&f.path, 90));
    edit(&f.checkpoints(), |l| {
        while l
            .last()
            .is_some_and(|c| !c.contains("\"last_seq\":80,") && !c.contains("\"last_seq\":75,"))
        {
            l.pop();
        }
    });
    let report = f.verify();
    assert!(
        report.is_ok(),
        "consistent cut is not caught offline: {:?}",
        report.problems
    );
    let report = verify_with(&f.path, Some(&f.key.public()), Some(&witness)).unwrap();
    assert_problem(&report, ProblemKind::CutOff, 90, "audit.jsonl");
    assert!(
        report.problems[0].detail.contains("test witness"),
        "{}",
        report.problems[0]
    );
    // Even with the checkpoints file deleted too.
    std::fs::remove_file(f.checkpoints()).unwrap();
    let report = verify_with(&f.path, Some(&f.key.public()), Some(&witness)).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::CutOff),
        "{:?}",
        report.problems
    );
    // An intact log passes with its witness.
    let f = Fixture::standard(true).await;
    let witness = WitnessCheckpoints {
        source: "test witness".into(),
        lines: lines(&f.checkpoints())
            .into_iter()
            .map(String::into_bytes)
            .collect(),
    };
    let report = verify_with(&f.path, Some(&f.key.public()), Some(&witness)).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.witness.as_ref().unwrap().2, Some(100));
}

#[tokio::test]
async fn the_writer_refuses_a_cut_back_log_until_the_loss_is_acknowledged() {
    let f = Fixture::standard(false).await;
    truncate_to(&f.path, offset_of(&f.path, 90) + 7); // mid-line: the torn part goes too
    let err = AuditWriter::start(f.config()).map(|_| ()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AuditError::CutBack(_)), "{err:?}");
    for part in [
        "ends at seq 89",
        "covers up to seq 100",
        "events 90..100 were removed while jitgate was stopped",
        "jitgate audit acknowledge-truncation --reason",
    ] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
    // Refusing wrote nothing.
    assert!(!lines(&f.checkpoints())
        .last()
        .unwrap()
        .contains("\"reason\":\"start\""));

    let mut cfg = f.config();
    cfg.acknowledge_cut = Some(CutAcknowledgement {
        reason: "disk restored from Tuesday's snapshot".into(),
        by: "ops-oncall".into(),
    });
    f.write(cfg.clone(), 0..0).await;
    let last: Event = serde_json::from_str(lines(&f.path).last().unwrap()).unwrap();
    assert_eq!(last.seq, 101, "the lost events keep their numbers");
    assert!(
        matches!(&last.body, EventBody::LogCutAcknowledged { lost_from: Some(90), lost_to: Some(100), reason, acknowledged_by, .. }
            if reason.contains("Tuesday") && acknowledged_by == "ops-oncall"),
        "{last:?}"
    );
    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(
        report.acknowledged[0].contains("events 90..100 were lost"),
        "{:?}",
        report.acknowledged
    );
    assert!(
        report.acknowledged[0].contains("Tuesday"),
        "{:?}",
        report.acknowledged
    );

    // Now it opens normally and continues after the acknowledgement.
    f.write(f.config(), 0..2).await;
    let report = f.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.seqs, Some((1, 103)));
    // Acknowledging again has nothing to acknowledge, and writes nothing.
    let before = std::fs::read(&f.path).unwrap();
    let err = AuditWriter::start(cfg).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, AuditError::NothingToAcknowledge(_)),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&f.path).unwrap(), before);
}

#[tokio::test]
async fn a_forged_acknowledgement_does_not_hide_a_cut() {
    let f = Fixture::standard(false).await;
    truncate_to(&f.path, offset_of(&f.path, 90));
    // Someone without the key appends a well-chained acknowledgement by hand.
    let last = lines(&f.path).last().unwrap().clone();
    let mut forged = Event::new(EventBody::LogCutAcknowledged {
        lost_from: Some(90),
        lost_to: Some(100),
        checkpoint_ts: None,
        reason: "nothing to see".into(),
        acknowledged_by: "mallory".into(),
    });
    forged.seq = 101;
    forged.prev = Some(LineHash::of_line(last.as_bytes()));
    edit(&f.path, |l| l.push(serde_json::to_string(&forged).unwrap()));
    let report = f.verify();
    assert_problem(&report, ProblemKind::Sequence, 90, "audit.jsonl");
    assert!(report.acknowledged.is_empty());
}

#[tokio::test]
async fn deleted_checkpoints_stop_the_writer_too() {
    let f = Fixture::standard(false).await;
    std::fs::remove_file(f.checkpoints()).unwrap();
    let err = AuditWriter::start(f.config()).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("holds no checkpoint"), "{err}");
    // A log without a key is not affected.
    let mut cfg = f.config();
    cfg.signing_key = None;
    f.write(cfg, 0..1).await;
}
