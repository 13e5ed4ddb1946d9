//! What the configuration defines — identities, targets and each target's roles — and
//! the bounds every grant keeps: the engine checks requests against it, the rules are
//! validated against it. A leaf: it knows neither.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use crate::error::PolicyError;

/// Longest grant an administrator can issue in one go: access is meant to be short-lived.
pub const MAX_GRANT_DURATION: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Furthest ahead a grant may start, so scheduled access is not forgotten in the store.
pub const MAX_NOT_BEFORE_AHEAD: SignedDuration = SignedDuration::from_hours(30 * 24);

/// Refuses a `start` (given as `field`) more than [`MAX_NOT_BEFORE_AHEAD`] after `now`.
pub(crate) fn check_start(
    field: &str,
    start: Timestamp,
    now: Timestamp,
) -> Result<(), PolicyError> {
    let latest = now
        .checked_add(MAX_NOT_BEFORE_AHEAD)
        .map_err(|e| PolicyError::InvalidRequest(format!("current time out of range: {e}")))?;
    if start > latest {
        return Err(PolicyError::InvalidRequest(format!(
            "{field} {start} is more than {MAX_NOT_BEFORE_AHEAD:#} ahead (latest allowed: \
             {latest})"
        )));
    }
    Ok(())
}

/// What exists in the config, so requests for unknown names fail clearly.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Configured identities.
    pub identities: BTreeSet<String>,
    /// Configured targets and, for each, the roles jitgate can connect upstream as.
    pub targets: BTreeMap<String, BTreeSet<String>>,
}

impl Catalog {
    pub(crate) fn check_identity(&self, identity: &str) -> Result<(), PolicyError> {
        if self.identities.contains(identity) {
            Ok(())
        } else {
            Err(PolicyError::UnknownIdentity(identity.to_owned()))
        }
    }

    fn roles_of(&self, target: &str) -> Result<&BTreeSet<String>, PolicyError> {
        self.targets
            .get(target)
            .ok_or_else(|| PolicyError::UnknownTarget(target.to_owned()))
    }

    /// Checks identity, target and (if given) role, in that order.
    pub(crate) fn check(
        &self,
        identity: &str,
        target: &str,
        role: Option<&str>,
    ) -> Result<&BTreeSet<String>, PolicyError> {
        self.check_identity(identity)?;
        let roles = self.roles_of(target)?;
        match role {
            Some(role) if !roles.contains(role) => Err(PolicyError::UnknownRole {
                target: target.to_owned(),
                role: role.to_owned(),
            }),
            _ => Ok(roles),
        }
    }
}
