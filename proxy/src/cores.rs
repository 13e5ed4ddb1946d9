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

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// N single-threaded runtimes that run sessions; stopped when dropped.
pub struct Cores {
    cores: Vec<Core>,
}

struct Core {
    handle: Handle,
    /// Sessions running on this core.
    live: Arc<AtomicUsize>,
    /// Dropped (or sent) to let the core's thread end.
    _stop: oneshot::Sender<()>,
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
        let mut cores = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let mut builder = Builder::new_current_thread();
            builder.enable_all();
            // The sessions of a core write their audit events together, once per turn.
            jitgate_audit::writer::gather::install(&mut builder);
            let runtime = builder.build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("jitgate-core-{i}"))
                .spawn(move || {
                    // Runs the sessions spawned onto `handle` until `Cores` is dropped.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Sessions are drained before `Cores` is dropped; anything left (a
                    // detached helper task) is not waited for.
                    runtime.shutdown_background();
                })?;
            cores.push(Core {
                handle,
                live: Arc::new(AtomicUsize::new(0)),
                _stop: stop,
            });
        }
        Ok(Cores { cores })
    }

    /// Runs the future `make` builds on the core with the fewest live sessions. `make`
    /// runs on that core's thread, inside its runtime: what it registers (a socket, a
    /// timer) belongs to that core.
    pub fn spawn<F, M>(&self, make: M)
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + 'static + Send,
    {
        let Some(core) = self
            .cores
            .iter()
            .min_by_key(|c| c.live.load(Ordering::Relaxed))
        else {
            return;
        };
        core.live.fetch_add(1, Ordering::Relaxed);
        let guard = LiveGuard(Arc::clone(&core.live));
        core.handle.spawn(async move {
            let _guard = guard;
            make().await;
        });
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
            cores.spawn(move || async move {
                // A timer registered here belongs to this core's runtime.
                tokio::time::sleep(Duration::from_millis(1)).await;
                // Having gone idle once, the core gathers its sessions' audit writes.
                let gathers = jitgate_audit::writer::gather::active();
                let name = std::thread::current().name().map(str::to_owned);
                let _ = names_tx.send((name, gathers));
                let _ = released.wait_for(|r| *r).await;
            });
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
}
