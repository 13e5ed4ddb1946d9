//! One-line human summaries of events, as printed by `jitgate audit tail`.
//!
//! Format: `<ts> #<seq> <kind> [session=… identity=… target=… role=… grant=…] <details>`
//! — key=value context so lines grep well; SQL collapsed to one line and shortened.

use std::fmt::Write as _;

use crate::event::{Event, EventBody};
use crate::render::{clean, micros_as_ms, millis, one_line};
use crate::time::display_micros;

/// Longest SQL excerpt shown in a summary line.
const SQL_EXCERPT_CHARS: usize = 200;

/// One-line summary of `e` (no trailing newline, no control characters).
pub fn format_event_line(e: &Event) -> String {
    let mut s = format!("{} #{} {}", display_micros(&e.ts), e.seq, e.kind());
    let mut ctx = Vec::with_capacity(5);
    if let Some(id) = e.session_id {
        ctx.push(format!("session={id}"));
    }
    for (key, value) in [
        ("identity", &e.identity),
        ("target", &e.target),
        ("role", &e.role),
    ] {
        if let Some(value) = value {
            ctx.push(format!("{key}={}", clean(value, false)));
        }
    }
    if let Some(id) = e.grant_id {
        ctx.push(format!("grant={id}"));
    }
    if !ctx.is_empty() {
        let _ = write!(s, " [{}]", ctx.join(" "));
    }
    s.push(' ');
    s.push_str(&details(&e.body));
    s
}

