//! Replaying a session from the audit log as a readable, psql-like transcript.
//!
//! The transcript shows who connected where under which grant, then every event of the
//! session in log order: each query with its parameters, its outcome, COPY volumes, and
//! how and why the session ended. Results are labelled with their query number because
//! pipelined extended-protocol queries may complete after later queries were sent.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use uuid::Uuid;

pub use crate::summary::format_event_line;

use crate::describe::{CopyData, End, Fact, Outcome, Start, Statement};
use crate::event::{Event, EventBody, Param, StopMethod, Stopped, StoppedWork};
use crate::render::{clean, one_line, param_note, param_value, rows};
use crate::time::display_micros;

/// Renders the events of `session` (other events are ignored) in the order given (log
/// order); `None` when the log holds no event of that session.
pub fn transcript(events: impl IntoIterator<Item = Event>, session: Uuid) -> Option<String> {
    let events: Vec<Event> = events
        .into_iter()
        .filter(|e| e.session_id == Some(session))
        .collect();
    if events.is_empty() {
        return None;
    }
    let mut out = String::new();
    header(&mut out, session, &events);
    // A portal executed in steps records its parameters with its first execution; the
    // later ones point at it (`params_from`) and are shown with the same values.
    let bound: HashMap<u64, &[Param]> = events
        .iter()
        .filter_map(|event| Statement::of(&event.body))
        .map(|statement| (statement.query_id, statement.params))
        .collect();
    for event in &events {
        body(&mut out, event, &bound);
    }
    if !events
        .iter()
        .any(|e| matches!(e.body, EventBody::SessionEnd { .. }))
    {
        out.push_str(
            "\n-- no session_end event: the session was still open or the log is incomplete\n",
        );
    }
    Some(out)
}

fn header(out: &mut String, session: Uuid, events: &[Event]) {
    let first =
        |f: fn(&Event) -> Option<&String>| events.iter().find_map(f).map(|s| clean(s, false));
    let _ = writeln!(out, "-- jitgate session {session}");
    let none = || "(unknown)".to_owned();
    let _ = writeln!(
        out,
        "-- identity: {}",
        first(|e| e.identity.as_ref()).unwrap_or_else(none)
    );
    let _ = writeln!(
        out,
        "-- target:   {}",
        first(|e| e.target.as_ref()).unwrap_or_else(none)
    );
    let _ = writeln!(
        out,
        "-- role:     {}",
        first(|e| e.role.as_ref()).unwrap_or_else(none)
    );
    let grant = events.iter().find_map(|e| e.grant_id);
    let _ = writeln!(
        out,
        "-- grant:    {}",
        grant.map_or_else(none, |g| g.to_string())
    );
    match events
        .iter()
        .find_map(|e| Start::of(&e.body).map(|start| (e, start)))
    {
        Some((e, start)) => session_start(out, e, &start),
        None => out.push_str("-- (no session_start event in this log)\n"),
    }
}

/// The header's lines about the client and the upstream connection.
fn session_start(out: &mut String, e: &Event, start: &Start<'_>) {
    let tls = if start.tls { "TLS" } else { "no TLS" };
    let _ = write!(out, "-- client:   {} ({tls}", start.client());
    if let Some(app) = start.application() {
        let _ = write!(out, ", application \"{app}\"");
    }
    out.push_str(")\n");
    let _ = write!(out, "-- started:  {}", display_micros(&e.ts));
    if let Some(pid) = start.upstream_pid {
        let how = if start.upstream_reused {
            ", reused"
        } else {
            ""
        };
        let _ = write!(out, " (upstream pid {pid}{how})");
    }
    out.push('\n');
    let _ = writeln!(out, "-- deadline: {}", start.deadline());
}

fn body(out: &mut String, e: &Event, bound: &HashMap<u64, &[Param]>) {
    let ts = display_micros(&e.ts);
    match Fact::of(&e.body) {
        // Already rendered in the header.
        Some(Fact::Start(_)) => {}
        Some(Fact::Statement(statement)) => query(out, &ts, &statement, bound),
        Some(Fact::Outcome(outcome)) => query_result(out, &ts, &outcome),
        Some(Fact::Copy(copy_data)) => copy(out, &ts, &copy_data),
        Some(Fact::End(end)) => session_end(out, &ts, &end),
        // Other kinds rarely carry a session id; show them as their one-line summary.
        None => {
            let _ = writeln!(out, "{ts}  {}", one_line(&format_event_line(e), usize::MAX));
        }
    }
}

