//! jitgate-proxy: the Postgres wire protocol side of jitgate.
//!
//! # Layout
//! - [`protocol`]: frame parsing and encoding, no I/O (startup, frontend, backend, errors).
//! - [`auth`]: SCRAM-SHA-256 server side (client → proxy) and verifiers.
//! - [`settings`]: the typed settings this crate runs from.
//! - [`registry`]: live sessions, and how grant changes reach them.
//! - [`backstop`]: ends sessions whose own thread stopped running (e.g. a hung audit disk).
//! - [`stop`]: ending a session's backend so nothing it was asked to do outlives the
//!   session (terminate from a connection of jitgate's own, not just cancel).
//! - [`gate`]: whether the backstop may write a client's final error (message boundaries).
//! - [`guard`]: refuses statements that change roles or the server (issue 17).
//! - [`session`]: one client session: handshake, admission, upstream connect, relay,
//!   enforcement, teardown.
//! - [`reuse`]: upstream connections parked between sessions of one grant.
//! - [`cancel`]: proxy-issued cancel keys ↔ upstream BackendKeyData.
//! - [`listener`]: accept loop, shutdown/drain.
//! - [`limits`]: what unauthenticated clients may cost (connections, refusal events).
//! - [`session_threads`]: each session on one of N single-threaded runtimes
//!   (`runtime.session_threads`).
//! - [`error`]: the crate's error enum.

pub mod auth;
pub mod backstop;
pub mod backstop_handle;
pub mod cancel;
pub mod connection;
pub mod error;
pub mod gate;
pub mod guard;
pub mod limits;
pub mod listener;
pub mod protocol;
pub mod provision;
pub mod registry;
pub mod reuse;
pub mod session;
pub mod session_threads;
pub mod settings;
pub mod stop;

pub use session::ProxyContext;
