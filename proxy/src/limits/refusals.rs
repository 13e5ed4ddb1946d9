//! Auditing refusals of clients that have not authenticated, without letting a flood of
//! them fill the audit disk.
//!
//! Such a client chooses the identity and database names the event records, and can
//! fail as often as it can connect. So, for `auth_failure` and pre-authentication
//! `access_denied` events (the proxy's and the admin API's `/v1/login`):
//!
//! - names are cut to [`MAX_NAME_BYTES`] bytes (PostgreSQL's NAMEDATALEN − 1) and the
//!   `reason` to [`MAX_REASON_BYTES`], marked `…(N bytes)` with the original length;
//! - at most `client_limits.refusal_events_per_ip` events per client address and
//!   `refusal_events_total` in all are written per minute; the others are counted;
//! - what was counted is written as one `refusals_suppressed` event (how many, since
//!   when, from which addresses) before the next refusal that is written, and by
//!   [`RefusalAudit::flush`] once a minute, so the log never silently loses the fact
//!   that refusals happened.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use jitgate_audit::{AuditError, AuditWriter, Event, EventBody};

use super::rate::{KeyedRate, Rate};
use crate::settings::ClientLimits;

/// Longest identity or target name recorded for an unauthenticated client.
pub const MAX_NAME_BYTES: usize = 63;
/// Longest `reason` recorded for an unauthenticated client (it may quote its input).
pub const MAX_REASON_BYTES: usize = 512;
/// Addresses named in one `refusals_suppressed` event; the rest are summed.
pub const MAX_LISTED_CLIENTS: usize = 20;
/// Addresses counted one by one between two summaries; the rest go to `other_clients`.
const MAX_COUNTED_CLIENTS: usize = 10_000;

/// `text` cut to at most `max` bytes (at a character boundary), with `…(N bytes)` added
/// when it was cut (N: its original length).
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &text[..end], text.len()).into()
}

#[derive(Default)]
struct Suppressed {
    since: Option<jiff::Timestamp>,
    count: u64,
    by_client: HashMap<IpAddr, u64>,
    other_clients: u64,
}

/// The rate limits and the count of refusals not written.
pub struct RefusalAudit {
    per_ip: KeyedRate<IpAddr>,
    total: Rate,
    suppressed: Mutex<Suppressed>,
}

impl RefusalAudit {
    pub fn new(settings: &ClientLimits) -> Self {
        RefusalAudit {
            per_ip: KeyedRate::per_minute(settings.refusal_events_per_ip),
            total: Rate::per_minute(settings.refusal_events_total),
            suppressed: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Suppressed> {
        // Plain counters; a poisoned lock still holds valid ones.
        self.suppressed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a refusal of a client at `ip` may be written now; if not, it is counted.
    fn admit(&self, ip: IpAddr) -> bool {
        if self.per_ip.check(&ip).is_ok() && self.total.check().is_ok() {
            return true;
        }
        let mut s = self.lock();
        s.since.get_or_insert_with(jiff::Timestamp::now);
        s.count += 1;
        if s.by_client.len() < MAX_COUNTED_CLIENTS || s.by_client.contains_key(&ip) {
            *s.by_client.entry(ip).or_insert(0) += 1;
        } else {
            s.other_clients += 1;
        }
        false
    }

    /// The `refusals_suppressed` event for what was counted since the last one, if any.
    fn take_summary(&self) -> Option<Event> {
        let s = std::mem::take(&mut *self.lock());
        let since = s.since?;
        let mut clients: Vec<(IpAddr, u64)> = s.by_client.into_iter().collect();
        clients.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut other_clients = s.other_clients;
        let mut by_client = BTreeMap::new();
        for (i, (ip, n)) in clients.into_iter().enumerate() {
            if i < MAX_LISTED_CLIENTS {
                by_client.insert(ip.to_string(), n);
            } else {
                other_clients += n;
            }
        }
        Some(Event::new(EventBody::RefusalsSuppressed {
            count: s.count,
            since,
            by_client,
            other_clients,
        }))
    }

    /// Writes `event` (a refusal of an unauthenticated client at `ip`) with its names
    /// and reason cut, preceded by the summary of what was not written before it; or
    /// only counts it, when `ip` or all clients are over their rate.
    pub async fn write(
        &self,
        audit: &AuditWriter,
        ip: IpAddr,
        event: Event,
    ) -> Result<(), AuditError> {
        if !self.admit(ip) {
            return Ok(());
        }
        let event = cut(event);
        match self.take_summary() {
            Some(summary) => audit.write_batch(&mut vec![summary, event]).await.map(drop),
            None => audit.write(event).await.map(drop),
        }
    }

    /// Writes the summary of refusals not written, if there are any (called once a
    /// minute and at shutdown).
    pub async fn flush(&self, audit: &AuditWriter) -> Result<(), AuditError> {
        match self.take_summary() {
            Some(summary) => audit.write(summary).await.map(drop),
            None => Ok(()),
        }
    }
}

/// The event with client-chosen text cut to its bounds.
fn cut(mut event: Event) -> Event {
    let cut_name = |name: &mut Option<String>| {
        if let Some(n) = name.as_mut() {
            if n.len() > MAX_NAME_BYTES {
                *n = truncate(n, MAX_NAME_BYTES).into_owned();
            }
        }
    };
    cut_name(&mut event.identity);
    cut_name(&mut event.target);
    cut_name(&mut event.role);
    if let EventBody::AuthFailure { reason, .. } | EventBody::AccessDenied { reason, .. } =
        &mut event.body
    {
        if reason.len() > MAX_REASON_BYTES {
            *reason = truncate(reason, MAX_REASON_BYTES).into_owned();
        }
    }
    event
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn truncates_at_a_char_boundary_and_marks_it() {
        assert_eq!(truncate("alice", 63), "alice");
        let long = "é".repeat(40); // 80 bytes
        let cut = truncate(&long, 63);
        assert!(cut.starts_with(&"é".repeat(31)));
        assert!(cut.ends_with("…(80 bytes)"), "{cut}");
        let ev = cut_event("x".repeat(1000));
        assert_eq!(
            ev.identity.as_deref().unwrap().len(),
            63 + "…(1000 bytes)".len()
        );
    }

    fn cut_event(identity: String) -> Event {
        cut(Event::new(EventBody::AuthFailure {
            client_addr: "10.0.0.1:5".into(),
            reason: "r".repeat(2000),
        })
        .with_identity(identity))
    }

    #[test]
    fn over_the_rate_is_counted_and_summarised() {
        let ra = RefusalAudit::new(&ClientLimits {
            refusal_events_per_ip: NonZeroU32::new(2).unwrap(),
            refusal_events_total: NonZeroU32::new(3).unwrap(),
            ..ClientLimits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(ra.admit(a) && ra.admit(a));
        assert!(!ra.admit(a));
        assert!(ra.admit(b));
        assert!(!ra.admit(b), "total rate");
        let Some(Event {
            body: EventBody::RefusalsSuppressed {
                count, by_client, ..
            },
            ..
        }) = ra.take_summary()
        else {
            panic!("no summary")
        };
        assert_eq!(count, 2);
        assert_eq!(by_client.get("10.0.0.1"), Some(&1));
        assert_eq!(by_client.get("10.0.0.2"), Some(&1));
        assert!(ra.take_summary().is_none());
    }
}
