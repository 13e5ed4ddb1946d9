//! Test-only pauses in a session's path (built with the `failpoints` feature, which only
//! the integration tests enable), so a test can land a grant change in a window that is
//! otherwise microseconds wide — deterministically, not by racing a sleep.

use std::time::Duration;

/// While the failpoint `session::register` is set to `return(<target>)`, a login to that
/// target waits here: admitted, its upstream connection open, not yet registered. Other
/// targets (other tests sharing the process) pass. The wait is async: the thread keeps
/// serving other sessions.
pub async fn before_register(target: &str) {
    while fail::eval("session::register", |arg| arg.as_deref() == Some(target)) == Some(true) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
