//! The audit log's integrity end to end: `jitgate audit keygen` and `verify` as a user
//! runs them, the `audit.*` integrity settings in the config, and crash safety — a
//! `jitgate serve` killed with SIGKILL under pgbench load leaves a log that verifies and
//! holds a `query` event for every statement the database executed.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;

use common::jitgate_cli as jitgate;
use common::output_text as text;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::{Env, ALICE};
use jitgate::config;
use jitgate_audit::{EventBody, Retain};

fn keygen(dir: &Path) {
    let out = jitgate(&["audit", "keygen", "--out", "keys"], dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("signing_key_file: keys/audit-signing.key")
    );
}

/// Adds `lines` (already indented) to the `audit:` section of the env's config.
fn add_audit_settings(env: &Env, lines: &str) {
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let yaml = yaml.replacen(
        "audit:\n  path: audit.jsonl\n",
        &format!("audit:\n  path: audit.jsonl\n{lines}"),
        1,
    );
    assert!(yaml.contains(lines));
    std::fs::write(&env.config_path, yaml).unwrap();
}

fn verify_cli(env: &Env, extra: &[&str]) -> Output {
    let config = env.config_path.to_str().unwrap();
    let mut args = vec!["audit", "verify", "--config", config];
    args.extend_from_slice(extra);
    jitgate(&args, env.dir.path())
}

