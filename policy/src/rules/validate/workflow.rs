//! Checks of what a rule demands: ticket pattern, approvals, auto-approval, break-glass.

use std::collections::BTreeSet;

use jiff::SignedDuration;
use regex::Regex;

use super::{duration, invalid, Cx};
use crate::error::PolicyError;
use crate::rules::matcher::Members;
use crate::rules::rule::{AutoApprove, BreakGlass, Ticket};
use crate::rules::spec::{ApprovalsSpec, AutoApproveSpec, BreakGlassSpec};
use crate::rules::window::{Window, WindowError};

impl Cx<'_> {
    pub(super) fn ticket(&self, pattern: &str) -> Result<Ticket, PolicyError> {
        let field = self.field("ticket");
        if pattern.trim().is_empty() {
            return Err(invalid(
                field,
                "is empty; remove `ticket` or give a pattern such as '^(INC|CHG)-\\d+$'",
            ));
        }
        // Compile as written first, so an error points into the pattern the user wrote.
        Regex::new(pattern).map_err(|e| {
            invalid(
                &field,
                format!(
                    "{pattern:?} is not a valid regular expression ({}); in YAML, put the \
                     pattern in single quotes, e.g. '^INC-\\d+$'",
                    regex_problem(&e)
                ),
            )
        })?;
        let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            invalid(
                &field,
                format!("{pattern:?} cannot be used: {}", regex_problem(&e)),
            )
        })?;
        Ok(Ticket {
            pattern: pattern.to_owned(),
            regex,
        })
    }

    pub(super) fn approvals(
        &self,
        raw: &ApprovalsSpec,
        self_approval: bool,
        requesters: &Members,
        auto: Option<&AutoApprove>,
    ) -> Result<(u32, Vec<String>), PolicyError> {
        let from_field = self.field("approvals.from");
        let from = self.group_list(&from_field, &raw.from)?;
        if raw.count == 0 {
            return Ok((0, from.into_iter().collect()));
        }
        if from.is_empty() {
            return Err(invalid(
                from_field,
                "is empty; list the groups whose members approve requests under this rule, \
                 e.g. from: [dbas]",
            ));
        }
        let approvers = self.everyone(&Members {
            identities: BTreeSet::new(),
            groups: from.clone(),
        });
        let count_field = self.field("approvals.count");
        let need = usize::try_from(raw.count).unwrap_or(usize::MAX);
        if need > approvers.len() {
            return Err(invalid(
                count_field,
                format!(
                    "{} approvals are required but group(s) {} have only {} member(s) ({}); \
                     lower the count or add members",
                    raw.count,
                    join(&from),
                    approvers.len(),
                    join(&approvers)
                ),
            ));
        }
        if !self_approval {
            for requester in self.everyone(requesters) {
                if !approvers.contains(&requester) || approvers.len() > need {
                    continue;
                }
                // Always auto-approved: never waits for approvers, so no shortfall.
                if auto.is_some_and(|a| {
                    a.windows.is_empty()
                        && a.who
                            .includes(&requester, &self.groups_of(&requester))
                            .is_some()
                }) {
                    continue;
                }
                return Err(invalid(
                    count_field,
                    format!(
                        "{} approvals are required, but a request by {requester} could get at \
                         most {}: {requester} is one of the {} approvers ({}) and cannot \
                         approve their own request; lower the count, add members to {}, or set \
                         self_approval: true",
                        raw.count,
                        approvers.len() - 1,
                        approvers.len(),
                        join(&approvers),
                        join(&from)
                    ),
                ));
            }
        }
        Ok((raw.count, from.into_iter().collect()))
    }

    /// Auto-approval may only name people who can request under the rule at all; anything
    /// else is a mistake that would silently never apply.
    pub(super) fn auto_approve(
        &self,
        raw: &AutoApproveSpec,
        requesters: &Members,
    ) -> Result<AutoApprove, PolicyError> {
        let field = self.field("auto_approve");
        if raw.groups.is_empty() && raw.identities.is_empty() {
            return Err(invalid(
                field,
                "names nobody; list the groups and/or identities approved without approvers, \
                 or remove auto_approve",
            ));
        }
        let who = self.members(&field, &raw.identities, &raw.groups)?;
        let can_request = self.everyone(requesters);
        for (k, identity) in raw.identities.iter().enumerate() {
            if !can_request.contains(identity) {
                return Err(invalid(
                    format!("{field}.identities[{k}]"),
                    format!(
                        "{identity} is not among this rule's requesters, so auto-approval \
                         would never apply to them; add {identity} to requesters or remove it \
                         here"
                    ),
                ));
            }
        }
        for (k, group) in raw.groups.iter().enumerate() {
            let members = self.groups.get(group).into_iter().flatten();
            if !requesters.groups.contains(group)
                && !members.clone().any(|m| can_request.contains(m))
            {
                return Err(invalid(
                    format!("{field}.groups[{k}]"),
                    format!(
                        "no member of group {group} is among this rule's requesters, so \
                         auto-approval would never apply to them; add {group} to \
                         requesters.groups or remove it here"
                    ),
                ));
            }
        }
        let mut windows = Vec::with_capacity(raw.windows.len());
        for (j, w) in raw.windows.iter().enumerate() {
            let at = format!("{field}.windows[{j}]");
            let window = Window::parse(w.days.as_deref(), &w.from, &w.to, w.time_zone.as_deref())
                .map_err(|e| match e {
                WindowError::Days(Some(k), m) => invalid(format!("{at}.days[{k}]"), m),
                WindowError::Days(None, m) => invalid(format!("{at}.days"), m),
                WindowError::From(m) => invalid(format!("{at}.from"), m),
                WindowError::To(m) => invalid(format!("{at}.to"), m),
                WindowError::TimeZone(m) => invalid(format!("{at}.time_zone"), m),
            })?;
            windows.push(window);
        }
        Ok(AutoApprove { who, windows })
    }

    pub(super) fn break_glass(
        &self,
        raw: &BreakGlassSpec,
        rule_max: SignedDuration,
        requesters: &Members,
    ) -> Result<BreakGlass, PolicyError> {
        let max_field = self.field("break_glass.max_duration");
        let max_duration = duration(&max_field, &raw.max_duration)?;
        if max_duration > rule_max {
            return Err(invalid(
                max_field,
                format!(
                    "{max_duration:#} is longer than the rule's max_duration ({rule_max:#}), \
                     which caps every request including break-glass; use {rule_max:#} or less"
                ),
            ));
        }
        let review_field = self.field("break_glass.review_by");
        if raw.review_by.is_empty() {
            return Err(invalid(
                review_field,
                "is empty; list the groups whose members review break-glass use afterwards, \
                 e.g. review_by: [security]",
            ));
        }
        let review_by = self.group_list(&review_field, &raw.review_by)?;
        let reviewers = self.everyone(&Members {
            identities: BTreeSet::new(),
            groups: review_by.clone(),
        });
        if reviewers.is_empty() {
            return Err(invalid(
                review_field,
                format!(
                    "group(s) {} have no members, so nobody could review break-glass use; add \
                     members or name another group",
                    join(&review_by)
                ),
            ));
        }
        for requester in self.everyone(requesters) {
            if reviewers.iter().all(|r| *r == requester) {
                return Err(invalid(
                    review_field,
                    format!(
                        "nobody but the requester could review break-glass use by {requester} \
                         (group(s) {} have member(s): {}); nobody reviews their own use, so \
                         add another reviewer",
                        join(&review_by),
                        join(&reviewers)
                    ),
                ));
            }
        }
        Ok(BreakGlass {
            max_duration,
            review_by: review_by.into_iter().collect(),
        })
    }
}

fn join(names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one-line reason from a regex error (its text also draws the pattern over several
/// lines, which does not fit a config error).
fn regex_problem(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_owned,
        )
}
