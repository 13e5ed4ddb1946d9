//! The Postgres wire protocol as pure functions over bytes: no I/O here.
//!
//! - [`startup`]: the untagged first messages (StartupMessage, SSLRequest, CancelRequest).
//! - [`frame`]: tagged frames — header checks, splitting.
//! - [`scan`]: the streaming walk over server output the relay forwards chunk by chunk.
//! - [`frontend`]: decoders for the client messages audit and auth need.
//! - [`backend`]: encoders for what the proxy says itself, decoders for what the relay
//!   inspects.
//! - [`error`]: client-visible errors ([`PgError`]) and SQLSTATE codes; `violation`:
//!   [`ProtocolError`], bytes that are not the protocol.
//! - [`tags`]: message type bytes.
//!
//! Parsers return `Ok(None)` when more bytes are needed, check every length and count
//! before using it, and never panic on any input.

// Bytes from the wire never panic the proxy: no panics, no indexing that can.
#![deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod backend;
pub mod error;
pub mod frame;
pub mod frontend;
mod reader;
pub mod scan;
pub mod startup;
pub mod tags;
mod violation;

#[cfg(test)]
mod fuzz_tests;

pub use error::{sqlstate, PgError, Severity};
pub use frame::{peek_header, split_frame, Frame, FrameHeader};
pub use startup::{parse_startup, StartupMessage, MAX_STARTUP_LEN};
pub use violation::ProtocolError;
