//! Admission decisions, grant administration and the request/approval workflow.
//!
//! The [`Engine`] checks requests against the [`Catalog`] (what the configuration defines)
//! and the approval [`Rules`], stores grants in the [`GrantStore`], and decides at connect
//! time which grant, if any, a session runs under. Time comes from an injected [`Clock`].
//!
//! - [`issue`](Engine::issue): an administrator's grant, approved at once (`issue`);
//! - [`request`](Engine::request), [`extend`](Engine::extend): new requests (`workflow`);
//! - [`approve`](Engine::approve): sign-offs, and the write that turns an approved request
//!   into access, automatic approvals included (`approve`);
//! - [`deny`](Engine::deny), [`cancel`](Engine::cancel), [`review`](Engine::review),
//!   [`revoke`](Engine::revoke): the other decisions, and what every decision is made of
//!   (`decide`);
//! - [`sweep`](Engine::sweep): time-based steps — lapsed requests, activation, expiring
//!   soon, expiry (`sweep`).
//!
//! Every change is a read–check–compare-and-swap on the grant's `version`, retried when a
//! concurrent change won (`cas`), so concurrent approvers and several replicas sharing a
//! store cannot lose or double-count a decision. Each call returns an [`Outcome`] with
//! the [`Transition`]s it made; repeating a call that was already done returns the record
//! with no transitions (idempotent).
//!
//! Inside, from the bottom up: `transition` (what a call reports), `cas` (the
//! compare-and-swap loop every change goes through), `sweep`, `decide`, `approve`, then
//! `issue` and `workflow`; this file holds the [`Engine`] itself, reads and admission,
//! and names none of its children's items but the types it re-exports.

mod approve;
mod cas;
mod decide;
mod issue;
mod sweep;
mod transition;
mod workflow;

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use jiff::Timestamp;
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::error::PolicyError;
use crate::grant::{floor_to_micros, Grant, GrantState};
use crate::rules::Rules;
use crate::store::{GrantFilter, GrantStore};

pub use issue::IssueRequest;
pub use transition::{Action, Outcome, Transition};
pub use workflow::{AccessRequest, ExtensionRequest};

/// Who is acting, as far as the workflow's permissions go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// An authenticated identity, authorised by the rules.
    Identity(String),
    /// An administrator (admin token): may cancel and revoke anything, decides nothing
    /// the rules reserve for approvers.
    Admin(String),
}

impl Actor {
    /// The name recorded in decisions and audit events.
    pub fn name(&self) -> &str {
        match self {
            Actor::Identity(name) | Actor::Admin(name) => name,
        }
    }
}

/// A positive admission decision: the session runs under `grant` until its `expires_at`.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The grant the session is bound to.
    pub grant: Grant,
}

/// Issues, revokes and lists grants, runs the request/approval workflow, and admits
/// sessions. Clones share the store, the clock and the (reloadable) rules.
#[derive(Clone, Debug)]
pub struct Engine {
    store: Arc<dyn GrantStore>,
    clock: Arc<dyn Clock>,
    catalog: Arc<Catalog>,
    rules: Arc<RwLock<Arc<Rules>>>,
}

impl Engine {
    /// An engine over `store`, deciding with `clock` against what `catalog` defines, with
    /// no approval rules (only administrators issue grants) until [`Engine::set_rules`].
    pub fn new(store: Arc<dyn GrantStore>, clock: Arc<dyn Clock>, catalog: Catalog) -> Self {
        Engine {
            store,
            clock,
            catalog: Arc::new(catalog),
            rules: Arc::new(RwLock::new(Arc::new(Rules::default()))),
        }
    }

    /// The same engine with these approval rules.
    pub fn with_rules(self, rules: Rules) -> Self {
        self.set_rules(rules);
        self
    }

    /// Replaces the approval rules (config reload). Requests already made keep their
    /// rule's name; decisions on them use the rule as it is now.
    pub fn set_rules(&self, rules: Rules) {
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
    }

    /// The approval rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.rules.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The grant store (health checks, change notifications).
    pub fn store(&self) -> &Arc<dyn GrantStore> {
        &self.store
    }

