//! Read–decide–compare-and-swap with retries: the one way the engine changes a record.
//!
//! The decision runs on a fresh read of the grant (and, for an extension request, of the
//! grant it extends); the write succeeds only if neither changed meanwhile. When another
//! writer won, everything is read and decided again — so two approvers approving at the
//! same moment both count, and a revoke racing an extension leaves the grant revoked.

use jiff::Timestamp;
use uuid::Uuid;

use super::{Engine, Outcome, Transition};
use crate::error::PolicyError;
use crate::grant::Grant;

/// Attempts before giving up on a record that keeps changing under us.
const MAX_ATTEMPTS: usize = 16;

/// What a decision wants done.
pub(super) enum Step {
    /// Nothing: the call repeats one already done (idempotent).
    Unchanged,
    /// Store these records (all or nothing) and report these transitions.
    Write {
        grants: Vec<Grant>,
        transitions: Vec<Transition>,
    },
}

impl Step {
    /// Store one record and report one transition.
    pub(super) fn one(grant: Grant, transition: Transition) -> Step {
        Step::Write {
            grants: vec![grant],
            transitions: vec![transition],
        }
    }
}

impl Engine {
    /// Reads grant `id` (and the grant it extends, if any), asks `decide` what to do at
    /// `now`, and stores the result with compare-and-swap, retrying on conflicts.
    pub(super) async fn change<F>(&self, id: Uuid, mut decide: F) -> Result<Outcome, PolicyError>
    where
        F: FnMut(&Grant, Option<&Grant>, Timestamp) -> Result<Step, PolicyError>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let grant = self.get(id).await?;
            let parent = match grant.extends {
                Some(parent) => Some(self.get(parent).await?),
                None => None,
            };
            let now = self.now();
            let (grants, mut transitions) = match decide(&grant, parent.as_ref(), now)? {
                Step::Unchanged => return Ok(Outcome::unchanged(grant)),
                Step::Write {
                    grants,
                    transitions,
                } => (grants, transitions),
            };
            match self.store.update(&grants).await {
                Ok(stored) => {
                    for t in &mut transitions {
                        if let Some(s) = stored.iter().find(|s| s.id == t.grant.id) {
                            t.grant = s.clone();
                        }
                    }
                    let grant = stored.into_iter().find(|g| g.id == id).unwrap_or(grant);
                    return Ok(Outcome { grant, transitions });
                }
                Err(PolicyError::StaleUpdate(_)) => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(PolicyError::Store(format!(
            "grant {id} kept changing under {MAX_ATTEMPTS} consecutive attempts to update it"
        )))
    }
}
