//! The throwaway-PostgreSQL harness itself: the shared cluster serves psql and SCRAM
//! logins, errors are surfaced, and private clusters clean up after themselves — including
//! when the owning process exits without dropping them (the watchdog).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jitgate_testkit::{PgCluster, PgClusterError, PgClusterOptions};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Env var that turns the ignored `orphan_helper` test into the child of `watchdog_*`.
const ORPHAN_ENV: &str = "JITGATE_PGCLUSTER_ORPHAN_HELPER";

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn fast() -> PgClusterOptions {
    PgClusterOptions {
        fast: true,
        ..PgClusterOptions::default()
    }
}

/// Pids whose command line mentions `needle` (what `pgrep -f` does).
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Poll until `cond` holds or the generous deadline passes; returns whether it held.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

#[test]
fn psql_returns_trimmed_unaligned_rows() {
    let out = common::cluster()
        .psql("postgres", "select 1, 'x'; select 2;")
        .unwrap();
    assert_eq!(out, "1|x\n2");
}

#[test]
fn psql_errors_carry_the_server_message() {
    let err = common::cluster()
        .psql("postgres", "select 1; select * from no_such_table;")
        .unwrap_err();
    match err {
        PgClusterError::Psql { status, stderr } => {
            assert_eq!(status.code(), Some(3), "ON_ERROR_STOP exit code");
            assert!(
                stderr.contains(r#"relation "no_such_table" does not exist"#),
                "{stderr}"
            );
        }
        other => panic!("expected Psql error, got {other:?}"),
    }
}

#[test]
fn shared_cluster_uses_fast_test_settings() {
    let cluster = common::cluster();
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_eq!(cluster.superuser(), "postgres");
    let out = cluster
        .psql(
            "postgres",
            "show fsync; show synchronous_commit; show max_connections; show listen_addresses;",
        )
        .unwrap();
    assert_eq!(out, "off\noff\n300\n127.0.0.1");
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert!(cluster.log_path().is_file());
}

#[tokio::test]
async fn role_logs_in_with_scram_and_wrong_password_is_28p01() {
    let cluster = common::cluster();
    let role = common::unique_name("Role");
    let db = common::unique_name("db");
    // Quotes, backslash, psql-variable syntax and URL-special characters.
    let password = r#"p'w\"x :pw @/?%é"#;
    cluster.create_role(&role, password).unwrap();
    cluster.create_database(&db, &role).unwrap();

    let stored = cluster
        .psql(
            "postgres",
            &format!("select rolpassword from pg_authid where rolname = '{role}'"),
        )
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");

    let client = connect(&cluster.url(&role, password, &db)).await.unwrap();
    let row = client
        .query_one("select current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), role);
    assert_eq!(row.get::<_, String>(1), db);

    let err = connect(&cluster.url(&role, "wrong", &db))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");
}

#[tokio::test]
async fn superuser_is_trusted_without_password() {
    let cluster = common::cluster();
    let client = connect(&cluster.admin_url("postgres")).await.unwrap();
    let row = client
        .query_one("select current_setting('is_superuser')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
}

#[test]
fn bad_identifiers_are_rejected_before_reaching_the_server() {
    let cluster = common::cluster();
    assert!(matches!(
        cluster.create_role("", "pw"),
        Err(PgClusterError::InvalidIdentifier { .. })
    ));
    assert!(matches!(
        cluster.create_database(&"d".repeat(64), "postgres"),
        Err(PgClusterError::InvalidIdentifier { .. })
    ));
    assert!(matches!(
        cluster.create_role("ok_name", "nul\0byte"),
        Err(PgClusterError::InvalidLiteral)
    ));
}

#[test]
fn duplicate_role_error_is_surfaced() {
    let cluster = common::cluster();
    let role = common::unique_name("dup");
    cluster.create_role(&role, "secret-pw").unwrap();
    let err = cluster
        .create_role(&role, "secret-pw")
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    assert!(!err.contains("secret-pw"), "password leaked into: {err}");
}

#[test]
fn stop_ends_the_server_and_removes_the_temp_dir() {
    let mut cluster = PgCluster::start(fast()).unwrap();
    let data_dir = cluster.data_dir().to_path_buf();
    let pid = cluster.pid().unwrap();
    assert_eq!(cluster.psql("postgres", "select 40 + 2").unwrap(), "42");
    cluster.stop();
    assert!(cluster.pid().is_none());
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "postmaster {pid} alive"
    );
    cluster.stop(); // idempotent
}

#[test]
fn persistent_dir_is_kept_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    // root: user postgres must traverse the parent of `pgdata`.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let opts = PgClusterOptions {
        dir: Some(dir.path().to_path_buf()),
        ..fast()
    };
    let mut first = PgCluster::start(opts.clone()).unwrap();
    first
        .psql(
            "postgres",
            "create table kept(v text); insert into kept values ('hello');",
        )
        .unwrap();
    first.stop();
    assert!(dir.path().join("pgdata/PG_VERSION").is_file());

    let mut second = PgCluster::start(opts).unwrap();
    assert_eq!(
        second.psql("postgres", "select v from kept").unwrap(),
        "hello"
    );
    second.stop();
    assert!(dir.path().join("pgdata/PG_VERSION").is_file());
}

#[test]
fn fixed_port_in_use_fails_with_log_tail() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = PgCluster::start(PgClusterOptions {
        port: Some(port),
        ..fast()
    })
    .unwrap_err();
    match &err {
        PgClusterError::Start { tail, .. } => {
            assert!(tail.contains("Address already in use"), "{err}");
        }
        other => panic!("expected Start error, got {other:?}"),
    }
}

/// Child side of `watchdog_cleans_up_when_the_owner_exits`: start a cluster, report it,
/// and exit the process without dropping it.
#[test]
#[ignore = "helper run as a child process by watchdog_cleans_up_when_the_owner_exits"]
fn orphan_helper() {
    if std::env::var_os(ORPHAN_ENV).is_none() {
        return;
    }
    let cluster = PgCluster::start(fast()).unwrap();
    assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
    println!(
        "ORPHAN {} {}",
        cluster.pid().unwrap(),
        cluster.data_dir().display()
    );
    std::process::exit(0);
}

#[test]
fn watchdog_cleans_up_when_the_owner_exits() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["orphan_helper", "--exact", "--ignored", "--nocapture"])
        .env(ORPHAN_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ORPHAN "))
        .unwrap_or_else(|| panic!("helper printed no ORPHAN line: {stdout}\n{out:?}"));
    let (pid, data_dir) = line.split_once(' ').unwrap();
    let data_dir = Path::new(data_dir);
    let temp_root = data_dir.parent().unwrap();

    let cleaned = eventually(Duration::from_secs(30), || {
        processes_mentioning(data_dir).is_empty() && !temp_root.exists()
    });
    assert!(
        cleaned,
        "postmaster {pid} or {} survived its owner: {:?}",
        temp_root.display(),
        processes_mentioning(data_dir)
    );
}
