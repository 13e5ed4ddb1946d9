//! Where grants live: the [`GrantStore`] trait and its implementations.
//!
//! The store is the source of truth and survives restarts. [`sqlite::SqliteStore`] is the
//! embedded default; a PostgreSQL store for several proxy replicas will implement the same
//! trait. Stores know nothing of "now": callers pass the instant they decide at, so time
//! stays injectable.
//!
//! Contract shared by every implementation:
//! - timestamps are kept to the microsecond (like PostgreSQL `timestamptz`); `insert`
//!   rejects finer ones with [`PolicyError::InvalidRequest`] so a grant always reads back
//!   equal, and query instants are rounded down (which gives the same answers);
//! - backend failures are [`PolicyError::Store`].

pub mod sqlite;

use jiff::Timestamp;
use uuid::Uuid;

use crate::error::PolicyError;
use crate::grant::{Grant, GrantState};

/// Which grants [`GrantStore::list`] returns; `None` fields match everything.
#[derive(Clone, Debug, Default)]
pub struct GrantFilter {
    /// Only grants of this identity.
    pub identity: Option<String>,
    /// Only grants on this target.
    pub target: Option<String>,
    /// Only grants whose **stored** state is this (the store has no clock; the engine maps
    /// `Approved`/`Expired` to effective states).
    pub state: Option<GrantState>,
    /// Only grants active at this instant (approved and inside their window).
    pub active_at: Option<Timestamp>,
}

/// Persistent storage of grants.
#[async_trait::async_trait]
pub trait GrantStore: Send + Sync + std::fmt::Debug {
    /// Stores a new grant; an existing id is an error.
    async fn insert(&self, grant: &Grant) -> Result<(), PolicyError>;

    /// The grant with this id, if any.
    async fn get(&self, id: Uuid) -> Result<Option<Grant>, PolicyError>;

    /// Grants matching `filter`, newest first (by `created_at`, then id).
    async fn list(&self, filter: &GrantFilter) -> Result<Vec<Grant>, PolicyError>;

    /// Atomically: Approved|Pending → Revoked with who/when/why. Anything else →
    /// [`PolicyError::NotRevocable`] (an approved grant already past `expires_at` at `at`
    /// counts as expired); no grant → [`PolicyError::NotFound`]. Of concurrent revocations
    /// of one grant exactly one succeeds.
    async fn revoke(
        &self,
        id: Uuid,
        by: &str,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<Grant, PolicyError>;

    /// Grants of (identity, target) active at `at`, latest `expires_at` first.
    async fn active_for(
        &self,
        identity: &str,
        target: &str,
        at: Timestamp,
    ) -> Result<Vec<Grant>, PolicyError>;
}
