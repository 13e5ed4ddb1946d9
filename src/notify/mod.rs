//! Webhook notifications of the grant lifecycle: every [`Transition`] the policy engine
//! reports becomes a signed JSON `POST` to each webhook subscribed to its event.
//!
//! [`Notifier::notify`] never blocks and never fails its caller: it queues one delivery
//! per subscribed webhook (a bounded queue per webhook; when full the notification is
//! dropped, logged as an error and counted in [`NotifierStats::dropped`]). One worker
//! task per webhook sends its deliveries in order, retrying with exponential backoff,
//! and records every attempt as a `webhook_delivery` audit event. [`NotifierGuard::close`]
//! lets queued deliveries finish, up to a deadline, at shutdown.
//!
//! # Layout
//! - `events`: [`EVENTS`] and [`event_name`], the names receivers see.
//! - `payload`: the JSON body.
//! - `sign`: the HMAC signature, and [`verify_signature`] for receivers.
//! - `deliver`: a webhook's worker — attempts, retries, backoff, audit records.
//! - `stats`: the counters behind [`NotifierStats`].
//!
//! # Events
//!
//! | event | sent when |
//! |---|---|
//! | `request.created` | access was requested (`kind: "access"`) or an extension of a grant was requested (`kind: "extension"`) |
//! | `request.approval_recorded` | one approver approved; more approvals are needed |
//! | `request.approved` | the request has every approval it needs, or was auto-approved |
//! | `request.denied` | an approver turned the request down |
//! | `request.cancelled` | the requester (or an administrator) withdrew it |
//! | `grant.activated` | the grant's window started: sessions may connect |
//! | `grant.extended` | the grant's `expires_at` moved later (`previous_expires_at` has the old end) |
//! | `grant.expiring_soon` | the configured lead time before `expires_at` was reached |
//! | `grant.expired` | the window ended, or a pending request lapsed undecided |
//! | `grant.revoked` | the grant was withdrawn; its live sessions were dropped |
//! | `break_glass.used` | break-glass access was taken (approved at once, to be reviewed) |
//! | `grant.reviewed` | a reviewer looked at a break-glass grant |
//!
//! # Request
//!
//! `POST <url>` with these headers:
//!
//! | header | value |
//! |---|---|
//! | `Content-Type` | `application/json` |
//! | `User-Agent` | `jitgate/<version>` |
//! | `X-Jitgate-Event` | the event name, as in the body |
//! | `X-Jitgate-Delivery` | the delivery id, as the body's `id`; the same on every retry, so receivers can drop duplicates |
//! | `X-Jitgate-Timestamp` | when this attempt was sent, in Unix seconds |
//! | `X-Jitgate-Signature` | `sha256=` and the lowercase hex HMAC-SHA256, keyed with the webhook's secret, of `<X-Jitgate-Timestamp>.<body>` |
//!
//! The body (compact JSON; shown formatted). Every key is always present, `null` when it
//! has no value; keys may be added in later versions, never renamed or repurposed:
//!
//! ```json
//! {
//!   "id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
//!   "event": "request.approved",
//!   "kind": "access",
//!   "occurred_at": "2026-11-28T09:05:12.345678Z",
//!   "actor": "bob",
//!   "rule": "prod-write",
//!   "comment": "ok for INC-42",
//!   "from": "pending",
//!   "to": "approved",
//!   "grant": {
//!     "id": "0193a2b4-0000-7000-8000-000000000001",
//!     "identity": "alice",
//!     "target": "prod",
//!     "role": "app_rw",
//!     "not_before": "2026-11-28T09:05:12.345678Z",
//!     "expires_at": "2026-11-28T10:05:12.345678Z",
//!     "state": "approved",
//!     "reason": "fix the stuck billing job",
//!     "ticket": "INC-42",
//!     "break_glass": false,
//!     "extends": null,
//!     "approvals": [{ "by": "bob", "at": "2026-11-28T09:05:12.345678Z", "comment": "ok for INC-42" }],
//!     "previous_expires_at": null
//!   }
//! }
//! ```
//!
//! - `id`: the delivery id (uuid v7). `event`: as above. `kind`: `extension` when the
//!   record is an extension request, else `access`.
//! - `occurred_at`: when the step happened (RFC 3339, UTC), not when it was sent.
//! - `actor`: an identity, an administrator, `policy:<rule>` for automatic approvals, or
//!   `jitgate` for time-based steps. `rule`: the policy rule involved. `comment`: the
//!   actor's reason or comment. `from` / `to`: the state before (`null` when the step
//!   created the record) and after — `pending`, `approved`, `denied`, `cancelled`,
//!   `revoked` or `expired`.
//! - `grant`: the grant or request after the step. `extends`: for an extension request,
//!   the grant it extends. `previous_expires_at`: for `grant.extended` (and an extension's
//!   `request.created`), the end of the window before the extension.
//!
//! Nothing secret is sent: no webhook secret, no credentials, no SQL.
//!
//! # Verifying a delivery (receivers)
//!
//! 1. Take `X-Jitgate-Timestamp` and reject the request if it is more than five minutes
//!    from your clock (a captured request cannot be replayed later).
//! 2. Compute HMAC-SHA256 with the shared secret over the timestamp header's exact
//!    value, a `.`, and the raw body bytes as received (before any JSON parsing).
//! 3. Compare `sha256=<lowercase hex>` with `X-Jitgate-Signature` in constant time;
//!    reject on mismatch.
//! 4. Drop duplicates by `X-Jitgate-Delivery` (a retry after a lost response repeats it).
//! 5. Answer 2xx quickly. 4xx (other than 408 and 429) tells jitgate not to retry.
//!
//! In Rust, [`verify_signature`] does steps 2–3. In Python:
//!
//! ```python
//! import hashlib, hmac, time
//!
//! def verify(secret: bytes, headers, body: bytes) -> bool:
//!     ts = headers["X-Jitgate-Timestamp"]
//!     if abs(time.time() - int(ts)) > 300:
//!         return False
//!     mac = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
//!     return hmac.compare_digest("sha256=" + mac, headers["X-Jitgate-Signature"])
//! ```
//!
//! # Delivery
//!
//! - 2xx: delivered. 5xx, 408, 429, timeouts and connection errors: retried after
//!   `initial_backoff`, doubled each time up to `max_backoff` (a longer `Retry-After` in
//!   seconds is honoured within that cap), until `max_attempts`. Other 4xx: failed at
//!   once. Redirects are not followed: failed.
//! - Every attempt is an audit event `webhook_delivery` (webhook name, event, delivery
//!   id, attempt number, `outcome` = `delivered` | `retrying` | `failed`, HTTP status,
//!   error text) with the grant's id, identity, target and role. If the audit log cannot
//!   be written the error is logged and delivery goes on.
//! - Deliveries to one webhook are sent one at a time, in the order of `notify` calls.
//! - The webhook's URL is never logged or recorded (it may carry a token): its `name`
//!   is. Neither is the secret.

