//! What the events of a session's statements say, taken apart once for the three
//! renderers that show them to a person: the `replay` transcript, the one-line summary
//! of `audit tail`, and the `audit search` line.
//!
//! [`Fact::of`] takes an event body apart into one struct per kind of fact — the
//! session's start ([`Start`]), a statement ([`Statement`]), its outcome ([`Outcome`]),
//! COPY data ([`CopyData`]) and the session's end ([`End`]) — and each struct words the
//! pieces more than one renderer shows (a SQL excerpt, an error code, a duration…).
//! Each renderer only arranges the pieces. Every text that came from a client is
//! escaped here (see [`crate::render`]).

use std::fmt;

use jiff::Timestamp;

use crate::event::{CopyDirection, EndReason, EventBody, Param, Protocol, SettingChange, Stopped};
use crate::render::{clean, micros_as_ms, millis, one_line};
use crate::time::display_micros;

/// Longest excerpt of SQL or of a message in a one-line summary.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// `text` collapsed to one line and cut to [`EXCERPT_CHARS`].
pub(crate) fn excerpt(text: &str) -> String {
    one_line(text, EXCERPT_CHARS)
}

/// An event of a session's statements, taken apart.
pub(crate) enum Fact<'a> {
    Start(Start<'a>),
    Statement(Statement<'a>),
    Outcome(Outcome<'a>),
    Copy(CopyData),
    End(End<'a>),
}

impl<'a> Fact<'a> {
    /// The fact `body` states; `None` for kinds outside a session's statements
    /// (refusals, grants, webhooks, log cuts).
    pub(crate) fn of(body: &'a EventBody) -> Option<Fact<'a>> {
        match body {
            EventBody::SessionStart { .. } => Start::of(body).map(Fact::Start),
            EventBody::Query { .. } => Statement::of(body).map(Fact::Statement),
            EventBody::QueryResult { .. } => Outcome::of(body).map(Fact::Outcome),
            EventBody::Copy { .. } => CopyData::of(body).map(Fact::Copy),
            EventBody::SessionEnd { .. } => End::of(body).map(Fact::End),
            _ => None,
        }
    }
}

/// `rows=3`: a row count in `key=value` form.
pub(crate) fn rows_field(rows: u64) -> String {
    format!("rows={rows}")
}

/// A `session_start`: where the client came from, until when, over which upstream
/// connection.
pub(crate) struct Start<'a> {
    client_addr: &'a str,
    pub(crate) tls: bool,
    application_name: Option<&'a str>,
    deadline: &'a Timestamp,
    pub(crate) upstream_pid: Option<i32>,
    pub(crate) upstream_reused: bool,
}

impl<'a> Start<'a> {
    /// The start of a `session_start` event.
    pub(crate) fn of(body: &'a EventBody) -> Option<Start<'a>> {
        let EventBody::SessionStart {
            client_addr,
            tls,
            application_name,
            deadline,
            upstream_pid,
            upstream_reused,
        } = body
        else {
            return None;
        };
        Some(Start {
            client_addr,
            tls: *tls,
            application_name: application_name.as_deref(),
            deadline,
            upstream_pid: *upstream_pid,
            upstream_reused: *upstream_reused,
        })
    }

    /// The client's address.
    pub(crate) fn client(&self) -> String {
        clean(self.client_addr, false)
    }

    /// The `application_name` it sent.
    pub(crate) fn application(&self) -> Option<String> {
        self.application_name.map(|app| clean(app, false))
    }

    /// When the grant ends the session.
    pub(crate) fn deadline(&self) -> impl fmt::Display + 'a {
        display_micros(self.deadline)
    }
}

/// A `query`: the statement as recorded before it was forwarded.
pub(crate) struct Statement<'a> {
    pub(crate) query_id: u64,
    pub(crate) protocol: Protocol,
    pub(crate) sql: &'a str,
    pub(crate) statement: Option<&'a str>,
    pub(crate) portal: Option<&'a str>,
    pub(crate) function_oid: Option<u32>,
    /// Only the head of the SQL was recorded.
    pub(crate) truncated: bool,
    pub(crate) sql_len: Option<u64>,
    pub(crate) sql_sha256: Option<&'a str>,
    pub(crate) setting_change: Option<SettingChange>,
    pub(crate) params: &'a [Param],
    /// The parameters are those of this earlier query (a portal run in steps).
    pub(crate) params_from: Option<u64>,
}

impl<'a> Statement<'a> {
    /// The statement of a `query` event.
    pub(crate) fn of(body: &'a EventBody) -> Option<Statement<'a>> {
        let EventBody::Query {
            query_id,
            protocol,
            sql,
            truncated,
            sql_len,
            sql_sha256,
            setting_change,
            statement,
            portal,
            params,
            function_oid,
            params_from,
        } = body
        else {
            return None;
        };
        Some(Statement {
            query_id: *query_id,
            protocol: *protocol,
            sql,
            statement: statement.as_deref(),
            portal: portal.as_deref(),
            function_oid: *function_oid,
            truncated: *truncated,
            sql_len: *sql_len,
            sql_sha256: sql_sha256.as_deref(),
            setting_change: *setting_change,
            params,
            params_from: *params_from,
        })
    }

    /// The SQL on one line, cut to [`EXCERPT_CHARS`].
    pub(crate) fn excerpt(&self) -> String {
        excerpt(self.sql)
    }

    /// `[truncated]`, when only the head of the SQL was recorded.
    pub(crate) fn truncated_mark(&self) -> Option<&'static str> {
        self.truncated.then_some("[truncated]")
    }

    /// `[changes role]`: the session setting the statement tries to change.
    pub(crate) fn changes(&self) -> Option<String> {
        self.setting_change
            .map(|change| format!("[changes {}]", change.as_str()))
    }

    /// `(params of q7)`: whose parameters these are, when an earlier query's.
    pub(crate) fn params_of(&self) -> Option<String> {
        self.params_from.map(|from| format!("(params of q{from})"))
    }
}

/// A `query_result`: how a statement ended.
pub(crate) struct Outcome<'a> {
    pub(crate) query_id: u64,
    tag: Option<&'a str>,
    pub(crate) rows: Option<u64>,
    sqlstate: Option<&'a str>,
    /// The server's error message (as sent: not yet escaped).
    pub(crate) message: Option<&'a str>,
    duration_us: u64,
    /// Bytes of result data returned.
    pub(crate) bytes: u64,
    /// The server never ran the statement.
    pub(crate) skipped: bool,
}

impl<'a> Outcome<'a> {
    /// The outcome of a `query_result` event.
    pub(crate) fn of(body: &'a EventBody) -> Option<Outcome<'a>> {
        let EventBody::QueryResult {
            query_id,
            tag,
            rows,
            sqlstate,
            message,
            duration_us,
            bytes,
            skipped,
        } = body
        else {
            return None;
        };
        Some(Outcome {
            query_id: *query_id,
            tag: tag.as_deref(),
            rows: *rows,
            sqlstate: sqlstate.as_deref(),
            message: message.as_deref(),
            duration_us: *duration_us,
            bytes: *bytes,
            skipped: *skipped,
        })
    }

    /// `ERROR 42P01`, when the server answered with an error.
    pub(crate) fn error(&self) -> Option<String> {
        self.sqlstate
            .map(|state| format!("ERROR {}", clean(state, false)))
    }

    /// The command tag (`SELECT 3`).
    pub(crate) fn tag(&self) -> Option<String> {
        self.tag.map(|tag| clean(tag, false))
    }

    /// `bytes=11`, when result data was returned.
    pub(crate) fn bytes_field(&self) -> Option<String> {
        (self.bytes > 0).then(|| format!("bytes={}", self.bytes))
    }

    /// From forwarding to completion: `0.412 ms`.
    pub(crate) fn duration(&self) -> String {
        micros_as_ms(self.duration_us)
    }
}

/// A `copy`: data a COPY moved.
pub(crate) struct CopyData {
    pub(crate) query_id: u64,
    pub(crate) direction: CopyDirection,
    bytes: u64,
    pub(crate) rows: Option<u64>,
}

impl CopyData {
    /// The data of a `copy` event.
    pub(crate) fn of(body: &EventBody) -> Option<CopyData> {
        let EventBody::Copy {
            query_id,
            direction,
            bytes,
            rows,
        } = body
        else {
            return None;
        };
        Some(CopyData {
            query_id: *query_id,
            direction: *direction,
            bytes: *bytes,
            rows: *rows,
        })
    }

    /// `1234 bytes`.
    pub(crate) fn volume(&self) -> String {
        format!("{} bytes", self.bytes)
    }
}

/// A `session_end`: why and how the session ended.
pub(crate) struct End<'a> {
    pub(crate) reason: EndReason,
    /// Extra detail (as recorded: not yet escaped).
    pub(crate) detail: Option<&'a str>,
    late_ms: Option<f64>,
    pub(crate) queries: u64,
    duration_ms: u64,
    pub(crate) upstream_parked: bool,
    pub(crate) stopped: Option<&'a Stopped>,
}

impl<'a> End<'a> {
    /// The end of a `session_end` event.
    pub(crate) fn of(body: &'a EventBody) -> Option<End<'a>> {
        let EventBody::SessionEnd {
            reason,
            detail,
            late_ms,
            queries,
            duration_ms,
            upstream_parked,
            stopped,
        } = body
        else {
            return None;
        };
        Some(End {
            reason: *reason,
            detail: detail.as_deref(),
            late_ms: *late_ms,
            queries: *queries,
            duration_ms: *duration_ms,
            upstream_parked: *upstream_parked,
            stopped: stopped.as_ref(),
        })
    }

    /// How late the drop was after the deadline or revocation: `12.500 ms`.
    pub(crate) fn late(&self) -> Option<String> {
        self.late_ms.map(|late| format!("{late:.3} ms"))
    }

    /// How long the session lasted: `950 ms`, `3600.000 s`.
    pub(crate) fn duration(&self) -> String {
        millis(self.duration_ms)
    }
}
