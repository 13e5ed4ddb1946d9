//! `jitgate policy explain`: which rule applies to (identity, target, role) and what it
//! demands — or, when none applies, why not.
//!
//! [`Explanation`] serializes for `--json`; `text` renders it as a few lines for people.

mod text;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::error::PolicyError;
use crate::rules::rule::{Rule, WindowState};
use crate::rules::Rules;

/// Everything the rules say about one identity requesting one role on one target.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// Who would request.
    pub identity: String,
    /// Which target.
    pub target: String,
    /// Which role.
    pub role: String,
    /// The instant auto-approval windows were evaluated at.
    pub at: Timestamp,
    /// The identity's groups, sorted.
    pub groups: Vec<String>,
    /// Whether the identity may request this (a rule applies).
    pub allowed: bool,
    /// One line: the rule that applies, or why none does.
    pub summary: String,
    /// The rule that applies, when one does.
    pub rule: Option<RuleExplanation>,
    /// Why no rule applies, when none does.
    pub denial: Option<Denial>,
}

/// What the applying rule demands.
#[derive(Clone, Debug, Serialize)]
pub struct RuleExplanation {
    /// Its name.
    pub name: String,
    /// Its place in evaluation order, from 1.
    pub position: usize,
    /// Why the identity matched, e.g. "alice is in group dbas".
    pub matched_because: String,
    /// Longest access per request or extension.
    pub max_duration: SignedDuration,
    /// Whether a reason is required.
    pub reason_required: bool,
    /// The pattern a ticket must match, when a ticket is required.
    pub ticket_pattern: Option<String>,
    /// Approvals needed (0 = approved at once).
    pub approvals_required: u32,
    /// Groups whose members may approve.
    pub approver_groups: Vec<String>,
    /// Identities that could approve this identity's request (without it, unless
    /// self-approval is allowed).
    pub approvers: Vec<String>,
    /// Whether a requester may count as their own approver.
    pub self_approval: bool,
    /// How long a request may wait for approvals.
    pub pending_timeout: SignedDuration,
    /// Auto-approval, when the rule has it.
    pub auto_approve: Option<AutoApproveExplanation>,
    /// Break-glass, when the rule offers it.
    pub break_glass: Option<BreakGlassExplanation>,
}

/// The rule's auto-approval and whether it applies to this identity now.
#[derive(Clone, Debug, Serialize)]
pub struct AutoApproveExplanation {
    /// Groups it applies to.
    pub groups: Vec<String>,
    /// Identities it applies to.
    pub identities: Vec<String>,
    /// Windows, e.g. "mon-fri 09:00-18:00 Europe/Berlin"; empty = any time.
    pub windows: Vec<String>,
    /// Whether the identity is one of those auto-approved.
    pub applies_to_identity: bool,
    /// Whether a request by the identity at `at` would be auto-approved.
    pub applies_now: bool,
}

/// The rule's break-glass access.
#[derive(Clone, Debug, Serialize)]
pub struct BreakGlassExplanation {
    /// Longest break-glass access.
    pub max_duration: SignedDuration,
    /// Groups whose members review a use afterwards.
    pub review_by: Vec<String>,
    /// Identities that could review this identity's use.
    pub reviewers: Vec<String>,
}

/// A rule in brief, for "why not" lists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleSummary {
    /// Its name.
    pub name: String,
    /// Who may request under it, e.g. ["group dbas", "identity erin"].
    pub requesters: Vec<String>,
    /// Its targets (`*` = every target).
    pub targets: Vec<String>,
    /// Its roles (`*` = every role).
    pub roles: Vec<String>,
}

/// Why no rule applies.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Denial {
    /// The policy has no rules at all.
    NoRules,
    /// The identity is not configured.
    UnknownIdentity,
    /// The target is not configured.
    UnknownTarget {
        /// The configured targets.
        known_targets: Vec<String>,
    },
    /// The target has no such role.
    UnknownRole {
        /// The target's roles.
        known_roles: Vec<String>,
    },
    /// No rule names the identity or any of its groups.
    NoRuleForIdentity {
        /// Rules that cover this target and role (for other requesters).
        rules_for_access: Vec<RuleSummary>,
    },
    /// Rules cover this target and role, but for other requesters.
    NotARequester {
        /// Those rules.
        rules: Vec<RuleSummary>,
    },
    /// The identity's rules do not cover the target.
    NoRuleForTarget {
        /// The identity's rules.
        rules: Vec<RuleSummary>,
    },
    /// The identity's rules cover the target, but not the role.
    NoRuleForRole {
        /// The identity's rules for the target.
        rules: Vec<RuleSummary>,
    },
}

