//! How a `tokio_postgres` error reads in jitgate's messages: with its causes and, for a
//! server error, its SQLSTATE.

use std::error::Error as _;

/// `e` with its causes, e.g. `db error: ERROR: relation "x" does not exist (SQLSTATE
/// 42P01)` — tokio-postgres's `Display` shows only the outermost kind. Connection strings
/// (and so passwords) never appear in tokio-postgres errors.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
