//! Where sessions run: on the runtime that accepted them (tokio's work-stealing
//! scheduler), or each on one of N single-threaded runtimes, one OS thread each, for its
//! whole life (plain threads: the OS schedules them; no CPU affinity is set).
//!
//! On its thread, a session's socket wake-ups, timers and audit writes all happen in
//! one place: no work stealing, no waking of idle workers to look for work, no task
//! moving between CPUs. The audit events of all the sessions that ran in one turn of a
//! thread's runtime go to the log in one write (`jitgate_audit::writer::gather`). Each new
//! session goes to the thread with the fewest live sessions (a session's load is unknown
//! at accept; counts keep threads even as sessions come and go). What is shared — the
//! registry, the audit writer, parked upstream connections — is `Send + Sync` and works
//! across runtimes; the measurements that chose both are in BENCHMARKS.md.
//!
//! A session thread that stops running (a `write(2)` to a hung audit disk, made inline by
//! one of its sessions) would hold every session placed on it: a client connecting then
//! would wait in silence, not even refused. Each thread's runtime therefore beats a
//! heartbeat every [`BEAT`]; a thread whose last beat is older than [`STALLED_AFTER`] gets
//! no new sessions, and when no thread is running [`SessionThreads::spawn`] hands the session back
//! for the caller's own runtime (where, with the audit log stuck, it is refused with an
//! error instead of hanging). Sessions already on a stalled thread are the
//! [`crate::backstop`]'s concern.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// How often a thread's runtime shows it is running.
const BEAT: Duration = Duration::from_millis(250);

/// A thread whose last heartbeat is older than this gets no new sessions.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// N single-threaded runtimes that run sessions; stopped when dropped.
pub struct SessionThreads {
    threads: Vec<SessionThread>,
    /// Heartbeats are milliseconds since this instant.
    epoch: Instant,
    stalled_after: Duration,
}

struct SessionThread {
    name: String,
    handle: Handle,
    /// Sessions running on this thread.
    live: Arc<AtomicUsize>,
    /// When the thread's runtime last ran its heartbeat, ms since `SessionThreads::epoch`.
    beat: Arc<AtomicU64>,
    /// Whether the thread was reported stalled (so that is logged once per stall).
    reported: AtomicBool,
    /// Dropped (or sent) to let the thread's thread end.
    _stop: oneshot::Sender<()>,
}

/// Milliseconds from `epoch` to now.
fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Stores the time into `beat` every [`BEAT`] while the runtime that polls it runs.
async fn heartbeat(epoch: Instant, beat: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        beat.store(millis_since(epoch), Ordering::Relaxed);
    }
}

