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
    /// Requested, waiting for approval; grants no access yet.
    Pending,
    /// Approved; grants access inside `[not_before, expires_at)`.
    Approved,
    /// A request that an approver turned down.
    Denied,
    /// Withdrawn before it expired; sessions under it are dropped.
    Revoked,
    /// Past its `expires_at`.
    Expired,
}

impl GrantState {
    /// Every state, in lifecycle order (for tests and for listing choices to users).
    pub const ALL: [GrantState; 5] = [
        GrantState::Pending,
        GrantState::Approved,
        GrantState::Denied,
        GrantState::Revoked,
        GrantState::Expired,
    ];

    /// The snake_case name used in the store, the API and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Pending => "pending",
            GrantState::Approved => "approved",
            GrantState::Denied => "denied",
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
                    "unknown grant state {s:?}; expected one of pending, approved, denied, revoked, expired"
                )
            })
    }
}

/// One approver's sign-off on a grant, kept for the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved (an identity or administrator name).
    pub by: String,
    /// When they approved.
    pub at: Timestamp,
    /// Optional note from the approver.
    pub comment: Option<String>,
}

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
}

impl Grant {
    /// Whether the grant admits sessions at `now`:
    /// `state == Approved ∧ not_before ≤ now < expires_at`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.state == GrantState::Approved && self.not_before <= now && now < self.expires_at
    }

    /// The state as users should see it at `now`: an `Approved` grant whose window has
    /// ended is `Expired` even though the store still says `Approved`.
    pub fn effective_state(&self, now: Timestamp) -> GrantState {
        if self.state == GrantState::Approved && now >= self.expires_at {
            GrantState::Expired
        } else {
            self.state
        }
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
