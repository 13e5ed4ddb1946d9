//! The admin API's JSON bodies, shared by the server and [`super::AdminClient`] so the two
//! cannot drift apart.

use jiff::Timestamp;
use jitgate_policy::{Grant, GrantState};
use serde::{Deserialize, Serialize};

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

/// One live session, exactly as the proxy's registry lists it.
pub type SessionView = jitgate_proxy::registry::SessionInfo;

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
}

/// Every error answer: `{"error": "…"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
}
