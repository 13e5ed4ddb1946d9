//! jitgate-policy: who may reach which database, as which role, until when.
//!
//! A **grant** is time-limited access of one identity to one target as one role. This
//! crate holds the grant model, the stores that keep grants across restarts, and the
//! **engine** that issues and revokes grants and decides admission when a client connects.
//! It reads no global config: the caller hands the engine a [`Catalog`] of what exists.
//!
//! # Layers
//!
//! From the bottom up; each module imports only modules of the layers below it (and, in
//! the same layer, none that imports it back):
//!
//! 1. Leaves — [`clock`]: injectable time ([`SystemClock`], [`ManualClock`] for tests);
//!    [`duration`]: the one reading of a written duration; [`grant`]: the [`Grant`] model
//!    and its state machine (`is_active`, `effective_state`); [`error`]: [`PolicyError`],
//!    one enum for the crate with a SQLSTATE per variant (uses `grant`); [`catalog`]: the
//!    identities, targets and roles the configuration defines, and the grant bounds (uses
//!    `error`).
//! 2. Side by side, neither importing the other — [`store`]: the [`GrantStore`] trait,
//!    [`SqliteStore`] (the embedded default) and [`PostgresStore`] (shared by replicas),
//!    over one description of the grant columns; it knows grants, not rules, and takes
//!    "now" from its callers. [`rules`]: [`RulesSpec`] validated into [`Rules`] against
//!    the catalog, and the request, approver and reviewer checks; it knows no store and no
//!    grant record.
//! 3. [`engine`]: [`Engine`] — issue, request, decide, sweep, list, and `admit` at connect
//!    time; the only layer that uses the others together.
//!
//! # Fail closed
//!
//! When the store cannot answer, [`Engine::admit`] returns [`PolicyError::Store`]; it never
//! admits a client it could not check.

#![forbid(unsafe_code)]

pub mod catalog;
pub mod clock;
pub mod duration;
pub mod engine;
pub mod error;
pub mod grant;
pub mod rules;
pub mod store;

pub use jiff::{SignedDuration, Timestamp};

pub use catalog::{Catalog, MAX_GRANT_DURATION, MAX_NOT_BEFORE_AHEAD};
pub use clock::{Clock, ManualClock, SystemClock};
pub use duration::{parse_duration, parse_std_duration};
pub use engine::{
    AccessRequest, Action, Actor, Admission, Engine, ExtensionRequest, IssueRequest, Outcome,
    Transition,
};
pub use error::PolicyError;
pub use grant::{Approval, Decision, Grant, GrantState};
pub use rules::{Explanation, RequestFacts, Rule, Rules, RulesSpec, Verdict};
pub use store::postgres::{PostgresStore, PostgresStoreOptions, StoreTls};
pub use store::sqlite::SqliteStore;
pub use store::{GrantFilter, GrantStore};
