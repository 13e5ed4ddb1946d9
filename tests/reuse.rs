//! Upstream connection reuse: a session that ends cleanly parks its upstream connection
//! (after `DISCARD ALL`) for the next session of the same grant, which finds none of the
//! earlier session's state; nothing else is ever parked or shared, and a parked
//! connection goes with its grant, its idle time, or the setting.

mod common;
mod harness;

use std::time::Duration;

use harness::{Env, EnvConfig, ALICE, BOB, BOB_PASSWORD};
use jitgate_audit::EventBody;
use tokio_postgres::Client;
use uuid::Uuid;

/// Generous: these waits cover a busy 2-core machine, not a latency claim.
const LIMIT: Duration = Duration::from_secs(15);

async fn pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid")
        .get(0)
}

async fn one(client: &Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.expect(sql);
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

/// `(session_id, upstream_pid, upstream_reused)` of every session_start so far.
fn starts(env: &Env) -> Vec<(Uuid, Option<i32>, bool)> {
    env.audit_events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::SessionStart {
                upstream_pid,
                upstream_reused,
                ..
            } => e.session_id.map(|s| (s, upstream_pid, upstream_reused)),
            _ => None,
        })
        .collect()
}

/// `upstream_parked` of every session_end so far, in order.
fn ends(env: &Env) -> Vec<bool> {
    env.audit_events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::SessionEnd {
                upstream_parked, ..
            } => Some(upstream_parked),
            _ => None,
        })
        .collect()
}

