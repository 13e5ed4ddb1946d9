//! Webhook notifications over real HTTP: an axum receiver on 127.0.0.1:0 inside each
//! test, transitions built by hand, attempts read back from a real audit log.
//!
//! Timing: backoffs are tens of milliseconds and checked only as lower bounds (a sleep
//! never ends early); every wait has a generous upper bound, so a busy machine slows the
//! tests down without failing them.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use jitgate::notify::{
    event_name, verify_signature, Notifier, NotifierGuard, NotifierStats, WebhookConfig, EVENTS,
};
use jitgate_audit::{AuditConfig, AuditWriter, Event, EventBody, WriterGuard};
use jitgate_policy::{Action, Decision, Grant, GrantState, Transition};
use jitgate_proxy::settings::Secret;
use uuid::Uuid;

const SECRET: &str = "whsec-test-4f1c9a7e2b8d";
/// A path segment standing for a token embedded in a webhook URL (as chat services do):
/// it must not appear in logs or audit records.
const URL_TOKEN: &str = "tok-9d2e7c41";
/// Upper bound of every wait: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

const ALL_ACTIONS: [Action; 13] = [
    Action::Requested,
    Action::ApprovalRecorded,
    Action::Approved,
    Action::Denied,
    Action::Cancelled,
    Action::Activated,
    Action::ExtensionRequested,
    Action::Extended,
    Action::ExpiringSoon,
    Action::Expired,
    Action::Revoked,
    Action::BreakGlass,
    Action::Reviewed,
];

// ---------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------

/// How the receiver answers one request.
#[derive(Clone, Debug)]
enum Reply {
    Status(u16),
    /// Answer 200 after this long.
    Slow(Duration),
    /// 307 to another path of the same receiver.
    Redirect,
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing"))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn delivery_id(&self) -> Uuid {
        self.header("x-jitgate-delivery").parse().unwrap()
    }

    fn signature_valid(&self, secret: &str) -> bool {
        verify_signature(
            secret.as_bytes(),
            self.header("x-jitgate-timestamp"),
            &self.body,
            self.header("x-jitgate-signature"),
        )
    }
}

#[derive(Default)]
struct ReceiverState {
    /// Replies for the next requests, in order; 200 once empty.
    script: VecDeque<Reply>,
    received: Vec<Received>,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start(script: impl IntoIterator<Item = Reply>) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState {
            script: script.into_iter().collect(),
            received: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/{URL_TOKEN}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "receiver got {} of {n} requests",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut state = state.lock().unwrap();
        state.received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body,
            at: Instant::now(),
        });
        state.script.pop_front().unwrap_or(Reply::Status(200))
    };
    match reply {
        Reply::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            (status, format!("answer {code}")).into_response()
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
        Reply::Redirect => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "/elsewhere")],
        )
            .into_response(),
    }
}

/// A URL where nothing listens: a port that was just bound and released.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hooks/{URL_TOKEN}")
}

// ---------------------------------------------------------------------------------------
// Grants, transitions, webhooks, the audit log
// ---------------------------------------------------------------------------------------

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn grant() -> Grant {
    let created = ts("2026-11-28T09:00:00.123456Z");
    Grant {
        id: Uuid::now_v7(),
        identity: "alice".into(),
        target: "prod".into(),
        role: "app_rw".into(),
        not_before: ts("2026-11-28T09:05:00Z"),
        expires_at: ts("2026-11-28T10:05:00Z"),
        reason: "fix the stuck billing job".into(),
        issued_by: "alice".into(),
        created_at: created,
        state: GrantState::Pending,
        approvals: Vec::new(),
        revoked_by: None,
        revoked_at: None,
        revoke_reason: None,
        rule: Some("prod-write".into()),
        ticket: Some("INC-42".into()),
        duration: SignedDuration::from_hours(1),
        pending_until: Some(ts("2026-11-28T10:00:00Z")),
        denial: None,
        cancellation: None,
        break_glass: false,
        review: None,
        extends: None,
        notified: Vec::new(),
        idempotency_key: Some("idem-key-not-for-receivers".into()),
        version: 1,
    }
}

