//! Enforcement of a session's grant: one long-lived future per session that resolves
//! when the session must end — shutdown, revocation, or the grant's absolute deadline.
//!
//! The future is created once and waited on from every `select!` of the relay, so the
//! timer and the wake-up registrations on the control channel and the shutdown token
//! are made once, not on every message. It sits in a one-element `FuturesUnordered`,
//! which polls it only when one of its own wake-ups fired: the relay wakes for every
//! socket read and write, and checking the enforcement state then (the token's lock, the
//! channel, the timer) cost more instructions per transaction than the protocol tracker.
//!
//! All of this runs on the session's own thread. Should that thread stop running (a
//! write(2) to a hung audit disk), [`crate::backstop`] ends the session from outside.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::relay::End;
use crate::registry::SessionControl;

/// Converts an absolute deadline to the runtime's clock.
pub fn instant_for(deadline: Timestamp) -> Instant {
    let now = Instant::now();
    let left = deadline.duration_since(Timestamp::now());
    match Duration::try_from(left) {
        Ok(d) => now + d,
        Err(_) => now,
    }
}

/// What a session waits on besides its sockets.
pub struct Enforcer {
    /// Holds the one enforcement future until it resolves, then nothing.
    fut: FuturesUnordered<Pin<Box<dyn Future<Output = End> + Send>>>,
}

impl Enforcer {
    pub fn new(control: watch::Receiver<SessionControl>, terminate: CancellationToken) -> Self {
        let fut = FuturesUnordered::new();
        fut.push(Box::pin(enforce(control, terminate)) as Pin<Box<dyn Future<Output = End> + Send>>);
        Enforcer { fut }
    }

    /// Resolves when the session must end. Cancel-safe: dropping the returned future
    /// keeps the enforcement state, the next call goes on waiting. After it resolved
    /// once, it never resolves again (the session is ending).
    pub async fn wait(&mut self) -> End {
        match self.fut.next().await {
            Some(end) => end,
            None => std::future::pending().await,
        }
    }
}

/// The current control state: `Some` when the session must end now.
fn check(control: &mut watch::Receiver<SessionControl>) -> Result<Timestamp, End> {
    let c = control.borrow_and_update();
    if let Some(r) = &c.revoked {
        return Err(End::Revoked(r.clone()));
    }
    if c.deadline <= Timestamp::now() {
        return Err(End::Expired);
    }
    Ok(c.deadline)
}

async fn enforce(
    mut control: watch::Receiver<SessionControl>,
    terminate: CancellationToken,
) -> End {
    // A revocation may have arrived before the relay started.
    let deadline = match check(&mut control) {
        Ok(d) => d,
        Err(end) => return end,
    };
    let sleep = sleep_until(instant_for(deadline));
    tokio::pin!(sleep);
    let mut control_open = true;
    loop {
        tokio::select! {
            biased;
            _ = terminate.cancelled() => return End::Shutdown,
            changed = control.changed(), if control_open => {
                if changed.is_err() {
                    control_open = false;
                    continue;
                }
                match check(&mut control) {
                    Ok(deadline) => sleep.as_mut().reset(instant_for(deadline)),
                    Err(end) => return end,
                }
            }
            _ = &mut sleep => return End::Expired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Revocation;

    fn control(
        deadline: Timestamp,
    ) -> (
        watch::Sender<SessionControl>,
        watch::Receiver<SessionControl>,
    ) {
        watch::channel(SessionControl {
            deadline,
            revoked: None,
        })
    }

    #[tokio::test]
    async fn fires_at_the_deadline_and_follows_extensions() {
        let start = std::time::Instant::now();
        let (tx, rx) = control(Timestamp::now() + jiff::SignedDuration::from_millis(100));
        let mut e = Enforcer::new(rx, CancellationToken::new());
        // Extend before the first deadline: it must not fire at 100 ms.
        tx.send_modify(|c| c.deadline = Timestamp::now() + jiff::SignedDuration::from_millis(400));
        let end = e.wait().await;
        assert!(matches!(end, End::Expired));
        assert!(
            start.elapsed() >= Duration::from_millis(350),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn revocation_and_shutdown_end_it_at_once() {
        let (tx, rx) = control(Timestamp::now() + jiff::SignedDuration::from_secs(60));
        let mut e = Enforcer::new(rx, CancellationToken::new());
        let revocation = Revocation {
            by: "admin".into(),
            reason: None,
            at: Timestamp::now(),
        };
        tx.send_modify(|c| c.revoked = Some(revocation.clone()));
        assert!(matches!(e.wait().await, End::Revoked(r) if r == revocation));

        let (_tx, rx) = control(Timestamp::now() + jiff::SignedDuration::from_secs(60));
        let token = CancellationToken::new();
        let mut e = Enforcer::new(rx, token.clone());
        token.cancel();
        assert!(matches!(e.wait().await, End::Shutdown));
    }

    #[tokio::test]
    async fn a_past_deadline_ends_it_immediately() {
        let (_tx, rx) = control(Timestamp::now() - jiff::SignedDuration::from_secs(1));
        let mut e = Enforcer::new(rx, CancellationToken::new());
        assert!(matches!(e.wait().await, End::Expired));
    }
}
