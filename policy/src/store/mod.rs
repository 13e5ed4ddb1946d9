//! Where grants live: the [`GrantStore`] trait and its implementations.
//!
//! The store is the source of truth and survives restarts. [`sqlite::SqliteStore`] is the
//! embedded default; [`postgres::PostgresStore`] is shared by several proxy replicas. Both
//! keep the same table, whose columns and their mapping to a [`Grant`] are described once
//! (`columns`; the `details` JSON column in `details`). Stores know nothing of "now":
//! callers pass the instant they decide at, so time stays injectable.
//!
//! Contract shared by every implementation:
//! - timestamps are kept to the microsecond (like PostgreSQL `timestamptz`); `insert`
//!   rejects finer ones with [`PolicyError::InvalidRequest`] so a grant always reads back
//!   equal, and query instants are rounded down (which gives the same answers);
//! - every change is a compare-and-swap on [`Grant::version`] ([`GrantStore::update`]), so
//!   the engine's read–check–write steps (approve, deny, revoke, extend) stay correct with
//!   several writers — other tasks, other processes, other proxy replicas — and two
//!   approvers approving at the same moment both count;
//! - backend failures are [`PolicyError::Store`].

mod columns;
mod details;
pub mod postgres;
pub mod sqlite;

use jiff::Timestamp;
use tokio::sync::broadcast;
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
    /// Only records created by this requester or administrator (`issued_by`).
    pub issued_by: Option<String>,
    /// Only extension requests of this grant.
    pub extends: Option<Uuid>,
    /// Only the record created with this idempotency key (combine with `issued_by`).
    pub idempotency_key: Option<String>,
}

/// Persistent storage of grants.
#[async_trait::async_trait]
pub trait GrantStore: Send + Sync + std::fmt::Debug {
    /// Stores a new grant (its `version` as given, normally 0). An existing id, or an
    /// existing `(issued_by, idempotency_key)` pair, is [`PolicyError::Conflict`].
    async fn insert(&self, grant: &Grant) -> Result<(), PolicyError>;

    /// The grant with this id, if any.
    async fn get(&self, id: Uuid) -> Result<Option<Grant>, PolicyError>;

    /// Grants matching `filter`, newest first (by `created_at`, then id).
    async fn list(&self, filter: &GrantFilter) -> Result<Vec<Grant>, PolicyError>;

    /// Replaces each grant's stored record with the given one, all or nothing, if and
    /// only if every stored `version` still equals the given `version`; the stored
    /// versions become `version + 1` (and the returned grants carry them). A version that
    /// moved on → [`PolicyError::StaleUpdate`] and nothing changes; a missing id →
    /// [`PolicyError::NotFound`]. `id`, `created_at` and `issued_by` never change.
    async fn update(&self, grants: &[Grant]) -> Result<Vec<Grant>, PolicyError>;

    /// Grants of (identity, target) active at `at`, latest `expires_at` first. Extension
    /// requests are never returned (they admit nobody).
    async fn active_for(
        &self,
        identity: &str,
        target: &str,
        at: Timestamp,
    ) -> Result<Vec<Grant>, PolicyError>;

    /// Whether the store answers right now (health checks; a replica that cannot reach
    /// its store admits nobody).
    async fn ping(&self) -> Result<(), PolicyError>;

    /// Ids of grants changed by *any* process sharing this store (for a shared store:
    /// every replica, pushed as they happen, each only once its change committed). `None`
    /// for a store only this process writes: the engine announces its own changes.
    ///
    /// The stream is a hint, not a log: news sent while a store could not listen (its
    /// connection to a shared store was lost) is gone. So a receiver must treat two
    /// things as "you may have missed changes: reconcile everything" — re-read every
    /// grant it holds state for (e.g. the sessions it enforces):
    /// - [`Uuid::nil()`], which a store sends after it listens again following a lost
    ///   connection (and, for a store that connected lazily, when it first listens);
    /// - [`broadcast::error::RecvError::Lagged`]: the receiver fell too far behind.
    ///
    /// A periodic reconcile stays the safety net either way.
    fn changes(&self) -> Option<broadcast::Receiver<Uuid>> {
        None
    }
}
