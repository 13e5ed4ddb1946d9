//! Where sessions run: on the runtime that accepted them (tokio's work-stealing
//! scheduler), or pinned to one of N single-threaded runtimes, one OS thread each.
//!
//! Pinned ("per core"), a session's socket wake-ups, timers and audit writes all happen
//! on one thread: no work stealing, no waking of idle workers to look for work, no task
//! moving between CPUs. The audit events of all the sessions that ran in one turn of a
//! core's runtime go to the log in one write (`jitgate_audit::writer::gather`). Each new
//! session goes to the thread with the fewest live sessions (a session's load is unknown
//! at accept; counts keep threads even as sessions come and go). What is shared — the
//! registry, the audit writer, parked upstream connections — is `Send + Sync` and works
//! across runtimes; the measurements that chose both are in BENCHMARKS.md.
//!
//! A core whose thread stops running (a `write(2)` to a hung audit disk, made inline by
//! one of its sessions) would hold every session placed on it: a client connecting then
//! would wait in silence, not even refused. Each core's runtime therefore beats a
//! heartbeat every [`BEAT`]; a core whose last beat is older than [`STALLED_AFTER`] gets
//! no new sessions, and when no core is running [`Cores::spawn`] hands the session back
//! for the caller's own runtime (where, with the audit log stuck, it is refused with an
//! error instead of hanging). Sessions already on a stalled core are the
//! [`crate::backstop`]'s concern.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// How often a core's runtime shows it is running.
const BEAT: Duration = Duration::from_millis(250);

/// A core whose last heartbeat is older than this gets no new sessions.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// N single-threaded runtimes that run sessions; stopped when dropped.
pub struct Cores {
    cores: Vec<Core>,
    /// Heartbeats are milliseconds since this instant.
    epoch: Instant,
    stalled_after: Duration,
}

