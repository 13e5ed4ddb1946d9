//! `runtime:` — the threads `jitgate serve` runs on.
//!
//! By default sessions are pinned to one single-threaded runtime per CPU the process may
//! use (cgroup quotas included; `jitgate_proxy::session_threads`), and the admin API, the grant
//! lifecycle and the accept loop run on a shared multi-thread runtime with one worker
//! per CPU. `session_threads: 0` runs sessions on the shared runtime instead (tokio's
//! work stealing). BENCHMARKS.md has the measurement the default was chosen from.

use std::num::NonZeroUsize;

use super::ctx::Ctx;
use super::raw::RawRuntime;
use crate::error::ConfigError;

/// Largest accepted `runtime.worker_threads`.
pub const MAX_WORKER_THREADS: u64 = 512;

/// The resolved `runtime:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Worker threads; `None`: one per CPU the process may use.
    pub worker_threads: Option<NonZeroUsize>,
    /// Threads that each run their share of the sessions on a runtime of their own
    /// (`jitgate_proxy::session_threads`); 0: sessions run on the shared runtime. Default: one
    /// per CPU.
    pub session_threads: usize,
}

impl Default for RuntimeSettings {
    fn default() -> RuntimeSettings {
        RuntimeSettings {
            worker_threads: None,
            session_threads: cpus(),
        }
    }
}

/// CPUs this process may use (at least 1).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Checks `runtime:` (absent: the defaults).
pub(crate) fn runtime(ctx: &Ctx, raw: Option<&RawRuntime>) -> Result<RuntimeSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(RuntimeSettings::default());
    };
    let in_range = |n: u64| usize::try_from(n).ok().filter(|_| n <= MAX_WORKER_THREADS);
    let worker_threads = match raw.worker_threads {
        None => None,
        Some(n) => Some(in_range(n).and_then(NonZeroUsize::new).ok_or_else(|| {
            ctx.err(
                "runtime.worker_threads",
                format!(
                    "{n} is out of range (1..={MAX_WORKER_THREADS}; leave it out for one per CPU)"
                ),
            )
        })?),
    };
    let session_threads = match raw.session_threads {
        None => cpus(),
        Some(n) => in_range(n).ok_or_else(|| {
            ctx.err(
                "runtime.session_threads",
                format!("{n} is out of range (0..={MAX_WORKER_THREADS}; 0 runs sessions on the shared runtime)"),
            )
        })?,
    };
    Ok(RuntimeSettings {
        worker_threads,
        session_threads,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;

    fn resolve(yaml: &str) -> Result<RuntimeSettings, String> {
        let ctx = Ctx::new(Path::new("/etc/jitgate/jitgate.yaml"));
        let raw: RawRuntime = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        runtime(&ctx, Some(&raw)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_values_and_mistakes() {
        let ctx = Ctx::new(Path::new("/etc/jitgate/jitgate.yaml"));
        assert_eq!(runtime(&ctx, None).unwrap(), RuntimeSettings::default());
        assert_eq!(resolve("{}").unwrap(), RuntimeSettings::default());
        assert_eq!(
            resolve("worker_threads: 1").unwrap().worker_threads,
            NonZeroUsize::new(1)
        );
        for bad in ["worker_threads: 0", "worker_threads: 513"] {
            let err = resolve(bad).unwrap_err();
            assert!(err.contains("runtime.worker_threads"), "{err}");
            assert!(err.contains("out of range"), "{err}");
        }
        assert_eq!(resolve("session_threads: 2").unwrap().session_threads, 2);
        assert_eq!(resolve("session_threads: 0").unwrap().session_threads, 0);
        assert_eq!(
            resolve("worker_threads: 1").unwrap().session_threads,
            cpus()
        );
        assert!(RuntimeSettings::default().session_threads >= 1);
        let err = resolve("session_threads: 600").unwrap_err();
        assert!(err.contains("runtime.session_threads"), "{err}");
        let typo = resolve("workers: 2").unwrap_err();
        assert!(typo.contains("unknown field"), "{typo}");
    }
}
