//! Who may write to a client connection: its session, or — once, when the session's
//! thread has stopped running — the [`crate::backstop`].
//!
//! The backstop ends a session from outside through a duplicate of the client socket.
//! Telling the client why (a FATAL ErrorResponse, as the session itself would) is only
//! safe where the client's byte stream is between two messages, and while the session
//! is not writing: bytes of ours inside a half-sent message, or interleaved with the
//! session's own write, would garble the stream. The session brackets every write to
//! the client with [`ClientGate::begin`] / [`ClientGate::end`] and says whether the
//! stream ends on a message boundary afterwards; the backstop may [`ClientGate::take`]
//! the connection only from that state, and from then on the session's writes fail as
//! if the client had gone. A TLS connection is never taken (its record layer lives in the
//! session), nor one whose session already sent its own final error.

use std::sync::atomic::{AtomicU8, Ordering};

/// The session is writing, or its last write may have stopped inside a message.
const WRITING: u8 = 0;
/// Nothing is being written and the stream is between two messages.
const BOUNDARY: u8 = 1;
/// Closed to the session: the backstop took it, or the session sent its final error.
const CLOSED: u8 = 2;

/// The write state of one client connection, shared by its session and the backstop.
#[derive(Debug)]
pub struct ClientGate {
    state: AtomicU8,
    /// Plain TCP: the backstop can write to a duplicate of the socket.
    plain: bool,
}

impl ClientGate {
    /// A gate for a connection that has not been written to in the middle of a message.
    pub fn new(plain: bool) -> ClientGate {
        ClientGate {
            state: AtomicU8::new(BOUNDARY),
            plain,
        }
    }

    /// Before the session writes. `Err` when the connection was taken by the backstop
    /// (it is being closed); otherwise whether the stream was at a message boundary.
    pub fn begin(&self) -> std::io::Result<bool> {
        match self
            .state
            .compare_exchange(BOUNDARY, WRITING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(true),
            Err(WRITING) => Ok(false),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client connection was closed by the backstop",
            )),
        }
    }

    /// After a write by the session completed: whether the stream is now between two
    /// messages. (A write that did not complete leaves the gate closed to the backstop.)
    pub fn end(&self, at_boundary: bool) {
        if at_boundary {
            let _ =
                self.state
                    .compare_exchange(WRITING, BOUNDARY, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Whether the stream is between two messages and nobody is writing to it.
    pub fn at_boundary(&self) -> bool {
        self.state.load(Ordering::Acquire) == BOUNDARY
    }

    /// The session has sent its final error: nothing more is written to this client.
    pub fn close(&self) {
        self.state.store(CLOSED, Ordering::Release);
    }

    /// For the backstop: takes the connection if a message of ours can go to it now.
    pub fn take(&self) -> bool {
        self.plain
            && self
                .state
                .compare_exchange(BOUNDARY, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn taken_only_between_messages_and_then_closed_to_the_session() {
        let gate = ClientGate::new(true);
        assert!(gate.begin().unwrap());
        // While the session writes: not taken.
        assert!(!gate.take());
        // A write that ends inside a message (a chunk of a large row).
        gate.end(false);
        assert!(!gate.at_boundary());
        assert!(!gate.take());
        assert!(!gate.begin().unwrap());
        gate.end(true);
        assert!(gate.at_boundary());
        assert!(gate.take());
        assert!(!gate.at_boundary());
        assert!(gate.begin().is_err());
        assert!(!gate.take(), "taken once");
    }

    #[test]
    fn never_taken_on_tls_or_after_the_sessions_own_final_error() {
        let tls = ClientGate::new(false);
        assert!(!tls.take());
        let gate = ClientGate::new(true);
        gate.close();
        assert!(!gate.take());
        assert!(gate.begin().is_err());
    }
}
