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
//! The timer is not the only check: the relay asks [`Enforcer::due`] before it forwards
//! anything, so a message that arrives after the deadline is never forwarded, even when
//! the timer has not fired yet (a busy thread, the timer wheel's granularity).
//!
//! Time is read from an injectable [`Clock`] (the engine's, in production the wall
//! clock); the tests use one that follows tokio's clock, so they run enforcement under
//! `tokio::time::pause` instead of sleeping.
//!
//! All of this runs on the session's own thread. Should that thread stop running (a
//! write(2) to a hung audit disk), [`crate::backstop`] ends the session from outside.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use jiff::Timestamp;
use jitgate_policy::Clock;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::end::End;
use crate::registry::SessionControl;

/// Converts an absolute deadline, read against `clock`, to the runtime's clock.
fn instant_for(deadline: Timestamp, clock: &dyn Clock) -> Instant {
    let now = Instant::now();
    let left = deadline.duration_since(clock.now());
    match Duration::try_from(left) {
        Ok(d) => now + d,
        Err(_) => now,
    }
}

/// What a session waits on besides its sockets.
pub struct Enforcer {
    /// Holds the one enforcement future until it resolves, then nothing.
    fut: FuturesUnordered<Pin<Box<dyn Future<Output = End> + Send>>>,
    control: watch::Receiver<SessionControl>,
    clock: Arc<dyn Clock>,
}

impl Enforcer {
    pub fn new(
        control: watch::Receiver<SessionControl>,
        terminate: CancellationToken,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let fut = FuturesUnordered::new();
        fut.push(
            Box::pin(enforce(control.clone(), terminate, Arc::clone(&clock)))
                as Pin<Box<dyn Future<Output = End> + Send>>,
        );
        Enforcer {
            fut,
            control,
            clock,
        }
    }

    /// Whether the session must end now (revoked, or past its deadline by the clock),
    /// whatever the timer says: asked before every forward.
    pub fn due(&self) -> Option<End> {
        let c = self.control.borrow();
        if let Some(r) = &c.revoked {
            return Some(End::Revoked(r.clone()));
        }
        (c.deadline <= self.clock.now()).then_some(End::Expired)
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

/// The current control state: the deadline, or why the session must end now.
fn check(
    control: &mut watch::Receiver<SessionControl>,
    clock: &dyn Clock,
) -> Result<Timestamp, End> {
    let c = control.borrow_and_update();
    if let Some(r) = &c.revoked {
        return Err(End::Revoked(r.clone()));
    }
    if c.deadline <= clock.now() {
        return Err(End::Expired);
    }
    Ok(c.deadline)
}

async fn enforce(
    mut control: watch::Receiver<SessionControl>,
    terminate: CancellationToken,
    clock: Arc<dyn Clock>,
) -> End {
    // A revocation may have arrived before the relay started.
    let deadline = match check(&mut control, &*clock) {
        Ok(d) => d,
        Err(end) => return end,
    };
    let sleep = sleep_until(instant_for(deadline, &*clock));
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
                match check(&mut control, &*clock) {
                    Ok(deadline) => sleep.as_mut().reset(instant_for(deadline, &*clock)),
                    Err(end) => return end,
                }
            }
            _ = &mut sleep => {
                // The timer may fire a hair early against the clock: check again.
                match check(&mut control, &*clock) {
                    Ok(deadline) => sleep.as_mut().reset(instant_for(deadline, &*clock)),
                    Err(end) => return end,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Revocation;
    use jiff::SignedDuration;

    /// Wall time that moves with tokio's clock (and so stands still, or jumps, under
    /// `tokio::time::pause` in tests): the wall time at creation plus tokio time since.
    #[derive(Debug)]
    struct RuntimeClock {
        wall: Timestamp,
        start: Instant,
    }

    impl RuntimeClock {
        fn new() -> RuntimeClock {
            RuntimeClock {
                wall: Timestamp::now(),
                start: Instant::now(),
            }
        }
    }

    impl Default for RuntimeClock {
        fn default() -> Self {
            RuntimeClock::new()
        }
    }

    impl Clock for RuntimeClock {
        fn now(&self) -> Timestamp {
            let elapsed = jiff::SignedDuration::try_from(self.start.elapsed())
                .unwrap_or(jiff::SignedDuration::MAX);
            self.wall.saturating_add(elapsed).unwrap_or(self.wall)
        }
    }

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

    fn enforcer(
        rx: watch::Receiver<SessionControl>,
        token: CancellationToken,
        clock: &Arc<RuntimeClock>,
    ) -> Enforcer {
        Enforcer::new(rx, token, Arc::clone(clock) as Arc<dyn Clock>)
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_and_follows_extensions() {
        let clock = Arc::new(RuntimeClock::new());
        let start = Instant::now();
        let (tx, rx) = control(clock.now() + SignedDuration::from_millis(100));
        let mut e = enforcer(rx, CancellationToken::new(), &clock);
        // Extend before the first deadline: it must not fire at 100 ms.
        tx.send_modify(|c| c.deadline = clock.now() + SignedDuration::from_millis(400));
        let end = e.wait().await;
        assert!(matches!(end, End::Expired));
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn due_reads_the_clock_not_the_timer() {
        let clock = Arc::new(RuntimeClock::new());
        let (_tx, rx) = control(clock.now() + SignedDuration::from_millis(100));
        let e = enforcer(rx, CancellationToken::new(), &clock);
        assert!(e.due().is_none());
        // The clock passes the deadline; the timer has not been polled at all.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(matches!(e.due(), Some(End::Expired)));
    }

    #[tokio::test(start_paused = true)]
    async fn revocation_and_shutdown_end_it_at_once() {
        let clock = Arc::new(RuntimeClock::new());
        let (tx, rx) = control(clock.now() + SignedDuration::from_secs(60));
        let mut e = enforcer(rx, CancellationToken::new(), &clock);
        let revocation = Revocation {
            by: "admin".into(),
            reason: None,
            at: clock.now(),
        };
        tx.send_modify(|c| c.revoked = Some(revocation.clone()));
        assert!(matches!(e.due(), Some(End::Revoked(_))));
        assert!(matches!(e.wait().await, End::Revoked(r) if r == revocation));

        let (_tx, rx) = control(clock.now() + SignedDuration::from_secs(60));
        let token = CancellationToken::new();
        let mut e = enforcer(rx, token.clone(), &clock);
        token.cancel();
        assert!(matches!(e.wait().await, End::Shutdown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_past_deadline_ends_it_immediately() {
        let clock = Arc::new(RuntimeClock::new());
        let (_tx, rx) = control(clock.now() - SignedDuration::from_secs(1));
        let mut e = enforcer(rx, CancellationToken::new(), &clock);
        assert!(matches!(e.wait().await, End::Expired));
    }
}