/// Closes the client (tokio-postgres sends Terminate) and waits for its session_end.
async fn quit(
    env: &Env,
    client: Client,
    conn: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) -> bool {
    let before = ends(env).len();
    drop(client);
    let _ = tokio::time::timeout(LIMIT, conn).await;
    env.eventually("session_end written", LIMIT, || ends(env).len() > before)
        .await;
    ends(env)[before]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_session_of_the_grant_reuses_the_connection_with_nothing_left_of_the_last() {
    let env = Env::start("reuse_reset").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let other = format!("{}_other", env.target);
    env.superuser_sql(&format!(
        "CREATE ROLE {other}; GRANT {other} TO {}",
        env.upstream_user
    ));

    let (a, conn) = env.connect().await.expect("connect");
    let first = pid(&a).await;
    let defaults = (
        one(&a, "SHOW work_mem").await,
        one(&a, "SHOW application_name").await,
    );
    a.batch_execute(&format!(
        "CREATE TEMP TABLE scratch(x int); INSERT INTO scratch VALUES (1);
         SET work_mem = '77MB'; SET application_name = 'left-behind';
         PREPARE leftover AS SELECT 1;
         SELECT pg_advisory_lock(4242);
         LISTEN leftover_channel;
         DECLARE held CURSOR WITH HOLD FOR SELECT 1;
         SET ROLE {other};"
    ))
    .await
    .expect("leave state behind");
    assert_eq!(one(&a, "SELECT current_user").await, other);
    assert!(
        quit(&env, a, conn).await,
        "a clean end parks the connection"
    );
    assert!(env.backend_alive(first), "the parked backend stays");

    let (b, conn) = env.connect().await.expect("connect again");
    assert_eq!(
        pid(&b).await,
        first,
        "the same backend serves the next session"
    );
    assert_eq!(one(&b, "SELECT current_user").await, env.upstream_user);
    assert_eq!(
        one(&b, "SELECT to_regclass('pg_temp.scratch') IS NULL").await,
        "t"
    );
    assert_eq!(one(&b, "SHOW work_mem").await, defaults.0);
    assert_eq!(one(&b, "SHOW application_name").await, defaults.1);
    assert_eq!(
        one(&b, "SELECT count(*) FROM pg_prepared_statements").await,
        "0"
    );
    assert_eq!(one(&b, "SELECT count(*) FROM pg_cursors").await, "0");
    assert_eq!(
        one(&b, "SELECT count(*) FROM pg_listening_channels()").await,
        "0"
    );
    assert_eq!(
        one(
            &b,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        .await,
        "0"
    );
    // Prepared statements of the new session work (names are free again).
    b.batch_execute("PREPARE leftover AS SELECT 2")
        .await
        .expect("the old statement name is free");

    let s = starts(&env);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].1, Some(first));
    assert!(!s[0].2, "the first session opened its own connection");
    assert_eq!(s[1].1, Some(first));
    assert!(s[1].2, "session_start says the connection was reused");
    drop(b);
    let _ = conn.await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_session_of_the_same_grant_gets_a_parked_connection() {
    let env = Env::start("reuse_grant").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    env.grant(BOB, Duration::from_secs(600)).await;
    let (a, conn) = env.connect().await.expect("alice");
    let alice_pid = pid(&a).await;
    assert!(quit(&env, a, conn).await);

    let (b, conn_b) = env
        .client_config(BOB, BOB_PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("bob");
    let conn_b = tokio::spawn(conn_b);
    assert_ne!(
        pid(&b).await,
        alice_pid,
        "bob's grant never gets alice's backend"
    );
    drop(b);
    let _ = conn_b.await;

    let (a, conn) = env.connect().await.expect("alice again");
    assert_eq!(pid(&a).await, alice_pid, "alice's next session gets it");
    drop(a);
    let _ = conn.await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ending_inside_a_transaction_or_without_terminate_is_not_parked() {
    let env = Env::start("reuse_tx").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    env.superuser_sql(&format!(
        "CREATE TABLE t(x int); ALTER TABLE t OWNER TO {}",
        env.upstream_user
    ));

    // Inside a transaction: the backend is closed, the transaction rolled back.
    let (a, conn) = env.connect().await.expect("connect");
    let in_tx = pid(&a).await;
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("open a transaction");
    assert!(
        !quit(&env, a, conn).await,
        "not parked inside a transaction"
    );
    env.eventually("backend of the open transaction gone", LIMIT, || {
        !env.backend_alive(in_tx)
    })
    .await;
    assert_eq!(
        env.superuser_sql("SELECT count(*) FROM t"),
        "0",
        "rolled back"
    );

    // No Terminate (the client's socket just closes): closed as before.
    let (a, conn) = env.connect().await.expect("connect");
    let vanished = pid(&a).await;
    let before = ends(&env).len();
    conn.abort();
    env.eventually("session_end of the vanished client", LIMIT, || {
        ends(&env).len() > before
    })
    .await;
    assert!(!ends(&env)[before], "not parked without Terminate");
    env.eventually("backend of the vanished client gone", LIMIT, || {
        !env.backend_alive(vanished)
    })
    .await;
    drop(a);

    // psql quits with Terminate: parked, and the next session (psql again) reuses it.
    let mut pids = Vec::new();
    for _ in 0..2 {
        let before = ends(&env).len();
        let out = env
            .run_client(
                "psql",
                &["-X", "-q", "-t", "-A", "-c", "SELECT pg_backend_pid()"],
            )
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        pids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        env.eventually("psql's session_end", LIMIT, || ends(&env).len() > before)
            .await;
        assert!(ends(&env)[before], "psql quits with Terminate: parked");
    }
    assert_eq!(pids[0], pids[1], "psql's second session reused the backend");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_grant_closes_its_parked_connections() {
    let env = Env::start("reuse_revoke").await;
    let grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let (a, conn) = env.connect().await.expect("connect");
    let parked = pid(&a).await;
    assert!(quit(&env, a, conn).await);
    assert!(env.backend_alive(parked));

    env.revoke_via_api(grant.id, "done").await;
    env.eventually("parked backend of the revoked grant gone", LIMIT, || {
        !env.backend_alive(parked)
    })
    .await;

    // A new grant opens a new connection.
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (a, conn) = env.connect().await.expect("connect under the new grant");
    assert_ne!(pid(&a).await, parked);
    drop(a);
    let _ = conn.await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_goes_when_its_grant_expires_or_it_idles_too_long() {
    let env = Env::start_config(
        "reuse_idle",
        EnvConfig {
            extra_top: "upstream_reuse:\n  idle_timeout: 2s\n",
            ..EnvConfig::default()
        },
    )
    .await;
    // Idle timeout.
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (a, conn) = env.connect().await.expect("connect");
    let idle = pid(&a).await;
    assert!(quit(&env, a, conn).await);
    env.eventually("idle parked backend closed", LIMIT, || {
        !env.backend_alive(idle)
    })
    .await;
    env.stop().await;

    // Grant expiry (long idle timeout: only the deadline can close it).
    let env = Env::start("reuse_expiry").await;
    env.grant(ALICE, Duration::from_secs(4)).await;
    let (a, conn) = env.connect().await.expect("connect");
    let short = pid(&a).await;
    assert!(quit(&env, a, conn).await);
    assert!(env.backend_alive(short));
    env.eventually("parked backend gone after the grant expired", LIMIT, || {
        !env.backend_alive(short)
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reuse_disabled_every_session_closes_its_connection() {
    let env = Env::start_config(
        "reuse_off",
        EnvConfig {
            extra_top: "upstream_reuse:\n  enabled: false\n",
            ..EnvConfig::default()
        },
    )
    .await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (a, conn) = env.connect().await.expect("connect");
    let first = pid(&a).await;
    assert!(!quit(&env, a, conn).await, "nothing is parked");
    env.eventually("backend gone", LIMIT, || !env.backend_alive(first))
        .await;
    let (a, conn) = env.connect().await.expect("connect again");
    assert_ne!(pid(&a).await, first);
    drop(a);
    let _ = conn.await;
    env.stop().await;
}