impl Rules {
    /// Which rule would apply if `identity` requested `role` on `target` at `at`, and what
    /// it demands; or why no rule applies.
    pub fn explain(&self, identity: &str, target: &str, role: &str, at: Timestamp) -> Explanation {
        let groups = self.groups_of(identity);
        let mut out = Explanation {
            identity: identity.to_owned(),
            target: target.to_owned(),
            role: role.to_owned(),
            at,
            groups: groups.clone(),
            allowed: false,
            summary: String::new(),
            rule: None,
            denial: None,
        };
        let found = self.first_match(identity, &groups, target, role);
        match found.filter(|_| self.unknown_name(identity, target, role).is_none()) {
            Some((rule, why)) => {
                out.allowed = true;
                out.summary = format!(
                    "{identity} may request role {role} on target {target} under rule {}",
                    rule.name
                );
                out.rule = Some(self.rule_explanation(rule, why, identity, &groups, at));
            }
            None => {
                let denial = self.denial(identity, &groups, target, role);
                out.summary = format!(
                    "{identity} may not request role {role} on target {target}: {}",
                    denial.headline(identity, target, role)
                );
                out.denial = Some(denial);
            }
        }
        out
    }

    /// Why no rule lets `identity` request `role` on `target`.
    pub(crate) fn denial(
        &self,
        identity: &str,
        groups: &[String],
        target: &str,
        role: &str,
    ) -> Denial {
        if self.is_empty() {
            return Denial::NoRules;
        }
        if let Some(unknown) = self.unknown_name(identity, target, role) {
            return unknown;
        }
        let summary = |r: &Rule| RuleSummary {
            name: r.name.clone(),
            requesters: r.requesters.describe(),
            targets: r.targets.to_list(),
            roles: r.roles.to_list(),
        };
        let mine: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.requesters.includes(identity, groups).is_some())
            .collect();
        let for_access: Vec<RuleSummary> = self
            .rules
            .iter()
            .filter(|r| r.covers(target, role))
            .map(summary)
            .collect();
        if mine.is_empty() {
            return Denial::NoRuleForIdentity {
                rules_for_access: for_access,
            };
        }
        if !for_access.is_empty() {
            return Denial::NotARequester { rules: for_access };
        }
        let for_target: Vec<RuleSummary> = mine
            .iter()
            .filter(|r| r.targets.contains(target))
            .map(|r| summary(r))
            .collect();
        if for_target.is_empty() {
            Denial::NoRuleForTarget {
                rules: mine.iter().map(|r| summary(r)).collect(),
            }
        } else {
            Denial::NoRuleForRole { rules: for_target }
        }
    }

    /// An identity, target or role the configuration does not have.
    pub(crate) fn unknown_name(&self, identity: &str, target: &str, role: &str) -> Option<Denial> {
        if !self.catalog.identities.contains(identity) {
            return Some(Denial::UnknownIdentity);
        }
        let Some(roles) = self.catalog.targets.get(target) else {
            return Some(Denial::UnknownTarget {
                known_targets: self.catalog.targets.keys().cloned().collect(),
            });
        };
        (!roles.contains(role)).then(|| Denial::UnknownRole {
            known_roles: roles.iter().cloned().collect(),
        })
    }

    fn rule_explanation(
        &self,
        rule: &Rule,
        matched_because: String,
        identity: &str,
        groups: &[String],
        at: Timestamp,
    ) -> RuleExplanation {
        let auto_approve = rule.auto_approve.as_ref().map(|a| AutoApproveExplanation {
            groups: a.who.groups.iter().cloned().collect(),
            identities: a.who.identities.iter().cloned().collect(),
            windows: a.windows_text(),
            applies_to_identity: a.who.includes(identity, groups).is_some(),
            applies_now: a.who.includes(identity, groups).is_some()
                && !matches!(a.window_at(at), WindowState::Outside),
        });
        let break_glass = rule.break_glass.as_ref().map(|b| BreakGlassExplanation {
            max_duration: b.max_duration,
            review_by: b.review_by.clone(),
            reviewers: self.reviewers(&rule.name, identity),
        });
        RuleExplanation {
            name: rule.name.clone(),
            position: self
                .rules
                .iter()
                .position(|r| r.name == rule.name)
                .map_or(0, |i| i + 1),
            matched_because,
            max_duration: rule.max_duration,
            reason_required: rule.reason_required,
            ticket_pattern: rule.ticket_pattern().map(str::to_owned),
            approvals_required: rule.approvals,
            approver_groups: rule.approvers_from.clone(),
            approvers: self.approvers(&rule.name, identity),
            self_approval: rule.self_approval,
            pending_timeout: rule.pending_timeout,
            auto_approve,
            break_glass,
        }
    }
}

impl Denial {
    /// The crate error for an unknown identity, target or role; `Forbidden` otherwise.
    pub(crate) fn into_error(self, identity: &str, target: &str, role: &str) -> PolicyError {
        match self {
            Denial::UnknownIdentity => PolicyError::UnknownIdentity(identity.to_owned()),
            Denial::UnknownTarget { .. } => PolicyError::UnknownTarget(target.to_owned()),
            Denial::UnknownRole { .. } => PolicyError::UnknownRole {
                target: target.to_owned(),
                role: role.to_owned(),
            },
            other => PolicyError::Forbidden(other.headline(identity, target, role)),
        }
    }
}
