//! Approval rules: who may request access, who approves, and for how long (issue #5).
//!
//! The `policy:` section of `jitgate.yaml` is read into a [`RulesSpec`] and checked against
//! the [`Catalog`] of configured identities, targets and roles by [`Rules::from_spec`]; every
//! mistake is reported as
//! [`PolicyError::InvalidPolicy`](crate::PolicyError::InvalidPolicy) with the field it is
//! in (`rules[2].ticket`). The engine then asks the validated [`Rules`]:
//!
//! - [`Rules::check_request`]: may this identity request this target/role, and how does the
//!   request proceed (approvals needed, auto-approved, break-glass)? → [`Verdict`]
//! - [`Rules::check_approver`] / [`Rules::check_reviewer`]: may this person approve (or deny)
//!   a request, or review a break-glass use?
//! - [`Rules::explain`]: the same reasoning for a human (`jitgate policy explain`) →
//!   [`Explanation`].
//!
//! Rules are evaluated in order and the **first** rule matching (requester, target, role)
//! applies; later rules are not consulted even if they would be more generous.
//!
//! # Layout
//!
//! - [`spec`]: serde types for the YAML, unchecked.
//! - `validate/`: [`Rules::from_spec`], one check per field with a precise error (`lists`:
//!   names of identities, groups, targets, roles; `workflow`: ticket, approvals,
//!   auto-approval, break-glass).
//! - `rule`: the validated [`Rule`] and its accessors.
//! - `matcher`: name sets (`*`) and identity/group lists.
//! - `window`: auto-approval time windows in their own time zone.
//! - `check`: request, approver and reviewer decisions.
//! - `explain/`: [`Explanation`] for `--json`, and (`text`) for people.

pub mod spec;

mod check;
mod explain;
mod matcher;
mod rule;
mod validate;
mod window;

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::catalog::Catalog;

pub use explain::{
    AutoApproveExplanation, BreakGlassExplanation, Denial, Explanation, RuleExplanation,
    RuleSummary,
};
pub use rule::Rule;
pub use spec::{
    ApprovalsSpec, AutoApproveSpec, BreakGlassSpec, ReasonSpec, RequestersSpec, RuleSpec,
    RulesSpec, WindowSpec,
};

/// Validated approval rules, plus the groups and catalog they were checked against.
///
/// The default has no rules: nobody may request access (administrators still issue grants
/// directly).
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// In config order; the first match applies.
    rules: Vec<Rule>,
    /// Group → members, from `policy.groups`.
    groups: BTreeMap<String, BTreeSet<String>>,
    /// What exists, so `explain` can tell an unknown name from a missing rule.
    catalog: Catalog,
}

/// The facts of one access request (or extension) that the rules decide on.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// Who asks.
    pub identity: &'a str,
    /// For which target.
    pub target: &'a str,
    /// As which role.
    pub role: &'a str,
    /// How long (for an extension: the time added).
    pub duration: SignedDuration,
    /// Why, if given.
    pub reason: Option<&'a str>,
    /// Ticket (incident, change), if given.
    pub ticket: Option<&'a str>,
    /// Whether this is a break-glass request (immediate, reviewed afterwards).
    pub break_glass: bool,
    /// When the request is made (auto-approval windows are checked at this instant).
    pub at: Timestamp,
}

/// How an accepted request proceeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The rule that applies (the first match).
    pub rule: String,
    /// Approvals still needed; 0 = approve at once.
    pub approvals_required: u32,
    /// Why no approver is needed, when that is so without break-glass, e.g.
    /// "auto-approved by rule app-read: carol is in group oncall, inside window mon-fri
    /// 09:00-18:00 Europe/Berlin" or "no approval required by rule app-read".
    pub auto_approved: Option<String>,
    /// Break-glass: access at once, flagged, to be reviewed afterwards.
    pub break_glass: bool,
    /// How long the request may wait for approvals.
    pub pending_timeout: SignedDuration,
    /// Longest duration allowed for this request (the break-glass maximum for break-glass).
    pub max_duration: SignedDuration,
}

impl Rules {
    /// Whether there are no rules (nobody may request access).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Rule names in evaluation order.
    pub fn names(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.name.clone()).collect()
    }

    /// The rules in evaluation order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// Groups `identity` is a member of, sorted.
    pub fn groups_of(&self, identity: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, members)| members.contains(identity))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Members of `group`, sorted (empty for an unknown group).
    pub fn members_of(&self, group: &str) -> Vec<String> {
        self.groups
            .get(group)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Identities that could approve a request by `requester` under `rule`: members of the
    /// rule's `approvals.from` groups, sorted, without the requester unless the rule allows
    /// self-approval. Empty for an unknown rule.
    pub fn approvers(&self, rule: &str, requester: &str) -> Vec<String> {
        self.rule(rule)
            .map(|r| {
                self.union_of(&r.approvers_from)
                    .into_iter()
                    .filter(|who| r.self_approval || who != requester)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Identities that could review a break-glass use by `requester` under `rule` (sorted,
    /// never the requester). Empty for an unknown rule or one without break-glass.
    pub fn reviewers(&self, rule: &str, requester: &str) -> Vec<String> {
        self.rule(rule)
            .map(|r| {
                self.union_of(r.review_groups())
                    .into_iter()
                    .filter(|who| who != requester)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first rule matching (identity, target, role), with why the identity matched.
    fn first_match(
        &self,
        identity: &str,
        groups: &[String],
        target: &str,
        role: &str,
    ) -> Option<(&Rule, String)> {
        self.rules.iter().find_map(|r| {
            if !r.covers(target, role) {
                return None;
            }
            r.requesters.includes(identity, groups).map(|why| (r, why))
        })
    }

    /// All members of `groups`, deduplicated and sorted.
    fn union_of(&self, groups: &[String]) -> BTreeSet<String> {
        groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            .flatten()
            .cloned()
            .collect()
    }
}
