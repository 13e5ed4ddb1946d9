//! One webhook's worker: takes its queued deliveries in order, sends each with retries
//! and exponential backoff, and records every attempt in the audit log.
//!
//! An attempt ends one of three ways:
//! - **delivered**: the receiver answered 2xx;
//! - **retrying**: 5xx, 408, 429, a timeout or a connection error, and attempts remain
//!   — the worker sleeps `initial_backoff · 2^(attempt-1)` (at most `max_backoff`, or the
//!   receiver's `Retry-After` within that cap) and tries again with a fresh timestamp and
//!   signature but the same delivery id and body;
//! - **failed**: any other 4xx (the receiver rejected the notification; sending it again
//!   would not help), a redirect (never followed: the signed body goes only where it was
//!   configured to go), or the last attempt was not delivered.
//!
//! Deliveries of one webhook go out one at a time, so a receiver sees them in the order
//! they happened; a receiver that is down holds back the ones behind it until the
//! current one is delivered or given up.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use jitgate_audit::{AuditWriter, Event, EventBody};
use jitgate_proxy::settings::Secret;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sign::signature_header;
use super::stats::{Counters, End};

/// Header names of the webhook contract.
pub(crate) const HEADER_EVENT: &str = "X-Jitgate-Event";
pub(crate) const HEADER_DELIVERY: &str = "X-Jitgate-Delivery";
pub(crate) const HEADER_TIMESTAMP: &str = "X-Jitgate-Timestamp";
pub(crate) const HEADER_SIGNATURE: &str = "X-Jitgate-Signature";

/// Most bytes of a rejecting receiver's response body kept in the error text.
const RESPONSE_EXCERPT_BYTES: usize = 256;

/// One notification for one webhook, ready to send.
#[derive(Debug)]
pub(crate) struct Job {
    /// The `id` in the body and `X-Jitgate-Delivery`; the same for every attempt.
    pub(crate) delivery_id: Uuid,
    pub(crate) event: &'static str,
    /// The JSON body, signed afresh (with a new timestamp) for every attempt.
    pub(crate) body: Vec<u8>,
    /// The grant the notification is about, for the audit records.
    pub(crate) grant_id: Uuid,
    pub(crate) identity: String,
    pub(crate) target: String,
    pub(crate) role: String,
}

/// What the worker needs of a webhook's configuration.
pub(crate) struct Hook {
    pub(crate) name: String,
    /// The parsed URL, or why it could not be used (every delivery then fails, and says
    /// so in the audit log).
    pub(crate) url: Result<Url, String>,
    pub(crate) secret: Secret,
    pub(crate) timeout: Duration,
    /// At least 1.
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

/// The two stages of shutdown, as seen by a worker.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown {
    /// Finish what is queued, then stop.
    pub(crate) drain: CancellationToken,
    /// Stop now, even in the middle of a delivery.
    pub(crate) stop: CancellationToken,
}

/// One webhook's sender.
pub(crate) struct Worker {
    pub(crate) hook: Hook,
    /// Shared by every worker of a notifier (a `Client` is a handle to one pool), or why
    /// it could not be built.
    pub(crate) client: Result<Client, String>,
    pub(crate) audit: AuditWriter,
    pub(crate) counters: Arc<Counters>,
}

/// How one attempt went.
#[derive(Debug)]
struct Attempt {
    status: Option<u16>,
    verdict: Verdict,
    error: Option<String>,
    /// The receiver's `Retry-After`, in seconds, for a retryable status.
    retry_after: Option<Duration>,
}

/// The `outcome` of an attempt's audit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retrying,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retrying => "retrying",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Delivered,
    /// Worth another attempt, if any remain.
    Retry,
    /// Give up now.
    Reject,
}

impl Attempt {
    fn rejected(status: Option<u16>, error: String) -> Attempt {
        Attempt {
            status,
            verdict: Verdict::Reject,
            error: Some(error),
            retry_after: None,
        }
    }
}