fn details(body: &EventBody) -> String {
    match body {
        EventBody::SessionStart {
            client_addr,
            tls,
            application_name,
            deadline,
            upstream_pid,
            upstream_reused,
        } => {
            let mut s = format!(
                "from {}{} deadline={}",
                clean(client_addr, false),
                if *tls { " tls" } else { " plaintext" },
                display_micros(deadline)
            );
            if let Some(app) = application_name {
                let _ = write!(s, " application={}", clean(app, false));
            }
            if let Some(pid) = upstream_pid {
                let _ = write!(s, " upstream_pid={pid}");
            }
            if *upstream_reused {
                s.push_str(" reused");
            }
            s
        }
        EventBody::Query {
            query_id,
            protocol,
            sql,
            params,
            truncated,
            setting_change,
            params_from,
            ..
        } => {
            let mut s = format!(
                "q{query_id} {}: {}",
                protocol.as_str(),
                one_line(sql, SQL_EXCERPT_CHARS)
            );
            if !params.is_empty() {
                let _ = write!(s, " ({} params)", params.len());
            }
            if let Some(from) = params_from {
                let _ = write!(s, " (params of q{from})");
            }
            if *truncated {
                s.push_str(" [truncated]");
            }
            if let Some(change) = setting_change {
                let _ = write!(s, " [changes {}]", change.as_str());
            }
            s
        }
        EventBody::QueryResult {
            query_id,
            tag,
            rows,
            sqlstate,
            message,
            duration_us,
            bytes,
            skipped,
        } => {
            let mut s = format!("q{query_id}");
            if *skipped {
                s.push_str(" skipped");
            }
            if let Some(state) = sqlstate {
                let _ = write!(s, " ERROR {}", clean(state, false));
                if let Some(msg) = message {
                    let _ = write!(s, ": {}", one_line(msg, SQL_EXCERPT_CHARS));
                }
            } else if let Some(tag) = tag {
                let _ = write!(s, " {}", clean(tag, false));
            }
            if let Some(rows) = rows {
                let _ = write!(s, " rows={rows}");
            }
            if *bytes > 0 {
                let _ = write!(s, " bytes={bytes}");
            }
            let _ = write!(s, " {}", micros_as_ms(*duration_us));
            s
        }
        EventBody::Copy {
            query_id,
            direction,
            bytes,
            rows,
        } => {
            let mut s = format!("q{query_id} {} {bytes} bytes", direction.as_str());
            if let Some(rows) = rows {
                let _ = write!(s, " rows={rows}");
            }
            s
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
            let mut s = format!(
                "{} queries={queries} duration={}",
                reason.as_str(),
                millis(*duration_ms)
            );
            if *upstream_parked {
                s.push_str(" upstream=parked");
            }
            if let Some(late) = late_ms {
                let _ = write!(s, " late={late:.3} ms");
            }
            if let Some(stopped) = stopped {
                let _ = write!(
                    s,
                    " stopped={} how={} backend={} stop={:.3} ms",
                    stopped.work.as_str(),
                    stopped.how.as_str(),
                    if stopped.backend_gone {
                        "gone"
                    } else {
                        "not-seen-gone"
                    },
                    stopped.ms
                );
            }
            if let Some(detail) = detail {
                let _ = write!(s, ": {}", one_line(detail, SQL_EXCERPT_CHARS));
            }
            s
        }
        EventBody::AuthFailure {
            client_addr,
            reason,
        }
        | EventBody::AccessDenied {
            client_addr,
            reason,
        } => format!(
            "from {}: {}",
            clean(client_addr, false),
            one_line(reason, SQL_EXCERPT_CHARS)
        ),
        EventBody::RefusalsSuppressed {
            count,
            since,
            by_client,
            other_clients,
        } => {
            let mut s = format!(
                "{count} refusals not written since {}:",
                display_micros(since)
            );
            for (addr, n) in by_client {
                let _ = write!(s, " {}={n}", clean(addr, false));
            }
            if *other_clients > 0 {
                let _ = write!(s, " others={other_clients}");
            }
            s
        }
        EventBody::GrantIssued {
            not_before,
            expires_at,
            reason,
            issued_by,
        } => format!(
            "{} .. {} by {}: {}",
            display_micros(not_before),
            display_micros(expires_at),
            clean(issued_by, false),
            one_line(reason, SQL_EXCERPT_CHARS)
        ),
        EventBody::GrantRevoked {
            revoked_by, reason, ..
        } => {
            let mut s = format!("by {}", clean(revoked_by, false));
            if let Some(reason) = reason {
                let _ = write!(s, ": {}", one_line(reason, SQL_EXCERPT_CHARS));
            }
            s
        }
        EventBody::GrantTransition {
            action,
            actor,
            rule,
            comment,
            from,
            to,
            expires_at,
            ..
        } => {
            let mut s = format!(
                "{} by {}: {} -> {} (until {})",
                clean(action, false),
                clean(actor, false),
                from.as_deref().map_or("new", |f| f),
                clean(to, false),
                display_micros(expires_at)
            );
            if let Some(rule) = rule {
                let _ = write!(s, " rule {}", clean(rule, false));
            }
            if let Some(comment) = comment {
                let _ = write!(s, ": {}", one_line(comment, SQL_EXCERPT_CHARS));
            }
            s
        }
        EventBody::WebhookDelivery {
            webhook,
            event,
            delivery_id,
            attempt,
            outcome,
            status,
            error,
        } => format!(
            "{} to {} delivery={delivery_id} attempt={attempt} {}{}{}",
            clean(event, false),
            clean(webhook, false),
            clean(outcome, false),
            status
                .map(|code| format!(" status={code}"))
                .unwrap_or_default(),
            error
                .as_deref()
                .map(|e| format!(": {}", one_line(e, SQL_EXCERPT_CHARS)))
                .unwrap_or_default()
        ),
        EventBody::LogCutAcknowledged {
            lost_from,
            lost_to,
            reason,
            acknowledged_by,
            ..
        } => {
            let lost = match (lost_from, lost_to) {
                (Some(from), Some(to)) => format!("events {from}..{to} lost"),
                _ => "checkpoints lost".to_owned(),
            };
            format!(
                "{lost}, acknowledged by {}: {}",
                clean(acknowledged_by, false),
                one_line(reason, SQL_EXCERPT_CHARS)
            )
        }
    }
}
