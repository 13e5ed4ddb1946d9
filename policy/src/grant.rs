//! The grant model and its state machine.
//!
//! A grant is time-limited access of one identity to one target as one role:
//! `active(t) ⇔ state == Approved ∧ not_before ≤ t < expires_at`. The window is absolute,
//! so a session admitted under a grant is dropped at `expires_at`, whenever it started.

use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stored lifecycle state of a grant.
///
/// `Expired` may be stored by a later sweep, but a grant does not need it to stop working:
/// an `Approved` grant past `expires_at` is inactive and [`Grant::effective_state`] reports
/// it as `Expired`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// Requested, waiting for approval; grants no access yet. Lapses (effective state
    /// `Expired`) when nobody decides before `pending_until`.
    Pending,
    /// Approved; grants access inside `[not_before, expires_at)`.
    Approved,
    /// A request that an approver turned down.
    Denied,
    /// A request its requester (or an administrator) withdrew before a decision.
    Cancelled,
    /// Withdrawn before it expired; sessions under it are dropped.
    Revoked,
    /// Past its `expires_at`.
    Expired,
}

impl GrantState {
    /// Every state, in lifecycle order (for tests and for listing choices to users).
    pub const ALL: [GrantState; 6] = [
        GrantState::Pending,
        GrantState::Approved,
        GrantState::Denied,
        GrantState::Cancelled,
        GrantState::Revoked,
        GrantState::Expired,
    ];

    /// The snake_case name used in the store, the API and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Pending => "pending",
            GrantState::Approved => "approved",
            GrantState::Denied => "denied",
            GrantState::Cancelled => "cancelled",
            GrantState::Revoked => "revoked",
            GrantState::Expired => "expired",
        }
    }
}

impl fmt::Display for GrantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GrantState {
    type Err = String;

    /// Parses the snake_case name; the error names the accepted values.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GrantState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown grant state {s:?}; expected one of pending, approved, denied, cancelled, revoked, expired"
                )
            })
    }
}

/// One person's decision on a grant (an approval, a denial, a cancellation, a review),
/// kept for the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided (an identity, an administrator name, or `policy:<rule>` for automatic
    /// approvals).
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Why, in their words (required for denials).
    pub comment: Option<String>,
}

/// An approver's sign-off; the same record as any other [`Decision`].
pub type Approval = Decision;

/// Time-limited access of one identity to one target as one role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// UUID v7, so ids sort by creation time.
    pub id: Uuid,
    /// Who may connect.
    pub identity: String,
    /// Which configured upstream database.
    pub target: String,
    /// Which upstream role the session runs as.
    pub role: String,
    /// Start of the window (inclusive).
    pub not_before: Timestamp,
    /// End of the window (exclusive); absolute, so sessions end here whenever they began.
    pub expires_at: Timestamp,
    /// Why access was needed (ticket, incident); required for the audit trail.
    pub reason: String,
    /// Who issued or requested the grant.
    pub issued_by: String,
    /// When the grant was created.
    pub created_at: Timestamp,
    /// Stored state; see [`Grant::effective_state`] for the state at a given time.
    pub state: GrantState,
    /// Approvals collected, in order.
    pub approvals: Vec<Approval>,
    /// Who revoked the grant, if it was revoked.
    pub revoked_by: Option<String>,
    /// When the grant was revoked.
    pub revoked_at: Option<Timestamp>,
    /// Why the grant was revoked, if a reason was given.
    pub revoke_reason: Option<String>,
    /// The policy rule the request was decided under (`None`: issued by an administrator).
    #[serde(default)]
    pub rule: Option<String>,
    /// The ticket the requester named (incident, change), if any.
    #[serde(default)]
    pub ticket: Option<String>,
    /// Length of the window asked for. A request approved late still gets all of it:
    /// approval sets `not_before = max(not_before, approval time)` and
    /// `expires_at = not_before + duration`. For an extension: the time added.
    pub duration: SignedDuration,
    /// A pending request lapses (effective state `Expired`) at this instant.
    #[serde(default)]
    pub pending_until: Option<Timestamp>,
    /// Who denied the request and why.
    #[serde(default)]
    pub denial: Option<Decision>,
    /// Who withdrew the request.
    #[serde(default)]
    pub cancellation: Option<Decision>,
    /// Break-glass access: approved at once without approvers, flagged, to be reviewed.
    #[serde(default)]
    pub break_glass: bool,
    /// The after-the-fact review of a break-glass grant.
    #[serde(default)]
    pub review: Option<Decision>,
    /// Set on an extension request: the grant whose window it extends. Such a record
    /// never admits sessions itself; approving it moves the extended grant's `expires_at`.
    #[serde(default)]
    pub extends: Option<Uuid>,
    /// Time-based notifications already sent for this grant (`activated`,
    /// `expiring_soon`, `expired`), so each goes out once across all replicas.
    #[serde(default)]
    pub notified: Vec<String>,
    /// Client-chosen key that makes creating this request idempotent (per requester).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Bumped by every stored change; updates compare it to detect concurrent changes.
    #[serde(default)]
    pub version: u64,
}

impl Grant {
    /// Whether the grant admits sessions at `now`:
    /// `state == Approved ∧ not_before ≤ now < expires_at`.
    /// An extension request never admits sessions itself.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.state == GrantState::Approved
            && self.extends.is_none()
            && self.not_before <= now
            && now < self.expires_at
    }

    /// The state as users should see it at `now`: an `Approved` grant whose window has
    /// ended, and a `Pending` request past `pending_until`, are `Expired` even though the
    /// store may still say otherwise.
    pub fn effective_state(&self, now: Timestamp) -> GrantState {
        match self.state {
            GrantState::Approved if now >= self.expires_at => GrantState::Expired,
            GrantState::Pending if self.pending_until.is_some_and(|until| now >= until) => {
                GrantState::Expired
            }
            state => state,
        }
    }

    /// Whether this record is an extension request of another grant.
    pub fn is_extension(&self) -> bool {
        self.extends.is_some()
    }

    /// Whether a time-based notification (`activated`, `expiring_soon`, `expired`) was
    /// already sent for this grant.
    pub fn was_notified(&self, what: &str) -> bool {
        self.notified.iter().any(|n| n == what)
    }

    /// Time left until `expires_at`, or `None` when the grant is not active at `now`
    /// (so "not yet started" and "over" are never confused with "some time left").
    pub fn remaining(&self, now: Timestamp) -> Option<SignedDuration> {
        self.is_active(now)
            .then(|| self.expires_at.duration_since(now))
    }
}

/// Rounds `t` down to whole microseconds, the precision stores keep (as PostgreSQL's
/// `timestamptz` does), so a grant built from it reads back from any store unchanged.
pub fn floor_to_micros(t: Timestamp) -> Timestamp {
    let micros = t.as_nanosecond().div_euclid(1_000);
    i64::try_from(micros)
        .ok()
        .and_then(|m| Timestamp::from_microsecond(m).ok())
        .unwrap_or(t)
}

/// Whether `t` has no sub-microsecond part (see [`floor_to_micros`]).
pub fn is_whole_micros(t: Timestamp) -> bool {
    t.as_nanosecond().rem_euclid(1_000) == 0
}
