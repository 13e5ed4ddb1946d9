//! `jitgate serve` as a real process: SIGTERM stops accepting, drains, ends the
//! remaining sessions with a clear FATAL, flushes the audit log and exits 0.

mod common;
mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::server_view::ServerView;
use harness::{Env, ALICE};
use tokio_postgres::error::SqlState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    // Use the harness only to prepare the database and the config, then run the binary.
    let mut env = Env::start("sigterm").await;
    let grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let proxy_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let admin_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config_path = env.config_path.clone();
    let audit_path = env.audit_path();
    // Stop the in-process server; the grant store stays on disk for the binary.
    env.server.take().unwrap().stop().await.unwrap();
    let yaml = std::fs::read_to_string(&config_path).unwrap();
    let yaml = yaml
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
    std::fs::write(&config_path, yaml).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (client, _conn) = loop {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(proxy_port)
            .user(ALICE)
            .password(harness::ALICE_PASSWORD)
            .dbname(&grant.target);
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, conn)) => break (client, tokio::spawn(conn)),
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("jitgate serve did not come up: {e}"),
        }
    };
    client.query_one("SELECT 1", &[]).await.unwrap();
    let running = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    ServerView::connect(&env)
        .await
        .wait_statement("SELECT pg_sleep(60)", Duration::from_secs(10))
        .await;

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    // drain_timeout is 2 s in the harness config; the session is then ended.
    let err = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("session ended after the drain deadline")
        .unwrap()
        .expect_err("ended by shutdown");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN));
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let ends: Vec<_> = jitgate_audit::read_events(&audit_path)
        .unwrap()
        .filter_map(|e| match e.unwrap().body {
            jitgate_audit::EventBody::SessionEnd { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![jitgate_audit::EndReason::Shutdown]);
}
