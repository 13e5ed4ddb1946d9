//! Delivery counters shared by the [`Notifier`](super::Notifier) handles and the
//! per-webhook workers, read as a [`NotifierStats`] snapshot for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// What the notifier has done since start, summed over all webhooks. A "delivery" is
/// one notification to one webhook, however many attempts it took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotifierStats {
    /// Deliveries a receiver accepted (2xx).
    pub delivered: u64,
    /// Deliveries given up: rejected by the receiver (4xx, redirect) or still failing
    /// after the last attempt.
    pub failed: u64,
    /// Notifications never attempted: the webhook's queue was full, or jitgate shut
    /// down before they could be sent.
    pub dropped: u64,
    /// Deliveries queued or in progress right now.
    pub pending: u64,
}

/// The live counters behind [`NotifierStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    pending: AtomicU64,
}

impl Counters {
    /// A delivery is about to be queued (counted first, so that a worker finishing it
    /// at once never takes `pending` below zero).
    pub(crate) fn queued(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// A queued delivery ended: delivered, failed, or dropped (its queue was full or
    /// closed, or the notifier stopped before it completed).
    pub(crate) fn finished(&self, end: End) {
        let counter = match end {
            End::Delivered => &self.delivered,
            End::Failed => &self.failed,
            End::Dropped => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // Saturating: never wraps below zero even if a caller miscounts.
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    pub(crate) fn snapshot(&self) -> NotifierStats {
        NotifierStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }
}

/// How a queued delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Delivered,
    Failed,
    /// Never completed: not queued (queue full, notifier closed), or abandoned when the
    /// notifier stopped at its shutdown deadline.
    Dropped,
}