impl Worker {
    /// Sends queued deliveries until the notifier drains (queue empty) or stops.
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Job>, shutdown: Shutdown) {
        loop {
            let job = tokio::select! {
                biased;
                () = shutdown.stop.cancelled() => break,
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                () = shutdown.drain.cancelled() => match rx.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            let end = tokio::select! {
                biased;
                () = shutdown.stop.cancelled() => None,
                end = self.deliver(&job) => Some(end),
            };
            match end {
                Some(end) => self.counters.finished(end),
                None => {
                    self.abandon(&job);
                    break;
                }
            }
        }
        // Whatever is still queued (stopped at the deadline) will not be sent; closing
        // first makes later `notify` calls count their drops themselves.
        rx.close();
        while let Ok(job) = rx.try_recv() {
            self.abandon(&job);
        }
    }

    fn abandon(&self, job: &Job) {
        tracing::error!(
            webhook = %self.hook.name,
            event = job.event,
            delivery_id = %job.delivery_id,
            grant_id = %job.grant_id,
            "webhook notification not delivered: jitgate stopped before it could be sent"
        );
        self.counters.finished(End::Dropped);
    }

    /// Every attempt of one delivery, recorded; how it ended.
    async fn deliver(&self, job: &Job) -> End {
        let max_attempts = self.hook.max_attempts.max(1);
        let mut attempt_no = 1;
        loop {
            let attempt = self.attempt(job).await;
            let last = attempt_no >= max_attempts;
            let (outcome, end) = match attempt.verdict {
                Verdict::Delivered => (Outcome::Delivered, Some(End::Delivered)),
                Verdict::Retry if !last => (Outcome::Retrying, None),
                Verdict::Retry | Verdict::Reject => (Outcome::Failed, Some(End::Failed)),
            };
            self.log(job, attempt_no, outcome, &attempt);
            self.record(job, attempt_no, outcome, &attempt).await;
            if let Some(end) = end {
                return end;
            }
            let delay = self.backoff(attempt_no, attempt.retry_after);
            tokio::time::sleep(delay).await;
            attempt_no += 1;
        }
    }

    /// The pause after failed attempt `attempt_no` (1-based): `initial · 2^(n-1)`, or the
    /// receiver's `Retry-After` if longer, never more than `max_backoff`.
    fn backoff(&self, attempt_no: u32, retry_after: Option<Duration>) -> Duration {
        let factor = 2u32.saturating_pow(attempt_no.saturating_sub(1));
        let exponential = self.hook.initial_backoff.saturating_mul(factor);
        exponential
            .max(retry_after.unwrap_or_default())
            .min(self.hook.max_backoff)
    }

    /// One signed POST.
    async fn attempt(&self, job: &Job) -> Attempt {
        let client = match &self.client {
            Ok(client) => client,
            Err(why) => return Attempt::rejected(None, format!("no HTTP client: {why}")),
        };
        let url = match &self.hook.url {
            Ok(url) => url,
            Err(why) => return Attempt::rejected(None, why.clone()),
        };
        let timestamp = jiff::Timestamp::now().as_second().to_string();
        let secret = self.hook.secret.expose().as_bytes();
        let Some(signature) = signature_header(secret, &timestamp, &job.body) else {
            return Attempt::rejected(None, "could not sign the body".to_owned());
        };
        let sent = client
            .post(url.clone())
            .timeout(self.hook.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(HEADER_EVENT, job.event)
            .header(HEADER_DELIVERY, job.delivery_id.to_string())
            .header(HEADER_TIMESTAMP, &timestamp)
            .header(HEADER_SIGNATURE, signature)
            .body(job.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => self.judge(response).await,
            Err(e) => Attempt {
                status: None,
                verdict: Verdict::Retry,
                error: Some(self.describe(&e)),
                retry_after: None,
            },
        }
    }

    /// Sorts a response into delivered / retry / reject.
    async fn judge(&self, response: reqwest::Response) -> Attempt {
        let status = response.status();
        let code = Some(status.as_u16());
        if status.is_success() {
            return Attempt {
                status: code,
                verdict: Verdict::Delivered,
                error: None,
                retry_after: None,
            };
        }
        if status.is_redirection() {
            return Attempt::rejected(
                code,
                format!("receiver answered {status}: redirects are not followed"),
            );
        }
        let retry = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        let retry_after = retry_after(response.headers());
        let mut error = if retry {
            format!("receiver answered {status}")
        } else {
            format!("receiver rejected the notification: {status}")
        };
        let excerpt = excerpt(response).await;
        if !excerpt.is_empty() {
            error.push_str(": ");
            error.push_str(&excerpt);
        }
        Attempt {
            status: code,
            verdict: if retry {
                Verdict::Retry
            } else {
                Verdict::Reject
            },
            error: Some(error),
            retry_after: retry.then_some(retry_after).flatten(),
        }
    }

    /// A transport error as one line, without the URL (it may carry a token).
    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!(
                "no answer within {}",
                humantime::format_duration(self.hook.timeout)
            );
        }
        let mut text = if e.is_connect() {
            "could not connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        let mut source = e.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        if let Ok(url) = &self.hook.url {
            text = text.replace(url.as_str(), "<webhook url>");
        }
        text
    }

    fn log(&self, job: &Job, attempt_no: u32, outcome: Outcome, attempt: &Attempt) {
        let error = attempt.error.as_deref().unwrap_or("");
        match outcome {
            Outcome::Delivered => tracing::debug!(
                webhook = %self.hook.name, event = job.event, delivery_id = %job.delivery_id,
                grant_id = %job.grant_id, attempt = attempt_no, status = attempt.status,
                "webhook delivered"
            ),
            Outcome::Retrying => tracing::warn!(
                webhook = %self.hook.name, event = job.event, delivery_id = %job.delivery_id,
                grant_id = %job.grant_id, attempt = attempt_no, status = attempt.status,
                error, "webhook attempt failed; will retry"
            ),
            Outcome::Failed => tracing::error!(
                webhook = %self.hook.name, event = job.event, delivery_id = %job.delivery_id,
                grant_id = %job.grant_id, attempt = attempt_no, status = attempt.status,
                error, "webhook delivery failed; giving up"
            ),
        }
    }

    /// The attempt's audit record. A failed audit write is logged and otherwise ignored:
    /// the notification must not be lost because the audit log is down (sessions are
    /// already refusing queries then).
    async fn record(&self, job: &Job, attempt_no: u32, outcome: Outcome, attempt: &Attempt) {
        let event = Event::new(EventBody::WebhookDelivery {
            webhook: self.hook.name.clone(),
            event: job.event.to_owned(),
            delivery_id: job.delivery_id,
            attempt: attempt_no,
            outcome: outcome.as_str().to_owned(),
            status: attempt.status,
            error: attempt.error.clone(),
        })
        .with_grant(job.grant_id)
        .with_identity(job.identity.as_str())
        .with_target(job.target.as_str())
        .with_role(job.role.as_str());
        if let Err(e) = self.audit.write(event).await {
            tracing::error!(
                webhook = %self.hook.name, event = job.event, delivery_id = %job.delivery_id,
                attempt = attempt_no, outcome = outcome.as_str(), error = %e,
                "webhook attempt not recorded in the audit log"
            );
        }
    }
}

