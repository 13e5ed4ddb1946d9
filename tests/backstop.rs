//! The backstop: a grant ends on time — and the client is told why — even when the
//! thread carrying its sessions cannot run. Here that thread is stopped in the audit log's write(2) — as a hung disk or a
//! hard NFS mount would stop it — through the `audit::write` failpoint (test builds
//! only). The running statement must still be stopped — by terminating its backend: the
//! statement catches a cancel and would write after it, and a write pipelined behind it
//! would run next — and both connections closed shortly after the deadline, long before
//! the thread runs again; and a client connecting meanwhile must be answered (not placed
//! on the stopped thread). The backstop's cancel-and-close of before passed this test
//! with a plain `pg_sleep` on loopback only by luck of timing: the backend's reply to
//! the cancel drew a reset from the shut-down socket before it read the next statement.
//!
//! The failpoint is process-wide, so this binary holds this one test.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;
mod rawclient;

use std::time::{Duration, Instant};

use harness::{Env, EnvConfig};
use jitgate_audit::{EndReason, EventBody};
use rawclient::{self as raw, Raw};

/// How long the audit write stalls: far longer than deadline + backstop grace.
const STALL: Duration = Duration::from_secs(25);

/// `error` is the FATAL saying the grant expired.
fn assert_told_expired(error: Option<&tokio_postgres::Error>, what: &str) {
    let error = error.unwrap_or_else(|| panic!("{what} did not complete"));
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("{what}: the client was not told why: {error:?}"));
    assert_eq!(db.code().code(), "57P01", "{db:?}");
    assert_eq!(db.severity(), "FATAL", "{db:?}");
    assert!(db.message().contains("expired"), "{db:?}");
}

/// A long statement a cancel does not stop: it catches the cancel and goes on to write a
/// mark. Only terminating its backend ends it without that write (a FATAL cannot be
/// caught).
const STUBBORN: &str = "DO $$ BEGIN PERFORM pg_sleep(120); EXCEPTION WHEN query_canceled THEN INSERT INTO marks VALUES (3); END $$";

fn running_stubborn(env: &Env) -> String {
    env.superuser_sql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query = $q${STUBBORN}$q$ AND state = 'active'"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_session_thread_does_not_keep_a_session_past_its_grant() {
    // One session thread: both sessions below share it, so the second one's stalled
    // audit write stops the first one's thread too.
    let env = Env::start_config(
        "backstop",
        EnvConfig {
            extra_top: "runtime:\n  session_threads: 1\n",
            ..EnvConfig::default()
        },
    )
    .await;
    env.superuser_sql(&format!(
        "CREATE TABLE marks (x int); GRANT ALL ON marks TO {}",
        env.upstream_user
    ));
    let granted = Instant::now();
    let grant = env.grant(harness::ALICE, Duration::from_secs(4)).await;
    // Issued now: issuing writes the audit log, which is stuck later.
    let bob_grant = env.grant(harness::BOB, Duration::from_secs(120)).await;

    // A long statement that survives a cancel, with a write pipelined behind it, in one
    // write (as a raw client sends them): both are audited and forwarded before the
    // thread stops.
    let (mut long, long_login) = Raw::login(&env).await;
    let pid = long_login.pid;
    let mut batch = raw::query(STUBBORN);
    batch.extend_from_slice(&raw::query("INSERT INTO marks VALUES (2)"));
    long.send(&batch).await;
    let long_query = tokio::spawn(async move { long.errors_until_closed().await });
    env.eventually(
        "the long query runs upstream",
        Duration::from_secs(5),
        || running_stubborn(&env) == "1",
    )
    .await;

    // The other session's next statement stops the shared thread in write(2).
    let (other, other_conn) = env.connect().await.expect("connect");
    fail::cfg("audit::write", &format!("sleep({})", STALL.as_millis())).unwrap();
    let stalled_at = Instant::now();
    let other_query =
        tokio::spawn(async move { other.simple_query("INSERT INTO marks VALUES (1)").await });

    // The deadline passes while the thread is stopped: the backstop terminates the
    // backend, and the client sees its connection end.
    let errors = tokio::time::timeout(STALL, long_query)
        .await
        .expect("the long query ended before the thread ran again")
        .unwrap();
    let ended_after = granted.elapsed();
    // Told why, as its own session would have told it (plain TCP, between messages).
    assert!(
        errors
            .iter()
            .any(|e| e.severity == "FATAL" && e.code == "57P01" && e.message.contains("expired")),
        "the long query's client was not told why: {errors:?}"
    );
    assert!(
        stalled_at.elapsed() < STALL - Duration::from_secs(5),
        "ended {:?} after the stall began, too close to its end",
        stalled_at.elapsed()
    );
    assert!(
        ended_after >= Duration::from_secs(4),
        "ended before the deadline: {ended_after:?}"
    );
    env.eventually("the backend is gone", Duration::from_secs(5), || {
        !env.backend_alive(pid)
    })
    .await;
    assert!(
        stalled_at.elapsed() < STALL - Duration::from_secs(2),
        "backend gone only {:?} after the stall began",
        stalled_at.elapsed()
    );

    // The other session's client was cut too (same grant): its statement fails now.
    let other_outcome = tokio::time::timeout(Duration::from_secs(10), other_query)
        .await
        .expect("the other session's client was cut")
        .unwrap();
    assert_told_expired(other_outcome.err().as_ref(), "the stalled statement");
    let _ = tokio::time::timeout(Duration::from_secs(10), other_conn).await;

    // A client connecting now is not placed on the stopped thread to wait in silence:
    // it is answered, and — the audit log being stuck — refused with the reason.
    let refused = tokio::time::timeout(
        Duration::from_secs(15),
        env.client_config(harness::BOB, harness::BOB_PASSWORD)
            .connect(tokio_postgres::NoTls),
    )
    .await
    .expect("a new client was answered while the session thread was stopped");
    let error = refused.err().expect("refused while the audit log is stuck");
    let db_error = error.as_db_error().expect("an ErrorResponse");
    assert_eq!(db_error.code().code(), "58000", "{db_error:?}");
    assert!(db_error.message().contains("audit log"), "{db_error:?}");
    assert!(
        stalled_at.elapsed() < STALL,
        "answered only {:?} after the stall began",
        stalled_at.elapsed()
    );

    // The disk comes back: the thread runs again, the sessions finish their own teardown,
    // and the audit trail records both ends as the grant's expiry. The statement whose
    // write stalled is in the log, but it never reached the database past the grant;
    // the long statement's own write and the one pipelined behind it never ran either.
    fail::remove("audit::write");
    env.eventually(
        "both sessions ended once the thread ran again",
        STALL + Duration::from_secs(15),
        || env.server().registry.is_empty(),
    )
    .await;
    assert_eq!(env.superuser_sql("SELECT count(*) FROM marks"), "0");
    let events = env.audit_events();
    assert!(
        events.iter().any(|e| matches!(&e.body,
            EventBody::Query { sql, .. } if sql.contains("INSERT INTO marks VALUES (1)"))),
        "the stalled statement was audited"
    );
    let ends: Vec<(EndReason, Option<f64>)> = events
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::SessionEnd {
                reason, late_ms, ..
            } => Some((reason, late_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    for (reason, late_ms) in &ends {
        assert_eq!(*reason, EndReason::GrantExpired, "{ends:?}");
        // Their own teardown ran after the stall: the lateness shows it.
        assert!(late_ms.is_some_and(|ms| ms > 1_000.0), "{ends:?}");
    }
    assert!(env.server().registry.list().is_empty());
    let _ = (grant, bob_grant);
    env.stop().await;
}
