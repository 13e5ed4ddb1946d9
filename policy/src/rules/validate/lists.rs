//! Checks of names a rule refers to: identities, groups, targets and roles.

use std::collections::BTreeSet;

use super::{check_identity, invalid, Cx};
use crate::error::PolicyError;
use crate::rules::matcher::{Members, Names};
use crate::rules::spec::RequestersSpec;

impl Cx<'_> {
    /// A list of group names that must exist and not repeat.
    pub(super) fn group_list(
        &self,
        field: &str,
        list: &[String],
    ) -> Result<BTreeSet<String>, PolicyError> {
        let mut out = BTreeSet::new();
        for (k, group) in list.iter().enumerate() {
            let field = format!("{field}[{k}]");
            if !self.groups.contains_key(group) {
                let known: Vec<&str> = self.groups.keys().map(String::as_str).collect();
                let hint = if self.catalog.identities.contains(group) {
                    format!(
                        "{group:?} is an identity, not a group; this list takes groups, so \
                         put {group} in a group under policy.groups and name that group"
                    )
                } else {
                    format!(
                        "unknown group {group:?}; define it under policy.groups (defined \
                         groups: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    )
                };
                return Err(invalid(field, hint));
            }
            if !out.insert(group.clone()) {
                return Err(invalid(
                    field,
                    format!("group {group} is listed twice; remove one"),
                ));
            }
        }
        Ok(out)
    }

    /// A list of identities that must exist and not repeat.
    pub(super) fn identity_list(
        &self,
        field: &str,
        list: &[String],
    ) -> Result<BTreeSet<String>, PolicyError> {
        let mut out = BTreeSet::new();
        for (k, identity) in list.iter().enumerate() {
            let field = format!("{field}[{k}]");
            check_identity(&field, self.catalog, identity)?;
            if !out.insert(identity.clone()) {
                return Err(invalid(
                    field,
                    format!("{identity} is listed twice; remove one"),
                ));
            }
        }
        Ok(out)
    }

    pub(super) fn members(
        &self,
        field: &str,
        identities: &[String],
        groups: &[String],
    ) -> Result<Members, PolicyError> {
        Ok(Members {
            identities: self.identity_list(&format!("{field}.identities"), identities)?,
            groups: self.group_list(&format!("{field}.groups"), groups)?,
        })
    }

    pub(super) fn requesters(&self, raw: &RequestersSpec) -> Result<Members, PolicyError> {
        let field = self.field("requesters");
        if raw.identities.is_empty() && raw.groups.is_empty() {
            return Err(invalid(
                field,
                "names nobody; list who may request under this rule: identities: [...] \
                 and/or groups: [...]",
            ));
        }
        self.members(&field, &raw.identities, &raw.groups)
    }

    /// Everyone who could request: named identities and members of the named groups.
    pub(super) fn everyone(&self, members: &Members) -> BTreeSet<String> {
        let in_groups = members
            .groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            .flatten();
        members
            .identities
            .iter()
            .chain(in_groups)
            .cloned()
            .collect()
    }

    /// A target or role list: `["*"]`, or distinct names accepted by `known`.
    fn names(
        &self,
        field: &str,
        what: &str,
        list: &[String],
        known: impl Fn(&str, &str) -> Result<(), PolicyError>,
    ) -> Result<Names, PolicyError> {
        if list.is_empty() {
            return Err(invalid(
                field,
                format!("is empty; list the {what}s this rule covers, or [\"*\"] for every {what}"),
            ));
        }
        if list.iter().any(|n| n == "*") {
            if list.len() > 1 {
                return Err(invalid(
                    field,
                    format!("\"*\" already means every {what}; remove either \"*\" or the names"),
                ));
            }
            return Ok(Names::Any);
        }
        let mut out = BTreeSet::new();
        for (k, name) in list.iter().enumerate() {
            let field = format!("{field}[{k}]");
            known(&field, name)?;
            if !out.insert(name.clone()) {
                return Err(invalid(
                    field,
                    format!("{what} {name} is listed twice; remove one"),
                ));
            }
        }
        Ok(Names::Only(out))
    }

    pub(super) fn targets(&self, list: &[String]) -> Result<Names, PolicyError> {
        self.names(&self.field("targets"), "target", list, |field, name| {
            if self.catalog.targets.contains_key(name) {
                return Ok(());
            }
            let known: Vec<&str> = self.catalog.targets.keys().map(String::as_str).collect();
            Err(invalid(
                field,
                format!(
                    "unknown target {name:?}: it is not defined under targets: (configured \
                     targets: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        })
    }

    /// Roles must exist on every listed target (on at least one target for `targets: ["*"]`).
    pub(super) fn roles(&self, list: &[String], targets: &Names) -> Result<Names, PolicyError> {
        self.names(
            &self.field("roles"),
            "role",
            list,
            |field, role| match targets {
                Names::Any => {
                    if self
                        .catalog
                        .targets
                        .values()
                        .any(|roles| roles.contains(role))
                    {
                        Ok(())
                    } else {
                        Err(invalid(
                            field,
                            format!(
                                "role {role:?} is not configured for any target; define it under \
                             targets.<target>.roles or remove it here"
                            ),
                        ))
                    }
                }
                Names::Only(targets) => {
                    for target in targets {
                        let roles = self.catalog.targets.get(target);
                        if roles.is_some_and(|r| r.contains(role)) {
                            continue;
                        }
                        let known: Vec<&str> =
                            roles.into_iter().flatten().map(String::as_str).collect();
                        return Err(invalid(
                            field,
                            format!(
                            "role {role:?} is not configured for target {target:?} (its roles: \
                             {}); every role listed must exist on every target listed, so add \
                             it under targets.{target}.roles or split the rule",
                            known.join(", ")
                        ),
                        ));
                    }
                    Ok(())
                }
            },
        )
    }

    /// Groups `identity` is a member of.
    pub(super) fn groups_of(&self, identity: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, m)| m.contains(identity))
            .map(|(g, _)| g.clone())
            .collect()
    }
}