/// `Retry-After` in delta-seconds (the HTTP-date form is ignored: the backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// The start of a response body as one printable line, for the error text; empty when
/// there is none or it cannot be read in time.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < RESPONSE_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(RESPONSE_EXCERPT_BYTES)
        .collect();
    line.truncate(line.trim_end().len());
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(initial_ms: u64, max_ms: u64) -> Worker {
        Worker {
            hook: Hook {
                name: "t".into(),
                url: Err("unused".into()),
                secret: Secret::new("s"),
                timeout: Duration::from_secs(1),
                max_attempts: 3,
                initial_backoff: Duration::from_millis(initial_ms),
                max_backoff: Duration::from_millis(max_ms),
            },
            client: Err("unused".into()),
            audit: AuditWriter::disabled(),
            counters: Arc::default(),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let w = worker(100, 1000);
        let ms = |n, ra| w.backoff(n, ra).as_millis();
        assert_eq!(ms(1, None), 100);
        assert_eq!(ms(2, None), 200);
        assert_eq!(ms(3, None), 400);
        assert_eq!(ms(4, None), 800);
        assert_eq!(ms(5, None), 1000);
        assert_eq!(ms(200, None), 1000);
        assert_eq!(ms(1, Some(Duration::from_millis(700))), 700);
        assert_eq!(ms(1, Some(Duration::from_secs(3600))), 1000);
    }

    #[test]
    fn retry_after_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().expect("header value"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT"
                .parse()
                .expect("header value"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