    /// The clock decisions are made with (sessions use it to compute their deadline).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// What the configuration defines.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Now, rounded down to the microsecond the stores keep, so grants the engine builds
    /// read back unchanged.
    pub fn now(&self) -> Timestamp {
        floor_to_micros(self.clock.now())
    }

    /// The grant with this id; [`PolicyError::NotFound`] when there is none.
    pub async fn get(&self, id: Uuid) -> Result<Grant, PolicyError> {
        self.store.get(id).await?.ok_or(PolicyError::NotFound(id))
    }

    /// Grants matching `filter`, newest first. Unlike the store, `state` here means the
    /// effective state now: `Approved` excludes grants past expiry, `Pending` excludes
    /// lapsed requests, `Expired` includes both.
    pub async fn list(&self, filter: &GrantFilter) -> Result<Vec<Grant>, PolicyError> {
        let now = self.now();
        let Some(wanted) = filter.state else {
            return self.store.list(filter).await;
        };
        let stored: &[GrantState] = match wanted {
            GrantState::Expired => &[
                GrantState::Expired,
                GrantState::Approved,
                GrantState::Pending,
            ],
            other => &[other],
        };
        let mut grants = Vec::new();
        for state in stored {
            let part = GrantFilter {
                state: Some(*state),
                ..filter.clone()
            };
            grants.extend(self.store.list(&part).await?);
        }
        grants.retain(|g| g.effective_state(now) == wanted);
        grants.sort_by_key(|g| std::cmp::Reverse((g.created_at, g.id)));
        Ok(grants)
    }

    /// Admission at connect time. `role`: the role the client asked for (None = pick the
    /// only one). Among active grants of (identity, target) [+ role], chooses the one with
    /// the latest `expires_at`. Fails closed: a store failure is [`PolicyError::Store`].
    pub async fn admit(
        &self,
        identity: &str,
        target: &str,
        role: Option<&str>,
    ) -> Result<Admission, PolicyError> {
        let roles = self.catalog.check(identity, target, role)?;
        let now = self.now();
        let grants = self
            .store
            .active_for(identity, target, now)
            .await
            .map_err(|e| {
                tracing::warn!(identity, target, error = %e, "grant store failed during admission; denying");
                match e {
                    PolicyError::Store(_) => e,
                    other => PolicyError::Store(format!("unexpected answer from the grant store: {other}")),
                }
            })?;
        // Re-check what the store returned: a wrong answer from a store must not admit.
        // Grants for roles no longer configured cannot be served and are ignored.
        let active: Vec<Grant> = grants
            .into_iter()
            .filter(|g| {
                g.identity == identity
                    && g.target == target
                    && g.is_active(now)
                    && roles.contains(&g.role)
            })
            .collect();
        choose(identity, target, role, active).map(|grant| Admission { grant })
    }
}

/// Picks the grant a session runs under from the active ones.
fn choose(
    identity: &str,
    target: &str,
    role: Option<&str>,
    active: Vec<Grant>,
) -> Result<Grant, PolicyError> {
    let no_grant = || PolicyError::NoActiveGrant {
        identity: identity.to_owned(),
        target: target.to_owned(),
    };
    if active.is_empty() {
        return Err(no_grant());
    }
    let granted: BTreeSet<&str> = active.iter().map(|g| g.role.as_str()).collect();
    let chosen = match role {
        Some(role) if granted.contains(role) => role.to_owned(),
        Some(role) => {
            return Err(PolicyError::RoleNotGranted {
                identity: identity.to_owned(),
                target: target.to_owned(),
                role: role.to_owned(),
                granted: granted.into_iter().map(str::to_owned).collect(),
            })
        }
        None => match granted.first() {
            Some(only) if granted.len() == 1 => (*only).to_owned(),
            _ => {
                return Err(PolicyError::AmbiguousRole {
                    identity: identity.to_owned(),
                    target: target.to_owned(),
                    roles: granted.into_iter().map(str::to_owned).collect(),
                })
            }
        },
    };
    active
        .into_iter()
        .filter(|g| g.role == chosen)
        .max_by_key(|g| (g.expires_at, g.created_at, g.id))
        .ok_or_else(no_grant)
}
