//! Time-based steps: pending requests that lapse, grants whose window starts, grants
//! about to end, grants that ended.
//!
//! The caller runs [`Engine::sweep`] every second or so. Each step is claimed with a
//! compare-and-swap (a marker in `notified`, or the stored state), so when several replicas
//! share a store exactly one of them reports it — one audit event, one webhook.

use jiff::{SignedDuration, Timestamp};

use super::cas::Step;
use super::transition::transition;
use super::{Action, Engine, Transition};
use crate::error::PolicyError;
use crate::grant::{Grant, GrantState};
use crate::store::GrantFilter;

/// Marker: the grant's window started and `activated` was reported.
pub(crate) const ACTIVATED: &str = "activated";
/// Marker: `expiring_soon` was reported for the current `expires_at`.
pub(crate) const EXPIRING_SOON: &str = "expiring_soon";
/// Marker: the record was a pending request that lapsed undecided.
pub(crate) const LAPSED: &str = "lapsed";
/// Who time-based steps are attributed to.
pub(crate) const SYSTEM_ACTOR: &str = "jitgate";

/// What is due for one record at `now`.
fn due(g: &Grant, now: Timestamp, lead: SignedDuration) -> Option<Action> {
    match g.state {
        GrantState::Pending if g.effective_state(now) == GrantState::Expired => {
            Some(Action::Expired)
        }
        GrantState::Approved if now >= g.expires_at => Some(Action::Expired),
        GrantState::Approved if g.is_extension() => None,
        GrantState::Approved if g.not_before <= now && !g.was_notified(ACTIVATED) => {
            Some(Action::Activated)
        }
        GrantState::Approved
            if g.not_before <= now
                && g.expires_at.checked_sub(lead).is_ok_and(|at| at <= now)
                && !g.was_notified(EXPIRING_SOON) =>
        {
            Some(Action::ExpiringSoon)
        }
        _ => None,
    }
}

impl Engine {
    /// Performs every time-based step due now and returns the transitions this call made
    /// (steps another replica already made are not repeated). `expiring_lead`: how long
    /// before `expires_at` the `expiring_soon` step happens.
    pub async fn sweep(
        &self,
        expiring_lead: SignedDuration,
    ) -> Result<Vec<Transition>, PolicyError> {
        let now = self.now();
        let mut candidates = Vec::new();
        for state in [GrantState::Pending, GrantState::Approved] {
            let filter = GrantFilter {
                state: Some(state),
                ..GrantFilter::default()
            };
            candidates.extend(
                self.store
                    .list(&filter)
                    .await?
                    .into_iter()
                    .filter(|g| due(g, now, expiring_lead).is_some()),
            );
        }
        let mut out = Vec::new();
        for candidate in candidates {
            let outcome = self
                .change(candidate.id, |g, _, now| step(g, now, expiring_lead))
                .await;
            match outcome {
                Ok(outcome) => out.extend(outcome.transitions),
                Err(PolicyError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// The write for whatever is due on `g` now (re-decided on a fresh read).
fn step(g: &Grant, now: Timestamp, lead: SignedDuration) -> Result<Step, PolicyError> {
    let Some(action) = due(g, now, lead) else {
        return Ok(Step::Unchanged);
    };
    let from = g.state;
    let mut next = g.clone();
    let comment = match action {
        Action::Expired if g.state == GrantState::Pending => {
            next.state = GrantState::Expired;
            next.notified.push(LAPSED.to_owned());
            format!(
                "nobody decided before {}; the request lapsed",
                g.pending_until.map_or_else(String::new, |t| t.to_string())
            )
        }
        Action::Expired => {
            next.state = GrantState::Expired;
            format!("the window ended at {}", g.expires_at)
        }
        Action::Activated => {
            next.notified.push(ACTIVATED.to_owned());
            format!("the window started at {}", g.not_before)
        }
        _ => {
            next.notified.push(EXPIRING_SOON.to_owned());
            format!("ends at {}", g.expires_at)
        }
    };
    // An applied extension record ending is bookkeeping, not news.
    let transitions = if g.is_extension() && from == GrantState::Approved {
        Vec::new()
    } else {
        vec![transition(
            action,
            SYSTEM_ACTOR,
            Some(&comment),
            Some(from),
            &next,
            now,
        )]
    };
    Ok(Step::Write {
        grants: vec![next],
        transitions,
    })
}
