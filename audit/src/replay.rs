//! Replaying a session from the audit log as a readable, psql-like transcript.
//!
//! The transcript shows who connected where under which grant, then every event of the
//! session in log order: each query with its parameters, its outcome, COPY volumes, and
//! how and why the session ended. Results are labelled with their query number because
//! pipelined extended-protocol queries may complete after later queries were sent.

use std::collections::HashMap;
use std::fmt::Write as _;

use uuid::Uuid;

pub use crate::summary::format_event_line;

use crate::event::{Event, EventBody, Param, StopMethod, Stopped, StoppedWork};
use crate::render::{clean, micros_as_ms, millis, one_line, param_note, param_value, rows};
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
    let mut bound: HashMap<u64, &[Param]> = HashMap::new();
    for event in &events {
        if let EventBody::Query {
            query_id, params, ..
        } = &event.body
        {
            bound.insert(*query_id, params);
        }
    }
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
    let start = events.iter().find_map(|e| match &e.body {
        EventBody::SessionStart {
            client_addr,
            tls,
            application_name,
            deadline,
            upstream_pid,
            upstream_reused,
        } => Some((
            e,
            client_addr,
            tls,
            application_name,
            deadline,
            (upstream_pid, upstream_reused),
        )),
        _ => None,
    });
    match start {
        Some((e, client_addr, tls, app, deadline, (pid, reused))) => {
            let _ = write!(
                out,
                "-- client:   {} ({}",
                clean(client_addr, false),
                if *tls { "TLS" } else { "no TLS" }
            );
            if let Some(app) = app {
                let _ = write!(out, ", application \"{}\"", clean(app, false));
            }
            out.push_str(")\n");
            let _ = write!(out, "-- started:  {}", display_micros(&e.ts));
            if let Some(pid) = pid {
                let how = if *reused { ", reused" } else { "" };
                let _ = write!(out, " (upstream pid {pid}{how})");
            }
            out.push('\n');
            let _ = writeln!(out, "-- deadline: {}", display_micros(deadline));
        }
        None => {
            out.push_str("-- (no session_start event in this log)\n");
        }
    }
}

fn body(out: &mut String, e: &Event, bound: &HashMap<u64, &[Param]>) {
    let ts = display_micros(&e.ts);
    match &e.body {
        // Already rendered in the header.
        EventBody::SessionStart { .. } => {}
        EventBody::Query {
            query_id,
            protocol,
            sql,
            statement,
            portal,
            params,
            function_oid,
            truncated,
            sql_len,
            sql_sha256,
            setting_change,
            params_from,
        } => {
            let _ = write!(out, "\n{ts}  query #{query_id} ({}", protocol.as_str());
            if let Some(statement) = statement {
                let _ = write!(out, ", statement \"{}\"", clean(statement, false));
            }
            if let Some(portal) = portal {
                let _ = write!(out, ", portal \"{}\"", clean(portal, false));
            }
            if let Some(oid) = function_oid {
                let _ = write!(out, ", function oid {oid}");
            }
            out.push_str(")\n");
            for line in clean(sql, true).lines() {
                let _ = writeln!(out, "    {line}");
            }
            if *truncated {
                let _ = writeln!(
                    out,
                    "    -- [truncated: {} bytes in all, sha256 {}]",
                    sql_len.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                    clean(sql_sha256.as_deref().unwrap_or("?"), false)
                );
            }
            if let Some(change) = setting_change {
                let _ = writeln!(out, "    -- [changes the session's {}]", change.as_str());
            }
            let params = match params_from {
                Some(from) => {
                    let earlier = bound.get(from).copied();
                    let what = if earlier.is_some() {
                        "parameters as bound for"
                    } else {
                        "parameters recorded with (not in this log)"
                    };
                    let _ = writeln!(out, "    -- [same portal: {what} query #{from}]");
                    earlier.unwrap_or(params)
                }
                None => params,
            };
            for (i, p) in params.iter().enumerate() {
                let _ = writeln!(out, "    ${} = {} {}", i + 1, param_value(p), param_note(p));
                if p.truncated {
                    let _ = writeln!(
                        out,
                        "    -- [${} truncated: {} bytes in all, sha256 {}]",
                        i + 1,
                        p.value_len
                            .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                        clean(p.value_sha256.as_deref().unwrap_or("?"), false)
                    );
                }
            }
        }
        EventBody::QueryResult {
            query_id,
            tag,
            rows: n,
            sqlstate,
            message,
            duration_us,
            bytes,
            skipped,
        } => {
            let _ = write!(out, "{ts}  result #{query_id}: ");
            if *skipped {
                out.push_str("not run by the server: ");
            }
            if let Some(state) = sqlstate {
                let _ = write!(out, "ERROR {}", clean(state, false));
                if let Some(msg) = message {
                    let _ = write!(out, ": {}", clean(msg, false));
                }
            } else {
                let tag = tag
                    .as_deref()
                    .map_or_else(|| "(no command tag)".to_owned(), |t| clean(t, false));
                out.push_str(&tag);
                if let Some(n) = n {
                    let _ = write!(out, " ({})", rows(*n));
                }
            }
            if *bytes > 0 {
                let _ = write!(out, ", {bytes} bytes returned");
            }
            let _ = writeln!(out, " in {}", micros_as_ms(*duration_us));
        }
        EventBody::Copy {
            query_id,
            direction,
            bytes,
            rows: n,
        } => {
            let _ = write!(
                out,
                "{ts}  copy #{query_id} {}: {bytes} bytes",
                direction.as_str()
            );
            if let Some(n) = n {
                let _ = write!(out, ", {}", rows(*n));
            }
            out.push('\n');
        }
        EventBody::SessionEnd {
            reason,
            detail,
            late_ms,
            queries,
            duration_ms,
            upstream_parked,
            stopped,
        } => {
            let _ = write!(out, "\n{ts}  session ended: {}", reason.as_str());
            if let Some(late) = late_ms {
                let _ = write!(out, " ({late:.3} ms after the deadline/revocation)");
            }
            if let Some(detail) = detail {
                let _ = write!(out, " — {}", clean(detail, false));
            }
            let _ = writeln!(out, "\n-- {queries} queries in {}", millis(*duration_ms));
            if *upstream_parked {
                out.push_str(
                    "-- upstream connection reset (DISCARD ALL) and kept for this grant\n",
                );
            }
            if let Some(stopped) = stopped {
                out.push_str(&stopped_line(stopped));
            }
        }
        // Other kinds rarely carry a session id; show them as their one-line summary.
        _ => {
            let _ = writeln!(out, "{ts}  {}", one_line(&format_event_line(e), usize::MAX));
        }
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