/// `grant` approved by bob.
fn approved(mut g: Grant) -> Transition {
    let at = ts("2026-11-28T09:05:00Z");
    g.state = GrantState::Approved;
    g.approvals.push(Decision {
        by: "bob".into(),
        at,
        comment: Some("ok for INC-42".into()),
    });
    Transition {
        action: Action::Approved,
        actor: "bob".into(),
        rule: Some("prod-write".into()),
        comment: Some("ok for INC-42".into()),
        from: Some(GrantState::Pending),
        to: GrantState::Approved,
        at,
        grant: g,
        previous_expires_at: None,
    }
}

/// A transition of `action` on a fresh grant, with `comment`.
fn transition(action: Action, comment: &str) -> Transition {
    let mut g = grant();
    let (from, to) = match action {
        Action::Requested | Action::ExtensionRequested => (None, GrantState::Pending),
        Action::ApprovalRecorded => (Some(GrantState::Pending), GrantState::Pending),
        Action::Denied => (Some(GrantState::Pending), GrantState::Denied),
        Action::Cancelled => (Some(GrantState::Pending), GrantState::Cancelled),
        Action::Expired => (Some(GrantState::Approved), GrantState::Expired),
        Action::Revoked => (Some(GrantState::Approved), GrantState::Revoked),
        Action::BreakGlass => (None, GrantState::Approved),
        Action::Approved => (Some(GrantState::Pending), GrantState::Approved),
        _ => (Some(GrantState::Approved), GrantState::Approved),
    };
    g.state = to;
    let mut previous_expires_at = None;
    match action {
        Action::ExtensionRequested => {
            g.extends = Some(Uuid::now_v7());
            previous_expires_at = Some(ts("2026-11-28T10:05:00Z"));
        }
        Action::Extended => {
            previous_expires_at = Some(g.expires_at);
            g.expires_at = ts("2026-11-28T10:35:00Z");
        }
        Action::BreakGlass => g.break_glass = true,
        _ => {}
    }
    Transition {
        action,
        actor: "alice".into(),
        rule: Some("prod-write".into()),
        comment: Some(comment.into()),
        from,
        to,
        at: ts("2026-11-28T09:30:00Z"),
        grant: g,
        previous_expires_at,
    }
}

/// A webhook with tiny backoffs and a generous per-attempt timeout.
fn hook(name: &str, url: String) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url,
        secret: Secret::new(SECRET),
        events: None,
        timeout: Duration::from_secs(10),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    }
}

/// An audit log in a temp dir.
struct Audit {
    _dir: tempfile::TempDir,
    path: PathBuf,
    writer: AuditWriter,
    guard: Option<WriterGuard>,
}

impl Audit {
    fn start() -> Audit {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (writer, guard) = AuditWriter::start(AuditConfig::new(&path)).unwrap();
        Audit {
            _dir: dir,
            path,
            writer,
            guard: Some(guard),
        }
    }

    fn events(&self) -> Vec<Event> {
        jitgate_audit::read_events(&self.path)
            .unwrap()
            .map(|e| e.unwrap())
            .collect()
    }

    /// The `webhook_delivery` records, in log order.
    fn deliveries(&self) -> Vec<Delivery> {
        self.events().into_iter().filter_map(Delivery::of).collect()
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }

    async fn close(mut self) {
        if let Some(guard) = self.guard.take() {
            guard.close().await.unwrap();
        }
    }
}

/// A `webhook_delivery` audit record, flattened for assertions.
#[derive(Clone, Debug)]
struct Delivery {
    grant_id: Option<Uuid>,
    identity: Option<String>,
    target: Option<String>,
    role: Option<String>,
    webhook: String,
    event: String,
    delivery_id: Uuid,
    attempt: u32,
    outcome: String,
    status: Option<u16>,
    error: Option<String>,
}

impl Delivery {
    fn of(e: Event) -> Option<Delivery> {
        assert_eq!(e.kind(), e.body.kind());
        match e.body {
            EventBody::WebhookDelivery {
                webhook,
                event,
                delivery_id,
                attempt,
                outcome,
                status,
                error,
            } => Some(Delivery {
                grant_id: e.grant_id,
                identity: e.identity,
                target: e.target,
                role: e.role,
                webhook,
                event,
                delivery_id,
                attempt,
                outcome,
                status,
                error,
            }),
            _ => None,
        }
    }

    fn summary(&self) -> (u32, &str, Option<u16>) {
        (self.attempt, self.outcome.as_str(), self.status)
    }
}

