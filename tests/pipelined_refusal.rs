//! A pipelining client whose next statement the audit log refuses while an earlier one
//! is still running: answering the refusal at once would put our ERROR and
//! ReadyForQuery ahead of the earlier statement's answer — the client would take the
//! refusal for the earlier statement, and the earlier statement's rows for the refused
//! one (a success for a statement that never ran). The session must end instead.
//!
//! The audit failure comes from the `audit::write` failpoint (test builds only), which
//! is process-wide: this binary holds this one test.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{Env, ALICE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_refused_behind_a_running_one_ends_the_session_instead_of_answering_out_of_order(
) {
    let env = Env::start("pipelined").await;
    let _grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.expect("connect");
    let client = Arc::new(client);

    let running = Arc::clone(&client);
    let first = tokio::spawn(async move {
        running
            .simple_query("SELECT pg_sleep(2), 'first' AS which")
            .await
    });
    env.eventually("the first statement runs", Duration::from_secs(10), || {
        env.superuser_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(2)%' AND state = 'active'",
        ) == "1"
    })
    .await;

    // The next statement goes out behind it (tokio-postgres pipelines) and its audit
    // write fails.
    fail::cfg("audit::write", "return").unwrap();
    let second = tokio::time::timeout(
        Duration::from_secs(20),
        client.simple_query("SELECT 'second' AS which"),
    )
    .await
    .expect("the second statement was answered");
    fail::remove("audit::write");
    let first = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .expect("the first statement was answered")
        .unwrap();

    assert!(
        second.is_err(),
        "the refused statement reported success: {second:?}"
    );
    // The first statement ran: it must not be told it was refused (an ERROR that leaves
    // the session usable); a FATAL ending the session is what it may get.
    if let Err(e) = &first {
        if let Some(db) = e.as_db_error() {
            assert_eq!(db.severity(), "FATAL", "{db:?}");
            assert_eq!(db.code().code(), "58000", "{db:?}");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the session ended");
    assert!(client.is_closed());
    env.stop().await;
}
