//! jitgate-audit: the audit event schema, the append-only JSON Lines writer, and the
//! readers that tail and replay a log.
//!
//! Every query a session forwards is first recorded here; the writer acknowledges only
//! once the event is in the log (or fsynced), so a session that cannot audit does not
//! forward (fail closed). The line format is documented in `AUDIT.md` at the repository
//! root.
//!
//! # Layers
//!
//! From the bottom up; every module imports only modules listed before it (no two
//! modules import each other, directly or around a circle):
//!
//! 1. Leaves: `hex` (lowercase hex, strictly decoded), `time` (µs RFC 3339 timestamps),
//!    `stopped` ([`Stopped`]) and [`witness`] ([`Witness`]) import nothing of the crate;
//!    [`error`] ([`AuditError`]) only `time`, `escape` (the lossless text encoding of
//!    parameter values and SQL: [`escape_bytes`], [`unescape_bytes`]) only `error`, and
//!    [`chain`] ([`LineHash`], the hash chain linking every line to the one before) only
//!    `hex`.
//! 2. Values: `sqltext` (SQL truncation with length and SHA-256, [`record_sql`]), `param`
//!    ([`Param`], bind parameter values as recorded), [`keys`] (Ed25519 key pairs,
//!    [`SigningKey`], [`PublicKey`]).
//! 3. The schema: [`event`] ([`Event`], [`EventBody`] and the small enums); `setting`
//!    ([`setting_change`]) and `content` ([`ContentRules`], [`Redaction`]) decide what a
//!    session records in it.
//! 4. Bytes on disk: [`line`](mod@line) (an event as its log line, byte for byte as serde would
//!    write it), [`fileset`] (the files of one log: live, closed, compressed,
//!    checkpoints), `logfile` (opening a log and finding where a previous run stopped),
//!    [`writer_lock`] (one writer per log), [`checkpoint`] (the signed checkpoint line).
//! 5. Writing: [`writer`] ([`AuditWriter`] and its thread: batching (group commit),
//!    chaining, rotation, checkpoints, compression and retention).
//! 6. Words for people: `render` (escaping and units), `describe` (a session's events
//!    taken apart into facts), `summary` ([`format_event_line`], the `audit tail` line).
//! 7. Reading: [`reader`] ([`read_events`], [`tail`]), [`query`] (fast filtered scans for
//!    `audit sessions/search/export`), [`verify`](mod@verify) ([`verify()`](verify::verify): chains
//!    and checkpoints), [`replay`] ([`transcript`]).

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
