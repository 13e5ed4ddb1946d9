//! Per-session limits: how much one session may make jitgate hold. A grantee is assumed
//! hostile, and everything the tracker keeps per name, and every `query` event built
//! before a batch is written, is jitgate's memory shared with every other session.
//!
//! - Prepared statements and portals: the tracker keeps a definition per name the server
//!   holds (and per name it may hold, while answers are outstanding). A client that
//!   creates more named statements (or portals) than the limit is ended with FATAL 53400
//!   (`configuration_limit_exceeded`) before the message that would exceed it is
//!   forwarded. Refusing only that message is not safe in general: it would have to be
//!   answered by jitgate in the middle of a pipeline whose earlier messages the server
//!   has not answered yet, and the client would take jitgate's error for the server's
//!   answer to another message (the same reason `refuse.rs` ends the session when the
//!   audit log fails under a pipelining client). Ending the session rolls back any open
//!   transaction on the server, so nothing half-done survives.
//! - Audit bytes per batch: a pipelined batch is audited and forwarded in slices of at
//!   most this many bytes of events (see `relay.rs :: on_client_frames`), so the events
//!   built in memory before a write stay bounded. Clients never notice.

use jitgate_audit::EventBody;

use crate::protocol::{sqlstate, PgError};

/// Which count limit a session reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    PreparedStatements,
    Portals,
    /// Bytes kept for named statements and portals.
    RetainedBytes,
}

/// A session tried to hold more than its limit allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitExceeded {
    pub kind: LimitKind,
    /// The limit in force.
    pub limit: usize,
}

impl LimitExceeded {
    /// The configuration setting that raises the limit.
    pub fn setting(&self) -> &'static str {
        match self.kind {
            LimitKind::PreparedStatements => "session_limits.max_prepared_statements",
            LimitKind::Portals => "session_limits.max_portals",
            LimitKind::RetainedBytes => "session_limits.max_retained_bytes",
        }
    }

    fn what(&self) -> &'static str {
        match self.kind {
            LimitKind::PreparedStatements => "named prepared statements",
            LimitKind::Portals => "named portals",
            LimitKind::RetainedBytes => {
                "bytes of statement text and parameters kept for named prepared statements and portals"
            }
        }
    }

    /// The FATAL error the client gets.
    pub fn pg_error(&self) -> PgError {
        PgError::fatal(sqlstate::CONFIGURATION_LIMIT_EXCEEDED, self.to_string())
            .with_detail(format!(
                "jitgate limits a session to {} {} at a time; the message that would create one more was not forwarded, and the session's open transaction (if any) is rolled back",
                self.limit,
                self.what()
            ))
            .with_hint(format!(
                "close (DEALLOCATE, CLOSE) {} the session no longer needs, or ask the operator to raise {}",
                match self.kind {
                    LimitKind::RetainedBytes => "prepared statements and portals",
                    _ => self.what(),
                },
                self.setting()
            ))
    }
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too many {} in this session: the limit is {} ({})",
            self.what(),
            self.limit,
            self.setting()
        )
    }
}

/// What an event's line costs beyond its variable fields: the envelope (version, seq,
/// hash of the previous line, timestamp, session, identity, target, role, grant) and the
/// field names.
const EVENT_OVERHEAD: usize = 448;

/// About how many bytes `body` takes as a log line (and, before that, in memory): its
/// variable-length fields plus a fixed overhead. O(fields), no formatting.
pub fn approx_event_bytes(body: &EventBody) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    EVENT_OVERHEAD
        + match body {
            EventBody::Query {
                sql,
                statement,
                portal,
                params,
                ..
            } => {
                sql.len()
                    + text(statement)
                    + text(portal)
                    + params
                        .iter()
                        .map(|p| 64 + text(&p.value) + text(&p.value_sha256))
                        .sum::<usize>()
            }
            EventBody::QueryResult { tag, message, .. } => text(tag) + text(message),
            _ => 0,
        }
}

/// The audit bytes of one slice of a client batch, against the limit.
#[derive(Debug)]
pub struct AuditBudget {
    limit: usize,
    used: usize,
}

impl AuditBudget {
    pub fn new(limit: usize) -> AuditBudget {
        AuditBudget { limit, used: 0 }
    }

    /// Counts `events`; true once the slice has reached the limit (it is then written and
    /// forwarded before the next message is looked at).
    pub fn add(&mut self, events: &[EventBody]) -> bool {
        self.used += events.iter().map(approx_event_bytes).sum::<usize>();
        self.used >= self.limit
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jitgate_audit::{Event, Param, ParamFormat, Protocol};

    fn query(sql: &str, params: Vec<Param>) -> EventBody {
        EventBody::Query {
            query_id: 1,
            protocol: Protocol::Extended,
            sql: sql.into(),
            truncated: false,
            sql_len: None,
            sql_sha256: None,
            setting_change: None,
            statement: Some("S_1".into()),
            portal: Some(String::new()),
            params,
            function_oid: None,
            params_from: None,
        }
    }

    #[test]
    fn the_estimate_is_at_least_the_line_written() {
        let bodies = [
            query("select 1", vec![]),
            query(
                &"x".repeat(5000),
                vec![Param::from_wire(
                    ParamFormat::Text,
                    Some(25),
                    Some(&[b'v'; 3000]),
                )],
            ),
            query(
                "",
                vec![Param::from_wire(
                    ParamFormat::Binary,
                    None,
                    Some(b"\x00\x01"),
                )],
            ),
        ];
        for body in bodies {
            let event = Event::new(body.clone())
                .with_session(uuid::Uuid::now_v7())
                .with_identity("alice.example")
                .with_target("prod")
                .with_role("readonly")
                .with_grant(uuid::Uuid::now_v7());
            let line = serde_json::to_string(&event).unwrap().len() + 80; // + seq, prev hash
            let estimate = approx_event_bytes(&body);
            assert!(estimate >= line, "estimate {estimate} < line {line}");
            assert!(
                estimate < line + 400,
                "estimate {estimate} far above line {line}"
            );
        }
    }

    #[test]
    fn a_slice_ends_once_its_events_reach_the_limit() {
        let one = query("select $1", vec![]);
        let size = approx_event_bytes(&one);
        let mut budget = AuditBudget::new(size * 10);
        let mut slices = vec![0usize];
        for _ in 0..95 {
            *slices.last_mut().unwrap() += 1;
            if budget.add(std::slice::from_ref(&one)) {
                budget = AuditBudget::new(size * 10);
                slices.push(0);
            }
        }
        // 95 events, at most 10 per slice: 9 full slices and 5 left over.
        assert_eq!(slices.len(), 10);
        assert!(slices.iter().all(|n| *n <= 10), "{slices:?}");
        assert_eq!(slices.iter().sum::<usize>(), 95);
    }

    #[test]
    fn the_message_names_the_limit_its_value_and_the_setting() {
        let e = LimitExceeded {
            kind: LimitKind::Portals,
            limit: 7,
        };
        let text = e.to_string();
        assert!(
            text.contains("named portals") && text.contains('7'),
            "{text}"
        );
        assert!(text.contains("session_limits.max_portals"), "{text}");
        let s = LimitExceeded {
            kind: LimitKind::PreparedStatements,
            limit: 3,
        };
        assert!(s
            .to_string()
            .contains("session_limits.max_prepared_statements"));
    }
}
