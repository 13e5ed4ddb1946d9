//! Copies of the signed checkpoints kept off the log's host (a "witness"), so a tail cut
//! together with the local checkpoints file is still caught.
//!
//! The audit crate only defines what a witness is ([`Witness`]) and feeds it from a
//! thread of its own (`WitnessQueue`): the writer hands each new checkpoint line over
//! with a lock, a push and a notify — never waiting for the witness — and the thread
//! stores them, retrying with backoff while the witness is down. Its lag is reported in
//! the operator log (when it starts failing, every [`LAG_REPORT_EVERY`] while it stays
//! down, and when it catches up); a witness that is down is never fatal to the writer.
//! The root crate implements [`Witness`] with the PostgreSQL grant store.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One checkpoint line for the witness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessLine {
    /// The checkpoint's `last_seq`.
    pub last_seq: u64,
    /// The stored checkpoint line, without `\n`.
    pub line: Vec<u8>,
}

/// Somewhere off the log's host that keeps checkpoint lines.
pub trait Witness: Send + Sync + 'static {
    /// What to call it in the operator log (never a secret).
    fn name(&self) -> String;
    /// Stores `lines` (already stored ones are ignored). Called on the witness thread
    /// only; may block, but should give up within a bounded time.
    fn store(&self, lines: &[WitnessLine]) -> Result<(), String>;
}

/// Most lines waiting for the witness; beyond it the oldest are dropped (the newest
/// checkpoint covers everything before it, so what matters most is never lost).
const MAX_PENDING: usize = 10_000;
/// Most lines handed over in one call.
const MAX_BATCH: usize = 500;
/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// While the witness stays down, its lag is logged this often.
pub const LAG_REPORT_EVERY: Duration = Duration::from_secs(60);
/// At shutdown, how long the thread keeps trying to hand over what is left.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    pending: VecDeque<(WitnessLine, Instant)>,
    dropped: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's side: a queue drained by the witness thread.
pub(crate) struct WitnessQueue {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl WitnessQueue {
    /// Starts the witness thread.
    pub(crate) fn start(witness: Arc<dyn Witness>) -> std::io::Result<WitnessQueue> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("jitgate-witness".into())
            .spawn(move || run(&thread_shared, witness.as_ref()))?;
        Ok(WitnessQueue {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands a checkpoint line over; never waits for the witness.
    pub(crate) fn push(&self, line: WitnessLine) {
        let mut state = self.shared.lock();
        state.pending.push_back((line, Instant::now()));
        if state.pending.len() > MAX_PENDING {
            state.pending.pop_front();
            state.dropped += 1;
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Stops the thread after a last bounded attempt to hand over what is queued.
    pub(crate) fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WitnessQueue {
    fn drop(&mut self) {
        self.close();
    }
}

/// The witness thread: stores what is queued, retrying with backoff.
fn run(shared: &Shared, witness: &dyn Witness) {
    let mut attempts = Attempts {
        name: witness.name(),
        backoff: FIRST_BACKOFF,
        failing_since: None,
        last_report: Instant::now(),
        closed_at: None,
    };
    while let Some(batch) = attempts.next_batch(shared) {
        match witness.store(&batch) {
            Ok(()) => attempts.stored(shared, &batch),
            Err(error) => attempts.failed(shared, &error),
        }
    }
}

/// What the witness thread keeps between its attempts at storing.
struct Attempts {
    /// The witness's name, for the operator log.
    name: String,
    /// How long to wait after the next failure.
    backoff: Duration,
    /// Since when every attempt failed (`None`: the last one succeeded).
    failing_since: Option<Instant>,
    /// When a failure was last logged.
    last_report: Instant,
    /// When the queue was closed (shutdown): the final flush is bounded.
    closed_at: Option<Instant>,
}

impl Attempts {
    /// Waits for lines to store and takes (copies) the oldest ones; `None` when the
    /// thread is to end: closed with nothing left, or the final flush took too long.
    fn next_batch(&mut self, shared: &Shared) -> Option<Vec<WitnessLine>> {
        let mut state = shared.lock();
        while state.pending.is_empty() && !state.closed {
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.pending.is_empty() {
            return None;
        }
        if state.closed {
            let at = *self.closed_at.get_or_insert_with(Instant::now);
            if at.elapsed() > FINAL_FLUSH {
                tracing::warn!(witness = %self.name, waiting = state.pending.len(),
                    "audit witness: giving up at shutdown; these checkpoints stay only in the local checkpoints file");
                return None;
            }
        }
        Some(
            state
                .pending
                .iter()
                .take(MAX_BATCH)
                .map(|(l, _)| l.clone())
                .collect(),
        )
    }

    /// `batch` is stored: it leaves the queue, and a recovery is logged.
    fn stored(&mut self, shared: &Shared, batch: &[WitnessLine]) {
        let mut state = shared.lock();
        // Lines dropped meanwhile shifted the queue: remove exactly what was stored.
        let stored = batch.len().min(state.pending.len());
        let oldest = state.pending.front().map(|p| p.1);
        let matches = state
            .pending
            .iter()
            .take(stored)
            .zip(batch)
            .all(|((a, _), b)| a == b);
        if matches {
            state.pending.drain(..stored);
        } else {
            state.pending.retain(|(l, _)| !batch.contains(l));
        }
        let dropped = std::mem::take(&mut state.dropped);
        let left = state.pending.len();
        drop(state);
        if let Some(since) = self.failing_since.take() {
            tracing::info!(witness = %self.name, down_for = ?since.elapsed(),
                lag = ?oldest.map(|o| o.elapsed()), dropped, waiting = left,
                "audit witness reachable again; queued checkpoints stored");
        }
        self.backoff = FIRST_BACKOFF;
    }

    /// Storing failed: logged (at most every [`LAG_REPORT_EVERY`]), then a wait before
    /// the next attempt, doubling up to [`MAX_BACKOFF`].
    fn failed(&mut self, shared: &Shared, error: &str) {
        let (waiting, lag) = {
            let state = shared.lock();
            (
                state.pending.len(),
                state.pending.front().map(|p| p.1.elapsed()),
            )
        };
        if self.failing_since.is_none() || self.last_report.elapsed() >= LAG_REPORT_EVERY {
            tracing::warn!(witness = %self.name, %error, waiting, lag = ?lag,
                "audit witness unreachable: checkpoints are kept locally and retried \
                 (events are not affected)");
            self.last_report = Instant::now();
        }
        self.failing_since.get_or_insert_with(Instant::now);
        let state = shared.lock();
        if state.closed {
            drop(state);
            std::thread::sleep(Duration::from_millis(200));
        } else {
            // Woken early only by shutdown (for a last attempt).
            drop(
                shared
                    .wake
                    .wait_timeout_while(state, self.backoff, |s| !s.closed)
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}
