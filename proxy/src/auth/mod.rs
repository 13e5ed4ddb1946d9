//! Authentication: SCRAM-SHA-256 server side (client → proxy) and verifiers.
//!
//! - [`verifier`]: the stored `SCRAM-SHA-256$…` secret, and a mock one for unknown
//!   identities.
//! - [`scram`]: the server side of one exchange, as a state machine without I/O.
//! - `messages`: parsing of the client's SCRAM messages (RFC 5802).
//! - `keys`: the SCRAM key derivations (RFC 5802 §3).
//! - [`client`]: the client side, for jitgate's own upstream logins, with cached keys.

pub mod client;
mod keys;
mod messages;
pub mod scram;
pub mod verifier;

#[cfg(test)]
mod exchange_tests;

pub use client::{ScramClient, ScramKeyCache, ScramKeys};
pub use scram::{ScramServer, SCRAM_SHA_256};
pub use verifier::ScramVerifier;