mod deliver;
mod events;
mod payload;
mod sign;
mod stats;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jitgate_audit::AuditWriter;
use jitgate_policy::Transition;
use jitgate_proxy::settings::Secret;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use events::{event_name, EVENTS};
pub use sign::verify_signature;
pub use stats::NotifierStats;

use deliver::{Hook, Job, Shutdown, Worker};
use stats::{Counters, End};

/// Deliveries that may wait per webhook; more are dropped (and counted) rather than
/// holding up the caller or growing without bound while a receiver is down.
pub const QUEUE_CAPACITY: usize = 1024;

/// How long establishing a connection may take, whatever the webhook's `timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `User-Agent` of every delivery.
const USER_AGENT: &str = concat!("jitgate/", env!("CARGO_PKG_VERSION"));

/// One webhook receiver.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Names the webhook in logs and audit records (the URL never appears there).
    pub name: String,
    /// Where deliveries are POSTed: `http://` or `https://`.
    pub url: String,
    /// HMAC key of the signature header; shared with the receiver, never logged.
    pub secret: Secret,
    /// The events this webhook receives (names from [`EVENTS`]); `None`: every event.
    pub events: Option<BTreeSet<String>>,
    /// Limit of one attempt, from connecting to the end of the response.
    pub timeout: Duration,
    /// Attempts per delivery, at least 1.
    pub max_attempts: u32,
    /// Pause after the first failed attempt; doubled after each further one.
    pub initial_backoff: Duration,
    /// Longest pause between attempts.
    pub max_backoff: Duration,
}

