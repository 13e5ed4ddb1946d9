//! Rate limits of `POST /v1/login`: each attempt runs PBKDF2 (milliseconds of CPU), so
//! one client address and one identity name each get `client_limits.api_logins_per_ip`
//! and `api_logins_per_identity` attempts per minute; beyond that the answer is 429 with
//! `Retry-After`, before any password is checked. Other addresses and identities are
//! unaffected.
//!
//! The per-identity limit also bounds guessing one identity's password from many
//! addresses; the price is that such a flood delays that identity's own API logins
//! (never its psql sessions) until it stops.

use std::net::IpAddr;
use std::time::Duration;

use jitgate_proxy::limits::refusals::{truncate, MAX_NAME_BYTES};
use jitgate_proxy::limits::KeyedRate;
use jitgate_proxy::settings::ClientLimits;

/// Which limit an attempt ran into, and how long until the next attempt is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    PerIp(Duration),
    PerIdentity(Duration),
}

/// The per-address and per-identity budgets.
pub struct LoginLimits {
    per_ip: KeyedRate<IpAddr>,
    per_identity: KeyedRate<String>,
}

impl LoginLimits {
    pub fn new(limits: &ClientLimits) -> Self {
        LoginLimits {
            per_ip: KeyedRate::per_minute(limits.api_logins_per_ip),
            per_identity: KeyedRate::per_minute(limits.api_logins_per_identity),
        }
    }

    /// Takes one attempt from `ip`'s budget, then from `identity`'s (names are cut to
    /// [`MAX_NAME_BYTES`] as keys, so a client cannot make us store long ones).
    pub fn check(&self, ip: IpAddr, identity: &str) -> Result<(), Throttled> {
        self.per_ip.check(&ip).map_err(Throttled::PerIp)?;
        let key = truncate(identity, MAX_NAME_BYTES).into_owned();
        self.per_identity
            .check(&key)
            .map_err(Throttled::PerIdentity)
    }
}

impl std::fmt::Debug for LoginLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimits").finish_non_exhaustive()
    }
}
