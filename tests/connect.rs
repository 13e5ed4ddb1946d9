//! Connecting through jitgate: admission with a grant, refusals with the right SQLSTATE
//! and a message a DBA can act on, brokered upstream credentials, psql end to end.

mod common;
mod harness;

use std::time::Duration;

use harness::{Env, ALICE, ALICE_PASSWORD, BOB};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_admits_and_the_session_runs_as_the_brokered_role() {
    let env = Env::start("admit").await;
    env.grant(ALICE, Duration::from_secs(300)).await;
    let (client, _conn) = env.connect().await.expect("connect with a grant");
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text, pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), env.upstream_user);
    assert_eq!(row.get::<_, String>(1), env.target);
    // The client was told the upstream's pid: it matches what the backend says.
    let sessions = env.server().registry.list();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].upstream_pid, Some(row.get::<_, i32>(2)));
    assert_eq!(sessions[0].identity, ALICE);
    drop(client);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grant_the_client_gets_42501_naming_the_target() {
    let env = Env::start("nogrant").await;
    let err = env.connect().await.expect_err("refused");
    let db = err
        .as_db_error()
        .expect("an ErrorResponse, not a dropped socket");
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert!(db.message().contains(&env.target), "{}", db.message());
    assert!(
        db.message().contains("jitgate grant"),
        "says how: {}",
        db.message()
    );
    // A grant for someone else does not help.
    env.grant(BOB, Duration::from_secs(60)).await;
    let err = env.connect().await.expect_err("still refused");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let denied = env
        .audit_events()
        .into_iter()
        .filter(|e| e.kind() == "access_denied")
        .count();
    assert_eq!(denied, 2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_identity_look_the_same() {
    let env = Env::start("badpw").await;
    env.grant(ALICE, Duration::from_secs(60)).await;
    let wrong = env
        .client_config(ALICE, "not-the-password")
        .connect(NoTls)
        .await
        .err()
        .expect("wrong password refused");
    let unknown = env
        .client_config("mallory", ALICE_PASSWORD)
        .connect(NoTls)
        .await
        .err()
        .expect("unknown identity refused");
    for err in [&wrong, &unknown] {
        let db = err.as_db_error().expect("ErrorResponse");
        assert_eq!(db.code(), &SqlState::INVALID_PASSWORD);
        assert!(db.message().starts_with("password authentication failed"));
    }
    let failures = env
        .audit_events()
        .into_iter()
        .filter(|e| e.kind() == "auth_failure")
        .count();
    assert_eq!(failures, 2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_changing_startup_options_are_refused() {
    let env = Env::start("opts").await;
    env.grant(ALICE, Duration::from_secs(60)).await;
    let mut config = env.client_config(ALICE, ALICE_PASSWORD);
    config.options("-c role=postgres");
    let err = harness::refused(config.connect(NoTls).await, "refused");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    // Allow-listed settings pass, and the role option picks the granted role.
    let mut config = env.client_config(ALICE, ALICE_PASSWORD);
    config.options("-c statement_timeout=1234 -c jitgate.role=rw");
    let (client, connection) = config.connect(NoTls).await.expect("allowed options");
    tokio::spawn(connection);
    let row = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "1234ms");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_works_through_the_proxy_and_shows_refusals() {
    let env = Env::start("psql").await;
    let out = env.run_client("psql", &["-X", "-c", "SELECT 1"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no active grant"), "{stderr}");

    // A wrong password: psql shows Postgres's own wording.
    let out = env
        .run_client_as("psql", ALICE, "wrong-password", &["-X", "-c", "SELECT 1"])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );

    env.grant(ALICE, Duration::from_secs(60)).await;
    let out = env
        .run_client(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "CREATE TABLE t(id int, name text)",
                "-c",
                "INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 5) g",
                "-c",
                "SELECT count(*), max(name) FROM t",
            ],
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5|n5"), "{stdout}");
    env.stop().await;
}
