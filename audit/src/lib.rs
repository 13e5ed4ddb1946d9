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
//! - `escape`: the lossless text encoding of parameter values and SQL text
//!   ([`escape_bytes`], [`unescape_bytes`]); `hex`: lowercase hex, strictly decoded.
//! - `param`: [`Param`], bind parameter values as recorded.
//! - `sqltext`: SQL truncation with length and SHA-256 ([`record_sql`]).
//! - `stopped`: [`Stopped`], how a session's remaining server work was stopped at its end.
//! - `setting`: spotting role/authorization/search_path changes ([`setting_change`]).
//! - `content`: [`ContentRules`] and [`Redaction`], what a session records of a statement.
//! - [`query`]: fast filtered scans for `audit sessions/search/export/replay`.
//! - `time`: µs RFC 3339 timestamps (`#[serde(with = "…")]` helper).
//! - [`chain`]: [`LineHash`], the hash chain linking every line to the one before.
//! - [`writer`]: [`AuditWriter`] handle + the batching writer thread (group commit),
//!   rotation, checkpoints, compression and retention.
//! - `logfile`: opening the log and finding where a previous run stopped.
//! - [`fileset`]: the files of one log (live, closed, compressed, checkpoints).
//! - [`reader`]: [`read_events`] and [`tail`] over the whole file set.
//! - [`keys`]: Ed25519 key pairs ([`SigningKey`], [`PublicKey`]) for checkpoints.
//! - [`checkpoint`]: the signed checkpoint line format.
//! - [`verify`]: [`verify()`](verify::verify), checking chains and checkpoints.
//! - [`witness`]: [`Witness`], copies of the checkpoints kept off the log's host.
//! - [`replay`]: [`transcript`] and [`format_event_line`].
//! - [`error`]: the crate error type, [`AuditError`].

pub mod chain;
pub mod checkpoint;
mod content;
mod describe;
pub mod error;
mod escape;
pub mod event;
pub mod fileset;
mod hex;
pub mod keys;
pub mod line;
mod logfile;
mod param;
pub mod query;
pub mod reader;
mod render;
pub mod replay;
mod setting;
mod sqltext;
mod stopped;
mod summary;
pub mod time;
pub mod verify;
pub mod witness;
pub mod writer;
pub mod writer_lock;

pub use chain::LineHash;
pub use content::{ContentRules, Redaction};
pub use error::{AuditError, CutBack};
pub use escape::{escape_bytes, unescape_bytes, BYTE_ESCAPE};
pub use event::{
    CopyDirection, EndReason, Event, EventBody, Param, ParamFormat, Protocol, SettingChange,
    StopMethod, Stopped, StoppedWork, SCHEMA_VERSION,
};
pub use fileset::{checkpoints_path, log_files, LogFile};
pub use keys::{write_key_pair, KeyPairFiles, PublicKey, SigningKey};
pub use param::DEFAULT_MAX_PARAM_BYTES;
pub use reader::{read_events, tail, Events};
pub use replay::{format_event_line, transcript};
pub use setting::setting_change;
pub use sqltext::{record_sql, sha256_hex, RecordedSql, DEFAULT_MAX_SQL_BYTES};
pub use verify::{verify, verify_with, Problem, ProblemKind, VerifyReport, WitnessCheckpoints};
pub use witness::{Witness, WitnessLine};
pub use writer::{
    AuditConfig, AuditHealth, AuditWriter, CutAcknowledgement, Durability, Retain,
    WitnessedCheckpoint, WriterGuard,
};
