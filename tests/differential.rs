//! A differential test no one can tune to: random, seeded sequences of frontend messages
//! go through jitgate on a raw socket and the server's log is compared with the audit.
//! This step adds the sequences, and reading and comparing both logs.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![allow(dead_code)] // used by the runner added next

#[path = "differential/mod.rs"]
mod diff;
