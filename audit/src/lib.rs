//! jitgate-audit: the audit event schema, the append-only JSON Lines writer, and the
//! readers that tail and replay a log.
//!
//! Every query a session forwards is first recorded here; the writer acknowledges only
//! once the event is in the log (or fsynced), so a session that cannot audit does not
//! forward (fail closed). The line format is documented in `AUDIT.md` at the repository
//! root.
//!
//! # Layout
//!
//! - [`event`]: [`Event`], [`EventBody`] and the small enums — the schema.
//! - `param`: [`Param`], lossless encoding of bind parameter values.
//! - `time`: µs RFC 3339 timestamps (`#[serde(with = "…")]` helper).
//! - [`writer`]: [`AuditWriter`] handle + the batching writer thread (group commit).
//! - `logfile`: opening the log and finding where a previous run stopped.
//! - [`reader`]: [`read_events`] and [`tail`].
//! - [`replay`]: [`transcript`] and [`format_event_line`].
//! - [`error`]: the crate error type, [`AuditError`].

pub mod error;
pub mod event;
mod logfile;
mod param;
pub mod reader;
mod render;
pub mod replay;
mod summary;
pub mod time;
pub mod writer;

pub use error::AuditError;
pub use event::{
    CopyDirection, EndReason, Event, EventBody, Param, ParamFormat, Protocol, SCHEMA_VERSION,
};
pub use param::BYTE_ESCAPE;
pub use reader::{read_events, tail, Events};
pub use replay::{format_event_line, transcript};
pub use writer::{AuditConfig, AuditWriter, Durability, WriterGuard};
