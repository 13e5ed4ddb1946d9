//! The admin API's JSON bodies, shared by the server and [`super::AdminClient`] so the two
//! cannot drift apart.

use jiff::Timestamp;
use jitgate_policy::{Grant, GrantState};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `POST /v1/grants` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    pub identity: String,
    pub target: String,
    pub role: String,
    /// How long the grant lasts from `not_before` (or from now): humantime, e.g. `30m`.
    pub duration: String,
    /// Why access is needed (ticket, incident); kept in the grant and the audit log.
    pub reason: String,
    /// Start of validity (RFC 3339); default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Who issues it; default `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
}

/// `POST /v1/grants/{id}/revoke` body (every field optional; an empty body is fine).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who revokes it; default `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

/// `GET /v1/grants` query parameters; absent ones match everything.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Effective state (an approved grant past its expiry counts as `expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<GrantState>,
    /// `true`: only grants that admit sessions right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// A grant as the API shows it: the grant with its **effective** `state` at answer time
/// and the seconds it has left.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GrantView {
    #[serde(flatten)]
    pub grant: Grant,
    /// Whole seconds until `expires_at` while the grant is active; `null` otherwise
    /// (pending, not yet started, ended).
    pub remaining_s: Option<i64>,
}

impl GrantView {
    /// The view of `grant` at `now`: `state` becomes the effective state.
    pub fn at(mut grant: Grant, now: Timestamp) -> Self {
        let remaining_s = grant.remaining(now).map(|d| d.as_secs());
        grant.state = grant.effective_state(now);
        GrantView { grant, remaining_s }
    }
}

/// `GET /v1/grants` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GrantList {
    pub grants: Vec<GrantView>,
}

/// `POST /v1/grants/{id}/revoke` answer: the revoked grant and how many live sessions it
/// ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RevokeView {
    #[serde(flatten)]
    pub grant: GrantView,
    pub sessions_dropped: usize,
}

/// One live session (`GET /v1/sessions`, `jitgate sessions`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionView {
    pub session_id: Uuid,
    pub identity: String,
    pub target: String,
    pub role: String,
    pub grant_id: Uuid,
    /// The client's address as jitgate saw it (`IP:port`).
    pub client_addr: String,
    /// Whether the client connected with TLS.
    pub tls: bool,
    pub started_at: Timestamp,
    /// The grant's end: the session is dropped at this instant.
    pub deadline: Timestamp,
    /// The upstream backend's process id (what the client was told, and what
    /// `pg_stat_activity` shows).
    pub upstream_pid: Option<i32>,
}

impl From<jitgate_proxy::registry::SessionInfo> for SessionView {
    fn from(s: jitgate_proxy::registry::SessionInfo) -> SessionView {
        SessionView {
            session_id: s.session_id,
            identity: s.identity,
            target: s.target,
            role: s.role,
            grant_id: s.grant_id,
            client_addr: s.client_addr,
            tls: s.tls,
            started_at: s.started_at,
            deadline: s.deadline,
            upstream_pid: s.upstream_pid,
        }
    }
}

/// `GET /v1/sessions` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// `GET /v1/health` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// `ok`, or `degraded` while the audit log cannot be written (statements are then
    /// refused: a probe should take this instance out of rotation).
    pub status: String,
    /// `ok` or `unavailable` (no details: this route needs no token).
    #[serde(default)]
    pub audit: String,
    /// `ok` or `unavailable`: whether the grant store answers (while it does not, no new
    /// session is admitted).
    #[serde(default)]
    pub store: String,
}

/// Every error answer: `{"error": "…"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
}

/// `POST /v1/login` body.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub identity: String,
    pub password: String,
}

impl std::fmt::Debug for LoginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBody")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/login` answer.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct LoginView {
    pub identity: String,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for LoginView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginView")
            .field("identity", &self.identity)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/whoami` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WhoAmI {
    /// `identity` or `admin`.
    pub kind: String,
    /// The logged-in identity (`null` for the administrator).
    pub identity: Option<String>,
    /// Its groups in the policy.
    pub groups: Vec<String>,
    /// When the login token ends.
    pub expires_at: Option<Timestamp>,
}

/// `POST /v1/requests` body. The caller (a logged-in identity) is the requester.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub target: String,
    pub role: String,
    /// How long access lasts once it starts (humantime, e.g. `1h`).
    pub duration: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Start later (RFC 3339); default: as soon as approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// Break-glass: immediate access without approvers, flagged for review.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

/// `POST /v1/grants/{id}/extend` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// Time to add to the grant's current end (humantime).
    pub duration: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// Body of approve / deny / cancel / review (deny needs the comment).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One lifecycle step as the API reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepView {
    pub action: String,
    pub actor: String,
    pub grant_id: uuid::Uuid,
    pub from: Option<GrantState>,
    pub to: GrantState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Answer of every workflow call: the record after the call and the steps it made
/// (empty when the call repeated one already done).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutcomeView {
    #[serde(flatten)]
    pub grant: GrantView,
    pub steps: Vec<StepView>,
    /// Live sessions dropped by this call (revocations).
    #[serde(default)]
    pub sessions_dropped: usize,
}

/// `GET /v1/requests` query.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestsQuery {
    /// Only requests still waiting for a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<bool>,
    /// Only the caller's own requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mine: Option<bool>,
}

/// `GET /v1/requests` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestList {
    pub requests: Vec<GrantView>,
}

/// `GET /v1/policy/explain` query.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    pub identity: String,
    pub target: String,
    pub role: String,
}

/// `GET /v1/policy/explain` answer: the structured explanation and the same as text.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExplainView {
    pub explanation: serde_json::Value,
    pub text: String,
}