fn query(
    out: &mut String,
    ts: &impl fmt::Display,
    q: &Statement<'_>,
    bound: &HashMap<u64, &[Param]>,
) {
    let _ = write!(
        out,
        "\n{ts}  query #{} ({}",
        q.query_id,
        q.protocol.as_str()
    );
    if let Some(statement) = q.statement {
        let _ = write!(out, ", statement \"{}\"", clean(statement, false));
    }
    if let Some(portal) = q.portal {
        let _ = write!(out, ", portal \"{}\"", clean(portal, false));
    }
    if let Some(oid) = q.function_oid {
        let _ = write!(out, ", function oid {oid}");
    }
    out.push_str(")\n");
    for line in clean(q.sql, true).lines() {
        let _ = writeln!(out, "    {line}");
    }
    if q.truncated {
        let whole = in_all(q.sql_len, q.sql_sha256);
        let _ = writeln!(out, "    -- [truncated: {whole}]");
    }
    if let Some(change) = q.setting_change {
        let _ = writeln!(out, "    -- [changes the session's {}]", change.as_str());
    }
    let params = match q.params_from {
        Some(from) => {
            let earlier = bound.get(&from).copied();
            let what = if earlier.is_some() {
                "parameters as bound for"
            } else {
                "parameters recorded with (not in this log)"
            };
            let _ = writeln!(out, "    -- [same portal: {what} query #{from}]");
            earlier.unwrap_or(q.params)
        }
        None => q.params,
    };
    for (i, p) in params.iter().enumerate() {
        let _ = writeln!(out, "    ${} = {} {}", i + 1, param_value(p), param_note(p));
        if p.truncated {
            let whole = in_all(p.value_len, p.value_sha256.as_deref());
            let _ = writeln!(out, "    -- [${} truncated: {whole}]", i + 1);
        }
    }
}

/// What was recorded of a text or value cut to its head: `123 bytes in all, sha256 …`.
fn in_all(len: Option<u64>, sha256: Option<&str>) -> String {
    format!(
        "{} bytes in all, sha256 {}",
        len.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        clean(sha256.unwrap_or("?"), false)
    )
}

fn query_result(out: &mut String, ts: &impl fmt::Display, outcome: &Outcome<'_>) {
    let _ = write!(out, "{ts}  result #{}: ", outcome.query_id);
    if outcome.skipped {
        out.push_str("not run by the server: ");
    }
    if let Some(error) = outcome.error() {
        out.push_str(&error);
        if let Some(message) = outcome.message {
            let _ = write!(out, ": {}", clean(message, false));
        }
    } else {
        let tag = outcome.tag();
        out.push_str(tag.as_deref().unwrap_or("(no command tag)"));
        if let Some(n) = outcome.rows {
            let _ = write!(out, " ({})", rows(n));
        }
    }
    if outcome.bytes > 0 {
        let _ = write!(out, ", {} bytes returned", outcome.bytes);
    }
    let _ = writeln!(out, " in {}", outcome.duration());
}

fn copy(out: &mut String, ts: &impl fmt::Display, copy: &CopyData) {
    let direction = copy.direction.as_str();
    let _ = write!(
        out,
        "{ts}  copy #{} {direction}: {}",
        copy.query_id,
        copy.volume()
    );
    if let Some(n) = copy.rows {
        let _ = write!(out, ", {}", rows(n));
    }
    out.push('\n');
}

fn session_end(out: &mut String, ts: &impl fmt::Display, end: &End<'_>) {
    let _ = write!(out, "\n{ts}  session ended: {}", end.reason.as_str());
    if let Some(late) = end.late() {
        let _ = write!(out, " ({late} after the deadline/revocation)");
    }
    if let Some(detail) = end.detail {
        let _ = write!(out, " — {}", clean(detail, false));
    }
    let _ = writeln!(out, "\n-- {} queries in {}", end.queries, end.duration());
    if end.upstream_parked {
        out.push_str("-- upstream connection reset (DISCARD ALL) and kept for this grant\n");
    }
    if let Some(stopped) = end.stopped {
        out.push_str(&stopped_line(stopped));
    }
}

/// The transcript's line about the server work stopped at the session's end.
fn stopped_line(stopped: &Stopped) -> String {
    let what = match stopped.work {
        StoppedWork::Statements => "statements still running or queued upstream",
        StoppedWork::Backend => "the backend did not leave after Terminate",
    };
    let how = match stopped.how {
        StopMethod::Terminate => "backend terminated (pg_terminate_backend)",
        StopMethod::Cancel => "running statement cancelled and connection closed",
    };
    let seen = if stopped.backend_gone {
        format!("backend gone after {:.3} ms", stopped.ms)
    } else {
        format!("backend NOT seen gone after {:.3} ms", stopped.ms)
    };
    let mut line = format!("-- stopped: {what}; {how}; {seen}");
    if let Some(detail) = &stopped.detail {
        let _ = write!(line, " — {}", clean(detail, false));
    }
    line.push('\n');
    line
}