/// Closes the notifier with a generous deadline and checks it did not need it.
async fn close(guard: NotifierGuard) {
    let started = Instant::now();
    guard.close(PATIENCE).await;
    assert!(
        started.elapsed() < PATIENCE,
        "close waited for its deadline"
    );
}

fn stats(delivered: u64, failed: u64, dropped: u64) -> NotifierStats {
    NotifierStats {
        delivered,
        failed,
        dropped,
        pending: 0,
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn delivery_is_signed_json_with_the_documented_headers() {
    let receiver = Receiver::start([]).await;
    let audit = Audit::start();
    let (notifier, guard) =
        Notifier::start(vec![hook("ops", receiver.url())], audit.writer.clone());
    let t = approved(grant());
    let before = Timestamp::now().as_second();
    notifier.notify(&t);
    let got = receiver.wait_for(1).await;
    let after = Timestamp::now().as_second();
    close(guard).await;

    let r = &got[0];
    assert_eq!(r.path, format!("/hooks/{URL_TOKEN}"));
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.header("user-agent"),
        format!("jitgate/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.header("x-jitgate-event"), "request.approved");
    let id = r.delivery_id();
    assert_eq!(id.get_version_num(), 7, "delivery ids are uuid v7");
    let sent_at: i64 = r.header("x-jitgate-timestamp").parse().unwrap();
    assert!(
        (before..=after).contains(&sent_at),
        "timestamp is unix seconds of the attempt"
    );
    let signature = r.header("x-jitgate-signature");
    assert!(signature.starts_with("sha256="));
    let hex = &signature["sha256=".len()..];
    assert_eq!(hex.len(), 64);
    assert!(hex
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));

    // The receiver's check, and what it must refuse.
    assert!(r.signature_valid(SECRET));
    let timestamp = r.header("x-jitgate-timestamp");
    let mut tampered = r.body.to_vec();
    let pos = tampered.iter().position(|&b| b == b'b').unwrap(); // "bob" → "cob"
    tampered[pos] = b'c';
    assert!(!verify_signature(
        SECRET.as_bytes(),
        timestamp,
        &tampered,
        signature
    ));
    let later = (sent_at + 1).to_string();
    assert!(!verify_signature(
        SECRET.as_bytes(),
        &later,
        &r.body,
        signature
    ));
    assert!(!r.signature_valid("another-secret"));

    // The body.
    let v = r.json();
    assert_eq!(v["id"], id.to_string());
    assert_eq!(v["event"], "request.approved");
    assert_eq!(v["kind"], "access");
    assert_eq!(v["occurred_at"].as_str().map(ts), Some(t.at));
    assert_eq!(v["actor"], "bob");
    assert_eq!(v["rule"], "prod-write");
    assert_eq!(v["comment"], "ok for INC-42");
    assert_eq!(v["from"], "pending");
    assert_eq!(v["to"], "approved");
    let g = &v["grant"];
    assert_eq!(g["id"], t.grant.id.to_string());
    assert_eq!(g["identity"], "alice");
    assert_eq!(g["target"], "prod");
    assert_eq!(g["role"], "app_rw");
    assert_eq!(g["not_before"].as_str().map(ts), Some(t.grant.not_before));
    assert_eq!(g["expires_at"].as_str().map(ts), Some(t.grant.expires_at));
    assert_eq!(g["state"], "approved");
    assert_eq!(g["reason"], "fix the stuck billing job");
    assert_eq!(g["ticket"], "INC-42");
    assert_eq!(g["break_glass"], false);
    assert_eq!(g["extends"], serde_json::Value::Null);
    assert_eq!(g["previous_expires_at"], serde_json::Value::Null);
    assert_eq!(g["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(g["approvals"][0]["by"], "bob");
    assert_eq!(g["approvals"][0]["comment"], "ok for INC-42");
    assert_eq!(
        g["approvals"][0]["at"].as_str().map(ts),
        Some(t.grant.approvals[0].at)
    );
    let top: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        top,
        BTreeSet::from([
            "id",
            "event",
            "kind",
            "occurred_at",
            "actor",
            "rule",
            "comment",
            "from",
            "to",
            "grant"
        ])
    );

    // The attempt in the audit log, with the grant's context.
    let records = audit.deliveries();
    assert_eq!(records.len(), 1, "{records:?}");
    let d = &records[0];
    assert_eq!(d.summary(), (1, "delivered", Some(200)));
    assert_eq!(d.error, None);
    assert_eq!(d.webhook, "ops");
    assert_eq!(d.event, "request.approved");
    assert_eq!(d.delivery_id, id);
    assert_eq!(d.grant_id, Some(t.grant.id));
    assert_eq!(d.identity.as_deref(), Some("alice"));
    assert_eq!(d.target.as_deref(), Some("prod"));
    assert_eq!(d.role.as_deref(), Some("app_rw"));
    let event = audit
        .events()
        .into_iter()
        .find(|e| e.kind() == "webhook_delivery")
        .unwrap();
    let line = jitgate_audit::format_event_line(&event);
    assert!(
        line.contains(&format!(
            "webhook_delivery [identity=alice target=prod role=app_rw grant={}] \
             request.approved to ops delivery={id} attempt=1 delivered status=200",
            t.grant.id
        )),
        "{line}"
    );
    assert_eq!(notifier.stats(), stats(1, 0, 0));
    audit.close().await;
}

#[tokio::test]
async fn every_action_has_its_event_and_no_secret_leaves() {
    let receiver = Receiver::start([]).await;
    let audit = Audit::start();
    let (notifier, guard) =
        Notifier::start(vec![hook("all", receiver.url())], audit.writer.clone());
    for (i, action) in ALL_ACTIONS.into_iter().enumerate() {
        notifier.notify(&transition(action, &format!("step {i}")));
    }
    close(guard).await;
    let got = receiver.received();
    assert_eq!(got.len(), ALL_ACTIONS.len());

    let mut names = BTreeSet::new();
    for (r, action) in got.iter().zip(ALL_ACTIONS) {
        let v = r.json();
        assert_eq!(v["event"], event_name(action));
        assert_eq!(r.header("x-jitgate-event"), event_name(action));
        let kind = if action == Action::ExtensionRequested {
            "extension"
        } else {
            "access"
        };
        assert_eq!(v["kind"], kind, "{action}");
        assert!(r.signature_valid(SECRET));
        names.insert(event_name(action));

        // Nothing secret in the body or any header but the signature.
        let body = String::from_utf8(r.body.to_vec()).unwrap();
        for secret in [SECRET, "idem-key-not-for-receivers"] {
            assert!(!body.contains(secret), "{action}: {body}");
            for (name, value) in &r.headers {
                assert!(
                    !value.to_str().unwrap().contains(secret),
                    "{action}: header {name}"
                );
            }
        }
    }
    let events: BTreeSet<&str> = EVENTS.iter().copied().collect();
    assert_eq!(names, events, "EVENTS lists exactly the names sent");

    let extended = got[7].json();
    assert_eq!(extended["event"], "grant.extended");
    assert_eq!(
        extended["grant"]["previous_expires_at"].as_str().map(ts),
        Some(ts("2026-11-28T10:05:00Z"))
    );
    assert_eq!(got[11].json()["grant"]["break_glass"], true);
    assert_eq!(got[11].json()["event"], "break_glass.used");

    // The audit log names the webhook, never its URL (the token) or its secret.
    let text = audit.text();
    assert_eq!(audit.deliveries().len(), ALL_ACTIONS.len());
    assert!(!text.contains(SECRET));
    assert!(!text.contains(URL_TOKEN));
    assert_eq!(notifier.stats(), stats(13, 0, 0));
    audit.close().await;
}

#[tokio::test]
async fn each_webhook_gets_only_the_events_it_subscribed_to() {
    let everything = Receiver::start([]).await;
    let revocations = Receiver::start([]).await;
    let audit = Audit::start();
    let mut only_revoked = hook("security", revocations.url());
    only_revoked.events = Some(BTreeSet::from([
        "grant.revoked".to_owned(),
        "break_glass.used".to_owned(),
    ]));
    let (notifier, guard) = Notifier::start(
        vec![hook("chat", everything.url()), only_revoked],
        audit.writer.clone(),
    );
    for action in [
        Action::Requested,
        Action::Revoked,
        Action::Approved,
        Action::BreakGlass,
    ] {
        notifier.notify(&transition(action, "x"));
    }
    close(guard).await;

    let names = |r: &Receiver| -> Vec<String> {
        r.received()
            .iter()
            .map(|r| r.header("x-jitgate-event").to_owned())
            .collect()
    };
    assert_eq!(
        names(&everything),
        [
            "request.created",
            "grant.revoked",
            "request.approved",
            "break_glass.used"
        ]
    );
    assert_eq!(names(&revocations), ["grant.revoked", "break_glass.used"]);

    let records = audit.deliveries();
    let by = |name: &str| records.iter().filter(|d| d.webhook == name).count();
    assert_eq!((by("chat"), by("security")), (4, 2));
    // One delivery id per notification and webhook.
    let ids: BTreeSet<Uuid> = records.iter().map(|d| d.delivery_id).collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(notifier.stats(), stats(6, 0, 0));
    audit.close().await;
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_under_one_delivery_id() {
    let receiver = Receiver::start([Reply::Status(500), Reply::Status(500)]).await;
    let audit = Audit::start();
    let mut config = hook("ops", receiver.url());
    config.initial_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_secs(1);
    config.max_attempts = 5;
    let (notifier, guard) = Notifier::start(vec![config], audit.writer.clone());
    let t = transition(Action::Revoked, "leaving the company");
    notifier.notify(&t);
    close(guard).await;

    let got = receiver.received();
    assert_eq!(got.len(), 3, "two 500s, then delivered");
    let id = got[0].delivery_id();
    for r in &got {
        assert_eq!(r.delivery_id(), id, "retries keep the delivery id");
        assert_eq!(r.body, got[0].body, "retries send the same body");
        assert!(
            r.signature_valid(SECRET),
            "each attempt signed with its timestamp"
        );
    }
    // Backoff: 50 ms, then 100 ms (lower bounds; sleeps never end early).
    assert!(got[1].at - got[0].at >= Duration::from_millis(50));
    assert!(got[2].at - got[1].at >= Duration::from_millis(100));

    let records = audit.deliveries();
    let summary: Vec<_> = records.iter().map(Delivery::summary).collect();
    assert_eq!(
        summary,
        [
            (1, "retrying", Some(500)),
            (2, "retrying", Some(500)),
            (3, "delivered", Some(200)),
        ]
    );
    assert!(records.iter().all(|d| d.delivery_id == id));
    assert!(records.iter().all(|d| d.grant_id == Some(t.grant.id)));
    let error = records[0].error.as_deref().unwrap();
    assert!(error.contains("500"), "{error}");
    assert!(
        error.contains("answer 500"),
        "the receiver's text is kept: {error}"
    );
    assert_eq!(notifier.stats(), stats(1, 0, 0));
    audit.close().await;
}

#[tokio::test]
async fn request_timeout_and_rate_limit_answers_are_retried() {
    let receiver =
        Receiver::start([Reply::Status(408), Reply::Status(429), Reply::Status(503)]).await;
    let audit = Audit::start();
    let mut config = hook("ops", receiver.url());
    config.max_attempts = 4;
    let (notifier, guard) = Notifier::start(vec![config], audit.writer.clone());
    notifier.notify(&transition(Action::Expired, "x"));
    close(guard).await;
    let records = audit.deliveries();
    let summary: Vec<_> = records.iter().map(Delivery::summary).collect();
    assert_eq!(
        summary,
        [
            (1, "retrying", Some(408)),
            (2, "retrying", Some(429)),
            (3, "retrying", Some(503)),
            (4, "delivered", Some(200)),
        ]
    );
    assert_eq!(notifier.stats(), stats(1, 0, 0));
    audit.close().await;
}

#[tokio::test]
async fn a_client_error_fails_at_once() {
    let receiver = Receiver::start([Reply::Status(400)]).await;
    let audit = Audit::start();
    let (notifier, guard) =
        Notifier::start(vec![hook("ops", receiver.url())], audit.writer.clone());
    notifier.notify(&transition(Action::Denied, "no ticket"));
    close(guard).await;

    assert_eq!(receiver.received().len(), 1, "a 400 is not retried");
    let records = audit.deliveries();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].summary(), (1, "failed", Some(400)));
    let error = records[0].error.as_deref().unwrap();
    assert!(error.contains("rejected"), "{error}");
    assert_eq!(notifier.stats(), stats(0, 1, 0));
    audit.close().await;
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let receiver = Receiver::start([Reply::Redirect]).await;
    let audit = Audit::start();
    let (notifier, guard) =
        Notifier::start(vec![hook("ops", receiver.url())], audit.writer.clone());
    notifier.notify(&transition(Action::Requested, "x"));
    close(guard).await;

    let got = receiver.received();
    assert_eq!(got.len(), 1, "the signed body went nowhere else: {got:?}");
    let records = audit.deliveries();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].summary(), (1, "failed", Some(307)));
    assert!(records[0].error.as_deref().unwrap().contains("redirect"));
    assert_eq!(notifier.stats(), stats(0, 1, 0));
    audit.close().await;
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_every_attempt_recorded() {
    let audit = Audit::start();
    let mut config = hook("down", closed_port_url());
    config.max_attempts = 4;
    let (notifier, guard) = Notifier::start(vec![config], audit.writer.clone());
    let t = transition(Action::Activated, "x");
    notifier.notify(&t);
    close(guard).await;

    let records = audit.deliveries();
    let summary: Vec<_> = records.iter().map(Delivery::summary).collect();
    assert_eq!(
        summary,
        [
            (1, "retrying", None),
            (2, "retrying", None),
            (3, "retrying", None),
            (4, "failed", None),
        ]
    );
    for d in &records {
        let error = d.error.as_deref().unwrap();
        assert!(error.contains("connect"), "{error}");
        assert!(!error.contains(URL_TOKEN), "no URL in the error: {error}");
        assert_eq!(d.event, "grant.activated");
        assert_eq!(d.delivery_id, records[0].delivery_id);
    }
    assert_eq!(notifier.stats(), stats(0, 1, 0));
    audit.close().await;
}

#[tokio::test]
async fn a_slow_receiver_is_retried_after_the_attempt_timeout() {
    let receiver = Receiver::start([Reply::Slow(Duration::from_secs(20))]).await;
    let audit = Audit::start();
    let mut config = hook("slow", receiver.url());
    config.timeout = Duration::from_secs(2);
    let (notifier, guard) = Notifier::start(vec![config], audit.writer.clone());
    notifier.notify(&transition(Action::ExpiringSoon, "x"));
    close(guard).await;

    let records = audit.deliveries();
    let summary: Vec<_> = records.iter().map(Delivery::summary).collect();
    assert_eq!(
        summary,
        [(1, "retrying", None), (2, "delivered", Some(200))]
    );
    let error = records[0].error.as_deref().unwrap();
    assert!(error.contains("no answer within 2s"), "{error}");
    assert_eq!(notifier.stats(), stats(1, 0, 0));
    audit.close().await;
}

#[tokio::test]
async fn notifications_arrive_in_order_even_across_retries() {
    // The first delivery needs a retry; the ones queued behind it must wait for it.
    let receiver = Receiver::start([Reply::Status(503)]).await;
    let audit = Audit::start();
    let (notifier, guard) =
        Notifier::start(vec![hook("ops", receiver.url())], audit.writer.clone());
    const N: usize = 25;
    for i in 0..N {
        notifier.notify(&transition(Action::ApprovalRecorded, &format!("n={i}")));
    }
    close(guard).await;

    let got = receiver.received();
    assert_eq!(got.len(), N + 1);
    let mut comments: Vec<String> = got
        .iter()
        .map(|r| r.json()["comment"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(comments[0], comments[1], "the retry came first");
    comments.remove(0);
    let expected: Vec<String> = (0..N).map(|i| format!("n={i}")).collect();
    assert_eq!(comments, expected);

    let delivered: Vec<Uuid> = audit
        .deliveries()
        .iter()
        .filter(|d| d.outcome == "delivered")
        .map(|d| d.delivery_id)
        .collect();
    let sent: Vec<Uuid> = got[1..].iter().map(Received::delivery_id).collect();
    assert_eq!(delivered, sent, "audit records follow the same order");
    assert_eq!(notifier.stats(), stats(N as u64, 0, 0));
    audit.close().await;
}

#[tokio::test]
async fn close_sends_what_is_queued() {
    let receiver = Receiver::start((0..5).map(|_| Reply::Slow(Duration::from_millis(100)))).await;
    let audit = Audit::start();
    let (notifier, guard) =
        Notifier::start(vec![hook("ops", receiver.url())], audit.writer.clone());
    for i in 0..5 {
        notifier.notify(&transition(Action::Expired, &format!("n={i}")));
    }
    let queued = notifier.stats();
    assert_eq!(queued.pending, 5, "{queued:?}");
    close(guard).await;

    assert_eq!(receiver.received().len(), 5, "close waited for all of them");
    assert_eq!(notifier.stats(), stats(5, 0, 0));
    assert_eq!(audit.deliveries().len(), 5);

    // After close, notifications are dropped and counted, not queued.
    notifier.notify(&transition(Action::Expired, "late"));
    assert_eq!(notifier.stats(), stats(5, 0, 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.received().len(), 5);
    audit.close().await;
}

#[tokio::test]
async fn close_gives_up_at_its_deadline() {
    let receiver = Receiver::start([Reply::Slow(Duration::from_secs(60))]).await;
    let audit = Audit::start();
    let mut config = hook("stuck", receiver.url());
    config.timeout = Duration::from_secs(60);
    let (notifier, guard) = Notifier::start(vec![config], audit.writer.clone());
    for _ in 0..3 {
        notifier.notify(&transition(Action::Revoked, "x"));
    }
    receiver.wait_for(1).await;
    let started = Instant::now();
    guard.close(Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(20),
        "close returned soon after its deadline: {took:?}"
    );
    assert_eq!(
        notifier.stats(),
        stats(0, 0, 3),
        "the one in flight and the two queued are dropped"
    );
    assert_eq!(receiver.received().len(), 1);
    audit.close().await;
}

#[tokio::test]
async fn an_unwritable_audit_log_does_not_stop_deliveries() {
    let receiver = Receiver::start([]).await;
    let mut audit = Audit::start();
    // A closed writer refuses every event.
    audit.guard.take().unwrap().close().await.unwrap();
    let (notifier, guard) =
        Notifier::start(vec![hook("ops", receiver.url())], audit.writer.clone());
    notifier.notify(&transition(Action::Revoked, "x"));
    close(guard).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(notifier.stats(), stats(1, 0, 0));
    assert!(audit.deliveries().is_empty());
}

#[tokio::test]
async fn a_disabled_notifier_does_nothing() {
    let notifier = Notifier::disabled();
    notifier.notify(&transition(Action::Revoked, "x"));
    assert_eq!(notifier.stats(), NotifierStats::default());
}

#[test]
fn config_validation_names_the_field() {
    let ok = hook("ops", "https://hooks.example.com/x".into());
    assert_eq!(ok.validate(), Ok(()));
    let with = |f: fn(&mut WebhookConfig)| {
        let mut c = ok.clone();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert!(with(|c| c.url = "ftp://example.com/".into()).starts_with("url:"));
    assert!(with(|c| c.url = "not a url".into()).starts_with("url:"));
    assert!(with(|c| c.name = " ".into()).starts_with("name:"));
    assert!(with(|c| c.secret = Secret::new("")).starts_with("secret:"));
    assert!(with(|c| c.max_attempts = 0).starts_with("max_attempts:"));
    assert!(with(|c| c.timeout = Duration::ZERO).starts_with("timeout:"));
    let unknown = with(|c| c.events = Some(BTreeSet::from(["grant.exploded".to_owned()])));
    assert!(unknown.starts_with("events:") && unknown.contains("grant.exploded"));
    // Debug shows neither the secret nor the URL's path.
    let debug = format!(
        "{:?}",
        hook("ops", format!("https://h.example.com/{URL_TOKEN}"))
    );
    assert!(
        !debug.contains(SECRET) && !debug.contains(URL_TOKEN),
        "{debug}"
    );
}

#[tokio::test]
async fn https_urls_go_through_tls() {
    // A plain-HTTP receiver behind an https:// URL: the TLS handshake must fail (proving
    // the client speaks TLS), never fall back to plaintext.
    let receiver = Receiver::start([]).await;
    let audit = Audit::start();
    let mut config = hook(
        "tls",
        format!("https://{}/hooks/{URL_TOKEN}", receiver.addr),
    );
    config.max_attempts = 1;
    let (notifier, guard) = Notifier::start(vec![config], audit.writer.clone());
    notifier.notify(&transition(Action::Revoked, "x"));
    close(guard).await;
    let records = audit.deliveries();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].summary(), (1, "failed", None));
    let error = records[0].error.as_deref().unwrap();
    assert!(error.starts_with("could not connect"), "{error}");
    assert!(
        receiver.received().is_empty(),
        "no plaintext request was made"
    );
    assert_eq!(notifier.stats(), stats(0, 1, 0));
    audit.close().await;
}