struct Core {
    name: String,
    handle: Handle,
    /// Sessions running on this core.
    live: Arc<AtomicUsize>,
    /// When the core's runtime last ran its heartbeat, ms since `Cores::epoch`.
    beat: Arc<AtomicU64>,
    /// Whether the core was reported stalled (so that is logged once per stall).
    reported: AtomicBool,
    /// Dropped (or sent) to let the core's thread end.
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

/// Decrements a core's live count when its session's future is dropped (finished or
/// cancelled by a runtime shutdown).
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cores {
    /// Starts `n` (≥ 1) threads, each running its own current-thread runtime.
    pub fn start(n: usize) -> std::io::Result<Cores> {
        Cores::start_with(n, STALLED_AFTER)
    }

    /// [`Cores::start`], with a core taken for stalled after `stalled_after` without a
    /// heartbeat (tests shorten it).
    pub fn start_with(n: usize, stalled_after: Duration) -> std::io::Result<Cores> {
        let epoch = Instant::now();
        let mut cores = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let mut builder = Builder::new_current_thread();
            builder.enable_all();
            // The sessions of a core write their audit events together, once per turn.
            jitgate_audit::writer::gather::install(&mut builder);
            let runtime = builder.build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let name = format!("jitgate-core-{i}");
            let beat = Arc::new(AtomicU64::new(millis_since(epoch)));
            let beating = Arc::clone(&beat);
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    // Runs the sessions spawned onto `handle` until `Cores` is dropped.
                    runtime.block_on(async {
                        tokio::select! {
                            _ = stopped => {}
                            () = heartbeat(epoch, beating) => {}
                        }
                    });
                    // Sessions are drained before `Cores` is dropped; anything left (a
                    // detached helper task) is not waited for.
                    runtime.shutdown_background();
                })?;
            cores.push(Core {
                name,
                handle,
                live: Arc::new(AtomicUsize::new(0)),
                beat,
                reported: AtomicBool::new(false),
                _stop: stop,
            });
        }
        Ok(Cores {
            cores,
            epoch,
            stalled_after,
        })
    }

    /// Whether `core` beat recently; logs the moment it is first seen stalled, and the
    /// moment it runs again.
    fn running(&self, core: &Core, now: u64) -> bool {
        let silent = Duration::from_millis(now.saturating_sub(core.beat.load(Ordering::Relaxed)));
        let running = silent <= self.stalled_after;
        if running == core.reported.load(Ordering::Relaxed) {
            core.reported.store(!running, Ordering::Relaxed);
            if running {
                tracing::info!(thread = %core.name, "session thread runs again; it takes new sessions");
            } else {
                tracing::error!(
                    thread = %core.name,
                    silent_ms = silent.as_millis(),
                    sessions = core.live.load(Ordering::Relaxed),
                    "session thread has stopped running (blocked in a system call: is the audit log's disk hung?); new sessions go elsewhere"
                );
            }
        }
        running
    }

    /// Runs the future `make` builds on the running core with the fewest live sessions.
    /// `make` runs on that core's thread, inside its runtime: what it registers (a
    /// socket, a timer) belongs to that core. When no core is running (all stalled),
    /// `make` is handed back: the caller runs it on its own runtime.
    pub fn spawn<F, M>(&self, make: M) -> Result<(), M>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + 'static + Send,
    {
        let now = millis_since(self.epoch);
        let Some(core) = self
            .cores
            .iter()
            .filter(|c| self.running(c, now))
            .min_by_key(|c| c.live.load(Ordering::Relaxed))
        else {
            return Err(make);
        };
        core.live.fetch_add(1, Ordering::Relaxed);
        let guard = LiveGuard(Arc::clone(&core.live));
        core.handle.spawn(async move {
            let _guard = guard;
            make().await;
        });
        Ok(())
    }

    /// Live sessions per core (for tests and diagnostics).
    pub fn live(&self) -> Vec<usize> {
        self.cores
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
        let cores = Cores::start(2).unwrap();
        let (release, released) = tokio::sync::watch::channel(false);
        let (names_tx, mut names_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let mut released = released.clone();
            let names_tx = names_tx.clone();
            let spawned = cores.spawn(move || async move {
                // A timer registered here belongs to this core's runtime.
                tokio::time::sleep(Duration::from_millis(1)).await;
                // Having gone idle once, the core gathers its sessions' audit writes.
                let gathers = jitgate_audit::writer::gather::active();
                let name = std::thread::current().name().map(str::to_owned);
                let _ = names_tx.send((name, gathers));
                let _ = released.wait_for(|r| *r).await;
            });
            assert!(spawned.is_ok(), "both cores run");
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
                "jitgate-core-0",
                "jitgate-core-0",
                "jitgate-core-1",
                "jitgate-core-1"
            ]
        );
        assert_eq!(cores.live(), [2, 2]);
        release.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while cores.live() != [0, 0] {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
    }

    /// The name of the thread a session spawned on `cores` runs on, and how long after
    /// the spawn it started; `None` when `spawn` handed it back.
    fn place(cores: &Cores) -> Option<std::sync::mpsc::Receiver<(String, Duration)>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let asked = Instant::now();
        cores
            .spawn(move || async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                let _ = tx.send((name, asked.elapsed()));
            })
            .ok()?;
        Some(rx)
    }

    #[test]
    fn a_stalled_core_gets_no_new_sessions() {
        let cores = Cores::start_with(2, Duration::from_millis(600)).unwrap();
        // Core 0's thread blocks (as in a write(2) to a hung disk) until `unblock`.
        let (unblock, blocked) = std::sync::mpsc::channel::<()>();
        let (entered, entered_rx) = std::sync::mpsc::channel();
        let spawned = cores.spawn(move || async move {
            let _ = entered.send(std::thread::current().name().unwrap_or("").to_owned());
            let _ = blocked.recv_timeout(Duration::from_secs(60));
        });
        assert!(spawned.is_ok());
        let stuck = entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        // Without the heartbeat, least-loaded placement would put every other one of
        // these on the stuck core, where it would not start until the core is unblocked.
        for _ in 0..4 {
            let (name, after) = place(&cores)
                .unwrap()
                .recv_timeout(Duration::from_secs(10))
                .expect("the session started");
            assert_ne!(name, stuck, "placed on the stalled core");
            assert!(after < Duration::from_secs(10), "started after {after:?}");
        }
        // Both stalled: the session is handed back to the caller.
        let (unblock_other, blocked_other) = std::sync::mpsc::channel::<()>();
        let (entered, entered_rx) = std::sync::mpsc::channel();
        let spawned = cores.spawn(move || async move {
            let _ = entered.send(());
            let _ = blocked_other.recv_timeout(Duration::from_secs(60));
        });
        assert!(spawned.is_ok());
        entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(place(&cores).is_none(), "no core runs: handed back");
        // Unblocked, a core takes sessions again.
        unblock.send(()).unwrap();
        unblock_other.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let rx = loop {
            if let Some(rx) = place(&cores) {
                break rx;
            }
            assert!(Instant::now() < deadline, "cores never ran again");
            std::thread::sleep(Duration::from_millis(50));
        };
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }
}