/// The plain file of the set holding `seq`, and the line index.
fn find_line(live: &Path, seq: u64) -> (PathBuf, usize) {
    for file in jitgate_audit::log_files(live).unwrap() {
        assert!(!file.compressed);
        let content = std::fs::read_to_string(&file.path).unwrap();
        if let Some(i) = content
            .lines()
            .position(|l| l.contains(&format!("\"seq\":{seq},")))
        {
            return (file.path, i);
        }
    }
    panic!("seq {seq} not in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_an_untouched_log_and_names_the_first_bad_seq() {
    let mut env = Env::start("verify").await;
    keygen(env.dir.path());
    add_audit_settings(
        &env,
        "  signing_key_file: keys/audit-signing.key\n  rotate_size: 4KiB\n  checkpoint_every: 5\n",
    );
    env.restart().await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    for i in 0..40 {
        client
            .simple_query(&format!("SELECT {i} AS n"))
            .await
            .unwrap();
    }
    drop(client);
    let _ = conn.await;
    env.server.take().unwrap().stop().await.unwrap();
    let live = env.audit_path();
    let files = jitgate_audit::log_files(&live).unwrap();
    assert!(files.len() >= 4, "rotated by size: {files:?}");

    let out = verify_cli(&env, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK: the audit log is intact"), "{stdout}");
    assert!(
        stdout.contains("chained from the first event (genesis)"),
        "{stdout}"
    );
    assert!(stdout.contains("signature(s) valid"), "{stdout}");

    let out = verify_cli(&env, &["--public-key", "keys/audit-signing.pub", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["files"].as_array().unwrap().len(), files.len());
    assert!(json["checkpoints_signed"].as_u64().unwrap() > 5, "{json}");

    // An edited byte in a closed file: exit 1, naming the seq and the file.
    let (file, i) = find_line(&live, 30);
    let original = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    assert!(lines[i].contains("\"identity\":\"alice\""), "{}", lines[i]);
    lines[i] = lines[i].replace("\"identity\":\"alice\"", "\"identity\":\"alicf\"");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = verify_cli(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr.contains("audit log verification FAILED: seq 30: "),
        "{stderr}"
    );
    assert!(stderr.contains(&name), "{stderr}");
    std::fs::write(&file, &original).unwrap();

    // A cut-off tail: the checkpoints cover more than is there.
    let live_content = std::fs::read(&live).unwrap();
    let last_seq = jitgate_audit::read_events(&live)
        .unwrap()
        .last()
        .unwrap()
        .unwrap()
        .seq;
    let mut cut: Vec<&str> = std::str::from_utf8(&live_content)
        .unwrap()
        .lines()
        .collect();
    cut.pop();
    std::fs::write(&live, cut.join("\n") + "\n").unwrap();
    let out = verify_cli(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("seq {last_seq}: ")), "{stderr}");
    assert!(stderr.contains("cut off"), "{stderr}");
    std::fs::write(&live, &live_content).unwrap();
    assert!(verify_cli(&env, &[]).status.success());

    // Another key: the checkpoints were not signed by it.
    let other = env.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    keygen(&other);
    let out = verify_cli(&env, &["--public-key", "other/keys/audit-signing.pub"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not by the given public key"),
        "{}",
        text(&out)
    );

    // An auditor without the private key verifies with the public one.
    let private = env.dir.path().join("keys/audit-signing.key");
    let moved = env.dir.path().join("moved.key");
    std::fs::rename(&private, &moved).unwrap();
    let out = verify_cli(&env, &["--public-key", "keys/audit-signing.pub"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = verify_cli(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--public-key"),
        "{}",
        text(&out)
    );
    std::fs::rename(&moved, &private).unwrap();

    // No key at all (just the file, no config): signatures unchecked is a failure.
    let elsewhere = tempfile::tempdir().unwrap();
    let live_arg = live.to_str().unwrap();
    let out = jitgate(&["audit", "verify", "--file", live_arg], elsewhere.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no public key"),
        "{}",
        text(&out)
    );
}

/// A config whose `audit:` section is `audit`, in a fresh directory with the files it
/// names.
fn config_with_audit(audit: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("role.password"), "pw").unwrap();
    std::fs::write(
        dir.path().join("admin.token"),
        "test-admin-token-0123456789",
    )
    .unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:6432\n\
         identities:\n  alice:\n    scram_verifier: \"{verifier}\"\n\
         targets:\n  prod:\n    host: 127.0.0.1\n    tls: {{ mode: disable }}\n    roles:\n      ro:\n        user: app_ro\n        password_file: role.password\n\
         store: {{ sqlite: grants.db }}\n\
         audit:\n  path: audit.jsonl\n{audit}\
         admin: {{ listen: 127.0.0.1:6433, token_file: admin.token }}\n",
        verifier = jitgate_proxy::auth::ScramVerifier::from_password("pw"),
    );
    let path = dir.path().join("jitgate.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

#[test]
fn integrity_settings_are_resolved_and_validated_by_field() {
    let (dir, path) = config_with_audit("");
    keygen(dir.path());
    let defaults = config::load(&path).unwrap().audit;
    assert_eq!(defaults.rotate_size, Some(256 * 1024 * 1024));
    assert_eq!(defaults.rotate_age, None);
    assert_eq!(defaults.retain, Retain::All);
    assert!(!defaults.compress && defaults.signing_key.is_none());

    let (dir, path) = config_with_audit(
        "  rotate_size: 1GiB\n  rotate_age: 24h\n  retain: 30\n  compress: true\n  \
         signing_key_file: keys/audit-signing.key\n  checkpoint_every: 500\n  checkpoint_interval: 30s\n",
    );
    keygen(dir.path());
    let audit = config::load(&path).unwrap().audit;
    assert_eq!(audit.rotate_size, Some(1 << 30));
    assert_eq!(audit.rotate_age, Some(Duration::from_secs(86_400)));
    assert_eq!(audit.retain, Retain::Files(30));
    assert!(audit.compress);
    let public =
        jitgate_audit::PublicKey::load(&dir.path().join("keys/audit-signing.pub")).unwrap();
    assert_eq!(audit.signing_key.unwrap().public(), public);
    assert_eq!(audit.checkpoint_every, 500);
    assert_eq!(audit.checkpoint_interval, Duration::from_secs(30));
    // `jitgate audit verify` resolves the same section alone.
    assert_eq!(
        config::load_audit(&path).unwrap().rotate_size,
        Some(1 << 30)
    );

    let (_dir, path) = config_with_audit("  retain: 90d\n  rotate_size: off\n");
    let audit = config::load(&path).unwrap().audit;
    assert_eq!(audit.retain, Retain::Age(Duration::from_secs(90 * 86_400)));
    assert_eq!(audit.rotate_size, None);

    let cases: &[(&str, &str, &str)] = &[
        (
            "  rotate_size: 12 parsecs\n",
            "audit.rotate_size",
            "unknown unit",
        ),
        ("  rotate_size: 100\n", "audit.rotate_size", "too small"),
        (
            "  rotate_age: 10s\n",
            "audit.rotate_age",
            "shorter than 1 minute",
        ),
        ("  retain: 0\n", "audit.retain", "at least 1"),
        ("  retain: forever\n", "audit.retain", "invalid duration"),
        (
            "  signing_key_file: nope.key\n",
            "audit.signing_key_file",
            "cannot read",
        ),
        (
            "  checkpoint_every: 100\n",
            "audit.checkpoint_every",
            "signing_key_file",
        ),
        (
            "  checkpoint_interval: 5s\n",
            "audit.checkpoint_interval",
            "signing_key_file",
        ),
        ("  witness: store\n", "audit.witness", "store.postgres"),
        ("  witness: somewhere\n", "audit.witness", "store"),
        ("  witness_log: \"\"\n", "audit.witness_log", "empty"),
    ];
    for (yaml, field, needle) in cases {
        let (_dir, path) = config_with_audit(yaml);
        let err = config::load(&path).unwrap_err();
        assert_eq!(err.field_path(), Some(*field), "{yaml}: {err}");
        assert!(err.to_string().contains(needle), "{yaml}: {err}");
    }

    // A key others can read, and a file that is no key.
    let (dir, path) =
        config_with_audit("  signing_key_file: keys/audit-signing.key\n  checkpoint_every: 0\n");
    keygen(dir.path());
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.field_path(), Some("audit.checkpoint_every"), "{err}");
    let (dir, path) = config_with_audit("  signing_key_file: keys/audit-signing.key\n");
    keygen(dir.path());
    let key = dir.path().join("keys/audit-signing.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = config::load(&path).unwrap_err();
        assert_eq!(err.field_path(), Some("audit.signing_key_file"), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.field_path(), Some("audit.signing_key_file"), "{err}");
    assert!(err.to_string().contains("PKCS#8"), "{err}");
    assert!(!err.to_string().contains("AAAA"), "{err}");

    // The witness: none with the SQLite store; verify --witness says why.
    let (_dir, path) = config_with_audit("");
    assert_eq!(config::load(&path).unwrap().witness, None);
    let err = config::load_witness(&path).unwrap_err();
    assert!(err.to_string().contains("store.postgres"), "{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Statements in the database's own log (`log_statement = 'all'`) that contain `marker`.
fn executed_statements(marker: &str) -> HashMap<String, usize> {
    let log = std::fs::read(common::cluster().log_path()).unwrap();
    let mut seen = HashMap::new();
    for line in String::from_utf8_lossy(&log).lines() {
        if let Some((_, statement)) = line.split_once("LOG:  statement: ") {
            if statement.contains(marker) {
                *seen.entry(statement.to_owned()).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// `query` events in the audit log whose SQL contains `marker`.
fn audited_statements(live: &Path, marker: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for event in jitgate_audit::read_events(live).unwrap() {
        if let EventBody::Query { sql, .. } = event.unwrap().body {
            if sql.contains(marker) {
                *seen.entry(sql).or_insert(0) += 1;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_pgbench_loses_no_executed_statement_and_the_log_verifies() {
    let mut env = Env::start("crash").await;
    keygen(env.dir.path());
    add_audit_settings(
        &env,
        "  signing_key_file: keys/audit-signing.key\n  rotate_size: 64KiB\n  compress: true\n  checkpoint_every: 200\n",
    );
    // Signing from the first event: a key configured for a log that already holds
    // events is refused until acknowledged (its checkpoints could have been deleted).
    env.restart().await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (proxy_port, admin_port) = (free_port(), free_port());
    env.server.take().unwrap().stop().await.unwrap();
    let yaml = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replacen(
            "listen: 127.0.0.1:0",
            &format!("listen: 127.0.0.1:{proxy_port}"),
            1,
        )
        .replacen(
            "  listen: 127.0.0.1:0",
            &format!("  listen: 127.0.0.1:{admin_port}"),
            1,
        );
    std::fs::write(&env.config_path, yaml).unwrap();

    // The database logs every statement it receives; ours carry a marker no other test
    // uses, and a random number each, so each execution is one distinct log line.
    env.superuser_sql(&format!(
        "ALTER DATABASE {} SET log_statement = 'all'",
        env.target
    ));
    let marker = format!("jitgate-crash-{}", env.target);
    let script = env.dir.path().join("bench.sql");
    std::fs::write(
        &script,
        format!("\\set r random(1, 1000000000000)\nSELECT /* {marker} */ :r::bigint AS r, :client_id AS c;\n"),
    )
    .unwrap();

    let stderr = std::fs::File::create(env.dir.path().join("serve.log")).unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["serve", "--config"])
        .arg(&env.config_path)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "jitgate serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cluster = common::cluster();
    let mut pgbench = Command::new(cluster.bin("pgbench"))
        .args([
            "-n", "-M", "simple", "-c", "4", "-j", "2", "-T", "120", "-f",
        ])
        .arg(&script)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", proxy_port.to_string())
        .env("PGUSER", ALICE)
        .env("PGPASSWORD", harness::ALICE_PASSWORD)
        .env("PGDATABASE", &env.target)
        .env("PGSSLMODE", "disable")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Kill jitgate once the load has rotated the log several times.
    let live = env.audit_path();
    let started = Instant::now();
    loop {
        let rotated = jitgate_audit::log_files(&live).unwrap().len();
        if rotated >= 6 {
            break;
        }
        if let Some(status) = pgbench.try_wait().unwrap() {
            panic!("pgbench ended early: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no load reached the log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve.kill().unwrap(); // SIGKILL
    serve.wait().unwrap();

    // pgbench notices the lost connections and gives up.
    let done = tokio::task::spawn_blocking(move || pgbench.wait_with_output());
    let bench = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        !bench.status.success(),
        "pgbench should see its connections drop"
    );

    // Wait for the database's sessions to end, so its log is complete.
    let started = Instant::now();
    loop {
        let others = env.superuser_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        );
        if others.trim() == "0" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "backends still running: {others}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let executed = executed_statements(&marker);
    let audited = audited_statements(&live, &marker);
    let executed_total: usize = executed.values().sum();
    let audited_total: usize = audited.values().sum();
    assert!(
        executed_total > 100,
        "the load ran: {executed_total} statements"
    );
    eprintln!("executed {executed_total} statements, audited {audited_total}");
    for (statement, count) in &executed {
        let recorded = audited.get(statement).copied().unwrap_or(0);
        assert!(
            recorded >= *count,
            "executed {count}×, audited {recorded}×: {statement}"
        );
    }
    // At most the statements in flight (one per client) were audited but never ran.
    assert!(
        audited_total <= executed_total + 4,
        "audited {audited_total}, executed {executed_total}"
    );

    // The log verifies (a torn last line would be a warning).
    let out = verify_cli(&env, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK: the audit log is intact"), "{stdout}");

    // The next start cuts any torn tail, finishes interrupted compression and continues
    // the chain; the log still verifies, now without warnings about the tail.
    let audit = config::load_audit(&env.config_path).unwrap();
    let (writer, guard) = jitgate_audit::AuditWriter::start(audit).unwrap();
    let next = writer
        .write(jitgate_audit::Event::new(EventBody::AuthFailure {
            client_addr: "127.0.0.1:1".into(),
            reason: "after the crash".into(),
        }))
        .await
        .unwrap();
    drop(writer);
    guard.close().await.unwrap();
    let files = jitgate_audit::log_files(&live).unwrap();
    assert!(
        files.iter().all(|f| f.is_live() || f.compressed),
        "{files:?}"
    );
    let leftovers = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
    let out = verify_cli(&env, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("torn"), "{stdout}");
    assert!(stdout.contains(&format!("..{next},")), "{stdout}");
}

/// Runs `jitgate serve` and waits (bounded) for it to exit by itself.
fn serve_expecting_exit(env: &Env) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["serve", "--config", env.config_path.to_str().unwrap()])
        .current_dir(env.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("jitgate serve did not refuse the cut-back log: still running after 120 s");
        }
    }
}

/// Cuts the last `n` lines off `live`; returns the `seq` of the first one cut.
fn cut_lines(live: &Path, n: usize) -> u64 {
    let content = std::fs::read_to_string(live).unwrap();
    let lines: Vec<&str> = content.lines().collect();
    let keep = lines.len() - n;
    let first_cut: jitgate_audit::Event = serde_json::from_str(lines[keep]).unwrap();
    let kept: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(live, kept).unwrap();
    first_cut.seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_cut_back_log_until_the_loss_is_acknowledged() {
    let mut env = Env::start("cutback").await;
    keygen(env.dir.path());
    add_audit_settings(&env, "  signing_key_file: keys/audit-signing.key\n");
    env.restart().await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    for i in 0..5 {
        client.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    drop(client);
    let _ = conn.await;
    env.server.take().unwrap().stop().await.unwrap();
    let live = env.audit_path();
    let checkpoints = jitgate_audit::checkpoints_path(&live);
    assert!(verify_cli(&env, &[]).status.success());

    // The checkpoints file deleted or emptied: with a key configured, verify fails.
    let saved = std::fs::read(&checkpoints).unwrap();
    std::fs::write(&checkpoints, "").unwrap();
    let out = verify_cli(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("holds no checkpoint"), "{}", text(&out));
    std::fs::remove_file(&checkpoints).unwrap();
    let out = verify_cli(&env, &["--public-key", "keys/audit-signing.pub"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is missing"), "{}", text(&out));
    std::fs::write(&checkpoints, &saved).unwrap();

    // Cut the tail at a line boundary while jitgate is stopped.
    let last = jitgate_audit::read_events(&live)
        .unwrap()
        .last()
        .unwrap()
        .unwrap()
        .seq;
    let first_cut = cut_lines(&live, 3);
    let out = verify_cli(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cut off"), "{}", text(&out));

    // jitgate refuses to start, says what happened and how to acknowledge it.
    let out = serve_expecting_exit(&env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in [
        format!("ends at seq {}", first_cut - 1),
        format!("covers up to seq {last}"),
        format!("events {first_cut}..{last} were removed while jitgate was stopped"),
        "jitgate audit acknowledge-truncation --reason".to_owned(),
    ] {
        assert!(stderr.contains(&part), "{part:?} not in {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    let config = config::load(&env.config_path).unwrap();
    let refused = jitgate::serve::start(config).await.map(|_| ()).unwrap_err();
    assert!(refused.to_string().contains("were removed"), "{refused}");

    // The operator acknowledges; it is recorded, and jitgate starts again.
    let cfg = env.config_path.to_str().unwrap();
    let out = jitgate(
        &[
            "audit",
            "acknowledge-truncation",
            "--config",
            cfg,
            "--reason",
            "restored from the 02:00 snapshot",
        ],
        env.dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = jitgate(
        &[
            "audit",
            "acknowledge-truncation",
            "--config",
            cfg,
            "--reason",
            "again",
        ],
        env.dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nothing to acknowledge"),
        "{}",
        text(&out)
    );
    env.restart().await;
    let (client, conn) = env.connect().await.unwrap();
    client.simple_query("SELECT 'after'").await.unwrap();
    drop(client);
    let _ = conn.await;
    env.server.take().unwrap().stop().await.unwrap();
    let ack = env
        .audit_events()
        .into_iter()
        .find(|e| matches!(e.body, EventBody::LogCutAcknowledged { .. }))
        .expect("the acknowledgement is in the log");
    assert_eq!(ack.seq, last + 1, "the lost events keep their numbers");
    match &ack.body {
        EventBody::LogCutAcknowledged {
            lost_from,
            lost_to,
            reason,
            ..
        } => {
            assert_eq!((*lost_from, *lost_to), (Some(first_cut), Some(last)));
            assert!(reason.contains("02:00 snapshot"));
        }
        _ => unreachable!(),
    }
    let out = verify_cli(&env, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("note: events {first_cut}..{last} were lost")),
        "{stdout}"
    );
    assert!(stdout.contains("02:00 snapshot"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printing_commands_end_quietly_when_stdout_is_closed() {
    let env = Env::start("pipe").await;
    let grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    for i in 0..20 {
        client.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    drop(client);
    let _ = conn.await;
    let session = env
        .audit_events()
        .into_iter()
        .find_map(|e| e.session_id)
        .unwrap()
        .to_string();
    // The CLI's config names the admin API's real address (the server bound port 0).
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let admin = env.server().admin_addr;
    let yaml = yaml.replacen(
        "admin:\n  listen: 127.0.0.1:0\n",
        &format!("admin:\n  listen: {admin}\n"),
        1,
    );
    assert!(yaml.contains(&admin.to_string()));
    let cli_config = env.dir.path().join("cli.yaml");
    std::fs::write(&cli_config, yaml).unwrap();
    let cfg = cli_config.to_str().unwrap().to_owned();
    let commands: Vec<Vec<&str>> = vec![
        vec!["audit", "tail"],
        vec!["audit", "replay", "--session", &session],
        vec!["audit", "replay", "--session", &session, "--format", "json"],
        vec!["audit", "search"],
        vec!["audit", "search", "--json"],
        vec!["audit", "sessions"],
        vec!["audit", "export"],
        vec!["audit", "export", "--format", "csv"],
        vec!["audit", "verify"],
        vec!["grants"],
        vec!["grants", "--json"],
        vec!["sessions"],
        vec!["check-config"],
    ];
    let _ = &grant;
    for args in commands {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jitgate"));
        cmd.args(&args)
            .args(["--config", &cfg])
            .current_dir(env.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // The reader goes away before the command prints anything (`| head -0`).
        drop(child.stdout.take());
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grant_store_witnesses_checkpoints_and_catches_a_consistent_cut() {
    let store_dir = tempfile::tempdir().unwrap();
    let (store_db, url_file) = common::store_database(store_dir.path(), "wstore").await;
    let store = format!(
        "postgres:\n  url_file: {}\n  connect_timeout: 2s\n  tls: {{ mode: disable }}",
        url_file.display()
    );
    let mut env = Env::start_config(
        "witness",
        harness::EnvConfig {
            store: Some(&store),
            ..harness::EnvConfig::default()
        },
    )
    .await;
    keygen(env.dir.path());
    add_audit_settings(
        &env,
        "  signing_key_file: keys/audit-signing.key\n  checkpoint_every: 5\n  witness_log: test-log\n",
    );
    env.restart().await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    for i in 0..30 {
        client.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    drop(client);
    let _ = conn.await;
    env.server.take().unwrap().stop().await.unwrap();
    let live = env.audit_path();
    let checkpoints = jitgate_audit::checkpoints_path(&live);
    let local: Vec<String> = std::fs::read_to_string(&checkpoints)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let last_checkpointed = |lines: &[String]| {
        lines
            .iter()
            .map(|l| {
                jitgate_audit::checkpoint::parse_and_check(l.as_bytes(), None)
                    .unwrap()
                    .last_seq
            })
            .max()
            .unwrap()
    };

    // The store holds every checkpoint (stopping waits for the witness to catch up).
    let db = store_db.clone();
    let witnessed = tokio::task::spawn_blocking(move || {
        common::cluster()
            .psql(
                &db,
                "SELECT count(*) || ' ' || max(last_seq) FROM jitgate_audit_checkpoints \
                 WHERE log = 'test-log'",
            )
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        witnessed.trim(),
        format!("{} {}", local.len(), last_checkpointed(&local)),
        "{local:?}"
    );
    let out = verify_cli(&env, &["--witness"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "witness:     {} checkpoint(s) in grant store table jitgate_audit_checkpoints, log test-log",
            local.len()
        )),
        "{}",
        text(&out)
    );

    // Log and checkpoints file cut back together, to an earlier checkpoint: offline,
    // nothing shows; the witness does.
    let keep_cps: Vec<String> = local[..local.len() / 2].to_vec();
    let keep_to = last_checkpointed(&keep_cps);
    let content = std::fs::read_to_string(&live).unwrap();
    let kept: Vec<&str> = content
        .lines()
        .take_while(|l| serde_json::from_str::<jitgate_audit::Event>(l).unwrap().seq <= keep_to)
        .collect();
    std::fs::write(&live, kept.join("\n") + "\n").unwrap();
    std::fs::write(&checkpoints, keep_cps.join("\n") + "\n").unwrap();
    let out = verify_cli(&env, &[]);
    assert!(
        out.status.success(),
        "a consistent cut passes offline: {}",
        text(&out)
    );
    let out = verify_cli(&env, &["--witness"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("the witness (grant store table"), "{all}");
    assert!(all.contains("cut off"), "{all}");
    assert!(all.contains(&format!("seq {}", keep_to + 1)), "{all}");

    // And with the checkpoints file gone as well.
    let saved = std::fs::read(&checkpoints).unwrap();
    std::fs::remove_file(&checkpoints).unwrap();
    let out = verify_cli(
        &env,
        &["--witness", "--public-key", "keys/audit-signing.pub"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the witness (grant store table"),
        "{}",
        text(&out)
    );
    std::fs::write(&checkpoints, saved).unwrap();

    // jitgate refuses to start on it (the local checkpoints alone would not tell)...
    let witness_last = last_checkpointed(&local);
    let refused = jitgate::serve::start(config::load(&env.config_path).unwrap())
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("the witness, grant store table"),
        "{refused}"
    );
    assert!(
        refused.contains(&format!(
            "events {}..{witness_last} were removed",
            keep_to + 1
        )),
        "{refused}"
    );
    // ...until the loss is acknowledged; then the log verifies against the witness too.
    let cfg = env.config_path.to_str().unwrap();
    let out = jitgate(
        &[
            "audit",
            "acknowledge-truncation",
            "--config",
            cfg,
            "--reason",
            "witness test",
        ],
        env.dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    env.restart().await;
    env.server.take().unwrap().stop().await.unwrap();
    let out = verify_cli(&env, &["--witness"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "note: events {}..{witness_last} were lost",
            keep_to + 1
        )),
        "{}",
        text(&out)
    );
}

/// Ends a spawned process (SIGTERM) if a test fails before it does.
struct Terminate(u32);

impl Drop for Terminate {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_signs_checkpoints_so_verify_catches_a_cut_tail() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--dir",
            state.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Terminate(child.id());
    let stdout = child.stdout.take().unwrap();
    let tour = tokio::task::spawn_blocking(move || {
        let mut tour = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            tour.push_str(&line);
            tour.push('\n');
            if line.contains("Ctrl-C stops") {
                break;
            }
        }
        tour
    });
    let tour = tokio::time::timeout(Duration::from_secs(180), tour)
        .await
        .expect("the demo printed its tour within 3 minutes")
        .unwrap();
    assert!(tour.contains("audit verify"), "{tour}");
    drop(guard); // SIGTERM: the demo stops, writing its shutdown checkpoint
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");

    let config = state.join("jitgate.yaml");
    let verify = |dir: &Path| {
        jitgate(
            &["audit", "verify", "--config", config.to_str().unwrap()],
            dir,
        )
    };
    let out = verify(dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("signature(s) valid"), "{stdout}");
    assert!(stdout.contains("OK: the audit log is intact"), "{stdout}");

    // Cut the tail: caught.
    let live = state.join("audit.jsonl");
    let first_cut = cut_lines(&live, 1);
    let out = verify(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cut off"), "{stderr}");
    assert!(stderr.contains(&format!("seq {first_cut}")), "{stderr}");
}
