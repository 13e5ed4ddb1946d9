//! What jitgate allows clients that have not (yet) authenticated, so that one of them
//! cannot exhaust it for everyone (issue 17, "bounded work"):
//!
//! - [`connections`]: a global and a per-client-IP cap on open client connections,
//!   unauthenticated ones included (53300 beyond it).
//! - [`refusals`]: pre-authentication refusals are audited with client-chosen names cut
//!   to [`refusals::MAX_NAME_BYTES`], at a bounded rate, with a count of what was not
//!   written.
//! - [`rate`]: the rate limiters (`governor`) these and the admin API's `/v1/login` use.

pub mod connections;
pub mod rate;
pub mod refusals;

pub use connections::{ConnectionLimits, IpGroup, LimitHit, Slot};
pub use rate::{KeyedRate, Rate};
pub use refusals::RefusalAudit;
