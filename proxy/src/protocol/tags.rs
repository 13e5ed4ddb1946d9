//! Message type bytes ("tags") of the Postgres protocol, v3.
//!
//! One flat namespace: the names say the message, the section says the direction.
//! Some bytes mean different messages per direction (`b'C'` is Close from the client and
//! CommandComplete from the server), so always match on the direction you are reading.
//! Source: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

// ---- frontend (client → server) ----

/// Simple query.
pub const QUERY: u8 = b'Q';
/// Extended protocol: prepare a statement.
pub const PARSE: u8 = b'P';
/// Extended protocol: bind parameters to a statement, creating a portal.
pub const BIND: u8 = b'B';
/// Extended protocol: run a portal.
pub const EXECUTE: u8 = b'E';
/// Extended protocol: end of a pipeline step; the server answers ReadyForQuery.
pub const SYNC: u8 = b'S';
/// Extended protocol: ask the server to flush its output.
pub const FLUSH: u8 = b'H';
/// A whole Flush message (tag and length 4), as jitgate sends it upstream.
pub const FLUSH_MESSAGE: [u8; 5] = [FLUSH, 0, 0, 0, 4];
/// Extended protocol: describe a statement or portal.
pub const DESCRIBE: u8 = b'D';
/// Extended protocol: close a statement or portal.
pub const CLOSE: u8 = b'C';
/// The client is leaving.
pub const TERMINATE: u8 = b'X';
/// A whole Terminate message (tag and length 4), as jitgate sends it upstream.
pub const TERMINATE_MESSAGE: [u8; 5] = [TERMINATE, 0, 0, 0, 4];
/// Fast-path function call.
pub const FUNCTION_CALL: u8 = b'F';
/// COPY FROM STDIN failed on the client side.
pub const COPY_FAIL: u8 = b'f';
/// Password, SASLInitialResponse, SASLResponse, GSSResponse: meaning depends on state.
pub const PASSWORD: u8 = b'p';

// ---- both directions ----

/// COPY payload.
pub const COPY_DATA: u8 = b'd';
/// End of COPY payload.
pub const COPY_DONE: u8 = b'c';

// ---- backend (server → client) ----

/// Authentication request or result (the body's first i32 says which).
pub const AUTHENTICATION: u8 = b'R';
/// Cancel key for this session.
pub const BACKEND_KEY_DATA: u8 = b'K';
/// Extended protocol: Bind done.
pub const BIND_COMPLETE: u8 = b'2';
/// Extended protocol: Close done.
pub const CLOSE_COMPLETE: u8 = b'3';
/// A command finished; the body is its tag, e.g. `INSERT 0 5`.
pub const COMMAND_COMPLETE: u8 = b'C';
/// COPY FROM STDIN starts.
pub const COPY_IN_RESPONSE: u8 = b'G';
/// COPY TO STDOUT starts.
pub const COPY_OUT_RESPONSE: u8 = b'H';
/// Replication COPY (both directions) starts.
pub const COPY_BOTH_RESPONSE: u8 = b'W';
/// One result row.
pub const DATA_ROW: u8 = b'D';
/// The query string was empty.
pub const EMPTY_QUERY: u8 = b'I';
/// An error; the body is a list of typed fields.
pub const ERROR_RESPONSE: u8 = b'E';
/// Result of a fast-path function call.
pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
/// The server does not support the requested minor version or `_pq_.` options.
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
/// Extended protocol: Describe found no result columns.
pub const NO_DATA: u8 = b'n';
/// A notice; same body format as ErrorResponse.
pub const NOTICE: u8 = b'N';
/// LISTEN/NOTIFY notification.
pub const NOTIFICATION: u8 = b'A';
/// Extended protocol: statement parameter types.
pub const PARAMETER_DESCRIPTION: u8 = b't';
/// A run-time parameter's value (`server_version`, `TimeZone`, …).
pub const PARAMETER_STATUS: u8 = b'S';
/// Extended protocol: Parse done.
pub const PARSE_COMPLETE: u8 = b'1';
/// Extended protocol: Execute stopped at its row limit.
pub const PORTAL_SUSPENDED: u8 = b's';
/// The server is idle and waits for the next query; the body is the transaction status.
pub const READY_FOR_QUERY: u8 = b'Z';
/// Result column descriptions.
pub const ROW_DESCRIPTION: u8 = b'T';

// ---- ReadyForQuery transaction status bytes ----

/// Not in a transaction block.
pub const TX_IDLE: u8 = b'I';
/// In a transaction block.
pub const TX_IN_TRANSACTION: u8 = b'T';
/// In a failed transaction block (queries rejected until ROLLBACK).
pub const TX_FAILED: u8 = b'E';

// ---- Close/Describe target kinds ----

/// Close/Describe a prepared statement.
pub const KIND_STATEMENT: u8 = b'S';
/// Close/Describe a portal.
pub const KIND_PORTAL: u8 = b'P';
