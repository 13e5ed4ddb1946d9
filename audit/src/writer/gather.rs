//! Group writes of a session thread: the inline appends of the tasks of one
//! single-threaded runtime are gathered while the runtime has work to do, and written
//! together — one lock of the log, one `write(2)` — when it is about to go idle.
//!
//! A session thread runs many sessions; at 16 or 64 clients several of them have a
//! statement to record in the same turn of the runtime, and each paid a `write(2)` of
//! its own — the largest single cost of auditing (BENCHMARKS.md). Gathered, each caller
//! hands its events over and waits; when no task is left to run, the runtime's park hook
//! ([`flush`]) appends everything handed over in one write, in hand-over order (each
//! caller's events stay consecutive, as `write_batch` promises), and answers every
//! caller with the outcome of that write. Nothing is forwarded earlier than before: a
//! caller resumes only once its events are in the log, or with the error that refuses
//! its statements. The wait is one turn of the thread's runtime: the sessions that were
//! ready at the same moment, no timer.
//!
//! Gathering starts on a thread when the hook first runs there ([`install`] puts it on
//! a runtime builder), so a thread without the hook never holds events back, and every
//! event handed over is answered at the thread's next idle moment: written there, or —
//! when the log stays busy (another thread inside a slow write, a rotation) — given to
//! the writer thread by a task that waits for its acknowledgement under the stall
//! timeout, like any queued event. Events still held when the thread ends are answered
//! with [`AuditError::WriterGone`] (their reply channels close).

use std::cell::RefCell;
use std::sync::{Arc, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::worker::Worker;
use super::{AuditWriter, Payload, Shared};
use crate::error::AuditError;
use crate::event::Event;

/// How long a flush waits for the log while another thread holds it, before the
/// events go to the writer thread instead. An inline write holds it for a few µs.
const LOCK_WAIT: Duration = Duration::from_micros(200);

/// Where one caller's answer goes.
type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// Events handed over for one log, not yet written.
struct Pending {
    shared: Arc<Shared>,
    events: Vec<Event>,
    /// Each caller, in hand-over order: how many of `events` are theirs, and its reply.
    callers: Vec<(usize, Reply)>,
}

thread_local! {
    /// `None` until the park hook first runs on this thread: then this thread gathers.
    static GATHER: RefCell<Option<Vec<Pending>>> = const { RefCell::new(None) };
}

/// Makes the threads of the runtime `builder` builds gather their audit writes (see the
/// module doc). Meant for current-thread runtimes, whose one thread runs every task.
pub fn install(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    builder.on_thread_park(flush)
}

/// Whether audit events written on this thread are gathered (its runtime has the hook
/// and has gone idle at least once).
pub fn active() -> bool {
    GATHER.try_with(|g| g.borrow().is_some()).unwrap_or(false)
}

/// Hands `events` over for the next flush of this thread; the receiver gets the `seq`
/// of the last of them once they are written, or why they were not.
pub(super) fn push(
    shared: &Arc<Shared>,
    events: impl Payload,
) -> oneshot::Receiver<Result<u64, AuditError>> {
    let (reply, answer) = oneshot::channel();
    // Only fails while the thread ends: `reply` is dropped, the caller sees WriterGone.
    let _ = GATHER.try_with(move |g| {
        let mut g = g.borrow_mut();
        let Some(pending) = g.as_mut() else {
            return;
        };
        let at = match pending.iter().position(|p| Arc::ptr_eq(&p.shared, shared)) {
            Some(at) => at,
            None => {
                pending.push(Pending {
                    shared: Arc::clone(shared),
                    events: Vec::new(),
                    callers: Vec::new(),
                });
                pending.len() - 1
            }
        };
        let p = &mut pending[at];
        let count = events.append_to(&mut p.events);
        p.callers.push((count, reply));
    });
    answer
}

/// The park hook: writes what this thread's tasks handed over since the last one, and
/// starts gathering on this thread the first time it runs.
pub fn flush() {
    let pending = GATHER
        .try_with(|g| {
            let mut g = g.borrow_mut();
            match g.as_mut() {
                Some(pending) => std::mem::take(pending),
                None => {
                    *g = Some(Vec::new());
                    Vec::new()
                }
            }
        })
        .unwrap_or_default();
    for p in pending {
        write(p);
    }
}

/// Writes one log's gathered events and answers their callers.
fn write(p: Pending) {
    let Pending {
        shared,
        mut events,
        callers,
    } = p;
    let written = lock(&shared).map(|mut worker| worker.write_inline(events.drain(..)));
    match written {
        Some(result) => answer(callers, result),
        None => hand_over(shared, events, callers),
    }
}

/// The log, once free; `None` if it stays busy for [`LOCK_WAIT`].
fn lock(shared: &Shared) -> Option<MutexGuard<'_, Worker>> {
    let start = Instant::now();
    loop {
        match shared.worker.try_lock() {
            Ok(worker) => return Some(worker),
            Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => {}
        }
        if start.elapsed() >= LOCK_WAIT {
            return None;
        }
        std::thread::yield_now();
    }
}

/// The log is busy: the events go to the writer thread as one batch, from a task of
/// this runtime that waits for the acknowledgement like any queued write.
fn hand_over(shared: Arc<Shared>, mut events: Vec<Event>, callers: Vec<(usize, Reply)>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        answer(callers, Err(AuditError::WriterGone));
        return;
    };
    runtime.spawn(async move {
        let result = AuditWriter::queue(&shared, &mut events).await;
        answer(callers, result);
    });
}

/// Answers each caller with the `seq` of its own last event, or the batch's error.
fn answer(callers: Vec<(usize, Reply)>, result: Result<u64, AuditError>) {
    let total: usize = callers.iter().map(|c| c.0).sum();
    let mut through = 0;
    for (count, reply) in callers {
        through += count;
        let mine = match &result {
            Ok(last) => Ok(last.saturating_sub(u64::try_from(total - through).unwrap_or(0))),
            Err(e) => Err(shared_error(e)),
        };
        // A caller that gave up (its session ended) needs no answer.
        let _ = reply.send(mine);
    }
}

/// The same failure, for each caller of a failed batch.
fn shared_error(e: &AuditError) -> AuditError {
    match e {
        AuditError::WriterGone => AuditError::WriterGone,
        AuditError::Unavailable(reason) => AuditError::Unavailable(reason.clone()),
        AuditError::Stalled(after) => AuditError::Stalled(*after),
        other => AuditError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
#[path = "gather_tests.rs"]
mod tests;
