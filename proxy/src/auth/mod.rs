//! Authentication: SCRAM-SHA-256 server side (client → proxy).

mod verifier;

pub use verifier::ScramVerifier;
