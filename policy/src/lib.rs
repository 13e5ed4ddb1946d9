//! jitgate-policy: who may reach which database, as which role, until when.
//!
//! A **grant** is time-limited access of one identity to one target as one role. This
//! crate holds the grant model, the stores that keep grants across restarts, and the
//! **engine** that issues and revokes grants and decides admission when a client connects.
//! It reads no global config: the caller hands the engine a [`Catalog`] of what exists.
//!
//! # Layout
//!
//! - [`grant`]: the [`Grant`] model and its state machine (`is_active`, `effective_state`).
//! - [`clock`]: injectable time ([`SystemClock`], [`ManualClock`] for tests).
//! - [`store`]: the [`GrantStore`] trait and [`SqliteStore`], the embedded default.
//! - [`engine`]: [`Engine`] — issue, revoke, list, and `admit` at connect time.
//! - [`error`]: [`PolicyError`], one enum for the crate, with a SQLSTATE per variant.
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