/// Decrements a thread's live count when its session's future is dropped (finished or
/// cancelled by a runtime shutdown).
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SessionThreads {
    /// Starts `n` (≥ 1) threads, each running its own current-thread runtime.
    pub fn start(n: usize) -> std::io::Result<SessionThreads> {
        SessionThreads::start_with(n, STALLED_AFTER)
    }

    /// [`SessionThreads::start`], with a thread taken for stalled after `stalled_after` without a
    /// heartbeat (tests shorten it).
    pub fn start_with(n: usize, stalled_after: Duration) -> std::io::Result<SessionThreads> {
        let epoch = Instant::now();
        let mut threads = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let mut builder = Builder::new_current_thread();
            builder.enable_all();
            // The sessions of a thread write their audit events together, once per turn.
            jitgate_audit::writer::gather::install(&mut builder);
            let runtime = builder.build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let name = format!("jitgate-session-{i}");
            let beat = Arc::new(AtomicU64::new(millis_since(epoch)));
            let beating = Arc::clone(&beat);
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    // Runs the sessions spawned onto `handle` until `SessionThreads` is dropped.
                    runtime.block_on(async {
                        tokio::select! {
                            _ = stopped => {}
                            () = heartbeat(epoch, beating) => {}
                        }
                    });
                    // Sessions are drained before `SessionThreads` is dropped; anything left (a
                    // detached helper task) is not waited for.
                    runtime.shutdown_background();
                })?;
            threads.push(SessionThread {
                name,
                handle,
                live: Arc::new(AtomicUsize::new(0)),
                beat,
                reported: AtomicBool::new(false),
                _stop: stop,
            });
        }
        Ok(SessionThreads {
            threads,
            epoch,
            stalled_after,
        })
    }

    /// Whether `thread` beat recently; logs the moment it is first seen stalled, and the
    /// moment it runs again.
    fn running(&self, thread: &SessionThread, now: u64) -> bool {
        let silent = Duration::from_millis(now.saturating_sub(thread.beat.load(Ordering::Relaxed)));
        let running = silent <= self.stalled_after;
        if running == thread.reported.load(Ordering::Relaxed) {
            thread.reported.store(!running, Ordering::Relaxed);
            if running {
                tracing::info!(thread = %thread.name, "session thread runs again; it takes new sessions");
            } else {
                tracing::error!(
                    thread = %thread.name,
                    silent_ms = silent.as_millis(),
                    sessions = thread.live.load(Ordering::Relaxed),
                    "session thread has stopped running (blocked in a system call: is the audit log's disk hung?); new sessions go elsewhere"
                );
            }
        }
        running
    }

    /// Runs the future `make` builds on the running thread with the fewest live sessions.
    /// `make` runs on that thread's thread, inside its runtime: what it registers (a
    /// socket, a timer) belongs to that thread. When no thread is running (all stalled),
    /// `make` is handed back: the caller runs it on its own runtime.
    pub fn spawn<F, M>(&self, make: M) -> Result<(), M>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + 'static + Send,
    {
        let now = millis_since(self.epoch);
        let Some(thread) = self
            .threads
            .iter()
            .filter(|c| self.running(c, now))
            .min_by_key(|c| c.live.load(Ordering::Relaxed))
        else {
            return Err(make);
        };
        thread.live.fetch_add(1, Ordering::Relaxed);
        let guard = LiveGuard(Arc::clone(&thread.live));
        thread.handle.spawn(async move {
            let _guard = guard;
            make().await;
        });
        Ok(())
    }

    /// Live sessions per thread (for tests and diagnostics).
    pub fn live(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|c| c.live.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn sessions_spread_over_cores_and_run_on_their_threads() {
        let threads = SessionThreads::start(2).unwrap();
        let (release, released) = tokio::sync::watch::channel(false);
        let (names_tx, mut names_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let mut released = released.clone();
            let names_tx = names_tx.clone();
            let spawned = threads.spawn(move || async move {
                // A timer registered here belongs to this thread's runtime.
                tokio::time::sleep(Duration::from_millis(1)).await;
                // Having gone idle once, the thread gathers its sessions' audit writes.
                let gathers = jitgate_audit::writer::gather::active();
                let name = std::thread::current().name().map(str::to_owned);
                let _ = names_tx.send((name, gathers));
                let _ = released.wait_for(|r| *r).await;
            });
            assert!(spawned.is_ok(), "both threads run");
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            let (name, gathers) = names_rx.recv().await.unwrap();
            assert!(gathers, "audit writes are gathered on {name:?}");
            names.push(name.unwrap());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "jitgate-session-0",
                "jitgate-session-0",
                "jitgate-session-1",
                "jitgate-session-1"
            ]
        );
        assert_eq!(threads.live(), [2, 2]);
        release.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while threads.live() != [0, 0] {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
    }

    /// The name of the thread a session spawned on `threads` runs on, and how long after
    /// the spawn it started; `None` when `spawn` handed it back.
    fn place(threads: &SessionThreads) -> Option<std::sync::mpsc::Receiver<(String, Duration)>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let asked = Instant::now();
        threads
            .spawn(move || async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                let _ = tx.send((name, asked.elapsed()));
            })
            .ok()?;
        Some(rx)
    }

    #[test]
    fn a_stalled_core_gets_no_new_sessions() {
        let threads = SessionThreads::start_with(2, Duration::from_millis(600)).unwrap();
        // SessionThread 0's thread blocks (as in a write(2) to a hung disk) until `unblock`.
        let (unblock, blocked) = std::sync::mpsc::channel::<()>();
        let (entered, entered_rx) = std::sync::mpsc::channel();
        let spawned = threads.spawn(move || async move {
            let _ = entered.send(std::thread::current().name().unwrap_or("").to_owned());
            let _ = blocked.recv_timeout(Duration::from_secs(60));
        });
        assert!(spawned.is_ok());
        let stuck = entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        // Without the heartbeat, least-loaded placement would put every other one of
        // these on the stuck thread, where it would not start until the thread is unblocked.
        for _ in 0..4 {
            let (name, after) = place(&threads)
                .unwrap()
                .recv_timeout(Duration::from_secs(10))
                .expect("the session started");
            assert_ne!(name, stuck, "placed on the stalled thread");
            assert!(after < Duration::from_secs(10), "started after {after:?}");
        }
        // Both stalled: the session is handed back to the caller.
        let (unblock_other, blocked_other) = std::sync::mpsc::channel::<()>();
        let (entered, entered_rx) = std::sync::mpsc::channel();
        let spawned = threads.spawn(move || async move {
            let _ = entered.send(());
            let _ = blocked_other.recv_timeout(Duration::from_secs(60));
        });
        assert!(spawned.is_ok());
        entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(place(&threads).is_none(), "no thread runs: handed back");
        // Unblocked, a thread takes sessions again.
        unblock.send(()).unwrap();
        unblock_other.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let rx = loop {
            if let Some(rx) = place(&threads) {
                break rx;
            }
            assert!(Instant::now() < deadline, "threads never ran again");
            std::thread::sleep(Duration::from_millis(50));
        };
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }
}
