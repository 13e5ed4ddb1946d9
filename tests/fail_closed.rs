//! Fail closed: when the audit log cannot be written (here: a full filesystem), jitgate
//! runs nothing unaudited. Statements are refused with an ERROR that says why, the
//! session stays usable, and service resumes by itself once the log can be written
//! again. Inside an open transaction the session is ended instead (the upstream rolls
//! back), so no partial transaction can be committed behind the client's back.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::{Env, ALICE};
use tokio_postgres::error::SqlState;

/// A tiny tmpfs, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// `None` when this machine does not let us mount (not root): the test says so.
    fn mount(kib: u32) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem to the last byte.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1k", "count=100000"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

async fn env_with_audit_on(fs: &SmallFs, prefix: &str) -> Env {
    let mut env = Env::start(prefix).await;
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let audit = fs.path().join("audit.jsonl");
    let yaml = yaml.replace(
        "audit:\n  path: audit.jsonl\n",
        &format!("audit:\n  path: {}\n", audit.display()),
    );
    assert!(
        yaml.contains(&audit.display().to_string()),
        "harness config changed"
    );
    std::fs::write(&env.config_path, &yaml).unwrap();
    env.restart().await;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_disk_refuses_statements_and_recovers() {
    let Some(fs) = SmallFs::mount(256) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let env = env_with_audit_on(&fs, "diskfull").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    client.batch_execute("CREATE TABLE t(x int)").await.unwrap();

    let filler = fs.fill();
    // The log's last page may still take a few lines; then statements are refused.
    let (ran, err) = until_refused(&client, "INSERT INTO t VALUES (1)").await;
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("an ErrorResponse, got: {err:?}"));
    assert_eq!(db.code(), &SqlState::SYSTEM_ERROR);
    assert!(
        db.message().contains("audit log is unavailable"),
        "{}",
        db.message()
    );
    // Extended protocol too, and the session is still there.
    let err = client
        .query("SELECT $1::int", &[&5i32])
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(&SqlState::SYSTEM_ERROR));
    assert!(!client.is_closed());
    // Operators see it: health says degraded, the metric counts the refusals.
    assert_eq!(health(&env).await, "degraded");
    let metrics = metrics(&env).await;
    assert!(metrics.contains("jitgate_audit_healthy 0"), "{metrics}");
    assert!(
        !metrics.contains("jitgate_audit_failed_writes_total 0\n"),
        "{metrics}"
    );
    // Nothing refused ran upstream.
    assert_eq!(env.superuser_sql("SELECT count(*) FROM t"), ran.to_string());

    // Space again: service resumes by itself, on the same session.
    std::fs::remove_file(&filler).unwrap();
    let mut resumed = false;
    for _ in 0..50 {
        if client
            .batch_execute("INSERT INTO t VALUES (2)")
            .await
            .is_ok()
        {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "service resumed after space was freed");
    assert_eq!(health(&env).await, "ok");
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, ran as i64 + 1);
    // The statements that ran are in the log; the refused ones ran nowhere.
    let audited: Vec<String> = env_events(&fs)
        .into_iter()
        .filter_map(|e| match e.body {
            jitgate_audit::EventBody::Query { sql, .. } => Some(sql),
            _ => None,
        })
        .collect();
    assert!(
        audited.iter().any(|s| s == "INSERT INTO t VALUES (2)"),
        "{audited:?}"
    );
    drop(client);
    let _ = conn.await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_transaction_the_session_ends_and_rolls_back() {
    let Some(fs) = SmallFs::mount(256) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let env = env_with_audit_on(&fs, "diskfulltx").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    client.batch_execute("CREATE TABLE t(x int)").await.unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let filler = fs.fill();
    let (_, err) = until_refused(&client, "INSERT INTO t VALUES (2)").await;
    assert_eq!(err.code(), Some(&SqlState::SYSTEM_ERROR));
    let _ = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("session ended");
    assert!(client.is_closed());
    assert_eq!(
        env.superuser_sql("SELECT count(*) FROM t"),
        "0",
        "rolled back"
    );
    std::fs::remove_file(&filler).unwrap();
    env.stop().await;
}