impl WebhookConfig {
    /// Default `timeout`: receivers should answer fast and do their work afterwards.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `max_attempts`: with the default backoff, about 5 minutes of retries.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
    /// Default `initial_backoff`.
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
    /// Default `max_backoff`.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(120);

    /// A webhook for every event with the defaults above.
    pub fn new(name: impl Into<String>, url: impl Into<String>, secret: Secret) -> Self {
        WebhookConfig {
            name: name.into(),
            url: url.into(),
            secret,
            events: None,
            timeout: Self::DEFAULT_TIMEOUT,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
        }
    }

    /// Checks the settings; the error names the field and says what is wrong (never
    /// showing the URL or the secret).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name: must not be empty".to_owned());
        }
        parse_url(&self.url).map_err(|why| format!("url: {why}"))?;
        if self.secret.expose().is_empty() {
            return Err("secret: must not be empty".to_owned());
        }
        if let Some(events) = &self.events {
            if let Some(unknown) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return Err(format!(
                    "events: unknown event {unknown:?}; expected some of {}",
                    EVENTS.join(", ")
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be more than 0".to_owned());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts: must be at least 1".to_owned());
        }
        if self.initial_backoff > self.max_backoff {
            return Err("initial_backoff: must not be longer than max_backoff".to_owned());
        }
        Ok(())
    }
}

impl fmt::Debug for WebhookConfig {
    /// Shows the URL's origin only (a path or query may carry a token) and no secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = parse_url(&self.url)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_else(|_| "<invalid>".to_owned());
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &format_args!("{origin}/…"))
            .field("secret", &self.secret)
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// Parses a webhook URL: absolute, `http` or `https`, with a host. The error does not
/// repeat the URL.
fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {:?} not supported; use http:// or https://",
            parsed.scheme()
        ));
    }
    match parsed.host_str() {
        Some(host) if !host.is_empty() => {}
        _ => return Err("has no host".to_owned()),
    }
    Ok(parsed)
}

/// Hands lifecycle transitions to the webhook workers. Cheap to clone; every clone
/// feeds the same queues.
#[derive(Clone, Debug)]
pub struct Notifier {
    /// `None`: [`Notifier::disabled`].
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    queues: Vec<Queue>,
    counters: Arc<Counters>,
    /// Cancelled by [`NotifierGuard::close`]: no new deliveries are taken.
    closing: CancellationToken,
}

/// The sending end of one webhook's queue, and what decides what goes into it.
#[derive(Debug)]
struct Queue {
    name: String,
    events: Option<BTreeSet<String>>,
    tx: mpsc::Sender<Job>,
}

