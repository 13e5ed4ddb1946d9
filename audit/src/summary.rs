//! One-line human summaries of events, as printed by `jitgate audit tail`.
//!
//! Format: `<ts> #<seq> <kind> [session=… identity=… target=… role=… grant=…] <details>`
//! — key=value context so lines grep well; SQL collapsed to one line and shortened.
//! A session's own events are worded from their facts ([`crate::describe`]); the other
//! kinds (refusals, grants, webhooks, log cuts) are shown only here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;

use crate::describe::{excerpt, rows_field, CopyData, End, Fact, Outcome, Start, Statement};
use crate::event::{Event, EventBody};
use crate::render::clean;
use crate::time::display_micros;

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

/// What `body` says, after the kind and context.
fn details(body: &EventBody) -> String {
    match Fact::of(body) {
        Some(Fact::Start(start)) => session_start(&start),
        Some(Fact::Statement(statement)) => query(&statement),
        Some(Fact::Outcome(outcome)) => query_result(&outcome),
        Some(Fact::Copy(copy_data)) => copy(&copy_data),
        Some(Fact::End(end)) => session_end(&end),
        None => administrative(body),
    }
}

fn session_start(start: &Start<'_>) -> String {
    let mut s = format!(
        "from {}{} deadline={}",
        start.client(),
        if start.tls { " tls" } else { " plaintext" },
        start.deadline()
    );
    if let Some(app) = start.application() {
        let _ = write!(s, " application={app}");
    }
    if let Some(pid) = start.upstream_pid {
        let _ = write!(s, " upstream_pid={pid}");
    }
    if start.upstream_reused {
        s.push_str(" reused");
    }
    s
}

fn query(q: &Statement<'_>) -> String {
    let mut s = format!("q{} {}: {}", q.query_id, q.protocol.as_str(), q.excerpt());
    if !q.params.is_empty() {
        let _ = write!(s, " ({} params)", q.params.len());
    }
    for piece in [
        q.params_of(),
        q.truncated_mark().map(Into::into),
        q.changes(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = write!(s, " {piece}");
    }
    s
}

fn query_result(outcome: &Outcome<'_>) -> String {
    let mut s = format!("q{}", outcome.query_id);
    if outcome.skipped {
        s.push_str(" skipped");
    }
    if let Some(error) = outcome.error() {
        let _ = write!(s, " {}", because(error, outcome.message));
    } else if let Some(tag) = outcome.tag() {
        let _ = write!(s, " {tag}");
    }
    for piece in [outcome.rows.map(rows_field), outcome.bytes_field()]
        .into_iter()
        .flatten()
    {
        let _ = write!(s, " {piece}");
    }
    let _ = write!(s, " {}", outcome.duration());
    s
}

fn copy(copy: &CopyData) -> String {
    let mut s = format!(
        "q{} {} {}",
        copy.query_id,
        copy.direction.as_str(),
        copy.volume()
    );
    if let Some(rows) = copy.rows {
        let _ = write!(s, " {}", rows_field(rows));
    }
    s
}

fn session_end(end: &End<'_>) -> String {
    let mut s = format!(
        "{} queries={} duration={}",
        end.reason.as_str(),
        end.queries,
        end.duration()
    );
    if end.upstream_parked {
        s.push_str(" upstream=parked");
    }
    if let Some(late) = end.late() {
        let _ = write!(s, " late={late}");
    }
    if let Some(stopped) = end.stopped {
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
    because(s, end.detail)
}

/// The kinds outside a session's statements: refusals, grants, webhooks, log cuts.
fn administrative(body: &EventBody) -> String {
    match body {
        // Described from their facts (`details`).
        EventBody::SessionStart { .. }
        | EventBody::Query { .. }
        | EventBody::QueryResult { .. }
        | EventBody::Copy { .. }
        | EventBody::SessionEnd { .. } => String::new(),
        EventBody::AuthFailure { .. }
        | EventBody::AccessDenied { .. }
        | EventBody::RefusalsSuppressed { .. } => refusal(body),
        EventBody::GrantIssued { .. }
        | EventBody::GrantRevoked { .. }
        | EventBody::GrantTransition { .. } => grant(body),
        EventBody::WebhookDelivery {
            webhook,
            event,
            delivery_id,
            attempt,
            outcome,
            status,
            error,
        } => {
            let (event, webhook) = (clean(event, false), clean(webhook, false));
            let mut s = format!("{event} to {webhook} delivery={delivery_id} attempt={attempt}");
            let _ = write!(s, " {}", clean(outcome, false));
            if let Some(code) = status {
                let _ = write!(s, " status={code}");
            }
            because(s, error.as_deref())
        }
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
            let by = clean(acknowledged_by, false);
            because(format!("{lost}, acknowledged by {by}"), Some(reason))
        }
    }
}

/// A refusal before any session: a failed login or a denial, or how many of those were
/// not written one by one.
fn refusal(body: &EventBody) -> String {
    match body {
        EventBody::AuthFailure {
            client_addr,
            reason,
        }
        | EventBody::AccessDenied {
            client_addr,
            reason,
        } => because(format!("from {}", clean(client_addr, false)), Some(reason)),
        EventBody::RefusalsSuppressed {
            count,
            since,
            by_client,
            other_clients,
        } => refusals_suppressed(*count, since, by_client, *other_clients),
        // Only the kinds above are routed here (`administrative`).
        _ => String::new(),
    }
}

/// A step of a grant's life: issued, revoked, or a workflow transition.
fn grant(body: &EventBody) -> String {
    match body {
        EventBody::GrantIssued {
            not_before,
            expires_at,
            reason,
            issued_by,
        } => {
            let (from, until) = (display_micros(not_before), display_micros(expires_at));
            let issued = format!("{from} .. {until} by {}", clean(issued_by, false));
            because(issued, Some(reason))
        }
        EventBody::GrantRevoked {
            revoked_by, reason, ..
        } => because(
            format!("by {}", clean(revoked_by, false)),
            reason.as_deref(),
        ),
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
            because(s, comment.as_deref())
        }
        // Only the kinds above are routed here (`administrative`).
        _ => String::new(),
    }
}

/// `what`, then `: ` and an excerpt of `why` when there is one.
fn because(mut what: String, why: Option<&str>) -> String {
    if let Some(why) = why {
        let _ = write!(what, ": {}", excerpt(why));
    }
    what
}

fn refusals_suppressed(
    count: u64,
    since: &Timestamp,
    by_client: &BTreeMap<String, u64>,
    other_clients: u64,
) -> String {
    let mut s = format!(
        "{count} refusals not written since {}:",
        display_micros(since)
    );
    for (addr, n) in by_client {
        let _ = write!(s, " {}={n}", clean(addr, false));
    }
    if other_clients > 0 {
        let _ = write!(s, " others={other_clients}");
    }
    s
}