async fn health(env: &Env) -> String {
    let body: serde_json::Value = reqwest::get(format!("{}/v1/health", env.admin_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["status"].as_str().unwrap().to_owned()
}

async fn metrics(env: &Env) -> String {
    reqwest::Client::new()
        .get(format!("{}/metrics", env.admin_url()))
        .bearer_auth(harness::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Runs `sql` until it is refused; returns how many times it ran first, and the error.
async fn until_refused(
    client: &tokio_postgres::Client,
    sql: &str,
) -> (usize, tokio_postgres::Error) {
    for ran in 0..500 {
        if let Err(e) = client.batch_execute(sql).await {
            return (ran, e);
        }
    }
    panic!("never refused although the audit filesystem is full");
}

fn env_events(fs: &SmallFs) -> Vec<jitgate_audit::Event> {
    jitgate_audit::read_events(&fs.path().join("audit.jsonl"))
        .unwrap()
        .filter_map(Result::ok)
        .collect()
}

/// Access approved while the audit log cannot record the approval is taken back: no
/// usable grant without its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_the_audit_log_cannot_record_grants_nothing() {
    use jitgate::api::{AdminClient, Decision, DecisionBody, LoginBody, RequestBody};
    use jitgate_policy::GrantState;
    use jitgate_proxy::settings::Secret;

    let Some(fs) = SmallFs::mount(256) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let policy = format!(
        "policy:\n  groups:\n    dbas: [{}]\n  rules:\n    - name: write\n      requesters: {{ identities: [{ALICE}] }}\n      targets: [\"*\"]\n      roles: [{}]\n      max_duration: 1h\n      approvals: {{ count: 1, from: [dbas] }}\n",
        harness::BOB,
        harness::ROLE
    );
    let mut env = Env::start_config(
        "auditapprove",
        harness::EnvConfig {
            extra_top: &policy,
            ..harness::EnvConfig::default()
        },
    )
    .await;
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let audit = fs.path().join("audit.jsonl");
    std::fs::write(
        &env.config_path,
        yaml.replace(
            "audit:\n  path: audit.jsonl\n",
            &format!("audit:\n  path: {}\n", audit.display()),
        ),
    )
    .unwrap();
    env.restart().await;

    let login = |identity: &'static str, password: &'static str| {
        let url = env.admin_url();
        async move {
            let anon = AdminClient::new(url.clone(), Secret::new(String::new())).unwrap();
            let view = anon
                .login(&LoginBody {
                    identity: identity.into(),
                    password: password.into(),
                })
                .await
                .unwrap();
            AdminClient::new(url, Secret::new(view.token)).unwrap()
        }
    };
    let alice = login(ALICE, harness::ALICE_PASSWORD).await;
    let bob = login(harness::BOB, harness::BOB_PASSWORD).await;
    let id = alice
        .request_access(
            &RequestBody {
                target: env.target.clone(),
                role: harness::ROLE.into(),
                duration: "30m".into(),
                reason: Some("INC-3".into()),
                ticket: None,
                start_at: None,
                break_glass: false,
            },
            None,
        )
        .await
        .unwrap()
        .grant
        .grant
        .id;

    let filler = fs.fill();
    // The log's last page may still take a few lines: write until it refuses.
    let mut refused = false;
    for _ in 0..10_000 {
        let probe = jitgate_audit::Event::new(jitgate_audit::EventBody::AuthFailure {
            client_addr: "test".into(),
            reason: "filling the audit log".into(),
        });
        if env.server().audit.write(probe).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the audit log never refused");
    let err = bob
        .decide(id, Decision::Approve, &DecisionBody::default())
        .await
        .expect_err("the approval cannot be recorded");
    match err {
        jitgate::Error::Admin { status, message } => {
            assert_eq!(status, 503, "{message}");
            assert!(message.contains("access was not granted"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let grant = env.server().engine.get(id).await.unwrap();
    assert_eq!(grant.state, GrantState::Revoked);
    assert!(
        env.connect().await.is_err(),
        "no session under an unrecorded approval"
    );
    std::fs::remove_file(&filler).unwrap();
    env.stop().await;
}
