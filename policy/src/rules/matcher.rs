//! Who and what a rule covers: name sets with a `*` wildcard, and identity/group lists.

use std::collections::BTreeSet;
use std::fmt;

/// Target or role names a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Names {
    /// `["*"]`: every name.
    Any,
    /// Exactly these names.
    Only(BTreeSet<String>),
}

impl Names {
    /// Whether `name` is covered.
    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            Names::Any => true,
            Names::Only(names) => names.contains(name),
        }
    }

    /// The names as configured: `["*"]` or the sorted names.
    pub(crate) fn to_list(&self) -> Vec<String> {
        match self {
            Names::Any => vec!["*".to_owned()],
            Names::Only(names) => names.iter().cloned().collect(),
        }
    }
}

impl fmt::Display for Names {
    /// `*` or `app, reports`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list().join(", "))
    }
}

/// Identities named one by one plus groups, e.g. a rule's requesters or its auto-approve list.
#[derive(Clone, Debug, Default)]
pub(crate) struct Members {
    /// Identities named directly.
    pub(crate) identities: BTreeSet<String>,
    /// Groups (names from `policy.groups`) whose members are included.
    pub(crate) groups: BTreeSet<String>,
}

impl Members {
    /// Why `identity` (a member of `groups_of_identity`) is included, e.g.
    /// `"carol is in group oncall"`, or `None` when it is not.
    pub(crate) fn includes(&self, identity: &str, groups_of_identity: &[String]) -> Option<String> {
        if self.identities.contains(identity) {
            return Some(format!("{identity} is named in the rule"));
        }
        groups_of_identity
            .iter()
            .find(|g| self.groups.contains(*g))
            .map(|g| format!("{identity} is in group {g}"))
    }

    /// `["group dbas", "identity erin"]`: groups first, for lists shown to people.
    pub(crate) fn describe(&self) -> Vec<String> {
        self.groups
            .iter()
            .map(|g| format!("group {g}"))
            .chain(self.identities.iter().map(|i| format!("identity {i}")))
            .collect()
    }
}