impl Notifier {
    /// Starts one worker task per webhook, sharing one HTTP client (rustls, no
    /// redirects, [`CONNECT_TIMEOUT`]). A webhook whose settings fail
    /// [`WebhookConfig::validate`] is started anyway, after an error log: its
    /// deliveries fail, visibly, in the audit log (check settings at config load).
    ///
    /// # Panics
    /// When called outside a tokio runtime (the workers are tokio tasks).
    pub fn start(hooks: Vec<WebhookConfig>, audit: AuditWriter) -> (Notifier, NotifierGuard) {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| e.to_string());
        if let Err(why) = &client {
            tracing::error!(error = %why, "webhook HTTP client could not be built; every delivery will fail");
        }
        let counters = Arc::new(Counters::default());
        let shutdown = Shutdown {
            drain: CancellationToken::new(),
            stop: CancellationToken::new(),
        };
        let tracker = TaskTracker::new();
        let mut queues = Vec::with_capacity(hooks.len());
        for config in hooks {
            if let Err(why) = config.validate() {
                tracing::error!(webhook = %config.name, "webhook misconfigured: {why}");
            }
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            let worker = Worker {
                hook: Hook {
                    name: config.name.clone(),
                    url: parse_url(&config.url),
                    secret: config.secret,
                    timeout: config.timeout,
                    max_attempts: config.max_attempts.max(1),
                    initial_backoff: config.initial_backoff,
                    max_backoff: config.max_backoff,
                },
                client: client.clone(),
                audit: audit.clone(),
                counters: Arc::clone(&counters),
            };
            tracker.spawn(worker.run(rx, shutdown.clone()));
            queues.push(Queue {
                name: config.name,
                events: config.events,
                tx,
            });
        }
        tracker.close();
        let notifier = Notifier {
            inner: Some(Arc::new(Inner {
                queues,
                counters: Arc::clone(&counters),
                closing: shutdown.drain.clone(),
            })),
        };
        let guard = NotifierGuard {
            shutdown,
            tracker,
            counters,
        };
        (notifier, guard)
    }

    /// A notifier without webhooks: `notify` does nothing.
    pub fn disabled() -> Notifier {
        Notifier { inner: None }
    }

    /// Queues `t` for every webhook subscribed to its event. Never blocks and never
    /// fails: a notification that cannot be queued (queue full, notifier closed) is
    /// logged as an error and counted as dropped.
    pub fn notify(&self, t: &Transition) {
        let Some(inner) = &self.inner else {
            return;
        };
        let event = event_name(t.action);
        for queue in &inner.queues {
            if !events::wants(queue.events.as_ref(), event) {
                continue;
            }
            let delivery_id = Uuid::now_v7();
            inner.counters.queued();
            let why = if inner.closing.is_cancelled() {
                "the notifier is shutting down".to_owned()
            } else {
                match payload::Payload::new(delivery_id, t).to_body() {
                    Err(e) => format!("the payload could not be built: {e}"),
                    Ok(body) => {
                        let job = Job {
                            delivery_id,
                            event,
                            body,
                            grant_id: t.grant.id,
                            identity: t.grant.identity.clone(),
                            target: t.grant.target.clone(),
                            role: t.grant.role.clone(),
                        };
                        match queue.tx.try_send(job) {
                            Ok(()) => continue,
                            Err(TrySendError::Full(_)) => {
                                format!("its queue is full ({QUEUE_CAPACITY} deliveries waiting)")
                            }
                            Err(TrySendError::Closed(_)) => "its worker has stopped".to_owned(),
                        }
                    }
                }
            };
            inner.counters.finished(End::Dropped);
            tracing::error!(
                webhook = %queue.name,
                event,
                delivery_id = %delivery_id,
                grant_id = %t.grant.id,
                "webhook notification dropped: {why}"
            );
        }
    }

    /// Delivery counters since start, over all webhooks (zeros when disabled).
    pub fn stats(&self) -> NotifierStats {
        self.inner
            .as_ref()
            .map(|inner| inner.counters.snapshot())
            .unwrap_or_default()
    }
}

/// Owner of the webhook workers. Call [`NotifierGuard::close`] at shutdown; dropping
/// the guard stops the workers at once, abandoning what is queued.
#[derive(Debug)]
pub struct NotifierGuard {
    shutdown: Shutdown,
    tracker: TaskTracker,
    counters: Arc<Counters>,
}

impl NotifierGuard {
    /// Stops taking notifications, lets the workers send what is queued (retries
    /// included) for up to `deadline`, then stops them; deliveries still unfinished are
    /// logged and counted as dropped. Call it before closing the audit writer, so the
    /// last attempts are recorded.
    pub async fn close(self, deadline: Duration) {
        self.shutdown.drain.cancel();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = self.counters.snapshot().pending,
                deadline = %humantime::format_duration(deadline),
                "webhook deliveries still pending at the shutdown deadline; abandoning them"
            );
            self.shutdown.stop.cancel();
            self.tracker.wait().await;
        }
    }
}

impl Drop for NotifierGuard {
    fn drop(&mut self) {
        self.shutdown.drain.cancel();
        self.shutdown.stop.cancel();
    }
}
