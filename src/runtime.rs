//! The tokio runtime the `jitgate` binary runs on, shaped by `runtime:` in the config.
//!
//! One multi-thread runtime for the accept loop, the admin API and the lifecycle tasks
//! (and for sessions when `runtime.session_threads` is 0); sessions otherwise run on the
//! proxy's session threads (`jitgate_proxy::session_threads`), and the audit writer and its
//! housekeeping have OS threads of their own. The measurement behind the defaults is in
//! BENCHMARKS.md.

use tokio::runtime::{Builder, Runtime};

use crate::config::RuntimeSettings;

/// Builds the runtime `settings` describe.
pub fn build(settings: RuntimeSettings) -> std::io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    builder.enable_all().thread_name("jitgate-worker");
    if let Some(n) = settings.worker_threads {
        builder.worker_threads(n.get());
    }
    builder.build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    #[test]
    fn the_configured_number_of_workers_runs_tasks() {
        // The default honours TOKIO_WORKER_THREADS; only check it when that is not set.
        let default_known = std::env::var_os("TOKIO_WORKER_THREADS").is_none();
        for workers in [None, NonZeroUsize::new(1), NonZeroUsize::new(3)] {
            if workers.is_none() && !default_known {
                continue;
            }
            let rt = build(RuntimeSettings {
                worker_threads: workers,
                ..RuntimeSettings::default()
            })
            .unwrap();
            let metrics = rt.metrics();
            let expected = workers.map_or_else(
                || std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
                NonZeroUsize::get,
            );
            assert_eq!(metrics.num_workers(), expected);
            assert_eq!(
                rt.block_on(async { tokio::spawn(async { 7 }).await.unwrap() }),
                7
            );
        }
    }
}
