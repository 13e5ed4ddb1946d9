//! The audit log has one writer at a time: a running `jitgate serve` holds the log's
//! writer lock for as long as it has the log open, so `jitgate audit
//! acknowledge-truncation` and a second `serve` on the same log are refused with a
//! message naming the holder's pid, while readers (`verify`, `search`, `export`) keep
//! working. Once the server stops, the lock is free again.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;

use common::jitgate_cli as jitgate;
use common::output_text as text;
use std::time::Duration;

use harness::{Env, ALICE};
use jitgate::config;
use jitgate_audit::EventBody;

/// `jitgate audit acknowledge-truncation --config cfg --reason reason`, run in `dir`.
fn acknowledge(cfg: &str, reason: &str, dir: &std::path::Path) -> std::process::Output {
    jitgate(
        &[
            "audit",
            "acknowledge-truncation",
            "--config",
            cfg,
            "--reason",
            reason,
        ],
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_serve_locks_out_other_writers_but_not_readers() {
    let mut env = Env::start("auditlock").await;
    let out = jitgate(&["audit", "keygen", "--out", "keys"], env.dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let yaml = yaml.replacen(
        "audit:\n  path: audit.jsonl\n",
        "audit:\n  path: audit.jsonl\n  signing_key_file: keys/audit-signing.key\n  checkpoint_every: 5\n",
        1,
    );
    std::fs::write(&env.config_path, yaml).unwrap();
    env.restart().await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    for i in 0..10 {
        client.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    let cfg = env.config_path.to_str().unwrap().to_owned();
    let in_use = format!(
        "is in use by a running jitgate (pid {}); stop it first",
        std::process::id()
    );

    // acknowledge-truncation while serve runs: refused, nothing written.
    let out = acknowledge(&cfg, "while serving", env.dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the audit log {}", env.audit_path().display()))
            && stderr.contains(&in_use),
        "{}",
        text(&out)
    );

    // A second serve on the same log, in another process and in this one: refused
    // before it binds or writes anything.
    let out = jitgate(&["serve", "--config", &cfg], env.dir.path());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&in_use),
        "{}",
        text(&out)
    );
    let second = jitgate::serve::start(config::load(&env.config_path).unwrap())
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(second.contains(&in_use), "{second}");

    // Readers work while the server writes, and the server was not disturbed.
    client.simple_query("SELECT 'still served'").await.unwrap();
    let out = jitgate(&["audit", "verify", "--config", &cfg], env.dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK: the audit log is intact"),
        "{}",
        text(&out)
    );
    for reader in [&["audit", "search"][..], &["audit", "export"][..]] {
        let mut args = reader.to_vec();
        args.extend(["--config", &cfg]);
        let out = jitgate(&args, env.dir.path());
        assert!(out.status.success(), "{reader:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("still served"),
            "{reader:?}: {}",
            text(&out)
        );
    }
    drop(client);
    let _ = conn.await;
    env.server.take().unwrap().stop().await.unwrap();
    assert!(
        !env.audit_events()
            .iter()
            .any(|e| matches!(e.body, EventBody::LogCutAcknowledged { .. })),
        "no acknowledgement was written under the server"
    );

    // Stopped, the log is free: the acknowledgement gets as far as finding nothing to
    // acknowledge, and the log still verifies.
    let out = acknowledge(&cfg, "after stopping", env.dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nothing to acknowledge") && !text(&out).contains("in use"),
        "{}",
        text(&out)
    );
    let out = jitgate(&["audit", "verify", "--config", &cfg], env.dir.path());
    assert!(out.status.success(), "{}", text(&out));
    env.restart().await;
    env.stop().await;
}
